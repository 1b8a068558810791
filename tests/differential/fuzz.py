"""A seeded generator of memory-syscall sequences and the runner that replays them on two sides.

The generator reads the kernel's current ``/proc`` state to pick interesting arguments (edges
and middles of existing VMAs, spans across several, pgoff-contiguous memfd offsets, ...), and
only emits calls that cannot hurt the child interpreter: every range that a call could modify
must avoid the VMAs that existed when the sequence started (the interpreter, its heap up to the
break it started with, libraries, stack, the floor).  Absurd arguments are only emitted in forms
the kernel rejects before touching anything.  ``run_calls`` is the comparison loop.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .harness import (
    MASK64,
    PAGE,
    TASK_SIZE,
    Call,
    MapsLine,
    SimCrash,
    apply,
    compare_state,
    normalize_outcome,
    parse_maps_line,
    vmflags_by_range,
)
from .live import LiveChild, Outcome

P = PAGE
WINDOW = 0x100000000000  # private window far from everything, for fixed addresses
WINDOW_PAGES = 96
FAR = 0x200000000000  # second private window, for mremap destinations
FAR_PAGES = 32
HEAP_WINDOW_PAGES = 48

PROT_CHOICES = [3] * 10 + [1] * 3 + [0] * 2 + [7, 5, 2, 4]
ADVICE_SPLITTING = [0, 1, 2, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
ADVICE_OTHER = [3, 4, 4, 8, 9, 20, 21, 22, 23, 24, 102, 102, 103]
ADVICE_UNKNOWN = [5, 6, 7, 26, 99, 104, 100000]

MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANON = 0x01, 0x02, 0x10, 0x20
MAP_GROWSDOWN, MAP_LOCKED, MAP_NORESERVE, MAP_POPULATE = 0x100, 0x2000, 0x4000, 0x8000
MAP_STACK, MAP_FIXED_NOREPLACE = 0x20000, 0x100000
MREMAP_MAYMOVE, MREMAP_FIXED, MREMAP_DONTUNMAP = 1, 2, 4


def page_up(x: int) -> int:
    return (x + P - 1) & ~(P - 1)


@dataclass
class Snapshot:
    """The kernel state the generator works from."""

    vmas: list[MapsLine]
    flags: dict[tuple[int, int], set[str]]

    @classmethod
    def read(cls, maps: str, smaps: str) -> Snapshot:
        vmas = [ml for ml in map(parse_maps_line, maps.splitlines()) if ml is not None]
        return cls([v for v in vmas if v.end <= TASK_SIZE + P], vmflags_by_range(smaps))


@dataclass
class Guard:
    """What must never be modified: the VMAs present at the start, plus a gap below [stack]."""

    protected: list[tuple[int, int]]
    start_brk: int
    brk0: int

    @classmethod
    def from_snapshot(cls, snap: Snapshot, brk0: int) -> Guard:
        prot = [(v.start, v.end) for v in snap.vmas]
        start_brk = brk0
        for v in snap.vmas:
            if v.name == "[heap]":
                start_brk = v.start
            if v.name == "[stack]":
                prot.append((v.start - (64 << 20), v.start))
        return cls(sorted(prot), start_brk, brk0)

    def hits(self, start: int, end: int) -> bool:
        return any(s < end and start < e for s, e in self.protected)

    def sandbox_pieces(self, vmas: Iterable[MapsLine]) -> list[tuple[int, int, MapsLine]]:
        """Parts of current VMAs outside the protected ranges."""
        out = []
        for v in vmas:
            pieces = [(v.start, v.end)]
            for s, e in self.protected:
                nxt = []
                for a, b in pieces:
                    if e <= a or b <= s:
                        nxt.append((a, b))
                        continue
                    if a < s:
                        nxt.append((a, s))
                    if e < b:
                        nxt.append((e, b))
                pieces = nxt
            out.extend((a, b, v) for a, b in pieces)
        return out


def affected(call: Call, snap: Snapshot) -> list[tuple[int, int]] | None:
    """Conservative address ranges ``call`` could modify; None if it is rejected before it
    touches anything (the only form in which absurd arguments are emitted)."""
    a = call.args
    n = call.name
    if n == "mmap":
        addr, length, _prot, flags = a[0], a[1], a[2], a[3]
        if flags & MAP_FIXED_NOREPLACE or not flags & MAP_FIXED:
            return []  # never replaces anything (NOREPLACE fails with EEXIST instead)
        if (
            addr % P
            or length == 0
            or page_up(length) > TASK_SIZE
            or addr + page_up(length) > TASK_SIZE
        ):
            return None
        return [(addr, addr + page_up(length))]
    if n == "munmap":
        addr, length = a
        if addr % P or length == 0 or addr > TASK_SIZE or length > TASK_SIZE - addr:
            return None
        return [(addr, addr + page_up(length))]
    if n in ("mprotect", "madvise", "mseal"):
        addr, length = a[0], a[1]
        if addr % P:
            return None
        end = addr + page_up(length)
        if end > MASK64 or end <= addr:
            return None
        if n == "mprotect" and a[2] & 0x01000000:  # PROT_GROWSDOWN: from the VMA's start
            for v in snap.vmas:
                if v.start <= addr < v.end:
                    return [(v.start, end)]
        return [(addr, end)]
    if n in ("mlock", "munlock"):
        start = a[0] & ~(P - 1)
        end = start + page_up(a[1] + (a[0] - start))
        if end > MASK64 or end <= start:
            return None
        return [(start, end)]
    if n == "mremap":
        addr, old, new, flags, new_addr = a
        if addr % P or flags & ~7 or new == 0:
            return None
        ranges = [(addr, addr + page_up(max(old, new)))]
        if flags & MREMAP_FIXED:
            ranges.append((new_addr, new_addr + page_up(new)))
        return ranges
    if n == "brk":
        return None  # checked by the Guard separately
    if n in ("write", "read"):
        addr = a[0]
        size = len(a[1]) if n == "write" else a[1]
        return [(addr, addr + size)]
    return []


def unsafe(call: Call, snap: Snapshot, guard: Guard) -> str | None:
    """Why ``call`` must not run in the child (None = fine)."""
    if call.name == "brk":
        addr = call.args[0]
        if guard.start_brk <= addr < guard.brk0:
            return "brk below the interpreter's break"
        return None
    ranges = affected(call, snap)
    if ranges is None:
        return None
    for s, e in ranges:
        if guard.hits(s, e):
            return f"touches protected range {s:#x}-{e:#x}"
    if call.name == "read":
        s, e = ranges[0]
        for v in snap.vmas:
            if v.start < e and s < v.end and v.perms[0] == "-" and v.perms[1:3] != "--":
                # GUP reads need VM_READ, but on x86 without pkeys a CPU read of a write- or
                # exec-only page succeeds: the child could not show what a user read does.
                return "read of a w/x-only VMA (GUP and the CPU disagree)"
    if call.name in ("read", "write"):
        # GUP (process_vm_*) never grows a VM_GROWSDOWN VMA; a real access would.  Skip accesses
        # that hit an unmapped page whose next VMA up grows down.
        s, e = ranges[0]
        page = s & ~(P - 1)
        while page < e:
            if not any(v.start <= page < v.end for v in snap.vmas):
                above = [v for v in snap.vmas if v.start > page]
                if above:
                    nxt = min(above, key=lambda v: v.start)
                    if "gd" in snap.flags.get((nxt.start, nxt.end), set()):
                        return "access below a VM_GROWSDOWN VMA (GUP does not grow stacks)"
            page += P
    return None


class Generator:
    """Seeded random calls, biased towards edges, middles and neighbours of existing VMAs."""

    def __init__(self, seed: int, guard: Guard, brk: int) -> None:
        self.rng = random.Random(seed)
        self.guard = guard
        self.brk = brk
        self.open_fds: list[int] = []
        self.nfds = 0
        self.memfd_names: dict[str, int] = {}
        self.snap: Snapshot | None = None

    # -- helpers -------------------------------------------------------------------------
    def pieces(self) -> list[tuple[int, int, MapsLine]]:
        assert self.snap is not None
        return self.guard.sandbox_pieces(self.snap.vmas)

    def npages(self) -> int:
        r = self.rng.random()
        if r < 0.35:
            return 1
        if r < 0.85:
            return self.rng.randint(2, 8)
        if r < 0.97:
            return self.rng.randint(9, 24)
        return 512

    def window_addr(self) -> int:
        r = self.rng.random()
        if r < 0.75:
            return WINDOW + self.rng.randrange(WINDOW_PAGES) * P
        if r < 0.9:
            return FAR + self.rng.randrange(FAR_PAGES) * P
        return self.guard.brk0 + self.rng.randrange(HEAP_WINDOW_PAGES) * P

    def pick_range(self) -> tuple[int, int]:
        """(addr, length) in pages-aligned form, mostly related to existing sandbox VMAs."""
        rng = self.rng
        pieces = self.pieces()
        if not pieces or rng.random() < 0.12:
            return self.window_addr(), self.npages() * P
        i = rng.randrange(len(pieces))
        s, e, _ = pieces[i]
        n = (e - s) // P
        mode = rng.choices(
            ["whole", "head", "tail", "middle", "span", "beyond"], [4, 2, 2, 4, 2, 1]
        )[0]
        if mode == "whole" or (n == 1 and mode in ("head", "tail", "middle")):
            return s, e - s
        if mode == "head":
            return s, rng.randint(1, n - 1) * P
        if mode == "tail":
            k = rng.randint(1, n - 1)
            return e - k * P, k * P
        if mode == "middle":
            if n < 3:
                return s + P * (n - 1), P
            lo = rng.randint(1, n - 2)
            hi = rng.randint(lo + 1, n - 1)
            return s + lo * P, (hi - lo) * P
        if mode == "span" and i + 1 < len(pieces):
            j = min(len(pieces) - 1, i + rng.randint(1, 3))
            s2, e2, _ = pieces[j]
            start = s + rng.randrange(n) * P
            end = s2 + rng.randint(1, (e2 - s2) // P) * P
            if end - start < (64 << 20):
                return start, end - start
        start = s + rng.randrange(n) * P
        return start, (e - start) + rng.randint(1, 4) * P

    def maybe_unaligned_len(self, length: int) -> int:
        if self.rng.random() < 0.1:
            return max(1, length - self.rng.randint(1, P - 1))
        return length

    def fd(self) -> int:
        return self.rng.choice(self.open_fds)

    # -- one call ------------------------------------------------------------------------
    def next_call(self, snap: Snapshot) -> Call:
        self.snap = snap
        for _ in range(200):
            call = self._draw()
            if unsafe(call, snap, self.guard) is None:
                return call
        return Call("brk", (0,))

    def _draw(self) -> Call:
        rng = self.rng
        if rng.random() < 0.05:
            return self.absurd()
        kind = rng.choices(
            [
                "mmap",
                "munmap",
                "mprotect",
                "mremap",
                "madvise",
                "mlock",
                "munlock",
                "mseal",
                "brk",
                "write",
                "read",
                "fd",
            ],
            weights=[24, 9, 14, 10, 14, 4, 3, 2, 4, 11, 4, 1],
        )[0]
        return getattr(self, "gen_" + kind)()

    def gen_mmap(self) -> Call:
        rng = self.rng
        pages = self.npages()
        length = self.maybe_unaligned_len(pages * P)
        prot = rng.choice(PROT_CHOICES)
        use_file = self.open_fds and rng.random() < 0.3
        shared = rng.random() < (0.5 if use_file else 0.12)
        flags = MAP_SHARED if shared else MAP_PRIVATE
        fd, offset = -1, 0
        if use_file:
            fd = self.fd()
            offset = rng.randrange(12) * P
        else:
            flags |= MAP_ANON
        for bit, p in ((MAP_NORESERVE, 0.1), (MAP_POPULATE, 0.1), (MAP_LOCKED, 0.03)):
            if rng.random() < p:
                flags |= bit
        if not use_file and rng.random() < 0.06:
            flags |= MAP_GROWSDOWN
        if rng.random() < 0.03:
            flags |= MAP_STACK
        where = rng.choices(
            ["null", "hint", "fixed", "noreplace", "over", "adjacent"], [30, 12, 18, 12, 14, 14]
        )[0]
        addr = 0
        pieces = self.pieces()
        if where == "hint":
            addr = self.window_addr() + (rng.randrange(P) if rng.random() < 0.1 else 0)
        elif where in ("fixed", "noreplace"):
            flags |= MAP_FIXED if where == "fixed" else MAP_FIXED_NOREPLACE
            addr = self.window_addr()
        elif where == "over":
            flags |= MAP_FIXED if rng.random() < 0.8 else MAP_FIXED_NOREPLACE
            addr, length = self.pick_range()
        elif where == "adjacent" and pieces:
            s, e, v = rng.choice(pieces)
            flags |= rng.choice([MAP_FIXED, MAP_FIXED_NOREPLACE])
            if rng.random() < 0.6:
                addr = e
                if use_file and v.name == f"/memfd:{self._name(fd)} (deleted)":
                    offset = v.offset + (e - v.start)  # pgoff-contiguous: may merge
            else:
                addr = max(s - page_up(length), P)
                if use_file and v.name == f"/memfd:{self._name(fd)} (deleted)":
                    offset = max(0, v.offset - page_up(length))
        if pages == 512 and where != "null":
            length = 16 * P
        return Call("mmap", (addr, length, prot, flags, fd, offset))

    def _name(self, lfd: int) -> str:
        for name, i in self.memfd_names.items():
            if i == lfd:
                return name
        return "?"

    def gen_munmap(self) -> Call:
        addr, length = self.pick_range()
        return Call("munmap", (addr, self.maybe_unaligned_len(length)))

    def gen_mprotect(self) -> Call:
        addr, length = self.pick_range()
        prot = self.rng.choice(PROT_CHOICES)
        r = self.rng.random()
        if r < 0.03:
            prot |= 8  # PROT_SEM is valid
        elif r < 0.06:
            prot |= 0x01000000  # PROT_GROWSDOWN: EINVAL unless the VMA grows down
        return Call("mprotect", (addr, self.maybe_unaligned_len(length), prot))

    def gen_madvise(self) -> Call:
        addr, length = self.pick_range()
        r = self.rng.random()
        advice = self.rng.choice(ADVICE_SPLITTING if r < 0.55 else ADVICE_OTHER)
        if r > 0.985:
            advice = 25  # MADV_COLLAPSE
        return Call("madvise", (addr, self.maybe_unaligned_len(length), advice))

    def gen_mlock(self) -> Call:
        addr, length = self.pick_range()
        if self.rng.random() < 0.2:
            addr += self.rng.randrange(1, P)
        return Call("mlock", (addr, self.maybe_unaligned_len(length)))

    def gen_munlock(self) -> Call:
        addr, length = self.pick_range()
        return Call("munlock", (addr, self.maybe_unaligned_len(length)))

    def gen_mseal(self) -> Call:
        addr, length = self.pick_range()
        return Call("mseal", (addr, length, 0))

    def gen_brk(self) -> Call:
        rng = self.rng
        r = rng.random()
        if r < 0.15:
            return Call("brk", (0,))
        base = self.guard.brk0
        if r < 0.4:
            target = self.brk + rng.randint(-4, 8) * P
        else:
            target = base + rng.randrange(HEAP_WINDOW_PAGES) * P
        if rng.random() < 0.15:
            target += rng.randrange(1, P)
        return Call("brk", (max(target, base),))

    def _access_range(self, maxlen: int) -> tuple[int, int]:
        rng = self.rng
        pieces = self.pieces()
        n = rng.choice([1, 8, 100, 4096, 5000, 8192 + 17, 3 * P])
        n = min(n, maxlen)
        if pieces and rng.random() < 0.85:
            s, e, _ = rng.choice(pieces)
            addr = s + rng.randrange((e - s) // P) * P + rng.choice([0, 0, 0, rng.randrange(P)])
            if rng.random() < 0.7:
                n = max(1, min(n, e - addr))
        else:
            addr = self.window_addr() + rng.randrange(P)
        return addr, n

    def gen_write(self) -> Call:
        addr, n = self._access_range(3 * P)
        data = self.rng.randbytes(n)
        return Call("write", (addr, data))

    def gen_read(self) -> Call:
        addr, n = self._access_range(3 * P)
        return Call("read", (addr, n))

    def gen_mremap(self) -> Call:
        rng = self.rng
        pieces = self.pieces()
        if not pieces:
            return self.gen_mmap()
        s, e, _ = rng.choice(pieces)
        n = (e - s) // P
        off = 0 if rng.random() < 0.7 else rng.randrange(n)
        addr = s + off * P
        old = (n - off) * P if rng.random() < 0.7 else rng.randint(1, n - off) * P
        kind = rng.choices(
            ["shrink", "grow", "maymove", "fixed", "dontunmap", "dup"], [18, 18, 22, 22, 16, 4]
        )[0]
        new_addr = 0
        flags = 0
        if kind == "shrink":
            new = rng.randint(1, max(1, old // P - 1)) * P if old > P else P
        elif kind == "grow":
            new = old + rng.randint(1, 8) * P
        elif kind == "maymove":
            flags = MREMAP_MAYMOVE
            new = old + rng.randint(1, 16) * P
        elif kind == "fixed":
            flags = MREMAP_MAYMOVE | MREMAP_FIXED
            new = rng.choice([old, old + P * rng.randint(1, 4), max(P, old - P)])
            new_addr = self.window_addr()
        elif kind == "dontunmap":
            flags = MREMAP_MAYMOVE | MREMAP_DONTUNMAP
            new = old
            r = rng.random()
            if r < 0.4:
                flags |= MREMAP_FIXED
                new_addr = self.window_addr()
            elif r < 0.7:
                new_addr = self.window_addr()
        else:  # old_size 0 duplicates a shared mapping (EINVAL on private)
            flags = MREMAP_MAYMOVE
            old, new = 0, rng.randint(1, 4) * P
        if rng.random() < 0.05:
            new = self.maybe_unaligned_len(new)
        return Call("mremap", (addr, old, new, flags, new_addr))

    def gen_fd(self) -> Call:
        rng = self.rng
        r = rng.random()
        if r < 0.35 and self.nfds < 5:
            name = f"fz{self.nfds}"
            return Call("memfd_create", (name,))
        if r < 0.85 and self.open_fds:
            return Call(
                "ftruncate",
                (
                    self.fd(),
                    rng.randrange(24) * P + (rng.randrange(P) if rng.random() < 0.2 else 0),
                ),
            )
        if self.open_fds and len(self.open_fds) > 1:
            return Call("close", (self.fd(),))
        return Call("brk", (0,))

    def absurd(self) -> Call:
        """Arguments the kernel rejects before it changes anything."""
        rng = self.rng
        addr, length = self.pick_range()
        huge = rng.choice([MASK64, MASK64 - P + 2, 1 << 63, TASK_SIZE + P, 1 << 47])
        choices: list[Call] = [
            Call("mmap", (0, 0, 3, MAP_PRIVATE | MAP_ANON, -1, 0)),
            Call("mmap", (0, huge, 3, MAP_PRIVATE | MAP_ANON, -1, 0)),
            Call("mmap", (addr + 1, P, 3, MAP_PRIVATE | MAP_ANON | MAP_FIXED, -1, 0)),
            Call("mmap", (0xFFFF800000000000, P, 3, MAP_PRIVATE | MAP_ANON | MAP_FIXED, -1, 0)),
            Call("mmap", (TASK_SIZE, 2 * P, 3, MAP_PRIVATE | MAP_ANON | MAP_FIXED, -1, 0)),
            Call("mmap", (0, P, 3, MAP_ANON, -1, 0)),
            Call("mmap", (0, P, 3, 0x03 | MAP_ANON | 0x800000, -1, 0)),
            Call("mmap", (0, P, 3, MAP_SHARED, LiveChild.RAW_FD + 7, 0)),
            Call("mmap", (0, P, 3, MAP_PRIVATE | 0x800000 | MAP_ANON, -1, 0)),
            Call("mmap", (0, P, 0x10 | 3, MAP_PRIVATE | MAP_ANON, -1, 0)),
            Call("munmap", (addr + rng.randrange(1, P), length)),
            Call("munmap", (addr, 0)),
            Call("munmap", (addr, huge)),
            Call("mprotect", (addr + rng.randrange(1, P), length, 1)),
            Call("mprotect", (addr, length, 0x10 | 1)),
            Call("mprotect", (addr, 0, 0)),
            Call("mprotect", (addr, MASK64 - addr + 1 + P, 0)),
            Call("madvise", (addr + rng.randrange(1, P), length, 4)),
            Call("madvise", (addr, length, rng.choice(ADVICE_UNKNOWN))),
            Call("madvise", (addr, 0, 10)),
            Call("madvise", (addr, MASK64 - addr + 1, 10)),
            Call("mseal", (addr, length, rng.choice([1, 2, 1 << 40]))),
            Call("mseal", (addr + 1, length, 0)),
            Call("mseal", (addr, 0, 0)),
            Call("mlock", (addr, MASK64 - P + 2)),
            Call("mlock", (addr, 0)),
            Call("mremap", (addr, length, length + P, 8, 0)),
            Call("mremap", (addr, length, 0, MREMAP_MAYMOVE, 0)),
            Call("mremap", (addr + 1, length, length, 0, 0)),
            Call("mremap", (addr, length, length + P, MREMAP_FIXED, WINDOW)),
            Call("mremap", (addr, length, length + P, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, 0)),
            Call("mremap", (addr, length, length, MREMAP_DONTUNMAP, 0)),
            Call("mremap", (addr, length, length, MREMAP_MAYMOVE | MREMAP_FIXED, addr)),
            Call("mremap", (addr, length, length, MREMAP_MAYMOVE | MREMAP_FIXED, addr + 1)),
            Call("mremap", (addr, length, huge, MREMAP_MAYMOVE, 0)),
            Call("brk", (1,)),
            Call("brk", (MASK64 - P,)),
            Call("ftruncate", (LiveChild.RAW_FD + 3, P)),
        ]
        if self.open_fds:
            fd = self.fd()
            choices += [
                Call("mmap", (0, P, 3, MAP_PRIVATE, fd, 100)),
                Call("mmap", (0, 2 * P, 3, MAP_SHARED, fd, MASK64 & ~(P - 1))),
                Call("mmap", (0, P, 3, 0x03, fd, 0)),
                Call("ftruncate", (fd, 1 << 63)),
            ]
        return rng.choice(choices)

    def observe(self, call: Call, out: Outcome) -> None:
        """Track fds and the break from the kernel's answers."""
        if call.name == "memfd_create" and out.err is None:
            assert out.ret is not None
            self.memfd_names[call.args[0]] = out.ret
            self.open_fds.append(out.ret)
            self.nfds += 1
        elif call.name == "close" and out.err is None:
            self.open_fds.remove(call.args[0])
        elif call.name == "brk" and out.ret is not None:
            self.brk = out.ret


