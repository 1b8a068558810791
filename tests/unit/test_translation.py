"""Translation: page-table entries bit by bit, faults, copy-on-write, TLB invalidation, frames.

Expected values are Linux's (arch/x86 page-table bits, mm/memory.c fault paths, the flush
ceiling of arch/x86/mm/tlb.c), written down by hand.
"""

from __future__ import annotations

import pytest
from layout import PAGE, RW, anon, at

import vmsim
from vmsim import (
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_WIPEONFORK,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_LOCKED,
    MAP_POPULATE,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_EXEC,
    PROT_NONE,
    PROT_READ,
    SEGV_ACCERR,
    SEGV_MAPERR,
    BusError,
    Segfault,
)
from vmsim.errors import OomKilled
from vmsim.hw.pte import decode
from vmsim.phys.frames import PageFlag

# upper-level entries of user tables: _PAGE_TABLE = P | RW | US | A | D
PAGE_TABLE_BITS = 0x67


def memfd(p, npages: int, name: str = "mem") -> int:
    fd = p.memfd_create(name)
    p.ftruncate(fd, npages * PAGE)
    return fd


def leaf(p, addr):
    return decode(p.mm.pt.get(addr).entry, 1)


# ----------------------------------------------------------------- entries, bit by bit
def test_written_anon_page_pte_bits(p):
    anon(p, 0, 1)
    p.write(at(0), b"x")
    t = p.translate(at(0), "read")
    assert [s.level for s in t.entries] == [4, 3, 2, 1]
    # every index is the 9 VA bits of its level
    for s in t.entries:
        assert s.idx == (at(0) >> (12 + 9 * (s.level - 1))) & 511
    for s in t.entries[:-1]:
        assert s.entry & 0xFFF == PAGE_TABLE_BITS
        assert s.entry >> 63 == 0
    f = decode(t.entries[-1].entry, 1)
    assert (f.present, f.writable, f.user, f.accessed, f.dirty, f.nx) == (
        True,
        True,
        True,
        True,
        True,
        True,
    )
    assert not f.global_ and not f.special and f.pkey == 0
    assert f.pfn == t.pfn and t.paddr == t.pfn << 12
    assert t.page_size == PAGE


def test_read_of_untouched_anon_maps_the_zero_page_read_only(p):
    anon(p, 0, 2)
    assert p.read(at(0), 8) == bytes(8)
    assert p.read(at(1), 8) == bytes(8)
    zero = p.machine.memory.frames.zero_pfn
    for page in (0, 1):
        f = leaf(p, at(page))
        assert f.present and not f.writable and f.special and f.nx
        assert f.pfn == zero
    assert "AnonPages" in p.machine.meminfo()
    assert p.stats["zero_page_maps"] == 2


def test_write_to_zero_page_copies_into_a_fresh_frame(p):
    anon(p, 0, 1)
    p.read(at(0), 1)
    t = p.translate(at(0), "write")
    assert t.faults == ("cow",)  # do_wp_page() -> wp_page_copy() from the zero page
    assert t.pfn != p.machine.memory.frames.zero_pfn
    assert leaf(p, at(0)).writable


def test_exec_mapping_has_nx_clear(p):
    anon(p, 0, 1, PROT_READ | PROT_EXEC)
    p.read(at(0), 1)
    assert not leaf(p, at(0)).nx
    t = p.translate(at(0), "exec")
    assert t.pfn == p.machine.memory.frames.zero_pfn


def test_exec_of_non_exec_mapping_is_accerr(p):
    anon(p, 0, 1)
    with pytest.raises(Segfault) as e:
        p.translate(at(0), "exec")
    assert e.value.code == SEGV_ACCERR


def test_prot_none_entry_is_protnone_with_inverted_pfn(p):
    anon(p, 0, 1)
    p.write(at(0), b"keep")
    pfn = p.translate(at(0), "read").pfn
    p.mprotect(at(0), PAGE, PROT_NONE)
    raw = p.mm.pt.get(at(0)).entry
    f = decode(raw, 1)
    assert f.kind == "protnone" and not f.present and f.global_  # _PAGE_PROTNONE is bit 8
    assert f.pfn == pfn and (raw >> 12) & 0xFFFFFFFFFF != pfn  # stored inverted (L1TF)
    with pytest.raises(Segfault) as e:
        p.read(at(0), 1)
    assert e.value.code == SEGV_ACCERR
    p.mprotect(at(0), PAGE, RW)
    assert p.read(at(0), 4) == b"keep"


