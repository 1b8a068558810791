"""mmap file readahead, vmsim against the live kernel, page by page.

mm/filemap.c do_sync_mmap_readahead() / do_async_mmap_readahead() and mm/readahead.c: a fault
on an uncached page of a file mapping reads a window around it (read-around), a fault on the
folio that carries PG_readahead starts the next, larger window (async readahead), MADV_RANDOM
reads only the faulting page, MADV_SEQUENTIAL reads forward, a VM_EXEC mapping reads forward
from the fault, clipped to the VMA, without an async mark.

The file (64 MiB, page N holds the 4-byte little-endian number N repeated) lives in a temporary
directory on the test machine's disk; the window size is that disk's
``queue/read_ahead_kb``, given to ``vmsim.Machine(read_ahead_kb=)``.  Before each scenario the
file's page cache is emptied with fsync + posix_fadvise(DONTNEED) (nothing else is touched).

Each scenario is driven on the kernel first (all steps), then on vmsim, then compared step by
step: the mincore() vector of the mapping, the mincore() vector of a second, never touched
PROT_READ mapping of the whole file (it shows the whole file's page cache, also outside a
partial VMA), the major-fault delta of the load, and the value loaded.

Readahead I/O completes asynchronously, and mincore() reports a page only once its folio is
uptodate, so right after a load the kernel may show part of the window (seen here: the first
1,280 pages of a 2,048-page sync read-around).  After every step the kernel side therefore
waits until the I/O has finished: until the number of resident pages of the whole-file vector
equals cachestat()'s nr_cache (every folio in the cache, uptodate or still being read; all of
the window's folios are in the cache when the faulting load returns), or, without cachestat()
(Linux < 6.5), until mincore() has not changed for STABLE_S seconds.  vmsim is synchronous.
"""

from __future__ import annotations

import ctypes
import errno
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import vmsim
from vmsim.constants import (
    MADV_RANDOM,
    MADV_SEQUENTIAL,
    MAP_FIXED,
    MAP_PRIVATE,
    PROT_EXEC,
    PROT_READ,
)

from .live import PM_PFN_MASK, PM_PRESENT, LiveChild

pytestmark = pytest.mark.kernel

P = 4096
NPAGES = 16384  # 64 MiB: several windows of the usual read_ahead_kb values (8 MiB here)
MAP = 0x100000000000  # the mapping under test
OBSERVER = 0x110000000000  # a PROT_READ mapping of the whole file, never accessed
O_RDONLY = 0
SYS_OPEN = 2
SYS_CACHESTAT = 451
SETTLE_TIMEOUT_S = 10.0
STABLE_S = 0.25
KPF_COMPOUND_HEAD = 1 << 15
KPF_COMPOUND_TAIL = 1 << 16


@dataclass(frozen=True)
class Scenario:
    loads: tuple[int, ...]  # file page indexes, loaded one after the other
    prot: int = PROT_READ
    first: int = 0  # first file page of the mapping
    npages: int = NPAGES  # pages in the mapping
    advice: int | None = None
    doc: str = ""


SCENARIOS = {
    "read_around": Scenario(
        loads=(5000, 100, 12000, 16380),
        doc="read-around [pgoff - ra/2, pgoff + ra/2), clipped at 0 and at EOF",
    ),
    "async": Scenario(
        loads=(5000, 5700, 5512, 6024, 6100, 8072, 10112),
        doc="5512 = 5000 - ra/2 + ra - ra/4 carries PG_readahead; each async window's first "
        "page carries the next mark; 5700 and 6100 are inside a window, not marks",
    ),
    "random": Scenario(
        loads=(5000, 5001, 9000), advice=MADV_RANDOM, doc="MADV_RANDOM: the faulting page only"
    ),
    "sequential": Scenario(
        loads=(8000, 9024, 10048, 16000),
        advice=MADV_SEQUENTIAL,
        doc="MADV_SEQUENTIAL: page_cache_sync_ra() from the fault; then just past the window",
    ),
    "exec": Scenario(
        loads=(5000, 6536, 7047, 7500, 4100, 4000, 7999),
        prot=PROT_READ | PROT_EXEC,
        first=4000,
        npages=4000,
        doc="VM_EXEC, VMA = file pages [4000, 8000): forward from the fault, clipped to the "
        "VMA, async_size 0 (6536 is where read-around would put the mark, 7047 the window's "
        "last page)",
    ),
}


# -- helpers ---------------------------------------------------------------------------------
def runs(vec: bytes, base: int = 0) -> str:
    """The resident pages of a mincore vector as half-open runs of page indexes."""
    out = []
    i, n = 0, len(vec)
    while i < n:
        if vec[i] & 1:
            j = i
            while j < n and vec[j] & 1:
                j += 1
            out.append(f"[{base + i},{base + j})")
            i = j
        else:
            i += 1
    return " ".join(out) or "none"


