"""What Linux shows of reclaim without changing any setting (this machine has no swap):
MADV_PAGEOUT evicts clean file pages (visible in mincore, smaps Rss and on the next access,
a major fault), and leaves anonymous pages in place. vmsim against the live kernel.

The file lives in a temporary directory on the test machine's disk; its page cache is emptied
with fsync + posix_fadvise(DONTNEED) first, so both sides start with nothing cached.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import vmsim
from vmsim.constants import (
    MADV_PAGEOUT,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
)

from .live import LiveChild
from .pages import WINDOW, _cpu
from .test_readahead import read_ahead_kb

pytestmark = pytest.mark.kernel

P = 4096
NPAGES = 8
O_RDONLY = 0


def _smaps_field(smaps: str, start: int, field: str) -> int:
    lines = smaps.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(f"{start:x}-"))
    return next(int(line.split()[1]) for line in lines[i + 1 :] if line.startswith(field + ":"))


def _rss(smaps: str, start: int) -> int:
    return _smaps_field(smaps, start, "Rss")


def _cold_file(path: Path, writable: bool) -> tuple[vmsim.Process, int]:
    """NPAGES distinct pages written to ``path`` on this machine's disk, none of them
    cached (fsync + POSIX_FADV_DONTNEED), and the same file in a vmsim machine with the
    disk's read_ahead_kb: the vmsim process and its descriptor for it."""
    data = b"".join(bytes([i + 1]) * P for i in range(NPAGES))
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    m = vmsim.Machine(read_ahead_kb=read_ahead_kb(path) or 128)
    p = m.spawn()
    inode = m.inode_for(str(path), (8, 1), path.stat().st_ino, len(data))
    for pg in range(NPAGES):
        inode.backing[pg] = data[pg * P : (pg + 1) * P]
    return p, p.open_inode(inode, writable=writable)


def _open_in_child(k: LiveChild, path: Path, flags: int) -> int:
    """Pin the child to one CPU (madvise_pageout() drains only the local CPU's LRU batches,
    and a folio still in a batch is not on the LRU, so it cannot be paged out) and open
    ``path`` there: its descriptor index for k.mmap()."""
    os.sched_setaffinity(k.pid, {_cpu()})
    ret, err = k.request(("sc", (2, str(path).encode(), flags, 0)))
    assert ret >= 0, err
    k.fds.append(ret)
    return len(k.fds) - 1


def test_pageout_evicts_clean_file_pages_and_keeps_anonymous_ones(tmp_path: Path) -> None:
    path = tmp_path / "pageout.bin"
    fa, aa = WINDOW, WINDOW + 0x100000
    p, sfd = _cold_file(path, writable=False)

    with LiveChild() as k:
        kfd = _open_in_child(k, path, O_RDONLY)

        def both_mincore(addr: int, length: int) -> tuple[bytes, bytes]:
            km = k.mincore(addr, length)
            return km.data or b"", p.mincore(addr, length)

        assert k.mmap(fa, NPAGES * P, PROT_READ, MAP_PRIVATE | MAP_FIXED, kfd, 0).err is None
        p.mmap(fa, NPAGES * P, PROT_READ, MAP_PRIVATE | MAP_FIXED, sfd, 0)
        flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
        assert k.mmap(aa, 2 * P, PROT_READ | PROT_WRITE, flags).err is None
        p.mmap(aa, 2 * P, PROT_READ | PROT_WRITE, flags)
        kmin, smin = both_mincore(fa, NPAGES * P)
        assert kmin == smin == bytes(NPAGES)  # nothing cached yet

        assert k.load(fa + 3 * P, 1) == p.read(fa + 3 * P, 1) == b"\4"
        k.store(aa, b"anon")
        p.write(aa, b"anon")
        kmin, smin = both_mincore(fa, NPAGES * P)
        assert kmin == smin  # read-around and fault-around
        assert _rss(k.smaps(), fa) == _rss(p.smaps(), fa)

        assert k.madvise(fa, NPAGES * P, MADV_PAGEOUT).err is None
        assert k.madvise(aa, 2 * P, MADV_PAGEOUT).err is None
        p.madvise(fa, NPAGES * P, MADV_PAGEOUT)
        p.madvise(aa, 2 * P, MADV_PAGEOUT)
        kmin, smin = both_mincore(fa, NPAGES * P)
        assert kmin == smin == bytes(NPAGES)  # the file pages are gone
        assert _rss(k.smaps(), fa) == _rss(p.smaps(), fa) == 0
        assert _rss(k.smaps(), aa) == _rss(p.smaps(), aa) == 4  # no swap: anon stays
        km, sm = both_mincore(aa, 2 * P)
        assert km == sm == b"\1\0"

        majflt = k.majflt
        assert k.load(fa + 5 * P, 1) == p.read(fa + 5 * P, 1) == b"\6"
        assert k.majflt - majflt == 1 and p.stats["majflt"] == 2
        kmin, smin = both_mincore(fa, NPAGES * P)
        assert kmin == smin


