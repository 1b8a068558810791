"""Random syscall sequences against vmsim and a naive page-by-page model (STYLE.md habit 5).

The naive model keeps, per page of a small window, what the kernel makes visible: mapped or not,
prot, the VmFlags a call can set, the first byte's contents.  It does not model VMAs.  It checks:

* structure: maps sorted, non-overlapping, page-aligned, map_count == lines - 1 ([vsyscall]);
* per page: perms and VmFlags equal the model's (VM_ACCOUNT where it is certain, see below);
* contents: every readable page reads what the model says; faults have the right code;
* errnos: each call fails exactly when and how the model says;
* merging, where it is certain: two adjacent VMAs with equal perms and VmFlags whose pages are
  all *pristine* must have been merged.  A page stops being pristine ("tainted") when its VMA
  may have an anon_vma or a non-linear vm_pgoff: it was written, mlock'ed (populates with a
  write fault), moved by mremap, or lies in a contiguous mapped run with a tainted page (a
  VMA, and so its anon_vma, never spans a hole; merges only join adjacent pages).  Taint is
  never cleared while the page stays mapped, so the check is conservative, hence sound.
* VM_ACCOUNT ("ac"): private anon, writable and not MAP_NORESERVE => set; MAP_NORESERVE =>
  never set; not writable and pristine => clear (mprotect drops it when there is no anon_vma);
  not writable and tainted => either.
"""

from __future__ import annotations

import errno
import itertools
from dataclasses import dataclass, replace

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import vmsim
from vmsim import (
    MADV_DODUMP,
    MADV_DOFORK,
    MADV_DONTDUMP,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_NORMAL,
    MADV_RANDOM,
    MADV_SEQUENTIAL,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_NORESERVE,
    MAP_PRIVATE,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
    SEGV_ACCERR,
    SEGV_MAPERR,
    Segfault,
)

PAGE = 4096
W = 16  # window pages
BASE = 0x1_0000_0000
RW = PROT_READ | PROT_WRITE
PROTS = [PROT_NONE, PROT_READ, RW]

# VmFlags mnemonics in bit order (fs/proc/task_mmu.c show_smap_vma_flags), those we can produce
ORDER = ["rd", "wr", "ex", "mr", "mw", "me", "lo", "sr", "rr", "dc", "ac", "nr", "dd"]
ADVICE = {
    MADV_DONTFORK: ({"dc"}, set()),
    MADV_DOFORK: (set(), {"dc"}),
    MADV_DONTDUMP: ({"dd"}, set()),
    MADV_DODUMP: (set(), {"dd"}),
    MADV_RANDOM: ({"rr"}, {"sr"}),
    MADV_SEQUENTIAL: ({"sr"}, {"rr"}),
    MADV_NORMAL: (set(), {"rr", "sr"}),
}


@dataclass(frozen=True)
class Page:
    prot: int
    flags: frozenset[str]  # settable VmFlags: nr lo dc dd rr sr
    data: int | None  # first byte; None = unknown
    tainted: bool


def addr(page: int) -> int:
    return BASE + page * PAGE


def parse(text: str) -> list[tuple[int, int, str, str]]:
    out = []
    for line in text.splitlines():
        rng, perms, offset, dev, inode, *name = line.split(" ", 5)
        s, e = (int(x, 16) for x in rng.split("-"))
        assert int(offset, 16) == 0 and dev == "00:00" and inode == "0", line
        out.append((s, e, perms, (name[0].strip() if name else "")))
    return out


class VmaMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.p = vmsim.Machine().spawn()
        self.pages: dict[int, Page] = {}

    # --- model helpers -------------------------------------------------------------------------

    def vmas(self) -> list[tuple[int, int, str, str]]:
        return [v for v in parse(self.p.maps()) if v[3] != "[vsyscall]"]

    def close_taint(self) -> None:
        """Spread taint over each contiguous run of mapped pages."""
        k = 0
        while k < W:
            if k not in self.pages:
                k += 1
                continue
            run = []
            while k in self.pages:
                run.append(k)
                k += 1
            if any(self.pages[i].tainted for i in run):
                for i in run:
                    self.pages[i] = replace(self.pages[i], tainted=True)

    def expect_errno(self, want: int | None, call, *args) -> object:
        try:
            got = call(*args)
        except OSError as e:
            assert e.errno == want, f"{call.__name__}{args}: errno {e.errno}, model says {want}"
            return None
        assert want is None, f"{call.__name__}{args} succeeded, model says errno {want}"
        return got

    def first_hole(self, start: int, n: int) -> int | None:
        return next((k for k in range(start, start + n) if k not in self.pages), None)

    # --- rules ---------------------------------------------------------------------------------

    @rule(
        start=st.integers(0, W - 1),
        n=st.integers(1, 4),
        prot=st.sampled_from(PROTS),
        mode=st.sampled_from(["fixed", "noreplace", "hint"]),
        noreserve=st.booleans(),
    )
    def mmap(self, start, n, prot, mode, noreserve):
        n = min(n, W - start)
        flags = MAP_PRIVATE | MAP_ANONYMOUS | (MAP_NORESERVE if noreserve else 0)
        flags |= {"fixed": MAP_FIXED, "noreplace": MAP_FIXED_NOREPLACE, "hint": 0}[mode]
        busy = any(k in self.pages for k in range(start, start + n))
        want = errno.EEXIST if mode == "noreplace" and busy else None
        got = self.expect_errno(want, self.p.mmap, addr(start), n * PAGE, prot, flags)
        if got is None:
            return
        if mode == "hint" and busy:
            # refused hint: top-down search, far from the window; drop it again
            assert got + n * PAGE <= BASE or got >= addr(W), hex(got)
            self.p.munmap(got, n * PAGE)
            return
        assert got == addr(start)
        fl = frozenset({"nr"} if noreserve else set())
        for k in range(start, start + n):
            self.pages[k] = Page(prot, fl, 0, False)
        self.close_taint()

    @rule(start=st.integers(0, W - 1), n=st.integers(1, 6))
    def munmap(self, start, n):
        n = min(n, W - start)
        self.expect_errno(None, self.p.munmap, addr(start), n * PAGE)
        for k in range(start, start + n):
            self.pages.pop(k, None)

    @rule(start=st.integers(0, W - 1), n=st.integers(1, 6), prot=st.sampled_from(PROTS))
    def mprotect(self, start, n, prot):
        n = min(n, W - start)
        hole = self.first_hole(start, n)
        self.expect_errno(
            None if hole is None else errno.ENOMEM, self.p.mprotect, addr(start), n * PAGE, prot
        )
        for k in range(start, start + n if hole is None else hole):
            pg = self.pages[k]
            # a locked VMA gaining write is populated with write faults (mprotect_fixup)
            taint = pg.tainted or (
                "lo" in pg.flags and prot & PROT_WRITE and not pg.prot & PROT_WRITE
            )
            self.pages[k] = replace(pg, prot=prot, tainted=bool(taint))
        self.close_taint()

    @rule(start=st.integers(0, W - 1), n=st.integers(1, 6), lock=st.booleans())
    def mlock(self, start, n, lock):
        n = min(n, W - start)
        hole = self.first_hole(start, n)
        call = self.p.mlock if lock else self.p.munlock
        # kernel-verified: mlock sets VM_LOCKED first, then __mm_populate() fails on a
        # PROT_NONE page with EFAULT, which mlock reports as ENOMEM (flags stay set)
        inaccessible = lock and any(
            self.pages[k].prot == PROT_NONE for k in range(start, start + n) if k in self.pages
        )
        want = None if hole is None and not inaccessible else errno.ENOMEM
        self.expect_errno(want, call, addr(start), n * PAGE)
        for k in range(start, start + n if hole is None else hole):
            pg = self.pages[k]
            flags = pg.flags | {"lo"} if lock else pg.flags - {"lo"}
            # mlock populates writable private pages with write faults: anon_vma
            self.pages[k] = replace(pg, flags=flags, tainted=pg.tainted or lock)
        self.close_taint()

    @rule(start=st.integers(0, W - 1), n=st.integers(1, 6), advice=st.sampled_from(sorted(ADVICE)))
    def madvise_flags(self, start, n, advice):
        n = min(n, W - start)
        hole = self.first_hole(start, n)
        self.expect_errno(
            None if hole is None else errno.ENOMEM, self.p.madvise, addr(start), n * PAGE, advice
        )
        add, drop = ADVICE[advice]
        for k in range(start, start + n):
            if k in self.pages:
                pg = self.pages[k]
                self.pages[k] = replace(pg, flags=(pg.flags - drop) | add)

    @rule(start=st.integers(0, W - 1), n=st.integers(1, 6))
    def madvise_dontneed(self, start, n):
        n = min(n, W - start)
        mapped = [k for k in range(start, start + n) if k in self.pages]
        locked = any("lo" in self.pages[k].flags for k in mapped)
        hole = len(mapped) < n
        want = errno.EINVAL if locked else (errno.ENOMEM if hole else None)
        self.expect_errno(want, self.p.madvise, addr(start), n * PAGE, MADV_DONTNEED)
        for k in mapped:
            # on EINVAL the VMAs before the locked one were zapped already: contents unknown
            self.pages[k] = replace(self.pages[k], data=None if locked else 0)

    @rule(page=st.integers(0, W - 1), value=st.integers(1, 255))
    def write(self, page, value):
        pg = self.pages.get(page)
        try:
            self.p.write(addr(page), bytes([value]))
        except Segfault as e:
            assert e.addr == addr(page)
            assert pg is None or not pg.prot & PROT_WRITE, "write to a writable page faulted"
            assert e.code == (SEGV_MAPERR if pg is None else SEGV_ACCERR)
            return
        assert pg is not None and pg.prot & PROT_WRITE, "write succeeded on a non-writable page"
        self.pages[page] = replace(pg, data=value, tainted=True)
        self.close_taint()

    @rule(data=st.data())
    def mremap_resize(self, data):
        vmas = [v for v in self.vmas() if BASE <= v[0] < addr(W)]
        if not vmas:
            return
        s, e, _, _ = data.draw(st.sampled_from(vmas))
        a = (s - BASE) // PAGE
        end = (e - BASE) // PAGE
        old = data.draw(st.integers(1, end - a))
        new = data.draw(st.integers(1, min(old + 3, W - a)))
        if new <= old:
            want = None  # shrink: unmap [a+new, a+old)
        elif a + old != end or any(k in self.pages for k in range(a + old, a + new)):
            want = errno.ENOMEM  # not the VMA's tail, or no room, and no MREMAP_MAYMOVE
        else:
            want = None
        got = self.expect_errno(want, self.p.mremap, addr(a), old * PAGE, new * PAGE, 0)
        if want is not None:
            return
        assert got == addr(a)
        if new < old:
            for k in range(a + new, a + old):
                self.pages.pop(k)
        for k in range(a + old, a + new):
            self.pages[k] = replace(self.pages[a + old - 1], data=0)
        self.close_taint()

    @rule(data=st.data())
    def mremap_move(self, data):
        vmas = [v for v in self.vmas() if BASE <= v[0] < addr(W)]
        if not vmas:
            return
        s, e, _, _ = data.draw(st.sampled_from(vmas))
        a = (s - BASE) // PAGE
        end = (e - BASE) // PAGE
        src = data.draw(st.integers(a, end - 1))
        n = data.draw(st.integers(1, end - src))
        dst = data.draw(st.integers(0, W - n))
        overlap = dst < src + n and src < dst + n
        want = errno.EINVAL if overlap else None
        flags = MREMAP_MAYMOVE | MREMAP_FIXED
        got = self.expect_errno(
            want, self.p.mremap, addr(src), n * PAGE, n * PAGE, flags, addr(dst)
        )
        if want is not None:
            return
        assert got == addr(dst)
        moved = [self.pages.pop(k) for k in range(src, src + n)]
        for i, pg in enumerate(moved):
            self.pages[dst + i] = replace(pg, tainted=True)
        self.close_taint()

    # --- invariants ----------------------------------------------------------------------------

    @invariant()
    def structure(self):
        vmas = self.vmas()
        for s, e, _, _ in vmas:
            assert s % PAGE == 0 and e % PAGE == 0 and s < e
        for (_, e1, _, _), (s2, _, _, _) in itertools.pairwise(vmas):
            assert e1 <= s2, "VMAs overlap or are unsorted"
        assert self.p.map_count == len(vmas)
        assert self.p.maps().splitlines()[-1].endswith("[vsyscall]")
        for s, e, _, _ in vmas:
            assert s >= BASE and e <= addr(W), f"VMA outside the window: {s:#x}-{e:#x}"

    @invariant()
    def pages_match(self):
        smaps = self.p.smaps()
        flags_at = {}
        start = None
        for line in smaps.splitlines():
            if line[:1].isdigit() or (line[:1] in "abcdef" and "-" in line.split(" ")[0]):
                start = int(line.split("-")[0], 16)
            elif line.startswith("VmFlags:"):
                flags_at[start] = line[len("VmFlags:") :].split()
        seen: dict[int, tuple[str, list[str], int]] = {}
        for s, e, perms, _ in self.vmas():
            for a in range(s, e, PAGE):
                seen[(a - BASE) // PAGE] = (perms, flags_at[s], s)
        assert sorted(seen) == sorted(self.pages), "mapped pages differ from the model"
        for k, pg in self.pages.items():
            perms, vmflags, _ = seen[k]
            want_perms = (
                ("r" if pg.prot & PROT_READ else "-")
                + ("w" if pg.prot & PROT_WRITE else "-")
                + "-p"
            )
            assert perms == want_perms, f"page {k}: {perms} != {want_perms}"
            writable = bool(pg.prot & PROT_WRITE)
            want = set(pg.flags) | {"mr", "mw", "me"}
            want |= {"rd"} if pg.prot & PROT_READ else set()
            want |= {"wr"} if writable else set()
            got = set(vmflags)
            if writable and "nr" not in pg.flags:
                want.add("ac")
            elif not writable and "nr" not in pg.flags and pg.tainted:
                want |= got & {"ac"}  # may go either way once there is an anon_vma
            assert got == want, f"page {k}: VmFlags {sorted(got)} != {sorted(want)}"
            assert vmflags == sorted(vmflags, key=ORDER.index), f"VmFlags order {vmflags}"

    @invariant()
    def pristine_neighbours_are_merged(self):
        vmas = self.vmas()
        smaps = self.p.smaps()
        for (s1, e1, p1, _), (s2, e2, p2, _) in itertools.pairwise(vmas):
            if e1 != s2 or p1 != p2:
                continue
            pages = range((s1 - BASE) // PAGE, (e2 - BASE) // PAGE)
            if any(self.pages[k].tainted for k in pages):
                continue
            f1 = smaps.split(f"{s1:08x}-", 1)[1].split("VmFlags:", 1)[1].split("\n", 1)[0]
            f2 = smaps.split(f"{s2:08x}-", 1)[1].split("VmFlags:", 1)[1].split("\n", 1)[0]
            assert f1 != f2, f"pristine equal neighbours not merged: {s1:#x} {s2:#x}"

    @invariant()
    def contents(self):
        for k, pg in self.pages.items():
            if not pg.prot & PROT_READ:
                try:
                    self.p.read(addr(k), 1)
                except Segfault as e:
                    assert e.code == SEGV_ACCERR
                else:
                    raise AssertionError(f"read of PROT_NONE page {k} did not fault")
                continue
            got = self.p.read(addr(k), 1)[0]
            if pg.data is not None:
                assert got == pg.data, f"page {k}: read {got}, model {pg.data}"
        for k in range(W):
            if k not in self.pages:
                try:
                    self.p.read(addr(k), 1)
                except Segfault as e:
                    assert e.code == SEGV_MAPERR
                else:
                    raise AssertionError(f"read of unmapped page {k} did not fault")


VmaMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestVmaMachine = VmaMachine.TestCase
