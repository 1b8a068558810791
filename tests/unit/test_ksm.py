"""ksmd as Linux 6.18 runs it (mm/ksm.c), counter by counter, pass by pass.

Every expected number below is derived by hand from the 6.18 source; the comments name the
function each step follows:

* ksm_do_scan(): a wake-up scans up to pages_to_scan pages and ends early when
  scan_get_next_rmap_item() completes a full scan (returns NULL), so a pass over N pages
  takes ceil(N / 100) wake-ups, plus one if N is a multiple of 100 (the wake-up that finds
  the end);
* cmp_and_merge_page(): the first visit only records the checksum (oldchecksum starts at
  0: volatile); the second inserts in the unstable tree (pages_unshared) or merges; a page
  whose checksum changed is volatile again;
* try_to_merge_two_pages(): the page being scanned becomes the KSM page, the tree's page
  is replaced by it; stable_tree_append(): first rmap_item pages_shared, others sharing;
* remove_rmap_item_from_tree(): pages_unshared / pages_sharing only drop when ksmd visits
  the rmap_item again (the unstable root was reset at the start of the pass);
* should_skip_rmap_item(): a non-KSM page whose age (before the increment) is >= 3 is
  skipped remaining_skips times, remaining_skips = skip_age(age) = 1, 2, 4, 8;
* pages_volatile = rmap_items - shared - sharing - unshared;
  general_profit = (pages_sharing + ksm_zero_pages) * 4096 - rmap_items * 64.
"""

from __future__ import annotations

import errno

import pytest
from layout import PAGE, anon, at

import vmsim
from vmsim.constants import (
    MADV_MERGEABLE,
    MADV_UNMERGEABLE,
    PR_GET_MEMORY_MERGE,
    PR_SET_MEMORY_MERGE,
)
from vmsim.mm.ksm import skip_age

RMAP = 64  # sizeof(struct ksm_rmap_item)


def ksm_machine(**kw: object) -> vmsim.Machine:
    return vmsim.Machine(ram="256M", ksm=True, **kw)  # type: ignore[arg-type]


