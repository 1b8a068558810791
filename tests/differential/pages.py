"""Page-level differential fuzzing: random maps, loads, stores, madvise, mlock, mprotect,
mremap, ftruncate, fork and exit on the live kernel and on vmsim, compared page by page.

Kernel side: a ``LiveChild`` and the processes it forks (``ForkedChild``), accessing their own
memory with real loads and stores (never process_vm_readv, whose GUP pins unshare COW pages).
vmsim side: one ``Machine`` with the same processes. After every step, in every live process:

* the VMAs inside the window (ranges and perms);
* each VMA's smaps page counters (Rss, Pss, Pss_Dirty, Shared/Private Clean/Dirty,
  Referenced, Anonymous, LazyFree, Locked);
* every page's pagemap bits (present, swapped, file/shared, guard, exclusive) and the
  sharing of frames: pfns are renamed in order of first appearance over all processes,
  so "these two pages are the same frame" is compared, not the frame numbers;
* mincore of each VMA.

Before reading the kernel's counters the child drains its CPU's LRU batches (MADV_COLD on an
untouched scratch page runs lru_add_drain()); every process is pinned to one CPU so that
drain reaches the batch MADV_FREE filled (LazyFree shows only once the batch is drained).

An access is only issued when vmsim says it is allowed: a kernel child killed by an access
vmsim allowed is reported as a divergence (``ChildDied``).
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import vmsim
from vmsim.constants import (
    MADV_COLD,
    MADV_DOFORK,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_FREE,
    MADV_GUARD_INSTALL,
    MADV_GUARD_REMOVE,
    MADV_KEEPONFORK,
    MADV_PAGEOUT,
    MADV_POPULATE_READ,
    MADV_POPULATE_WRITE,
    MADV_REMOVE,
    MADV_WIPEONFORK,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_LOCKED,
    MAP_POPULATE,
    MAP_PRIVATE,
    MAP_SHARED,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
)
from vmsim.mm.flags import VM_ACCESS_FLAGS, VM_WRITE

from .live import ChildDied, LiveChild, errname

P = 4096
WINDOW = 0x100000000000
SLOTS = 6
SLOT_STRIDE = 32  # pages between slot starts: regions of different slots never touch
REGION = 8  # pages per mapping
SCRATCH = 0x200000000000  # one untouched page per process for the LRU drain
MEMFDS = 2
MAX_PROCS = 3
RW = PROT_READ | PROT_WRITE
COUNTERS = (
    "Rss",
    "Pss",
    "Pss_Dirty",
    "Shared_Clean",
    "Shared_Dirty",
    "Private_Clean",
    "Private_Dirty",
    "Referenced",
    "Anonymous",
    "LazyFree",
    "Locked",
)
PM_BITS = (1 << 63) | (1 << 62) | (1 << 61) | (1 << 58) | (1 << 57) | (1 << 56)
PFN_MASK = (1 << 55) - 1
ADVICE = {
    MADV_COLD: "COLD",
    MADV_PAGEOUT: "PAGEOUT",
    MADV_DONTNEED: "DONTNEED",
    MADV_FREE: "FREE",
    MADV_REMOVE: "REMOVE",
    MADV_POPULATE_READ: "POPULATE_READ",
    MADV_POPULATE_WRITE: "POPULATE_WRITE",
    MADV_DONTFORK: "DONTFORK",
    MADV_DOFORK: "DOFORK",
    MADV_WIPEONFORK: "WIPEONFORK",
    MADV_KEEPONFORK: "KEEPONFORK",
    MADV_GUARD_INSTALL: "GUARD_INSTALL",
    MADV_GUARD_REMOVE: "GUARD_REMOVE",
}


def slot_addr(slot: int) -> int:
    return WINDOW + slot * SLOT_STRIDE * P


@dataclass
class Step:
    text: str
    kernel: Any = None
    vmsim: Any = None


@dataclass
class PageResult:
    seed: int
    steps: list[Step] = field(default_factory=list)
    diff: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.diff

    def report(self) -> str:
        lines = [f"seed {self.seed}: kernel and vmsim disagree after step {len(self.steps)}"]
        lines.extend("  " + d for d in self.diff[:3])
        lines.append(
            f"  reproduce: VMSIM_PAGES_SEED={self.seed} pytest tests/differential -k pages"
        )
        for i, s in enumerate(self.steps, 1):
            res = "" if s.kernel is None else f"  =>  {s.kernel} | {s.vmsim}"
            lines.append(f"  {i:3}. {s.text}{res}")
        lines.extend("  " + d for d in self.diff)
        return "\n".join(lines)


def _outcome(fn: Any, *args: Any) -> str:
    """A vmsim call's result in the kernel side's terms."""
    try:
        fn(*args)
    except OSError as e:
        return errname(e.errno or 0)
    return "ok"


def _kout(o: Any) -> str:
    return o.err if o.err is not None else "ok"


class Pair:
    """The same process on both sides."""

    def __init__(self, k: LiveChild, s: vmsim.Process) -> None:
        self.k = k
        self.s = s


class PageFuzzer:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.root = LiveChild()
        os.sched_setaffinity(self.root.pid, {_cpu()})
        self.m = vmsim.Machine()
        self.procs = [Pair(self.root, self.m.spawn())]
        self.sfds: list[int] = []
        root = self.procs[0]
        for i in range(MEMFDS):
            out = root.k.memfd_create(f"pg{i}")
            assert out.err is None, out
            self.sfds.append(root.s.memfd_create(f"pg{i}"))
            root.k.ftruncate(i, REGION * P)
            root.s.ftruncate(self.sfds[i], REGION * P)
        root.k.mmap(SCRATCH, P, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
        root.s.mmap(SCRATCH, P, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
        self.result = PageResult(seed)

    def close(self) -> None:
        self.root.close()

    # ----------------------------------------------------------------- generation
    def _pair(self) -> Pair:
        return self.rng.choice(self.procs)

    def _range(self) -> tuple[int, int]:
        slot = self.rng.randrange(SLOTS)
        first = self.rng.randrange(REGION)
        n = self.rng.randint(1, REGION - first)
        return slot_addr(slot) + first * P, n * P

    def _accessible(self, s: vmsim.Process, addr: int, write: bool) -> bool:
        vma = s.mm.tree.lookup(addr)
        if vma is None:
            return False
        if not vma.flags & (VM_WRITE if write else VM_ACCESS_FLAGS):
            return False
        if (addr >> 12) in s.mm.guards:
            return False
        if vma.file is not None:
            eof = (vma.file.inode.size + P - 1) // P
            if vma.pgoff_at(addr) >= eof:
                return False
        return True

    def step(self) -> None:
        r = self.rng.random()
        pr = self._pair()
        if r < 0.14:
            self._map(pr)
        elif r < 0.34:
            self._access(pr, write=False)
        elif r < 0.56:
            self._access(pr, write=True)
        elif r < 0.68:
            self._madvise(pr)
        elif r < 0.75:
            self._mprotect(pr)
        elif r < 0.80:
            self._mlock(pr)
        elif r < 0.84:
            self._munmap(pr)
        elif r < 0.87:
            self._mremap(pr)
        elif r < 0.90:
            self._ftruncate(pr)
        elif r < 0.96:
            self._fork(pr)
        else:
            self._exit(pr)

    def _record(self, text: str, kernel: Any = None, sim: Any = None) -> None:
        self.result.steps.append(Step(text, kernel, sim))
        if kernel is not None and kernel != sim:
            self.result.diff.append(f"result differs: kernel {kernel}, vmsim {sim}")

    def _who(self, pr: Pair) -> str:
        return f"[p{self.procs.index(pr)}]"

    def _map(self, pr: Pair) -> None:
        rng = self.rng
        slot = rng.randrange(SLOTS)
        kind = rng.choice(["anon", "anon", "shared", "memfd", "memfd-private"])
        prot = rng.choice([RW, RW, RW, PROT_READ, PROT_NONE])
        extra = rng.choice([0, 0, 0, MAP_POPULATE, MAP_LOCKED])
        self.map(pr, slot, kind, prot, extra, rng.randrange(MEMFDS))

    def map(self, pr: Pair, slot: int, kind: str, prot: int, extra: int = 0, fd: int = 0) -> None:
        addr = slot_addr(slot)
        fl = MAP_FIXED | extra
        if kind == "anon":
            args = (addr, REGION * P, prot, fl | MAP_PRIVATE | MAP_ANONYMOUS)
        elif kind == "shared":
            args = (addr, REGION * P, prot, fl | MAP_SHARED | MAP_ANONYMOUS)
        else:
            flags = fl | (MAP_SHARED if kind == "memfd" else MAP_PRIVATE)
            args = (addr, REGION * P, prot, flags)
        text = f"{self._who(pr)} mmap(slot {slot}, {kind}, prot {prot}, extra {extra:#x})"
        if kind.startswith("memfd"):
            k = _kout(pr.k.mmap(*args, fd, 0))
            s = _outcome(pr.s.mmap, *args, self.sfds[fd], 0)
            text += f" fd{fd}"
        else:
            k = _kout(pr.k.mmap(*args))
            s = _outcome(pr.s.mmap, *args)
        self._record(text, k, s)

    def _access(self, pr: Pair, write: bool) -> None:
        slot = self.rng.randrange(SLOTS)
        page = self.rng.randrange(REGION)
        addr = slot_addr(slot) + page * P + self.rng.randrange(P - 8)
        if not self._accessible(pr.s, addr, write):
            return
        if write:
            self.store(pr, addr, self.rng.randrange(1, 256))
        else:
            self.load(pr, addr)

    def store(self, pr: Pair, addr: int, byte: int) -> None:
        data = bytes([byte]) * 8
        self._record(f"{self._who(pr)} store {addr:#x} {byte:02x}")
        pr.k.store(addr, data)
        pr.s.write(addr, data)

    def load(self, pr: Pair, addr: int) -> bytes:
        self._record(f"{self._who(pr)} load {addr:#x}")
        got_k = pr.k.load(addr, 8)
        got_s = pr.s.read(addr, 8)
        if got_k != got_s:
            self.result.diff.append(f"load {addr:#x}: kernel {got_k.hex()} vmsim {got_s.hex()}")
        return got_k

    def _madvise(self, pr: Pair) -> None:
        addr, length = self._range()
        self.madvise(pr, addr, length, self.rng.choice(list(ADVICE)))

    def madvise(self, pr: Pair, addr: int, length: int, adv: int) -> None:
        k = _kout(pr.k.madvise(addr, length, adv))
        s = _outcome(pr.s.madvise, addr, length, adv)
        self._record(f"{self._who(pr)} madvise({addr:#x}, {length:#x}, {ADVICE[adv]})", k, s)

    def _mprotect(self, pr: Pair) -> None:
        addr, length = self._range()
        self.mprotect(pr, addr, length, self.rng.choice([RW, PROT_READ, PROT_NONE]))

    def mprotect(self, pr: Pair, addr: int, length: int, prot: int) -> None:
        k = _kout(pr.k.mprotect(addr, length, prot))
        s = _outcome(pr.s.mprotect, addr, length, prot)
        self._record(f"{self._who(pr)} mprotect({addr:#x}, {length:#x}, {prot})", k, s)

    def _mlock(self, pr: Pair) -> None:
        addr, length = self._range()
        if self.rng.random() < 0.6:
            k, s = _kout(pr.k.mlock(addr, length)), _outcome(pr.s.mlock, addr, length)
            self._record(f"{self._who(pr)} mlock({addr:#x}, {length:#x})", k, s)
        else:
            k, s = _kout(pr.k.munlock(addr, length)), _outcome(pr.s.munlock, addr, length)
            self._record(f"{self._who(pr)} munlock({addr:#x}, {length:#x})", k, s)

    def _munmap(self, pr: Pair) -> None:
        self.munmap(pr, *self._range())

    def munmap(self, pr: Pair, addr: int, length: int) -> None:
        k, s = _kout(pr.k.munmap(addr, length)), _outcome(pr.s.munmap, addr, length)
        self._record(f"{self._who(pr)} munmap({addr:#x}, {length:#x})", k, s)

    def _mremap(self, pr: Pair) -> None:
        src = slot_addr(self.rng.randrange(SLOTS))
        dst = slot_addr(self.rng.randrange(SLOTS)) + SLOT_STRIDE // 2 * P
        flags = MREMAP_MAYMOVE | MREMAP_FIXED
        k = _kout(pr.k.mremap(src, REGION * P, REGION * P, flags, dst))
        s = _outcome(pr.s.mremap, src, REGION * P, REGION * P, flags, dst)
        self._record(f"{self._who(pr)} mremap({src:#x} -> {dst:#x})", k, s)

    def _ftruncate(self, pr: Pair) -> None:
        fd = self.rng.randrange(MEMFDS)
        size = self.rng.randint(2, REGION) * P - self.rng.choice([0, 0, 100])
        k = _kout(pr.k.ftruncate(fd, size))
        s = _outcome(pr.s.ftruncate, self.sfds[fd], size)
        self._record(f"{self._who(pr)} ftruncate(fd{fd}, {size:#x})", k, s)

    def _fork(self, pr: Pair) -> None:
        if len(self.procs) < MAX_PROCS:
            self.fork(pr)

    def fork(self, pr: Pair) -> Pair:
        self._record(f"{self._who(pr)} fork -> p{len(self.procs)}")
        child = Pair(pr.k.fork(), pr.s.fork())
        self.procs.append(child)
        return child

    def _exit(self, pr: Pair) -> None:
        if pr.k is self.root or any(f._running() for f in pr.k.forks):
            return
        self.exit(pr)

    def exit(self, pr: Pair) -> None:
        self._record(f"{self._who(pr)} exit")
        pr.k.close()
        pr.s.exit()
        self.procs.remove(pr)

    # ----------------------------------------------------------------- comparison
    def compare(self) -> None:
        """Compare every live process; a difference must persist over a second look (50 ms
        later) to count, so transient kernel states (a page isolated for migration by
        compaction, an LRU batch in flight) do not fail a run."""
        diff = self._compare()
        if diff:
            time.sleep(0.05)
            diff = self._compare()
        self.result.diff.extend(diff)

    def _compare(self) -> list[str]:
        out: list[str] = []
        self.root.madvise(SCRATCH, P, MADV_COLD)  # lru_add_drain() on the pinned CPU
        self.m.memory.lru_add_drain()  # the same drain of vmsim's (one-CPU) batches
        kernel_pfns: dict[int, int] = {}
        sim_pfns: dict[int, int] = {}
        for i, pr in enumerate(self.procs):
            kv = _window_vmas(pr.k.smaps())
            sv = _window_vmas(pr.s.smaps())
            if list(kv) != list(sv):
                out.append(f"p{i} VMAs: kernel {_ranges(kv)} vmsim {_ranges(sv)}")
                return out
            for (start, end), kf in kv.items():
                sf = sv[(start, end)]
                bad = [c for c in COUNTERS if kf.get(c) != sf.get(c)]
                if bad:
                    flags = _kpageflags(pr.k.pagemap(start, (end - start) // P))
                    out.append(
                        f"p{i} smaps {start:#x}-{end:#x}: "
                        + ", ".join(f"{c} kernel {kf.get(c)} vmsim {sf.get(c)}" for c in bad)
                        + f" (kernel kpageflags {flags})"
                    )
                n = (end - start) // P
                ke = pr.k.pagemap(start, n)
                se = pr.s.pagemap(start, n)
                for j in range(n):
                    kb, sb = ke[j] & PM_BITS, se[j] & PM_BITS
                    kl = _label(kernel_pfns, ke[j])
                    sl = _label(sim_pfns, se[j])
                    if kb != sb or kl != sl:
                        out.append(
                            f"p{i} pagemap {start + j * P:#x}: kernel bits {kb >> 55:#x} "
                            f"frame#{kl}, vmsim bits {sb >> 55:#x} frame#{sl}"
                        )
                km = pr.k.mincore(start, end - start)
                try:
                    sm = pr.s.mincore(start, end - start)
                except OSError as e:
                    sm = errname(e.errno or 0).encode()
                if km.data != sm:
                    out.append(f"p{i} mincore {start:#x}: kernel {km.data!r} vmsim {sm!r}")
        return out

    def run(self, nsteps: int) -> PageResult:
        for _ in range(nsteps):
            try:
                self.step()
                if not self.result.diff:
                    self.compare()
            except ChildDied as e:
                self.result.diff.append(f"the kernel killed the child: {e}")
            if self.result.diff:
                break
        return self.result


def _kpageflags(entries: list[int]) -> str:
    """R(eferenced) A(ctive) U(nevictable) Y(oung/idle) per present page, for reports."""
    out = []
    fd = os.open("/proc/kpageflags", os.O_RDONLY)
    try:
        for e in entries:
            if not e >> 63:
                out.append("-")
                continue
            v = int.from_bytes(os.pread(fd, 8, (e & PFN_MASK) * 8), "little")
            out.append("".join(c for bit, c in ((2, "R"), (6, "A"), (18, "U")) if v >> bit & 1))
    finally:
        os.close(fd)
    return "/".join(out)


def _cpu() -> int:
    """The CPU this run's children are pinned to: one per pytest-xdist worker, so that two
    workers' LRU batches (per CPU) never mix."""
    cpus = sorted(os.sched_getaffinity(0))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    return cpus[index % len(cpus)]