def test_pageout_leaves_a_dirty_shared_file_page_cached_for_writeback(tmp_path: Path) -> None:
    """MADV_PAGEOUT of a shared file mapping: a clean page is evicted; a written one is
    unmapped but stays in the page cache (reclaim does not write file pages, the flusher
    does), again after it is mapped and paged out a second time."""
    path = tmp_path / "dirty.bin"
    fa = WINDOW
    p, sfd = _cold_file(path, writable=True)
    rw = PROT_READ | PROT_WRITE
    with LiveChild() as k:
        kfd = _open_in_child(k, path, os.O_RDWR)
        assert k.mmap(fa, NPAGES * P, rw, MAP_SHARED | MAP_FIXED, kfd, 0).err is None
        p.mmap(fa, NPAGES * P, rw, MAP_SHARED | MAP_FIXED, sfd, 0)
        k.store(fa, b"dirty")
        p.write(fa, b"dirty")
        assert k.load(fa + P, 1) == p.read(fa + P, 1) == b"\2"
        assert k.madvise(fa, NPAGES * P, MADV_PAGEOUT).err is None
        p.madvise(fa, NPAGES * P, MADV_PAGEOUT)
        km, sm = k.mincore(fa, NPAGES * P).data, p.mincore(fa, NPAGES * P)
        assert km == sm == b"\1" + bytes(NPAGES - 1), (km, sm)
        ks, ss = k.smaps(), p.smaps()
        assert _smaps_field(ks, fa, "Rss") == _smaps_field(ss, fa, "Rss") == 0
        # mapped again by a read, the page is still dirty on both sides. (Reclaim flagged it
        # PG_reclaim, the bit PG_readahead shares: this fault starts asynchronous readahead
        # on both sides; whether the kernel's new pages are mapped yet depends on its I/O,
        # so only page 0 is compared here.)
        assert k.load(fa, 5) == p.read(fa, 5) == b"dirty"
        assert k.mincore(fa, P).data == p.mincore(fa, P) == b"\1"
        kd = [_smaps_field(k.smaps(), fa, f) for f in ("Shared_Dirty", "Private_Dirty")]
        sd = [_smaps_field(p.smaps(), fa, f) for f in ("Shared_Dirty", "Private_Dirty")]
        assert sum(kd) == sum(sd) == 4, (kd, sd)


@pytest.mark.parametrize("name", ["vmstat", "meminfo"])
def test_proc_lines_exist_on_the_live_kernel_in_its_order(name: str) -> None:
    """Every line of vmsim's /proc/vmstat and /proc/meminfo is one the live kernel prints,
    in the kernel's order (vmsim prints the subset it keeps)."""
    sep = None if name == "vmstat" else ":"
    live = [line.split(sep)[0] for line in Path(f"/proc/{name}").read_text().splitlines()]
    m = vmsim.Machine(ram="64M", swap="64M", zswap="zstd", ksm=True)
    ours = [line.split(sep)[0] for line in getattr(m, name)().splitlines()]
    missing = [n for n in ours if n not in live]
    assert not missing, f"not in the live /proc/{name}: {missing}"
    where = [live.index(n) for n in ours]
    assert where == sorted(where), f"out of the kernel's order: {ours}"