def test_five_level_walk_has_five_entries():
    p = vmsim.Machine(five_level=True).spawn()
    anon(p, 0, 1)
    t = p.translate(at(0), "write")
    assert [s.level for s in t.entries] == [5, 4, 3, 2, 1]
    assert t.memory_refs == 5


def test_first_access_walks_second_hits_l1(p):
    anon(p, 0, 1)
    p.write(at(0), b"a")
    p.mm.mem.cpu.flush_mm(p.mm)  # INVPCID: TLB and paging-structure caches
    t = p.translate(at(0), "read")
    assert (t.tlb, t.memory_refs) == (None, 4)
    t = p.translate(at(0), "read")
    assert (t.tlb, t.memory_refs) == ("L1", 0)


# ---------------------------------------------------------------------- fork / COW
def test_fork_shares_frames_read_only_then_copies_on_write(p):
    frames = p.machine.memory.frames
    anon(p, 0, 2)
    p.write(at(0), b"parent0")
    p.write(at(1), b"parent1")
    c = p.fork()
    pfn0 = p.translate(at(0), "read").pfn
    assert c.translate(at(0), "read").pfn == pfn0
    assert (frames.refcount(pfn0), frames.mapcount(pfn0)) == (2, 2)
    assert not leaf(p, at(0)).writable and not leaf(c, at(0)).writable
    c.write(at(0), b"child")
    cpfn = c.translate(at(0), "read").pfn
    assert cpfn != pfn0
    assert (frames.refcount(pfn0), frames.mapcount(pfn0)) == (1, 1)
    assert p.read(at(0), 7) == b"parent0" and c.read(at(0), 7) == b"childt0"
    # nobody else holds the parent's page now: its write reuses it (no copy)
    t = p.translate(at(0), "write")
    assert t.pfn == pfn0 and t.faults == ("reuse",)
    # page 1 is still shared: the parent's write copies
    p.write(at(1), b"P")
    assert p.translate(at(1), "read").pfn != c.translate(at(1), "read").pfn
    assert c.read(at(1), 7) == b"parent1"
    p.machine.check_memory()


def test_stale_tlb_entry_cannot_write_a_page_shared_after_fork(p):
    anon(p, 0, 1)
    p.write(at(0), b"before")  # the TLB now holds a writable, dirty entry
    c = p.fork()
    p.write(at(0), b"AFTER!")
    assert c.read(at(0), 6) == b"before"