def diff_runs(kernel: bytes, sim: bytes, base: int = 0) -> str:
    if len(kernel) != len(sim):
        return f"vector lengths differ: kernel {len(kernel)}, vmsim {len(sim)}"
    konly = bytes(int(k & 1 and not s & 1) for k, s in zip(kernel, sim, strict=True))
    sonly = bytes(int(s & 1 and not k & 1) for k, s in zip(kernel, sim, strict=True))
    return f"kernel only {runs(konly, base)}; vmsim only {runs(sonly, base)}"


def read_ahead_kb(path: Path) -> int | None:
    """queue/read_ahead_kb of the block device holding ``path`` (its disk's, for a partition);
    None if it is not on a block device."""
    dev = os.stat(path).st_dev
    node = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    for queue in (node / "queue", node / ".." / "queue"):
        try:
            return int((queue / "read_ahead_kb").read_text())
        except (OSError, ValueError):
            continue
    return None


_libc = ctypes.CDLL(None, use_errno=True)


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Cachestat(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in ("nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")
    ]


def nr_cache(fd: int) -> int | None:
    """cachestat(2) nr_cache of the whole file (folios under read I/O included), None if the
    syscall is missing."""
    rng, cs = _Range(0, 0), _Cachestat()
    ctypes.set_errno(0)
    ret = _libc.syscall(
        ctypes.c_long(SYS_CACHESTAT), ctypes.c_uint(fd), ctypes.byref(rng), ctypes.byref(cs), 0
    )
    if ret == 0:
        return int(cs.nr_cache)
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EPERM):
        return None
    raise OSError(err, os.strerror(err))


def drop_cache(path: Path) -> None:
    """Empty the page cache of this one file (fsync + POSIX_FADV_DONTNEED) and check it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(20):
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            left = nr_cache(fd)
            if not left:  # 0, or cachestat missing (then the mmap step checks mincore)
                return
            time.sleep(0.05)
        raise AssertionError(f"{left} pages of {path} stay cached after POSIX_FADV_DONTNEED")
    finally:
        os.close(fd)


def folio_of(child: LiveChild, addr: int) -> str:
    """The kernel folio holding the page mapped at ``addr``: 'order-N@first file page'
    ('' if not mapped or /proc/kpageflags is unreadable).  Diagnostics, not compared."""
    try:
        entry = child.pagemap(addr, 1)[0]
        if not entry & PM_PRESENT or not entry & PM_PFN_MASK:
            return ""
        pfn = entry & PM_PFN_MASK
        fd = os.open("/proc/kpageflags", os.O_RDONLY)
    except OSError:
        return ""
    try:

        def flags(f: int) -> int:
            return int.from_bytes(os.pread(fd, 8, f * 8), "little")

        head = pfn
        while flags(head) & KPF_COMPOUND_TAIL and pfn - head < 1 << 18:
            head -= 1
        nr = 1
        if flags(head) & KPF_COMPOUND_HEAD:
            while flags(head + nr) & KPF_COMPOUND_TAIL:
                nr += 1
        return f"order-{nr.bit_length() - 1}, {pfn - head} pages into it"
    finally:
        os.close(fd)


@dataclass
class Obs:
    what: str
    value: int | None  # the number loaded (page content), None for the mmap step
    vma: bytes  # mincore of the mapping under test
    file: bytes  # mincore of the whole-file observer mapping
    majflt: int  # major faults of this step
    note: str = field(default="", compare=False)

    def show(self, sc: Scenario) -> str:
        extra = f" ({self.note})" if self.note else ""
        return (
            f"{self.what}: majflt +{self.majflt}, cached {runs(self.file)}"
            f" [vma pages {runs(self.vma, sc.first)}]{extra}"
        )


# -- the two sides ---------------------------------------------------------------------------
def settle(k: LiveChild, pfd: int) -> tuple[bytes, str]:
    """The whole-file mincore vector once the kernel's readahead I/O has completed."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    t0 = time.monotonic()
    last, since, polls = b"", t0, 0
    while True:
        out = k.mincore(OBSERVER, NPAGES * P)
        assert out.err is None, out
        vec = out.data or b""
        polls += 1
        cached = nr_cache(pfd)
        now = time.monotonic()
        if cached is not None:
            if sum(b & 1 for b in vec) == cached:
                return vec, f"settled after {polls} polls, {now - t0:.3f}s"
        else:
            if vec != last:
                last, since = vec, now
            elif now - since >= STABLE_S:
                return vec, f"stable for {STABLE_S}s"
        if now > deadline:
            raise AssertionError(
                f"the kernel's page cache is still changing after {SETTLE_TIMEOUT_S}s: "
                f"mincore {runs(vec)}, nr_cache {cached}"
            )
        time.sleep(0.002)


