"""hugetlbfs pools, reservations and huge leaves, worked out by hand from mm/hugetlb.c and
fs/hugetlbfs/inode.c (Linux 6.18). The pools cannot be changed on the reference machine
(never write nr_hugepages there), so every expected number below is derived from the
source, function by function; tests/differential/test_hugetlb.py checks what an empty pool
shows against the live kernel.
"""

from __future__ import annotations

import errno

import pytest

from vmsim import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_HUGE_SHIFT,
    MAP_HUGETLB,
    MAP_NORESERVE,
    MAP_PRIVATE,
    MAP_SHARED,
    MFD_HUGETLB,
    PROT_READ,
    PROT_WRITE,
    BusError,
    Machine,
)

RW = PROT_READ | PROT_WRITE
M2 = 2 << 20
G1 = 1 << 30
PAGE = 4096
HUGE = MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB
HUGE_1G = 30 << MAP_HUGE_SHIFT


def pool(m: Machine) -> tuple[int, int, int, int]:
    """(HugePages_Total, HugePages_Free, HugePages_Rsvd, HugePages_Surp) from meminfo."""
    rows = dict(line.split(":") for line in m.meminfo().splitlines())
    return tuple(  # type: ignore[return-value]
        int(rows[k])
        for k in ("HugePages_Total", "HugePages_Free", "HugePages_Rsvd", "HugePages_Surp")
    )


def meminfo_kb(m: Machine, key: str) -> int:
    rows = dict(line.split(":") for line in m.meminfo().splitlines())
    return int(rows[key].split()[0])