SETUP_CALLS = [
    Call("memfd_create", ("fz0",)),
    Call("ftruncate", (0, 16 * P)),
    Call("memfd_create", ("fz1",)),
    Call("ftruncate", (1, 8 * P)),
]


@dataclass
class Step:
    call: Call
    kernel: Outcome
    other: Outcome | None


@dataclass
class SequenceResult:
    seed: int | None
    steps: list[Step] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    compared: int = 0
    invalid: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self, other_name: str = "vmsim", reproduce: str = "") -> str:
        lines = [
            f"seed {self.seed}: kernel and {other_name} disagree after call #{len(self.steps)}"
        ]
        if reproduce:
            lines.append(f"reproduce: {reproduce}")
        lines.append("calls (kernel result | " + other_name + " result):")
        for i, st in enumerate(self.steps, 1):
            mark = "" if st.other == st.kernel else "   <-- differs"
            lines.append(f"  {i:3}. {st.call}  =>  {st.kernel!r} | {st.other!r}{mark}")
        lines.extend(self.problems)
        return "\n".join(lines)


OtherFactory = Callable[[LiveChild, str], Any]


def run_calls(
    calls: Iterable[Call] | None,
    make_other: OtherFactory,
    *,
    seed: int | None = None,
    ncalls: int = 40,
    check_state: bool = True,
    aslr: bool = False,
) -> SequenceResult:
    """Run a generated (``calls is None``: seeded) or given sequence on a fresh child and on
    ``make_other(child, smaps)``; stop at the first difference.  ``aslr=True`` randomises the
    child's layout (other holes, other placements) at the price of exact reproducibility."""
    res = SequenceResult(seed)
    kernel = LiveChild(aslr=aslr)
    other = None
    try:
        kernel.map_floor()
        k_maps, k_smaps = kernel.maps(), kernel.smaps()
        snap = Snapshot.read(k_maps, k_smaps)
        guard = Guard.from_snapshot(snap, kernel.brk0)
        other = make_other(kernel, k_smaps)
        if check_state:
            res.problems = compare_state(k_maps, k_smaps, other.maps(), other.smaps())
            if res.problems:
                res.problems.insert(0, "state differs right after spawn (before any call)")
                return res
        gen = Generator(seed or 0, guard, kernel.brk0)
        script = list(SETUP_CALLS) + (list(calls) if calls is not None else [])
        total = len(SETUP_CALLS) + (ncalls if calls is None else 0)
        i = 0
        while i < max(total, len(script)):
            if i < len(script):
                call = script[i]
                why = unsafe(call, snap, guard)
                if why:
                    res.invalid = f"call #{i + 1} {call}: {why}"
                    return res
            else:
                call = gen.next_call(snap)
            i += 1
            kout = normalize_outcome(apply(kernel, call))
            gen.observe(call, kout)
            try:
                oout = normalize_outcome(apply(other, call))
            except SimCrash as exc:
                res.steps.append(Step(call, kout, None))
                res.problems.append(f"vmsim raised an unexpected exception:\n{exc}")
                return res
            res.steps.append(Step(call, kout, oout))
            res.compared += 1
            if kout != oout:
                res.problems.append(f"results differ: kernel {kout!r}, other {oout!r}")
                return res
            k_maps, k_smaps = kernel.maps(), kernel.smaps()
            if check_state:
                try:
                    o_maps, o_smaps = other.maps(), other.smaps()
                except Exception as exc:
                    res.problems.append(f"maps()/smaps() raised {exc!r}")
                    return res
                res.problems = compare_state(k_maps, k_smaps, o_maps, o_smaps)
                if res.problems:
                    return res
                k_count = k_maps.count("\n") - 1  # minus [vsyscall], the gate VMA
                o_count = other.map_count
                if o_count != k_count:
                    res.problems.append(f"map_count differs: kernel {k_count}, other {o_count}")
                    return res
            snap = Snapshot.read(k_maps, k_smaps)
        return res
    finally:
        kernel.close()
        if isinstance(other, LiveChild):
            other.close()


def shrink(
    calls: list[Call], make_other: OtherFactory, still_fails: Callable[[SequenceResult], bool]
) -> list[Call]:
    """Greedy one-at-a-time removal while the sequence still fails (for FINDINGS.md repros)."""
    best = list(calls)
    changed = True
    while changed:
        changed = False
        for i in range(len(best) - 1, -1, -1):
            cand = best[:i] + best[i + 1 :]
            r = run_calls(cand, make_other)
            if r.invalid is None and still_fails(r):
                best = cand
                changed = True
    return best