def run_kernel(path: Path, sc: Scenario) -> list[Obs]:
    obs = []
    length = sc.npages * P
    pfd = os.open(path, os.O_RDONLY)
    try:
        with LiveChild() as k:
            ret, err = k.request(("sc", (SYS_OPEN, str(path).encode(), O_RDONLY, 0)))
            assert ret >= 0, os.strerror(err)
            k.fds.append(ret)
            kfd = len(k.fds) - 1
            out = k.mmap(MAP, length, sc.prot, MAP_PRIVATE | MAP_FIXED, kfd, sc.first * P)
            assert out.err is None, out
            out = k.mmap(OBSERVER, NPAGES * P, PROT_READ, MAP_PRIVATE | MAP_FIXED, kfd, 0)
            assert out.err is None, out
            if sc.advice is not None:
                assert k.madvise(MAP, length, sc.advice).err is None

            def observe(what: str, value: int | None, majflt: int, note: str) -> None:
                whole, settled = settle(k, pfd)
                vma = k.mincore(MAP, length).data or b""
                obs.append(
                    Obs(what, value, vma, whole, majflt, ", ".join(x for x in (note, settled) if x))
                )

            observe("mmap", None, 0, "")
            for pg in sc.loads:
                addr = MAP + (pg - sc.first) * P
                before = k.majflt
                data = k.load(addr, 4)
                majflt = k.majflt - before
                observe(
                    f"load page {pg}", int.from_bytes(data, "little"), majflt, folio_of(k, addr)
                )
    finally:
        os.close(pfd)
    return obs


def run_vmsim(path: Path, data: bytes, ra_kb: int, sc: Scenario) -> list[Obs]:
    st = os.stat(path)
    m = vmsim.Machine(read_ahead_kb=ra_kb)
    p = m.spawn()
    inode = m.inode_for(str(path), (os.major(st.st_dev), os.minor(st.st_dev)), st.st_ino, len(data))
    view = memoryview(data)
    for pg in range(NPAGES):
        inode.backing[pg] = bytes(view[pg * P : (pg + 1) * P])
    fd = p.open_inode(inode, writable=False)
    length = sc.npages * P
    p.mmap(MAP, length, sc.prot, MAP_PRIVATE | MAP_FIXED, fd, sc.first * P)
    p.mmap(OBSERVER, NPAGES * P, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0)
    if sc.advice is not None:
        p.madvise(MAP, length, sc.advice)
    obs = [Obs("mmap", None, p.mincore(MAP, length), p.mincore(OBSERVER, NPAGES * P), 0)]
    for pg in sc.loads:
        before = p.stats["majflt"]
        value = int.from_bytes(p.read(MAP + (pg - sc.first) * P, 4), "little")
        majflt = p.stats["majflt"] - before
        obs.append(
            Obs(
                f"load page {pg}",
                value,
                p.mincore(MAP, length),
                p.mincore(OBSERVER, NPAGES * P),
                majflt,
            )
        )
    return obs


# -- the test --------------------------------------------------------------------------------
@dataclass
class RaFile:
    path: Path
    data: bytes
    ra_kb: int


@pytest.fixture(scope="module")
def ra_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RaFile]:
    path = tmp_path_factory.mktemp("readahead") / "ra.bin"
    path.touch()
    ra_kb = read_ahead_kb(path)
    if ra_kb is None:
        pytest.skip(f"{path.parent} is not on a block device (no queue/read_ahead_kb)")
    if ra_kb < 64:
        pytest.skip(f"read_ahead_kb = {ra_kb}: too small a window to test")
    data = b"".join(pg.to_bytes(4, "little") * (P // 4) for pg in range(NPAGES))
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    yield RaFile(path, data, ra_kb)
    path.unlink()


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_mmap_readahead(name: str, ra_file: RaFile) -> None:
    sc = SCENARIOS[name]
    drop_cache(ra_file.path)
    kernel = run_kernel(ra_file.path, sc)
    assert kernel[0].file == bytes(NPAGES), f"the file's cache is not empty: {runs(kernel[0].file)}"
    for o, pg in zip(kernel[1:], sc.loads, strict=True):
        assert o.value == pg, f"kernel {o.what} read {o.value}"
    sim = run_vmsim(ra_file.path, ra_file.data, ra_file.ra_kb, sc)

    trace = (
        f"{name}: {sc.doc}; read_ahead_kb={ra_file.ra_kb}\n"
        + "kernel:\n  "
        + "\n  ".join(o.show(sc) for o in kernel)
        + "\nvmsim:\n  "
        + "\n  ".join(o.show(sc) for o in sim)
    )
    for k, s in zip(kernel, sim, strict=True):
        problems = []
        if k.value != s.value:
            problems.append(f"value: kernel {k.value}, vmsim {s.value}")
        if k.file != s.file:
            problems.append(f"page cache (whole file): {diff_runs(k.file, s.file)}")
        if k.vma != s.vma:
            problems.append(f"mincore of the mapping: {diff_runs(k.vma, s.vma, sc.first)}")
        if k.majflt != s.majflt:
            problems.append(f"majflt: kernel +{k.majflt}, vmsim +{s.majflt}")
        assert not problems, f"after {k.what}: " + "; ".join(problems) + "\n" + trace