def _label(seen: dict[int, int], entry: int) -> int:
    if not entry >> 63:
        return -1
    return seen.setdefault(entry & PFN_MASK, len(seen))


def _ranges(v: dict[tuple[int, int], dict[str, int]]) -> str:
    return " ".join(f"{a:#x}-{b:#x}" for a, b in v)


def _window_vmas(smaps: str) -> dict[tuple[int, int], dict[str, int]]:
    out: dict[tuple[int, int], dict[str, int]] = {}
    cur: dict[str, int] | None = None
    for line in smaps.splitlines():
        first = line.split(" ", 1)[0]
        if "-" in first and ":" not in first:
            a, b = (int(x, 16) for x in first.split("-"))
            if WINDOW <= a < WINDOW + SLOTS * SLOT_STRIDE * P:
                cur = out[(a, b)] = {"perms": 0}
                cur["perms"] = hash(line.split()[1])
            else:
                cur = None
            continue
        if cur is not None and line.endswith(" kB"):
            k, v = line.split(":", 1)
            cur[k] = int(v.split()[0])
    return out


def run_script(name: str, script: Any) -> PageResult:
    """Run ``script(fuzzer)`` (explicit calls on ``PageFuzzer``), comparing after each call."""
    fz = PageFuzzer(0)
    fz.result.seed = -1
    fz.result.diff_name = name  # type: ignore[attr-defined]
    original = fz._record

    def record(text: str, kernel: Any = None, sim: Any = None) -> None:
        original(text, kernel, sim)
        if not fz.result.diff:
            fz.compare()

    fz._record = record  # type: ignore[method-assign]
    try:
        try:
            script(fz)
            if not fz.result.diff:
                fz.compare()
        except ChildDied as e:
            fz.result.diff.append(f"the kernel killed the child: {e}")
        return fz.result
    finally:
        fz.close()


def run_pages(seed: int, nsteps: int) -> PageResult:
    fz = PageFuzzer(seed)
    try:
        return fz.run(nsteps)
    finally:
        fz.close()
