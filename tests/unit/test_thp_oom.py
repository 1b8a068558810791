"""A partly mapped THP on the deferred split queue must not make reclaim give up (issue 13,
seen by the demo helper: a second process writing memory was OOM-killed while 128 MiB of
swap sat unused).

The cause, in two parts, both behaviours of Linux 6.18 the model lacked:

* the first direct reclaim runs the deferred split shrinker, which splits the folio and
  frees its 511 unmapped pages, so free memory rises from the min watermark far enough to
  change get_scan_count()'s balance: the priority-0 pass then scans the whole inactive
  list at once and activates every (young) page, freeing nothing, and the pass computed
  may_deactivate before, so no active page was aged. do_try_to_free_pages() retries such a
  run with sc->force_deactivate (sc->skipped_deactivate); the model returned 0;
* __alloc_pages_slowpath() tries the free lists again after reclaim whatever progress it
  counted (should_reclaim_retry(), and __alloc_pages_may_oom()'s last attempt): the
  shrinker's freed pages, which nr_reclaimed does not count, were there to take. The model
  went to the OOM killer as soon as reclaim reported 0.
"""

from __future__ import annotations

import vmsim
from vmsim.constants import MADV_DONTNEED, MADV_HUGEPAGE, MAP_ANONYMOUS, MAP_PRIVATE
from vmsim.mm import vmscan

P = 4096
M2 = 2 << 20
RW = 3


def _partly_mapped_thp(m: vmsim.Machine) -> vmsim.Process:
    a = m.spawn()
    b = a.mmap(0, 3 * M2, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    h = (b + M2 - 1) & -M2
    a.madvise(h, M2, MADV_HUGEPAGE)
    a.write(h, b"x")
    a.madvise(h + P, M2 - P, MADV_DONTNEED)
    head = a.pagemap(h, 1)[0] & ((1 << 55) - 1)
    assert m.memory.thp.deferred == {head: True}
    return a


def _write_96m(m: vmsim.Machine) -> tuple[vmsim.Process, int]:
    q = m.spawn()
    n = (96 << 20) // P
    c = q.mmap(0, n * P, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    for i in range(n):
        q.write(c + i * P, bytes([i % 251 + 1]))
    return q, c


def test_a_partly_mapped_thp_does_not_get_a_writer_oom_killed() -> None:
    m = vmsim.Machine(ram="64M", swap="128M")
    _partly_mapped_thp(m)
    q, c = _write_96m(m)
    v = m.memory.vmstat
    assert v["oom_kill"] == 0
    assert v["thp_split_page"] == 1  # the shrinker split it on the first direct reclaim
    assert m.memory.thp.deferred == {}
    assert m.memory.swap.free < m.memory.swap.total  # the writer's memory went to swap
    assert q.read(c, 1) == b"\x01"  # swapped out and back in
    assert q.read(c + 1000 * P, 1) == bytes([1000 % 251 + 1])
    m.check_memory()


def test_same_write_without_the_thp_swaps_as_well() -> None:
    m = vmsim.Machine(ram="64M", swap="128M")
    _write_96m(m)
    assert m.memory.vmstat["oom_kill"] == 0
    m.check_memory()


def test_direct_reclaim_retries_with_forced_deactivation() -> None:
    """The state of the first direct reclaim above: free memory at the min watermark, every
    inactive page young, a partly mapped THP queued. The passes of falling priority split
    the THP and activate every young page, freeing nothing; the retry with
    force_deactivate ages the active list (folio_referenced() in shrink_active_list()
    clears the accessed bits) and swaps 32 pages out."""
    m = vmsim.Machine(ram="64M", swap="128M")
    _partly_mapped_thp(m)
    mem = m.memory
    q = m.spawn()
    n = (96 << 20) // P
    c = q.mmap(0, n * P, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    i = 0
    while mem.frames.free_pages > mem.node.wmark_min + 1:
        q.write(c + i * P, b"y")
        i += 1
    assert mem.vmstat["allocstall_normal"] == 0
    assert vmscan.direct_reclaim(mem) >= 32
    assert mem.vmstat["thp_split_page"] == 1
    m.check_memory()