def smaps_field(p, start: int, field: str) -> int:
    lines = p.smaps().splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(f"{start:08x}-"))
    for line in lines[i + 1 :]:
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {start:#x}")


# --- meminfo -----------------------------------------------------------------------------------
def test_meminfo_lines_of_an_empty_pool_are_this_machines():
    """hugetlb_report_meminfo(): "HugePages_Total:   %5lu" ... "Hugepagesize:   %8lu kB",
    then "Hugetlb:        %8lu kB"; the values of /proc/meminfo on the reference machine
    (nr_hugepages 0, default size 2 MiB)."""
    tail = Machine().meminfo().splitlines()[-6:]
    assert tail == [
        "HugePages_Total:       0",
        "HugePages_Free:        0",
        "HugePages_Rsvd:        0",
        "HugePages_Surp:        0",
        "Hugepagesize:       2048 kB",
        "Hugetlb:               0 kB",
    ]


def test_pool_pages_leave_memfree_and_count_in_hugetlb():
    """A pool of 4 x 2 MiB and 1 x 1 GiB: HugePages_* describe the default (2 MiB) hstate
    only, Hugetlb: sums every hstate (8 MiB + 1 GiB = 1056768 kB); the pages come out of
    MemFree (they are allocated from the buddy allocator: alloc_fresh_hugetlb_folio())."""
    plain = Machine(ram="4G")
    m = Machine(ram="4G", hugepages={"2M": 4, "1G": 1})
    assert pool(m) == (4, 4, 0, 0)
    assert meminfo_kb(m, "Hugetlb") == 8192 + 1048576
    assert meminfo_kb(plain, "MemFree") - meminfo_kb(m, "MemFree") == 8192 + 1048576
    assert m.hugepage_stats("1G")["nr_hugepages"] == 1
    m.check_memory()


def test_pool_stops_growing_when_ram_runs_out():
    """set_max_huge_pages() allocates until alloc_pool_huge_folio() fails: 64 MiB of RAM
    (one frame is the zero page, so 16383 pages are free; min watermark: min_free_kbytes =
    sqrt(65532 * 16) = 1023 kB, 255 pages) holds 31 pages of 512 frames: each left more than 255 + 511 pages free; for a 32nd
    only 511 are left (under the watermark, and no free order-9 block)."""
    m = Machine(ram="64M")
    assert m.set_nr_hugepages("2M", 100) == 31
    assert pool(m)[:2] == (31, 31)


def test_pool_page_is_refused_at_the_min_watermark():
    """__zone_watermark_ok(): free pages minus (2**9 - 1) must stay above the min watermark
    (8 MiB of RAM: min_free_kbytes = sqrt(8188 * 16) = 361 kB, 90 pages). With 562 pages
    free, one free order-9 block among them, 562 - 511 = 51 <= 90: no pool page
    (htlb_buddy_alloc_fail), although a block of the order is free."""
    m = Machine(ram="8M")
    f = m.memory.frames
    for _ in range(2047 - 562):
        f.alloc(0)
    assert f.free_pages == 562 and f.free_blocks(9) == 1
    assert m.set_nr_hugepages("2M", 1) == 0
    assert "htlb_buddy_alloc_fail 1" in m.vmstat()


def test_bad_pool_options():
    with pytest.raises(ValueError, match="no huge page size '4M'"):
        Machine(hugepages={"4M": 1})
    with pytest.raises(ValueError, match="count >= 0"):
        Machine(hugepages={"2M": -1})


# --- reservations ------------------------------------------------------------------------------
def test_mmap_reserves_and_the_fault_consumes():
    """hugetlbfs_file_mmap() -> hugetlb_reserve_pages(): a private mapping reserves every
    huge page of its range (chg = to - from), HugePages_Rsvd 3; a fault takes a reserved
    page (Free 4 -> 3) and consumes its reservation (Rsvd 3 -> 2); munmap gives the unused
    reservations back (hugetlb_vm_op_close()) and the page to the pool (free_huge_folio())."""
    m = Machine(ram="1G", hugepages={"2M": 4})
    p = m.spawn()
    a = p.mmap(0, 3 * M2, RW, HUGE)
    assert a % M2 == 0
    assert pool(m) == (4, 4, 3, 0)
    p.write(a + M2 + 7, b"x")
    assert pool(m) == (4, 3, 2, 0)
    m.check_memory()
    p.munmap(a, 3 * M2)
    assert pool(m) == (4, 4, 0, 0)
    m.check_memory()


def test_mmap_that_the_pool_cannot_reserve_is_enomem():
    """hugetlb_acct_memory(): 3 pages asked of a pool of 2 with no overcommit: ENOMEM, and
    nothing is left reserved."""
    m = Machine(ram="1G", hugepages={"2M": 2})
    p = m.spawn()
    with pytest.raises(OSError) as e:
        p.mmap(0, 3 * M2, RW, HUGE)
    assert e.value.errno == errno.ENOMEM
    assert pool(m) == (2, 2, 0, 0)
    assert p.maps().count("anon_hugepage") == 0


def test_noreserve_mapping_gets_sigbus_when_the_pool_runs_dry():
    """MAP_NORESERVE: no reservation at mmap (VM_NORESERVE); the third fault finds no free
    page and no surplus allowed: alloc_hugetlb_folio() fails with -ENOSPC, the fault is
    VM_FAULT_SIGBUS (BUS_ADRERR at the address touched)."""
    m = Machine(ram="1G", hugepages={"2M": 2})
    p = m.spawn()
    a = p.mmap(0, 3 * M2, RW, HUGE | MAP_NORESERVE)
    assert pool(m) == (2, 2, 0, 0)
    p.write(a, b"1")
    p.write(a + M2, b"2")
    with pytest.raises(BusError) as e:
        p.write(a + 2 * M2 + 5, b"3")
    assert e.value.addr == a + 2 * M2 + 5
    assert pool(m) == (2, 0, 0, 0)
    m.check_memory()


def test_reservation_of_one_mapping_is_not_taken_by_another():
    """dequeue_hugetlb_folio_vma(): without a reservation a fault may take a page only if
    free_huge_pages - resv_huge_pages > 0. Mapping A reserved both pages; B (NORESERVE)
    gets SIGBUS although two pages are free."""
    m = Machine(ram="1G", hugepages={"2M": 2})
    p = m.spawn()
    a = p.mmap(0, 2 * M2, RW, HUGE)
    b = p.mmap(0, M2, RW, HUGE | MAP_NORESERVE)
    with pytest.raises(BusError):
        p.write(b, b"x")
    p.write(a, b"a")
    p.write(a + M2, b"a")
    assert pool(m) == (2, 0, 0, 0)


def test_surplus_pages_cover_a_reservation_under_overcommit():
    """gather_surplus_pages(): 3 pages reserved with 1 free and nr_overcommit_hugepages 2:
    needed = (0 + 3) - 1 = 2 surplus pages are allocated (Total 3, Surp 2); unmapping
    without a fault returns them (return_unused_surplus_pages()): back to 1 page, 0 surplus."""
    m = Machine(ram="1G", hugepages={"2M": 1}, hugepages_overcommit={"2M": 2})
    p = m.spawn()
    a = p.mmap(0, 3 * M2, RW, HUGE)
    assert pool(m) == (3, 3, 3, 2)
    p.write(a + 2 * M2, b"s")
    assert pool(m) == (3, 2, 2, 2)
    m.check_memory()
    p.munmap(a, 3 * M2)
    assert pool(m) == (1, 1, 0, 0)
    m.check_memory()


def test_surplus_page_at_fault_goes_back_to_the_buddy_allocator():
    """A NORESERVE fault with the pool empty allocates a surplus page
    (alloc_surplus_hugetlb_folio(), while surplus < nr_overcommit_hugepages); freeing it
    gives it back to the buddy allocator (free_huge_folio() with surplus pages)."""
    m = Machine(ram="1G", hugepages_overcommit={"2M": 1})
    p = m.spawn()
    free0 = meminfo_kb(m, "MemFree")  # after the process's top page table
    a = p.mmap(0, 2 * M2, RW, HUGE | MAP_NORESERVE)
    p.write(a, b"x")
    assert pool(m) == (1, 0, 0, 1)
    with pytest.raises(BusError):
        p.write(a + M2, b"y")
    p.munmap(a, 2 * M2)
    assert pool(m) == (0, 0, 0, 0)
    assert meminfo_kb(m, "MemFree") == free0


def test_shrinking_the_pool_keeps_pages_in_use_as_surplus():
    """set_max_huge_pages(0) with one page mapped: the free pages go (min_count = in use),
    the mapped one becomes surplus (adjust_pool_surplus(+1)) and leaves when unmapped."""
    m = Machine(ram="1G", hugepages={"2M": 3})
    p = m.spawn()
    a = p.mmap(0, M2, RW, HUGE)
    p.write(a, b"x")
    m.set_nr_hugepages("2M", 0)
    assert pool(m) == (1, 0, 0, 1)
    p.munmap(a, M2)
    assert pool(m) == (0, 0, 0, 0)
    m.check_memory()


# --- huge leaves -------------------------------------------------------------------------------
def test_2m_page_is_one_pmd_leaf():
    """hugetlb_no_page() installs one PMD entry with PS (make_huge_pte()); the walk stops at
    level 2 and the TLB entry covers 2 MiB; the contents outlive a munmap of nothing else."""
    m = Machine(ram="1G", hugepages={"2M": 1})
    p = m.spawn()
    a = p.mmap(0, M2, RW, HUGE)
    p.write(a + M2 - 3, b"end")
    t = p.translate(a + 12345, "read")
    assert t.page_size == M2
    assert [s.level for s in p.page_walk(a)][-1] == 2
    assert p.read(a + M2 - 3, 3) == b"end"
    assert p.read(a, 4) == bytes(4)  # a hugetlb page is zeroed (no zero page for hugetlb)


def test_1g_page_is_one_pud_leaf():
    """MAP_HUGE_1GB: hstate_sizelog(30); the gigantic page is a contiguous, 1 GiB aligned run
    (alloc_contig_pages()), mapped by a PUD entry with PS; HugePages_* (the 2 MiB default
    hstate) stay 0 while Hugetlb: counts the 1 GiB."""
    m = Machine(ram="4G", hugepages={"1G": 1})
    p = m.spawn()
    a = p.mmap(0, PAGE, RW, HUGE | HUGE_1G)
    assert a % G1 == 0
    p.write(a + G1 - 1, b"z")
    t = p.translate(a + G1 - 1, "read")
    assert t.page_size == G1
    assert t.pfn % (G1 // PAGE) == (G1 // PAGE) - 1
    assert [s.level for s in p.page_walk(a)][-1] == 3
    assert pool(m) == (0, 0, 0, 0)
    assert meminfo_kb(m, "Hugetlb") == 1048576
    assert smaps_field(p, a, "KernelPageSize") == 1048576
    assert smaps_field(p, a, "MMUPageSize") == 1048576
    assert smaps_field(p, a, "Private_Hugetlb") == 1048576
    m.check_memory()


def test_smaps_counts_hugetlb_apart_from_rss():
    """smaps_hugetlb_range(): a huge page mapped once is Private_Hugetlb; Rss and Anonymous
    do not count it; VmFlags show de (VM_DONTEXPAND) and ht (VM_HUGETLB), and nr only with
    MAP_NORESERVE."""
    m = Machine(ram="1G", hugepages={"2M": 2})
    p = m.spawn()
    a = p.mmap(0, 2 * M2, RW, HUGE)
    p.write(a, b"x")
    assert smaps_field(p, a, "KernelPageSize") == 2048
    assert smaps_field(p, a, "Private_Hugetlb") == 2048
    assert smaps_field(p, a, "Shared_Hugetlb") == 0
    assert smaps_field(p, a, "Rss") == 0
    assert smaps_field(p, a, "Anonymous") == 0
    assert "VmFlags: rd wr mr mw me de ht \n" in p.smaps()
    b = p.mmap(0, M2, RW, HUGE | MAP_NORESERVE)
    assert smaps_field(p, b, "Private_Hugetlb") == 0
    assert "VmFlags: rd wr mr mw me de nr ht \n" in p.smaps()


def test_fork_shares_then_copies_on_write():
    """copy_hugetlb_page_range(): parent and child map the same huge page read-only; the
    child's write copies it (hugetlb_wp(), a page from the pool: the child has no
    reservation), the parent keeps its contents; both see Private_Hugetlb afterwards."""
    m = Machine(ram="1G", hugepages={"2M": 3})
    p = m.spawn()
    a = p.mmap(0, M2, RW, HUGE)
    p.write(a + 5, b"hello")
    c = p.fork()
    assert smaps_field(p, a, "Shared_Hugetlb") == 2048
    assert c.read(a + 5, 5) == b"hello"
    m.check_memory()
    c.write(a + 5, b"HELLO")
    assert p.read(a + 5, 5) == b"hello"
    assert c.read(a + 5, 5) == b"HELLO"
    assert pool(m) == (3, 1, 0, 0)
    assert smaps_field(p, a, "Private_Hugetlb") == 2048
    m.check_memory()
    c.exit()
    assert pool(m) == (3, 2, 0, 0)
    m.check_memory()


def test_shared_hugetlb_memfd_between_processes():
    """memfd_create(MFD_HUGETLB): a hugetlbfs file; two MAP_SHARED mappings (parent and
    forked child) see one page-cache page (Shared_Hugetlb); the shared mapping reserved
    one page in the inode's map, consumed by the first fault; ftruncate to 0 unmaps it
    everywhere and a new access is past i_size: SIGBUS."""
    m = Machine(ram="1G", hugepages={"2M": 2})
    p = m.spawn()
    fd = p.memfd_create("pool", MFD_HUGETLB)
    p.ftruncate(fd, M2)
    a = p.mmap(0, M2, RW, MAP_SHARED, fd)
    assert pool(m) == (2, 2, 1, 0)
    c = p.fork()
    c.write(a + 1, b"shared")
    assert p.read(a + 1, 6) == b"shared"
    assert pool(m) == (2, 1, 0, 0)
    assert smaps_field(p, a, "Shared_Hugetlb") == 2048
    assert f"00:11 {p.files[fd].inode.ino}" in p.maps()
    m.check_memory()
    p.ftruncate(fd, 0)
    assert pool(m) == (2, 2, 0, 0)
    with pytest.raises(BusError):
        c.read(a, 1)
    m.check_memory()


def test_hugetlb_memfd_sizes():
    """hugetlbfs_setattr(): a size that is not a multiple of the huge page size is EINVAL;
    memfd_create() with an unknown MFD_HUGE_* size is ENODEV (hugetlb_file_setup())."""
    p = Machine().spawn()
    fd = p.memfd_create("h", MFD_HUGETLB)
    with pytest.raises(OSError) as e:
        p.ftruncate(fd, PAGE)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        p.memfd_create("h", MFD_HUGETLB | 20 << MAP_HUGE_SHIFT)
    assert e.value.errno == errno.ENODEV


def test_alignment_errnos():
    """hugetlb_get_unmapped_area(): MAP_FIXED at an address that is not huge page aligned
    is EINVAL; hugetlb_vm_op_split(): munmap/mprotect that would split a huge page is
    EINVAL and changes nothing."""
    m = Machine(ram="1G", hugepages={"2M": 2})
    p = m.spawn()
    with pytest.raises(OSError) as e:
        p.mmap(0x100000001000, M2, RW, HUGE | MAP_FIXED)
    assert e.value.errno == errno.EINVAL
    a = p.mmap(0x100000000000, 2 * M2, RW, HUGE | MAP_FIXED)
    before = p.maps()
    for call in (
        lambda: p.munmap(a, PAGE),
        lambda: p.munmap(a + M2 - PAGE, 2 * PAGE),
        lambda: p.mprotect(a + PAGE, M2, PROT_READ),
    ):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EINVAL
    assert p.maps() == before
    assert pool(m) == (2, 2, 2, 0)


def test_mprotect_of_a_mapped_huge_page():
    """hugetlb_change_protection(): read-only after mprotect(PROT_READ); writable again
    after mprotect(RW) only through the write fault (vm_page_prot of a private mapping has
    no write), which reuses the exclusive page (hugetlb_wp())."""
    m = Machine(ram="1G", hugepages={"2M": 1})
    p = m.spawn()
    a = p.mmap(0, M2, RW, HUGE)
    p.write(a, b"x")
    p.mprotect(a, M2, PROT_READ)
    assert not p.pte(a) & 2
    p.mprotect(a, M2, RW)
    p.write(a, b"y")
    assert p.read(a, 1) == b"y"
    assert pool(m) == (1, 0, 0, 0)
    m.check_memory()
    m.check_tlb()


def test_exit_returns_pages_and_reservations():
    m = Machine(ram="1G", hugepages={"2M": 4})
    p = m.spawn()
    a = p.mmap(0, 4 * M2, RW, HUGE)
    p.write(a, b"x")
    assert pool(m) == (4, 3, 3, 0)
    p.exit()
    assert pool(m) == (4, 4, 0, 0)
    m.check_memory()


def test_hugetlb_pages_are_not_anon_pages_or_cached():
    """hugetlb folios are not counted in NR_ANON_MAPPED or NR_FILE_PAGES (their rmap
    helpers, hugetlb_add_new_anon_rmap() / hugetlb_add_file_rmap(), touch no lruvec
    counter): AnonPages, Cached and Shmem stay where they were."""
    m = Machine(ram="1G", hugepages={"2M": 2})
    p = m.spawn()
    before = [meminfo_kb(m, k) for k in ("AnonPages", "Cached", "Shmem", "Mapped")]
    a = p.mmap(0, M2, RW, HUGE)
    p.write(a, b"x")
    fd = p.memfd_create("c", MFD_HUGETLB)
    p.ftruncate(fd, M2)
    b = p.mmap(0, M2, RW, MAP_SHARED, fd)
    p.write(b, b"y")
    assert [meminfo_kb(m, k) for k in ("AnonPages", "Cached", "Shmem", "Mapped")] == before
    m.check_memory()


def test_pagemap_gives_each_subpage_its_frame():
    """pagemap_hugetlb_range(): every 4 KiB subpage of a mapped huge page reads present
    with the head's frame plus its index (contiguous, 2 MiB aligned), exclusive (mapped
    once), not a file page; the huge page is not in the task's RSS (oom_badness())."""
    m = Machine(ram="1G", hugepages={"2M": 1})
    p = m.spawn()
    a = p.mmap(0, M2, RW, HUGE)
    base = m.oom_score(p)
    p.write(a, b"x")
    entries = p.pagemap(a, 512)
    frames = [e & ((1 << 55) - 1) for e in entries]
    assert frames[0] % 512 == 0
    assert frames == list(range(frames[0], frames[0] + 512))
    assert all(e >> 63 & 1 and e >> 56 & 1 and not e >> 61 & 1 for e in entries)
    # only the page tables the fault added (PUD, PMD tables) count, not 512 pages of RSS
    assert m.oom_score(p) - base == 2


def test_shm_hugetlb_reserves_at_shmget_and_lives_until_rmid():
    """newseg() with SHM_HUGETLB: hugetlb_file_setup(HUGETLB_SHMFS_INODE) reserves the
    rounded-up size at shmget (Rsvd 1; a second segment the pool cannot cover is ENOMEM);
    shmat maps 2 MiB and reserves nothing more (S_PRIVATE); the page stays in the segment
    after shmdt (its contents too) and goes at IPC_RMID with nothing attached."""
    m = Machine(ram="1G", hugepages={"2M": 2})
    p = m.spawn()
    ipc_creat, shm_hugetlb = 0o1000, 0o4000
    shmid = p.shmget(0, PAGE, ipc_creat | shm_hugetlb | 0o600)
    assert pool(m) == (2, 2, 1, 0)
    with pytest.raises(OSError) as e:
        p.shmget(0, 3 * M2, ipc_creat | shm_hugetlb | 0o600)
    assert e.value.errno == errno.ENOMEM
    a = p.shmat(shmid)
    assert smaps_field(p, a, "Size") == 2048
    assert pool(m) == (2, 2, 1, 0)
    p.write(a + 9, b"seg")
    assert pool(m) == (2, 1, 0, 0)
    p.shmdt(a)
    assert pool(m) == (2, 1, 0, 0)
    b = p.shmat(shmid)
    assert p.read(b + 9, 3) == b"seg"
    p.shmctl(shmid, 0)  # IPC_RMID: destroyed at the last detach
    p.shmdt(b)
    assert pool(m) == (2, 2, 0, 0)
    m.check_memory()


def test_mremap_moves_huge_leaves_and_refuses_growth():
    """align_hugetlb() (mm/mremap.c): a move of a populated huge page keeps its frame and
    contents (move_hugetlb_page_tables(): the PMD leaf moves whole); growing a hugetlb
    mapping is EINVAL, and so is an unaligned source."""
    m = Machine(ram="1G", hugepages={"2M": 2})
    p = m.spawn()
    a = p.mmap(0, M2, RW, HUGE)
    p.write(a + 77, b"moved")
    pfn = p.translate(a, "read").pfn
    b = p.mremap(a, M2, M2, 3, 0x200000000000)  # MREMAP_MAYMOVE | MREMAP_FIXED
    assert b == 0x200000000000
    assert p.read(b + 77, 5) == b"moved"
    assert p.translate(b, "read").pfn == pfn
    assert p.translate(b, "read").page_size == M2
    for args in ((b, M2, 2 * M2, 1, 0), (b + PAGE, PAGE, PAGE, 1, 0)):
        with pytest.raises(OSError) as e:
            p.mremap(*args)
        assert e.value.errno == errno.EINVAL
    assert pool(m) == (2, 1, 0, 0)
    m.check_memory()
    m.check_tlb()