def page(tag: int) -> bytes:
    return tag.to_bytes(4, "little") * (PAGE // 4)


def fill(p: vmsim.Process, first: int, contents: list[bytes]) -> None:
    anon(p, first, len(contents))
    for i, data in enumerate(contents):
        p.write(at(first + i), data)
    p.madvise(at(first), len(contents) * PAGE, MADV_MERGEABLE)


def one_pass(m: vmsim.Machine) -> int:
    """Tick until full_scans moves by one; the wake-ups it took."""
    target = m.ksm_stats()["full_scans"] + 1
    n = 0
    while m.ksm_stats()["full_scans"] < target:
        m.tick()
        n += 1
        assert n < 10_000
    return n


def counters(m: vmsim.Machine, *names: str) -> tuple[int, ...]:
    s = m.ksm_stats()
    return tuple(s[n] for n in names)


S = ("pages_shared", "pages_sharing", "pages_unshared", "pages_volatile")


def test_the_issue_case_two_processes_four_full_scans() -> None:
    """Issue 16's measured case: two processes, each 800 pages of 100 contents (8 copies
    each) and 200 unique pages."""
    m = ksm_machine()
    procs = [m.spawn(), m.spawn()]
    for n, p in enumerate(procs):
        dups = [page(c) for c in range(100)] * 8
        uniq = [page(1000 + 1000 * n + u) for u in range(200)]
        fill(p, 0, dups + uniq)
    # 2000 pages, 100 a wake-up: 20 wake-ups, and a 21st that finds the end of the pass
    assert one_pass(m) == 21
    # pass 1: every page got an rmap_item and a checksum, nothing else
    assert counters(m, *S) == (0, 0, 0, 2000)
    one_pass(m)
    # pass 2: each contents' first copy goes to the unstable tree, the second makes the KSM
    # page with it, the other 14 join through the stable tree; the 400 unique pages are in
    # the unstable tree
    assert counters(m, *S) == (100, 1500, 400, 0)
    one_pass(m)
    one_pass(m)
    # passes 3 and 4: KSM pages are left as they are; each unique page leaves the unstable
    # tree when visited (pages_unshared--) and goes back in (++): between passes, 400
    s = m.ksm_stats()
    assert (s["full_scans"], s["pages_scanned"], s["pages_skipped"]) == (4, 8000, 0)
    assert counters(m, *S) == (100, 1500, 400, 0)
    assert s["general_profit"] == 1500 * PAGE - 2000 * RMAP
    assert (s["stable_node_chains"], s["stable_node_dups"], s["ksm_zero_pages"]) == (0, 0, 0)
    for p in procs:
        assert p.ksm_stat() == (
            "ksm_rmap_items 1000\n"
            "ksm_zero_pages 0\n"
            "ksm_merging_pages 800\n"
            f"ksm_process_profit {800 * PAGE - 1000 * RMAP}\n"
            "ksm_merge_any: no\n"
            "ksm_mergeable: yes\n"
        )
        assert p.ksm_merging_pages() == "800\n"
    # pass 5: the unique pages (age 4, remaining_skips 1 set at age 3) are skipped and taken
    # out of the unstable tree; the KSM pages are still scanned
    one_pass(m)
    s = m.ksm_stats()
    assert (s["pages_skipped"], s["pages_scanned"]) == (400, 8000 + 1600)
    assert counters(m, *S) == (100, 1500, 0, 400)
    one_pass(m)  # pass 6: age 5, skip_age 2 set, scanned: back in the unstable tree
    assert counters(m, *S) == (100, 1500, 400, 0)
    one_pass(m)
    one_pass(m)  # passes 7 and 8 skip them
    assert m.ksm_stats()["pages_skipped"] == 400 * 3
    assert counters(m, *S) == (100, 1500, 0, 400)


def test_one_unique_page_is_skipped_by_age() -> None:
    """should_skip_rmap_item() on one page that never merges: visits 1-4 scanned, then
    skip 1 (age 4), scan (age 5: skip_age 2), skip 2, scan (age 8: 4), skip 4, scan (8)."""
    assert [skip_age(a) for a in (3, 4, 5, 6, 8, 9, 200)] == [1, 2, 2, 4, 4, 8, 8]
    m = ksm_machine()
    p = m.spawn()
    fill(p, 0, [page(7)])
    skipped_after = []
    unshared_after = []
    for _ in range(15):
        one_pass(m)
        skipped_after.append(m.ksm_stats()["pages_skipped"])
        unshared_after.append(m.ksm_stats()["pages_unshared"])
    # passes:          1  2  3  4  5  6  7  8  9  10 11 12 13 14 15
    assert skipped_after == [0, 0, 0, 0, 1, 1, 2, 3, 3, 4, 5, 6, 7, 7, 8]
    assert unshared_after == [0, 1, 1, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0]
    assert m.ksm_stats()["pages_scanned"] == 15 - 8


def test_no_smart_scan_never_skips() -> None:
    m = ksm_machine()
    m.ksm_set("smart_scan", 0)
    p = m.spawn()
    fill(p, 0, [page(7)])
    for _ in range(8):
        one_pass(m)
    s = m.ksm_stats()
    assert (s["pages_skipped"], s["pages_scanned"], s["pages_unshared"]) == (0, 8, 1)


def test_volatile_page_changing_every_pass() -> None:
    """A page written between passes: its checksum differs at each visit (volatile), it is
    never inserted; after its third visit smart scan skips it too."""
    m = ksm_machine()
    p = m.spawn()
    fill(p, 0, [page(1), page(2)])  # page 1 changes, page 0 is steady
    seen = []
    for n in range(5):
        p.write(at(1), page(100 + n))
        one_pass(m)
        seen.append(counters(m, "pages_unshared", "pages_volatile", "pages_skipped"))
    # pass 1: both volatile; 2-4: page 0 unshared, page 1 volatile; 5: both skipped
    # (age 4), so out of the trees: volatile 2
    assert seen == [(0, 2, 0), (1, 1, 0), (1, 1, 0), (1, 1, 0), (0, 2, 2)]


def test_cow_and_stale_node_lifecycles() -> None:
    m = ksm_machine()
    p = m.spawn()
    fill(p, 0, [page(5)] * 3)
    one_pass(m)
    one_pass(m)
    assert counters(m, *S) == (1, 2, 0, 0)
    p.write(at(0), b"x")  # COW: a private copy; the counts wait for ksmd
    assert counters(m, *S) == (1, 2, 0, 0)
    assert p.ksm_merging_pages() == "3\n"
    one_pass(m)  # the rmap_item is visited: off the stable node, checksum changed
    assert counters(m, *S) == (1, 1, 0, 1)
    assert p.ksm_merging_pages() == "2\n"
    # the other two write as well: the KSM page is freed, its node stale, still counted
    p.write(at(1), b"y")
    p.write(at(2), b"z")
    assert counters(m, *S) == (1, 1, 0, 1)
    one_pass(m)
    # page 0 is steady since pass 3: into the unstable tree; page 1's visit finds the node
    # stale (ksm_get_folio()): both its rmap_items leave it; pages 1 and 2 changed: volatile
    assert counters(m, *S) == (0, 0, 1, 2)
    assert p.ksm_stat().startswith("ksm_rmap_items 3\nksm_zero_pages 0\nksm_merging_pages 0\n")


def test_max_page_sharing_makes_a_chain() -> None:
    """300 identical pages, max_page_sharing 256: copies 1-256 fill the first KSM page,
    copy 257 finds it full (stable_tree_search() returns NULL) and goes to the unstable
    tree, 258 merges with it into a second KSM page: stable_tree_insert() finds the contents
    and makes a chain of two dups; 259-300 join the second."""
    m = ksm_machine()
    p = m.spawn()
    fill(p, 0, [page(9)] * 300)
    one_pass(m)
    one_pass(m)
    s = m.ksm_stats()
    assert (s["pages_shared"], s["pages_sharing"], s["pages_unshared"]) == (2, 255 + 43, 0)
    assert (s["stable_node_chains"], s["stable_node_dups"]) == (1, 2)
    assert s["general_profit"] == 298 * PAGE - 300 * RMAP
    pfns = {e & ((1 << 55) - 1) for e in p.pagemap(at(0), 300)}
    assert len(pfns) == 2


def test_zero_pages_with_use_zero_pages() -> None:
    m = ksm_machine()
    m.ksm_set("use_zero_pages", 1)
    p = m.spawn()
    fill(p, 0, [bytes(PAGE), bytes(PAGE), page(3)])
    one_pass(m)
    one_pass(m)
    # try_to_merge_with_zero_page(): both zero pages map the zero page; their rmap_items
    # stay, in no tree (volatile)
    s = m.ksm_stats()
    assert (s["ksm_zero_pages"], s["pages_volatile"], s["pages_unshared"]) == (2, 2, 1)
    assert s["general_profit"] == 2 * PAGE - 3 * RMAP
    one_pass(m)
    # the zero page is not an anonymous folio: the scan passes those addresses and frees
    # their rmap_items (get_next_rmap_item())
    s = m.ksm_stats()
    assert (s["ksm_zero_pages"], s["pages_volatile"]) == (2, 0)
    assert p.ksm_stat().startswith("ksm_rmap_items 1\nksm_zero_pages 2\n")
    p.write(at(0), b"w")  # wp_page_copy() of a KSM zero page: ksm_might_unmap_zero_page()
    p.munmap(at(1), PAGE)  # zap: the same
    assert m.ksm_stats()["ksm_zero_pages"] == 0
    assert p.ksm_stat().startswith("ksm_rmap_items 1\nksm_zero_pages 0\n")
    assert p.read(at(0), 2) == b"w\0"


def test_zero_pages_without_use_zero_pages_merge_like_any_page() -> None:
    m = ksm_machine()
    p = m.spawn()
    fill(p, 0, [bytes(PAGE)] * 3)
    one_pass(m)
    one_pass(m)
    assert counters(m, *S) == (1, 2, 0, 0)
    assert m.ksm_stats()["ksm_zero_pages"] == 0


def test_pinned_page_does_not_merge_until_unpinned() -> None:
    """write_protect_page() refuses a page whose refcount is above its mappings (a GUP
    pin): the pinned page sits in the unstable tree, its twin stays volatile."""
    m = ksm_machine()
    p = m.spawn()
    fill(p, 0, [page(4), page(4)])
    pinned = p.pagemap(at(0), 1)[0] & ((1 << 55) - 1)
    m.memory.frames.get(pinned)  # pin_user_pages(): one more reference
    one_pass(m)
    one_pass(m)
    assert counters(m, *S) == (0, 0, 1, 1)
    m.memory.frames.put(pinned)
    one_pass(m)
    assert counters(m, *S) == (1, 1, 0, 0)


def test_fork_of_a_ksm_page_counts_in_the_child_when_scanned() -> None:
    m = ksm_machine()
    p = m.spawn()
    fill(p, 0, [page(6)] * 2)
    one_pass(m)
    one_pass(m)
    child = p.fork()  # ksm_fork(): the child joins the list, behind the cursor
    assert counters(m, *S) == (1, 1, 0, 0)
    assert child.ksm_stat().startswith("ksm_rmap_items 0\n")
    one_pass(m)
    # cmp_and_merge_page() on the child's rmap_items: the page is a KSM page already
    # ("ksm page forked"): stable_tree_append() only
    assert counters(m, *S) == (1, 3, 0, 0)
    assert child.ksm_merging_pages() == "2\n"


def test_madv_unmergeable_copies_now_counts_later() -> None:
    m = ksm_machine()
    p = m.spawn()
    fill(p, 0, [page(8)] * 4)
    one_pass(m)
    one_pass(m)
    kpfn = p.pagemap(at(0), 1)[0] & ((1 << 55) - 1)
    p.madvise(at(0), 4 * PAGE, MADV_UNMERGEABLE)  # break_ksm() on each page
    pfns = {e & ((1 << 55) - 1) for e in p.pagemap(at(0), 4)}
    assert len(pfns) == 4 and kpfn not in pfns
    assert p.read(at(0), 4 * PAGE) == page(8) * 4
    assert counters(m, *S) == (1, 3, 0, 0)  # unmerge_ksm_pages() leaves them to ksmd
    one_pass(m)
    # no VM_MERGEABLE VMA left: the rmap_items go (remove_trailing_rmap_items()), then the
    # mm leaves the list (MMF_VM_MERGEABLE cleared)
    assert counters(m, *S) == (0, 0, 0, 0)
    assert p.ksm_stat() == (
        "ksm_rmap_items 0\nksm_zero_pages 0\nksm_merging_pages 0\n"
        "ksm_process_profit 0\nksm_merge_any: no\nksm_mergeable: no\n"
    )
    assert m.ksm.mms == []


def test_exit_leaves_counts_to_ksmd() -> None:
    m = ksm_machine()
    p, q = m.spawn(), m.spawn()
    fill(p, 0, [page(2)] * 2)
    fill(q, 0, [page(2)] * 2)
    one_pass(m)
    one_pass(m)
    assert counters(m, *S) == (1, 3, 0, 0)
    q.exit()  # __ksm_exit(): q has rmap_items, its slot waits for ksmd
    assert counters(m, *S) == (1, 3, 0, 0)
    one_pass(m)
    assert counters(m, *S) == (1, 1, 0, 0)
    assert m.ksm.mms == [p.mm]


def test_prctl_merge_any() -> None:
    m = ksm_machine()
    p = m.spawn()
    anon(p, 0, 2)
    p.write(at(0), page(3) * 2)
    assert p.prctl(PR_GET_MEMORY_MERGE) == 0
    assert p.prctl(PR_SET_MEMORY_MERGE, 1) == 0
    assert p.prctl(PR_GET_MEMORY_MERGE) == 1
    one_pass(m)
    one_pass(m)
    assert counters(m, *S) == (1, 1, 0, 0)
    for bad in ((PR_SET_MEMORY_MERGE, 1, 0, 1), (PR_GET_MEMORY_MERGE, 0, 1), (99,)):
        with pytest.raises(OSError) as e:
            p.prctl(*bad)
        assert e.value.errno == errno.EINVAL
    assert p.prctl(PR_SET_MEMORY_MERGE, 0) == 0  # ksm_disable_merge_any(): unmerged now
    pfns = {e & ((1 << 55) - 1) for e in p.pagemap(at(0), 2)}
    assert len(pfns) == 2


def test_sysfs_knobs_and_their_errnos() -> None:
    m = ksm_machine()
    s = m.ksm_stats()
    assert (s["pages_to_scan"], s["sleep_millisecs"], s["max_page_sharing"]) == (100, 20, 256)
    assert (s["smart_scan"], s["use_zero_pages"], s["advisor_mode"], s["run"]) == (1, 0, 0, 1)
    assert m.ksm.sysfs_text("advisor_mode") == "[none] scan-time\n"
    m.ksm_set("advisor_mode", "scan-time")  # set_advisor_defaults()
    assert m.ksm_stats()["pages_to_scan"] == 500
    assert m.ksm.sysfs_text("advisor_mode") == "none [scan-time]\n"
    with pytest.raises(OSError) as e:
        m.ksm_set("pages_to_scan", 50)  # pages_to_scan_store(): not with an advisor
    assert e.value.errno == errno.EINVAL
    m.ksm_set("advisor_mode", "none")
    assert m.ksm_stats()["pages_to_scan"] == 100
    for name, value in (("max_page_sharing", 1), ("advisor_target_scan_time", 0), ("run", 3)):
        with pytest.raises(OSError) as e:
            m.ksm_set(name, value)
        assert e.value.errno == errno.EINVAL
    p = m.spawn()
    fill(p, 0, [page(1)] * 2)
    one_pass(m)
    one_pass(m)
    with pytest.raises(OSError) as e:
        m.ksm_set("max_page_sharing", 3)  # ksm_pages_shared != 0
    assert e.value.errno == errno.EBUSY
    with pytest.raises(OSError) as e:
        m.ksm_set("merge_across_nodes", 0)  # the same rule as max_page_sharing
    assert e.value.errno == errno.EBUSY
    with pytest.raises(OSError) as e:
        m.ksm_set("pages_shared", 0)  # a read-only file: open(O_WRONLY) fails
    assert e.value.errno == errno.EACCES
    with pytest.raises(OSError) as e:
        m.ksm_set("no_such_file", 0)
    assert e.value.errno == errno.ENOENT
    m.ksm_set("run", 2)  # unmerge_and_remove_all_rmap_items()
    assert counters(m, *S) == (0, 0, 0, 0)
    assert m.ksm_stats()["full_scans"] == 0
    assert len({e & ((1 << 55) - 1) for e in p.pagemap(at(0), 2)}) == 2


def test_scan_time_advisor_on_the_model_clock() -> None:
    """scan_time_advisor() after a pass of 3 wake-ups (60 ms: scan_time 1 s), no CPU time
    (cpu_percent 1): factor = 200 * 100 / 1, change = ewma(0, 100) = 30, pages = 500 * 100 /
    20000 * 30 / 100 = 0, per_page_cost = 500, so max(0, 500 * 10) = 5000."""
    m = ksm_machine()
    m.ksm_set("advisor_mode", "scan-time")
    p = m.spawn()
    fill(p, 0, [page(i) for i in range(3)])
    one_pass(m)
    assert m.ksm_stats()["pages_to_scan"] == 5000


def test_ksmd_not_running_still_tracks_the_process() -> None:
    m = vmsim.Machine()  # run = 0
    p = m.spawn()
    fill(p, 0, [page(1)] * 2)
    m.tick(5)
    assert m.ksm_stats()["run"] == 0 and m.ksm_stats()["full_scans"] == 0
    assert p.ksm_stat().endswith("ksm_merge_any: no\nksm_mergeable: yes\n")
    p.exit()
    with pytest.raises(ProcessLookupError):
        p.ksm_stat()  # /proc/PID is gone


def test_mlocked_pages_merge_and_stay_locked() -> None:
    """try_to_merge_one_page() has no VM_LOCKED case in 6.18: replace_page() maps the KSM
    page through folio_add_anon_rmap_pte(), which mlocks it in a locked VMA, and the
    replaced page is munlocked as it is unmapped."""
    m = ksm_machine()
    p = m.spawn()
    fill(p, 0, [page(3)] * 3)
    p.mlock(at(0), 3 * PAGE)
    one_pass(m)
    one_pass(m)
    assert counters(m, *S) == (1, 2, 0, 0)
    info = {
        k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in m.meminfo().splitlines())
    }
    assert info["Mlocked"] == 4  # one KSM page, locked; the two replaced pages are freed
    m.check_memory()
