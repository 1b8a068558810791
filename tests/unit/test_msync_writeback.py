"""msync(MS_SYNC) writes a shared file mapping's dirty pages back (mm/msync.c ->
vfs_fsync_range() -> file_write_and_wait_range()); MS_ASYNC writes nothing (a no-op since
2.6.19); tmpfs has nothing to write. Expected values from the kernel's behaviour, checked live
by tests/differential/test_msync_writeback.py."""

from __future__ import annotations

import vmsim
from vmsim.constants import (
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    MS_ASYNC,
    MS_INVALIDATE,
    MS_SYNC,
    PAGE_SIZE,
    PROT_READ,
    PROT_WRITE,
)
from vmsim.hw.pte import PAGE_DIRTY, PAGE_RW
from vmsim.mm.vma import Inode

P = PAGE_SIZE
A = 0x100000000000
RW = PROT_READ | PROT_WRITE


def _setup(npages: int = 4, path: str = "/data/f") -> tuple[vmsim.Process, vmsim.Machine, Inode]:
    m = vmsim.Machine(ram="64M")
    p = m.spawn()
    inode = m.inode_for(path, (8, 1), 77, npages * P)
    for pg in range(npages):
        inode.backing[pg] = bytes([pg + 1]) * P
    fd = p.open_inode(inode)
    p.mmap(A, npages * P, RW, MAP_SHARED | MAP_FIXED, fd, 0)
    return p, m, inode


def _field(p: vmsim.Process, name: str) -> int:
    lines = p.smaps().splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(f"{A:x}-"))
    for line in lines[i + 1 :]:
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise AssertionError(name)


def _meminfo_dirty(m: vmsim.Machine) -> int:
    line = next(x for x in m.meminfo().splitlines() if x.startswith("Dirty:"))
    return int(line.split()[1])


def test_ms_sync_writes_the_range_back_and_the_next_write_faults_again() -> None:
    p, m, inode = _setup()
    p.write(A, b"page0")
    p.write(A + 2 * P, b"page2")
    assert _field(p, "Private_Dirty") == 8  # one mapper: dirty file pages count as private
    assert _meminfo_dirty(m) == 8
    # the first two pages only: page 2 stays dirty, the disk keeps its old bytes there
    p.msync(A, 2 * P, MS_SYNC)
    assert inode.backing[0] == b"page0" + bytes([1]) * (P - 5)
    assert inode.backing[2] == bytes([3]) * P
    assert _field(p, "Private_Dirty") == 4
    assert _meminfo_dirty(m) == 4
    pte = p.pte(A)
    assert not pte & (PAGE_DIRTY | PAGE_RW)  # folio_mkclean(): clean and write-protected
    assert p.pte(A + 2 * P) & PAGE_DIRTY
    # the whole mapping: nothing dirty, the disk holds what the mapping shows
    p.msync(A, 4 * P, MS_SYNC)
    assert _field(p, "Private_Dirty") == 0 and _meminfo_dirty(m) == 0
    for pg in range(4):
        assert inode.backing[pg] == p.read(A + pg * P, P)
    # the next write faults (a minor write-protect fault) and dirties the page again
    before = p.stats["pgfault"]
    p.write(A, b"again")
    assert p.stats["pgfault"] == before + 1
    assert p.pte(A) & PAGE_DIRTY and p.pte(A) & PAGE_RW
    assert _field(p, "Private_Dirty") == 4 and _meminfo_dirty(m) == 4
    m.check_memory()


def test_ms_sync_of_a_later_vma_piece_writes_its_own_file_offset() -> None:
    m = vmsim.Machine(ram="64M")
    p = m.spawn()
    inode = m.inode_for("/data/g", (8, 1), 78, 8 * P)
    fd = p.open_inode(inode)
    # file pages 4..7 mapped at A
    p.mmap(A, 4 * P, RW, MAP_SHARED | MAP_FIXED, fd, 4 * P)
    p.write(A + P, b"x")
    p.msync(A + P, P, MS_SYNC)
    assert inode.backing[5][:1] == b"x"
    assert 1 not in inode.backing and 4 not in inode.backing


def test_ms_async_and_plain_msync_write_nothing() -> None:
    p, _m, inode = _setup()
    p.write(A, b"page0")
    for flags in (MS_ASYNC, 0, MS_INVALIDATE, MS_ASYNC | MS_INVALIDATE):
        p.msync(A, 4 * P, flags)
        assert _field(p, "Private_Dirty") == 4
        assert inode.backing[0] == bytes([1]) * P
    p.msync(A, 4 * P, MS_SYNC | MS_INVALIDATE)
    assert _field(p, "Private_Dirty") == 0
    assert inode.backing[0][:5] == b"page0"


def test_ms_sync_of_a_private_mapping_or_a_memfd_writes_nothing() -> None:
    m = vmsim.Machine(ram="64M")
    p = m.spawn()
    inode = m.inode_for("/data/h", (8, 1), 79, 2 * P)
    fd = p.open_inode(inode)
    p.mmap(A, 2 * P, RW, MAP_PRIVATE | MAP_FIXED, fd, 0)
    p.write(A, b"cow")
    p.msync(A, 2 * P, MS_SYNC)
    assert 0 not in inode.backing
    mfd = p.memfd_create("x")
    p.ftruncate(mfd, 2 * P)
    p.mmap(A + 4 * P, 2 * P, RW, MAP_SHARED | MAP_FIXED, mfd, 0)
    p.write(A + 4 * P, b"tmpfs")
    p.msync(A + 4 * P, 2 * P, MS_SYNC)
    # noop_fsync(): the page stays dirty and writable
    assert p.pte(A + 4 * P) & PAGE_DIRTY and p.pte(A + 4 * P) & PAGE_RW


def test_ms_sync_of_a_page_reclaim_flagged_rotates_it_like_the_flusher() -> None:
    """Reclaim leaves a dirty file page to writeback (PG_reclaim, activated); MS_SYNC's
    writeback ends as the flusher's does: folio_rotate_reclaimable() puts it at the reclaim
    end of the inactive list (pgrotated)."""
    from vmsim.constants import MADV_PAGEOUT
    from vmsim.phys.frames import PageFlag

    p, m, inode = _setup()
    p.write(A, b"page0")
    pfn = inode.pages[0]
    p.madvise(A, 4 * P, MADV_PAGEOUT)
    mem = m.memory
    assert mem.frames.flags(pfn) & PageFlag.RECLAIM
    p.msync(A, P, MS_SYNC)
    assert not mem.frames.flags(pfn) & (PageFlag.DIRTY | PageFlag.RECLAIM | PageFlag.ACTIVE)
    assert mem.node.lru.oldest("inactive_file", 1) == [pfn]
    vmstat = dict(line.split() for line in m.vmstat().splitlines())
    assert int(vmstat["pgrotated"]) == 1 and int(vmstat["nr_written"]) == 1
    assert inode.backing[0][:5] == b"page0"