def test_fork_does_not_copy_shared_mapping_ptes(p):
    a = p.mmap(at(0), 2 * PAGE, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    p.write(a, b"shared")
    c = p.fork()
    assert c.mm.pt.get(a) is None  # vma_needs_copy(): no anon_vma, faulted in again
    assert c.read(a, 6) == b"shared"
    c.write(a + PAGE, b"from child")
    assert p.read(a + PAGE, 10) == b"from child"
    assert p.translate(a, "read").pfn == c.translate(a, "read").pfn


def test_dontfork_and_wipeonfork(p):
    anon(p, 0, 1)
    anon(p, 2, 1)
    p.write(at(0), b"no fork")
    p.write(at(2), b"wiped")
    p.madvise(at(0), PAGE, MADV_DONTFORK)
    p.madvise(at(2), PAGE, MADV_WIPEONFORK)
    c = p.fork()
    with pytest.raises(Segfault) as e:
        c.read(at(0), 1)
    assert e.value.code == SEGV_MAPERR
    assert c.read(at(2), 5) == bytes(5)
    assert p.read(at(2), 5) == b"wiped"
    p.machine.check_memory()


def test_exit_frees_every_frame():
    m = vmsim.Machine()
    p = m.spawn(layout="linux")
    fd = memfd(p, 4)
    p.mmap(at(0), 4 * PAGE, RW, MAP_SHARED | MAP_FIXED, fd, 0)
    anon(p, 8, 4)
    p.write(at(0), b"x" * (4 * PAGE))
    p.write(at(8), b"y" * (3 * PAGE))
    c = p.fork()
    c.write(at(8), b"z")
    c.read(at(1), 10)
    m.check_memory()
    assert m.memory.frames.used_pages > 0
    c.exit()
    m.check_memory()
    p.exit()
    m.check_memory()
    assert m.memory.frames.used_pages == 0
    assert m.processes == []
    with pytest.raises(ProcessLookupError):
        p.read(at(8), 1)


# ---------------------------------------------------------------- TLB invalidation
def test_mprotect_read_only_revokes_a_cached_writable_entry(p):
    anon(p, 0, 1)
    p.write(at(0), b"w")
    assert p.translate(at(0), "write").tlb == "L1"
    p.mprotect(at(0), PAGE, PROT_READ)
    with pytest.raises(Segfault) as e:
        p.write(at(0), b"x")
    assert e.value.code == SEGV_ACCERR
    assert p.read(at(0), 1) == b"w"


def test_munmap_revokes_cached_entries(p):
    anon(p, 0, 1)
    p.write(at(0), b"w")
    p.munmap(at(0), PAGE)
    with pytest.raises(Segfault) as e:
        p.read(at(0), 1)
    assert e.value.code == SEGV_MAPERR


def test_dontneed_revokes_cached_entries_and_frees_the_page(p):
    anon(p, 0, 1)
    p.write(at(0), b"secret")
    used = p.machine.memory.frames.used_pages
    p.madvise(at(0), PAGE, MADV_DONTNEED)
    assert p.machine.memory.frames.used_pages == used - 1
    assert p.read(at(0), 6) == bytes(6)


def test_mremap_move_revokes_old_entries_and_keeps_frames(p):
    anon(p, 0, 2)
    p.write(at(0), b"moved")
    pfn = p.translate(at(0), "read").pfn
    new = p.mremap(at(0), 2 * PAGE, 2 * PAGE, 3, at(10))  # MREMAP_MAYMOVE | MREMAP_FIXED
    assert new == at(10)
    assert p.translate(at(10), "read").pfn == pfn
    assert p.read(at(10), 5) == b"moved"
    with pytest.raises(Segfault):
        p.read(at(0), 1)


@pytest.mark.parametrize(("npages", "single"), [(33, True), (34, False)])
def test_flush_ceiling_33_pages(p, npages, single):
    anon(p, 0, npages)
    p.write(at(0), b"\1" * (npages * PAGE))
    before = p.machine.stats
    p.madvise(at(0), npages * PAGE, MADV_DONTNEED)
    after = p.machine.stats
    one = after["nr_tlb_local_flush_one"] - before["nr_tlb_local_flush_one"]
    full = after["nr_tlb_local_flush_all"] - before["nr_tlb_local_flush_all"]
    assert (one, full) == ((npages, 0) if single else (0, 1))


def test_pcid_keeps_entries_across_a_switch_until_the_slot_is_reused():
    m = vmsim.Machine()
    procs = [m.spawn() for _ in range(7)]
    for q in procs:
        anon(q, 0, 1)
        q.write(at(0), b"q")
    # six ASIDs per CPU: after 7 processes the first one's slot went to the seventh
    first = procs[0]
    assert first.translate(at(0), "read").tlb is None
    assert procs[1].translate(at(0), "read").tlb is None  # slot taken by procs[0] just now
    assert procs[6].translate(at(0), "read").tlb == "L1"  # its slot survived
    assert first.translate(at(0), "read").tlb == "L1"


# ---------------------------------------------------------------------- file pages
def test_private_file_write_copies_and_leaves_the_file(p):
    fd = memfd(p, 2)
    p.mmap(at(0), 2 * PAGE, RW, MAP_SHARED | MAP_FIXED, fd, 0)
    p.write(at(0), b"file data")
    p.mmap(at(4), 2 * PAGE, RW, MAP_PRIVATE | MAP_FIXED, fd, 0)
    assert p.read(at(4), 9) == b"file data"
    cache_pfn = p.translate(at(0), "read").pfn
    assert p.translate(at(4), "read").pfn == cache_pfn  # the page-cache page, read-only
    p.write(at(4), b"PRIVATE")
    assert p.translate(at(4), "read").pfn != cache_pfn
    assert p.read(at(0), 9) == b"file data"
    p.machine.check_memory()


def test_ftruncate_past_eof_is_sigbus_and_drops_pages(p):
    fd = memfd(p, 2)
    p.mmap(at(0), 2 * PAGE, RW, MAP_SHARED | MAP_FIXED, fd, 0)
    p.write(at(0), b"a" * (2 * PAGE))
    p.ftruncate(fd, PAGE + 10)
    assert p.read(at(1), 12) == b"a" * 10 + bytes(2)  # tail of the partial page zeroed
    p.ftruncate(fd, PAGE)
    with pytest.raises(BusError):
        p.read(at(1), 1)
    p.machine.check_memory()


def _regular_file(p, npages):
    inode = p.machine.inode_for("/data/file.bin", (8, 1), 4242, npages * PAGE)
    for pg in range(npages):
        inode.backing[pg] = bytes([pg + 1]) * PAGE
    return p.open_inode(inode)


def test_regular_file_read_is_a_major_fault_with_read_around_then_fault_around(p):
    fd = _regular_file(p, 40)
    p.mmap(at(0), 40 * PAGE, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0)
    assert p.read(at(0), 1) == b"\1"
    # filemap_fault() reads 32 pages around the fault (128 KiB read-around) and retries:
    # one major fault, and the retry's fault-around maps the cached pages of its 16-page
    # window (kernel-verified on ext4: one major fault maps every page of a small file)
    assert (p.stats["majflt"], p.stats["minflt"]) == (1, 0)
    assert p.mincore(at(0), 40 * PAGE) == b"\1" * 32 + b"\0" * 8
    present = [e >> 63 for e in p.pagemap(at(0), 40)]
    assert present == [1] * 16 + [0] * 24
    assert p.read(at(5), 1) == b"\6"  # mapped already: no fault
    # cached: a minor fault maps 16..31, except page 24: the read-around window's last
    # quarter starts there and carries the PG_readahead mark, which fault-around skips
    assert p.read(at(20), 1) == bytes([21])
    assert (p.stats["majflt"], p.stats["minflt"]) == (1, 1)
    assert [e >> 63 for e in p.pagemap(at(0), 40)] == [1] * 24 + [0] + [1] * 7 + [0] * 8
    # touching it starts async readahead of the next window (32..63, cut at EOF); the
    # fault is retried after dropping the per-VMA lock, which keeps it minor
    # (kernel-verified, tests/differential/test_readahead.py)
    assert p.read(at(24), 1) == bytes([25])
    assert (p.stats["majflt"], p.stats["minflt"]) == (1, 2)
    assert p.mincore(at(0), 40 * PAGE) == b"\1" * 40
    # page 32 carries the new mark: the fault at 39 maps 33..39 around it, minor
    assert p.read(at(39), 1) == bytes([40])
    assert (p.stats["majflt"], p.stats["minflt"]) == (1, 3)
    assert [e >> 63 for e in p.pagemap(at(0), 40)] == [1] * 32 + [0] + [1] * 7


# ------------------------------------------------------------------- reporting
def test_pagemap_bits(p):
    anon(p, 0, 3)
    fd = memfd(p, 1)
    p.mmap(at(4), PAGE, RW, MAP_SHARED | MAP_FIXED, fd, 0)
    p.write(at(0), b"w")
    p.read(at(1), 1)
    p.read(at(4), 1)
    e = p.pagemap(at(0), 6)
    present, file_, excl = 1 << 63, 1 << 61, 1 << 56
    pfn_mask = (1 << 55) - 1
    assert e[0] & (present | file_ | excl) == present | excl
    assert e[0] & pfn_mask == p.translate(at(0), "read").pfn
    assert e[1] & (present | file_ | excl) == present  # zero page: no page, not exclusive
    assert e[1] & pfn_mask == p.machine.memory.frames.zero_pfn
    assert e[2] == 0  # untouched
    assert e[3] == 0  # no VMA
    assert e[4] & (present | file_ | excl) == present | file_ | excl
    c = p.fork()
    assert p.pagemap(at(0), 1)[0] & excl == 0  # now mapped twice
    assert c.pagemap(at(0), 1)[0] & excl == 0


def test_mincore(p):
    anon(p, 0, 3)
    p.write(at(0), b"w")
    p.read(at(1), 1)
    assert p.mincore(at(0), 3 * PAGE) == b"\1\1\0"
    assert p.mincore(at(0), PAGE + 1) == b"\1\1"
    with pytest.raises(OSError) as e:
        p.mincore(at(0) + 1, PAGE)
    assert e.value.errno == 22  # EINVAL
    with pytest.raises(OSError) as e:
        p.mincore(at(0), 4 * PAGE)
    assert e.value.errno == 12  # ENOMEM: a hole


def test_mincore_file_page_cached_but_not_mapped(p):
    fd = memfd(p, 2)
    p.mmap(at(0), 2 * PAGE, RW, MAP_SHARED | MAP_FIXED, fd, 0)
    p.write(at(0), b"x")
    p.munmap(at(0), 2 * PAGE)
    p.mmap(at(4), 2 * PAGE, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0)
    assert p.mincore(at(4), 2 * PAGE) == b"\1\0"


def test_smaps_counters_private_and_shared(p):
    anon(p, 0, 4)
    p.write(at(0), b"x" * (2 * PAGE))
    p.read(at(2), 1)  # zero page: not counted
    c = p.fork()
    rec = _smaps_fields(p.smaps(), at(0))
    assert (rec["Rss"], rec["Pss"], rec["Shared_Dirty"], rec["Private_Dirty"]) == (8, 4, 8, 0)
    assert rec["Anonymous"] == 8
    c.write(at(0), b"c")
    rec = _smaps_fields(p.smaps(), at(0))
    assert (rec["Rss"], rec["Pss"], rec["Shared_Dirty"], rec["Private_Dirty"]) == (8, 6, 4, 4)


def _smaps_fields(text: str, start: int) -> dict[str, int]:
    lines = text.splitlines()
    head = f"{start:08x}-"
    i = next(i for i, line in enumerate(lines) if line.startswith(head))
    out = {}
    for line in lines[i + 1 :]:
        if line.startswith("VmFlags"):
            break
        k, v = line.split(":", 1)
        if v.strip().endswith("kB"):
            out[k] = int(v.split()[0])
    return out


def test_meminfo_counts_anon_pages_and_page_tables():
    m = vmsim.Machine(ram="64M")
    p = m.spawn()
    info = _meminfo(m)
    assert info["MemTotal"] == 64 * 1024 - 4  # the zero page is reserved
    assert info["PageTables"] == 4  # the top table (pgd_alloc)
    anon(p, 0, 4)
    p.write(at(0), b"x" * (3 * PAGE))
    info = _meminfo(m)
    assert info["AnonPages"] == 12
    assert info["PageTables"] == 16  # PGD + PUD + PMD + PTE tables
    assert info["MemFree"] == 64 * 1024 - 4 - 12 - 16


def _meminfo(m) -> dict[str, int]:
    out = {}
    for line in m.meminfo().splitlines():
        k, v = line.split(":")
        if k.startswith("HugePages_"):  # counts, not kB (hugetlb_report_meminfo())
            continue
        assert v.endswith(" kB") and len(k) + 1 + len(v) == 27
        out[k] = int(v.split()[0])
    return out


def test_smaps_rollup_sums_every_vma(p):
    anon(p, 0, 2)
    anon(p, 4, 2, PROT_READ)
    p.write(at(0), b"x" * PAGE)
    p.read(at(4), 1)
    text = p.smaps_rollup()
    lines = text.splitlines()
    assert lines[0].startswith(f"{at(0):08x}-{at(6):08x} ---p 00000000 00:00 0 ")
    assert lines[0].endswith(" [rollup]")
    fields = [line.split(":")[0] for line in lines[1:]]
    assert fields[:6] == ["Rss", "Pss", "Pss_Dirty", "Pss_Anon", "Pss_File", "Pss_Shmem"]
    assert "Rss:                   4 kB" in lines


# --------------------------------------------------------------------- peek / poke
def test_poke_into_read_only_private_file_page_breaks_cow(p):
    fd = memfd(p, 1)
    p.mmap(at(0), PAGE, RW, MAP_SHARED | MAP_FIXED, fd, 0)
    p.write(at(0), b"original")
    p.mmap(at(2), PAGE, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0)
    assert p.poke(at(2), b"BREAKPNT") == 8
    assert p.read(at(2), 8) == b"BREAKPNT"
    assert p.read(at(0), 8) == b"original"  # the file is untouched
    assert not leaf(p, at(2)).writable  # still read-only for the process itself
    with pytest.raises(Segfault):
        p.write(at(2), b"x")


def test_peek_reads_prot_none_memory_and_eio_when_unmapped(p):
    anon(p, 0, 1)
    p.write(at(0), b"hidden")
    p.mprotect(at(0), PAGE, PROT_NONE)
    assert p.peek(at(0), 6) == b"hidden"
    with pytest.raises(OSError) as e:
        p.peek(at(5), 1)
    assert e.value.errno == 5  # EIO
    assert p.peek(at(0) + PAGE - 2, 8) == bytes(2)  # stops at the hole


def test_poke_into_read_only_shared_mapping_is_refused(p):
    fd = memfd(p, 1)
    p.mmap(at(0), PAGE, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0)
    with pytest.raises(OSError) as e:
        p.poke(at(0), b"x")
    assert e.value.errno == 5


def test_isolation_private_pages(p):
    anon(p, 0, 1)
    c = p.fork()
    c.write(at(0), b"child only")
    q = p.machine.spawn()
    anon(q, 0, 1)
    assert p.read(at(0), 10) == bytes(10)
    assert q.read(at(0), 10) == bytes(10)


def test_populate_beyond_ram_without_swap_is_an_oom_kill():
    m = vmsim.Machine(ram="1M", overcommit_memory=1)
    p = m.spawn()
    with pytest.raises(OomKilled):
        p.mmap(0, 2 << 20, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE)
    assert not p.alive and p not in m.processes
    assert "oom_kill 1\n" in m.vmstat()
    m.check_memory()
    assert m.memory.frames.used_pages == 0  # everything it had is free again


def _pfn(p, addr) -> int:
    return p.pagemap(addr, 1)[0] & ((1 << 55) - 1)


def _flags(p, pfn) -> int:
    return p.machine.memory.frames.flags(pfn)


def test_populate_of_a_locked_mapping_clears_pg_referenced_of_a_page_used_before(p):
    # The page was referenced (its young PTE was zapped). MAP_LOCKED populates it: the fault
    # mlocks it into the per-CPU mlock batch (not unevictable yet), GUP's FOLL_TOUCH then
    # finds PG_referenced set and activates it, clearing PG_referenced; the batch drain
    # clears PG_active again (seeds 5011 and 5054 of the page-level fuzzer, kernel-checked)
    fd = memfd(p, 1)
    p.mmap(at(0), PAGE, RW, MAP_SHARED | MAP_FIXED, fd, 0)
    p.write(at(0), b"m")
    pfn = _pfn(p, at(0))
    p.munmap(at(0), PAGE)
    assert _flags(p, pfn) & PageFlag.REFERENCED
    p.mmap(at(0), PAGE, PROT_READ, MAP_SHARED | MAP_FIXED | MAP_LOCKED, fd, 0)
    assert _pfn(p, at(0)) == pfn
    flags = _flags(p, pfn)
    assert flags & PageFlag.MLOCKED and not flags & (PageFlag.REFERENCED | PageFlag.ACTIVE)


def test_mlock_of_a_mapped_page_keeps_pg_referenced(p):
    # mlock(2) on a page already mapped: mlock_fixup() mlocks it and drains the batch
    # (unevictable), so the populate's FOLL_TOUCH finds it unevictable: no change
    fd = memfd(p, 1)
    p.mmap(at(0), PAGE, RW, MAP_SHARED | MAP_FIXED, fd, 0)
    p.write(at(0), b"m")
    pfn = _pfn(p, at(0))
    p.munmap(at(0), PAGE)
    p.mmap(at(0), PAGE, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0)
    p.read(at(0), 1)
    assert _flags(p, pfn) & PageFlag.REFERENCED
    p.mlock(at(0), PAGE)
    assert _flags(p, pfn) & PageFlag.REFERENCED
