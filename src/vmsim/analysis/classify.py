"""Name the shape of every VMA in a /proc/PID/maps snapshot.

A maps line says only where a VMA is, its protection and what backs it; what it is *for* comes
from the shapes that the kernel, ld.so, glibc and language runtimes leave behind (field notes §0):

- ``execve()`` maps the program's PT_LOAD segments and ld.so maps each library's; the data
  segment is split by the RELRO ``mprotect()`` and continued by an anonymous bss VMA;
- glibc's ``pthread_create()`` maps a stack with ``MAP_STACK`` and makes its lowest page(s)
  PROT_NONE, so each thread costs a ``---p`` guard directly *below* a ``rw-p`` stack (HotSpot's
  Java threads: a 16 KiB guard zone, total = ``-Xss``);
- glibc's ``new_heap()`` reserves a HEAP_MAX_SIZE (64 MiB) aligned region with PROT_NONE and
  makes its start read-write as the arena grows: a ``rw-p`` + ``---p`` pair whose ends are
  64 MiB aligned;
- allocators that decommit with ``mprotect(PROT_NONE)`` or ``mmap(MAP_FIXED, PROT_NONE)``
  (jemalloc#1328, bdwgc#324) leave alternating ``rw-p`` / ``---p`` runs of small pieces.

The rules are applied in a fixed order, most specific first, and each VMA takes the first kind
that claims it; the ``reason`` says which rule fired. Everything here is a heuristic over what
the text shows: a shape that matches no rule is reported as plain anonymous or file memory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from vmsim.mm.flags import VM_NOHUGEPAGE, VM_NORESERVE
from vmsim.snapshot import MapsEntry

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
PAGE = 4 * KiB

# glibc: HEAP_MAX_SIZE = 2 * DEFAULT_MMAP_THRESHOLD_MAX = 2 * 4 MiB * sizeof(long) on 64-bit.
ARENA_HEAP_MAX = 64 * MiB
# A thread's guard is a few pages (glibc: 1 page by default, HotSpot: 4 pages for the yellow,
# red and reserved zones); anything larger below a stack is taken for a reservation.
MAX_GUARD = 1 * MiB
# Thread stack sizes people use: 16 KiB (PTHREAD_STACK_MIN) ... 1 GiB (huge -Xss); the total
# (guard + stack) is then a whole number of 64 KiB units, give or take the two pages glibc and
# HotSpot add for their guards.
MIN_STACK_TOTAL = 64 * KiB
MAX_STACK_TOTAL = 1 * GiB
STACK_UNIT = 64 * KiB
STACK_SLACK = 2 * PAGE
# A hole in a decommit run is small: a reservation is a PROT_NONE region of at least this.
RESERVATION_MIN = 1 * MiB
DECOMMIT_MIN_VMAS = 4  # rw, ---, rw, --- : at least two holes

SPECIAL_NAMES = frozenset(
    {"[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]", "[uprobes]", "[sigpage]", "[vectors]"}
)
_SHARED_LIB = re.compile(r"\.so(\.|$)")
_DELETED = " (deleted)"


class Kind(StrEnum):
    """What a VMA is for. The values are the names used in JSON output."""

    PROGRAM = "program"
    LIBRARY = "library"
    HEAP = "heap"
    MAIN_STACK = "main_stack"
    THREAD_STACK = "thread_stack"
    THREAD_GUARD = "thread_guard"
    ARENA = "malloc_arena"
    RESERVATION = "reservation"
    DECOMMIT = "decommit_run"
    JIT = "jit"
    FILE = "file"
    SPECIAL = "special"
    ANON = "anon"


KIND_TITLES: dict[Kind, str] = {
    Kind.PROGRAM: "program image",
    Kind.LIBRARY: "shared libraries",
    Kind.HEAP: "heap ([heap], brk)",
    Kind.MAIN_STACK: "main stack ([stack])",
    Kind.THREAD_STACK: "thread stacks",
    Kind.THREAD_GUARD: "thread stack guards",
    Kind.ARENA: "glibc malloc arena heaps",
    Kind.RESERVATION: "PROT_NONE reservations",
    Kind.DECOMMIT: "allocator decommit runs",
    Kind.JIT: "JIT / executable anonymous",
    Kind.FILE: "file mappings",
    Kind.SPECIAL: "special ([vdso], [vvar], ...)",
    Kind.ANON: "other anonymous",
}


@dataclass(frozen=True)
class ClassifiedVma:
    """One maps line with the kind the rules gave it.

    ``owner`` is the file the VMA belongs to (a library's bss names the library); ``unit``
    numbers the thing it is part of within its kind (the n-th thread stack and its guard share
    a unit, so do the two halves of an arena heap); ``counted`` is False for [vsyscall], which
    /proc/PID/maps prints but which is not a VMA of the process (not in map_count).
    """

    start: int
    end: int
    perms: str
    offset: int
    name: str | None
    lineno: int
    kind: Kind
    reason: str
    owner: str | None = None
    unit: int | None = None
    counted: bool = True
    rss_kb: int | None = None
    """Rss, Pss, Swap of the VMA when the input was smaps (None from maps)."""
    pss_kb: int | None = None
    swap_kb: int | None = None

    @property
    def size(self) -> int:
        return self.end - self.start


def is_anonymous(e: MapsEntry) -> bool:
    """No file behind it: unnamed, or named with prctl(PR_SET_VMA_ANON_NAME) as [anon:NAME]."""
    return e.ino == 0 and (e.name is None or e.name.startswith("[anon:"))


def _path(e: MapsEntry) -> str | None:
    """The file path of a file-backed VMA, " (deleted)" kept (it tells the reader something)."""
    if e.name is None or e.name.startswith("["):
        return None
    if e.ino == 0 and not e.name.startswith("/"):
        return None
    return e.name


def looks_like_shared_library(path: str) -> bool:
    base = os.path.basename(path.removesuffix(_DELETED))
    return bool(_SHARED_LIB.search(base))


def _kernel_labelled_stack(e: MapsEntry) -> bool:
    """Linux < 4.5 printed thread stacks as ``[stack:TID]``."""
    return e.ino == 0 and e.name is not None and e.name.startswith("[stack:")


def _has_flag(e: MapsEntry, flag: int) -> bool:
    return e.vmflags is not None and bool(e.vmflags & flag)


def human_size(n: int) -> str:
    """4096 -> "4 KiB", 8 MiB -> "8 MiB", 8 MiB + 4 KiB -> "8196 KiB" (stack sizes stay exact
    below 16 MiB), 572096 KiB -> "558.7 MiB"."""
    if n < 16 * MiB and n % KiB == 0 and n % MiB != 0:
        return f"{n // KiB} KiB"
    for shift, unit in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if n >= 1 << shift:
            if n % (1 << shift) == 0:
                return f"{n >> shift} {unit}"
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} B"


def typical_stack(guard: int, stack: int) -> bool:
    """Guard + stack sizes of a pthread/JVM thread: a few guard pages below a stack whose total
    is a whole number of 64 KiB units, give or take the guard pages the runtimes add on top.

    Allocator pieces are not: jemalloc#1328's 84 KiB rw / 8 KiB holes make 92 KiB.
    """
    total = guard + stack
    if not (guard <= MAX_GUARD and guard < stack and MIN_STACK_TOTAL <= total <= MAX_STACK_TOTAL):
        return False
    for size in (total, stack):
        rem = size % STACK_UNIT
        if rem <= STACK_SLACK or STACK_UNIT - rem <= STACK_SLACK:
            return True
    return False


def find_program(entries: Sequence[MapsEntry], exe: str | None = None) -> str | None:
    """The executable's path: ``exe`` when known (/proc/PID/exe), else the lowest-addressed file
    with an executable segment that is not a shared object (execve maps the program first at
    its ELF base, below the libraries that the mmap area takes top-down)."""
    paths = {p for e in entries if (p := _path(e)) is not None}
    if exe is not None:
        for candidate in (exe, exe + _DELETED):
            if candidate in paths:
                return candidate
    executable = {p for e in entries if e.perms[2] == "x" and (p := _path(e)) is not None}
    for e in entries:
        p = _path(e)
        if (
            p is not None
            and p in executable
            and not looks_like_shared_library(p)
            and not p.startswith(("/memfd:", "/dev/", "/SYSV"))
        ):
            return p
    return None


class _Classifier:
    """One pass per rule over the snapshot; ``out[i]`` is set once, by the first rule that
    claims entry ``i``."""

    def __init__(self, entries: Sequence[MapsEntry], exe: str | None) -> None:
        self.e = list(entries)
        self.out: list[ClassifiedVma | None] = [None] * len(self.e)
        self.units: dict[Kind, int] = {}
        self.program = find_program(self.e, exe)
        executable = {p for x in self.e if x.perms[2] == "x" and (p := _path(x)) is not None}
        self.libraries = {
            p
            for x in self.e
            if (p := _path(x)) is not None
            and p != self.program
            and not p.startswith(("/memfd:", "/dev/", "/SYSV"))
            and (looks_like_shared_library(p) or p in executable)
        }

    def set(
        self,
        i: int,
        kind: Kind,
        reason: str,
        owner: str | None = None,
        unit: int | None = None,
        counted: bool = True,
    ) -> None:
        e = self.e[i]
        self.out[i] = ClassifiedVma(
            e.start, e.end, e.perms, e.offset, e.name, e.lineno, kind, reason, owner, unit, counted,
            e.rss_kb, e.pss_kb, e.swap_kb,
        )  # fmt: skip

    def new_unit(self, kind: Kind) -> int:
        n = self.units.get(kind, 0)
        self.units[kind] = n + 1
        return n

    def free(self, i: int) -> bool:
        return 0 <= i < len(self.e) and self.out[i] is None

    def adjacent(self, i: int) -> bool:
        """Entry ``i + 1`` starts where entry ``i`` ends."""
        return i + 1 < len(self.e) and self.e[i].end == self.e[i + 1].start

    def run(self) -> list[ClassifiedVma]:
        self.named()
        self.files()
        self.bss()
        self.arenas()
        self.thread_stacks()
        self.decommit_runs()
        self.rest()
        return [c for c in self.out if c is not None]

    # --- rules, in the order they are applied -----------------------------------------------

    def named(self) -> None:
        """Pseudo paths the kernel prints: they say what they are."""
        for i, e in enumerate(self.e):
            name = e.name or ""
            if name == "[vsyscall]":
                self.set(
                    i,
                    Kind.SPECIAL,
                    "vsyscall gate page: printed in maps but not a VMA of the process "
                    "(not in map_count)",
                    counted=False,
                )
            elif name in SPECIAL_NAMES:
                self.set(i, Kind.SPECIAL, f"{name}: mapped by the kernel at execve")
            elif name == "[heap]":
                self.set(i, Kind.HEAP, "brk heap: glibc's main arena grows it with brk()")
            elif name == "[stack]":
                self.set(i, Kind.MAIN_STACK, "main thread's stack (grows down, VM_GROWSDOWN)")
            elif name.startswith("[anon_shmem:"):
                self.set(i, Kind.FILE, f"named shared anonymous memory {name}", owner=name)

    def files(self) -> None:
        """File-backed VMAs: the program, libraries (with their segments), other files."""
        for i, e in enumerate(self.e):
            path = _path(e)
            if path is None or not self.free(i):
                continue
            base = os.path.basename(path.removesuffix(_DELETED))
            if path.startswith("/memfd:") and e.perms[2] == "x":
                what = ".NET W^X double mapping" if "doublemapper" in path else "executable memfd"
                self.set(i, Kind.JIT, f"{what}: JIT code mapped from {path}", owner=path)
            elif path == self.program:
                self.set(i, Kind.PROGRAM, f"{self.segment(i)} of the program", owner=path)
            elif path in self.libraries:
                self.set(i, Kind.LIBRARY, f"{self.segment(i)} of {base}", owner=path)
            else:
                self.set(i, Kind.FILE, self.file_reason(e, path), owner=path)

    def segment(self, i: int) -> str:
        """Which part of an ELF image a file-backed VMA is, as ld.so and execve lay it out."""
        e = self.e[i]
        p = e.perms
        same_next = self.adjacent(i) and self.e[i + 1].name == e.name
        if p[3] == "s":
            return "shared mapping"
        if p == "r-xp" or p == "rwxp":
            return "text segment (code)"
        if p == "---p":
            return "PROT_NONE gap between segments (alignment padding)"
        if p == "rw-p":
            return "data segment (.data, .got)"
        if p == "r--p" and same_next and self.e[i + 1].perms == "rw-p":
            return "RELRO (data made read-only after relocation: mprotect split the segment)"
        if p == "r--p" and e.offset == 0:
            return "ELF headers and read-only data"
        return "read-only data"

    @staticmethod
    def file_reason(e: MapsEntry, path: str) -> str:
        shared = e.perms[3] == "s"
        if path.startswith("/dev/zero"):
            return "shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS shows as /dev/zero)"
        if path.startswith("/memfd:"):
            return f"memfd {path.removeprefix('/memfd:').removesuffix(_DELETED)}"
        if path.startswith("/SYSV"):
            return "System V shared memory segment (shmat)"
        if path.startswith("/dev/shm/"):
            return f"POSIX shared memory (shm_open) {path.removeprefix('/dev/shm/')}"
        if path.startswith("/dev/"):
            return f"device mapping of {path}"
        if path.endswith(_DELETED):
            return "deleted file, still mapped"
        return "shared file mapping (MAP_SHARED)" if shared else "private file mapping"

    def bss(self) -> None:
        """An anonymous rw-p VMA right after an image's data segment is its bss (the part of
        the segment beyond the file, which the ELF loader maps anonymous)."""
        for i in range(1, len(self.e)):
            e, prev = self.e[i], self.e[i - 1]
            out = self.out[i - 1]
            if (
                self.free(i)
                and e.name is None
                and e.ino == 0
                and e.perms == "rw-p"
                and prev.end == e.start
                and prev.perms == "rw-p"
                and out is not None
                and out.kind in (Kind.PROGRAM, Kind.LIBRARY)
            ):
                base = os.path.basename(out.owner or "")
                self.set(
                    i,
                    out.kind,
                    f"bss of {'the program' if out.kind is Kind.PROGRAM else base} "
                    "(anonymous end of the data segment)",
                    owner=out.owner,
                )

    def arenas(self) -> None:
        """glibc new_heap(): a 64 MiB aligned region, read-write at its start, PROT_NONE
        (MAP_NORESERVE) above; a full heap is one 64 MiB rw-p VMA."""
        for i, e in enumerate(self.e):
            if not (self.free(i) and is_anonymous(e) and e.perms == "rw-p"):
                continue
            if e.start % ARENA_HEAP_MAX:
                continue
            top = e.start + ARENA_HEAP_MAX
            nr = " (MAP_NORESERVE)" if _has_flag(e, VM_NORESERVE) else ""
            if e.end == top:
                unit = self.new_unit(Kind.ARENA)
                self.set(i, Kind.ARENA, f"full 64 MiB malloc arena heap{nr}", unit=unit)
            elif (
                e.end < top
                and self.adjacent(i)
                and self.free(i + 1)
                and is_anonymous(self.e[i + 1])
                and self.e[i + 1].perms == "---p"
                and self.e[i + 1].end == top
            ):
                unit = self.new_unit(Kind.ARENA)
                used = human_size(e.end - e.start)
                self.set(
                    i, Kind.ARENA, f"malloc arena heap, used part ({used} of 64 MiB){nr}", unit=unit
                )
                self.set(
                    i + 1,
                    Kind.ARENA,
                    "malloc arena heap, reserved PROT_NONE rest of its 64 MiB aligned region",
                    unit=unit,
                )

    def thread_stacks(self) -> None:
        """A PROT_NONE guard directly below a read-write stack of a typical size."""
        for i, g in enumerate(self.e):
            if not (
                self.free(i)
                and is_anonymous(g)
                and g.perms == "---p"
                and self.adjacent(i)
                and self.free(i + 1)
            ):
                continue
            s = self.e[i + 1]
            labelled = _kernel_labelled_stack(s)
            if not ((is_anonymous(s) or labelled) and s.perms in ("rw-p", "rwxp")):
                continue
            guard, stack = g.end - g.start, s.end - s.start
            # Since 6.7 MAP_STACK sets VM_NOHUGEPAGE: with smaps, that vouches for any size.
            map_stack = _has_flag(s, VM_NOHUGEPAGE)
            if not (
                typical_stack(guard, stack)
                or ((map_stack or labelled) and guard <= MAX_GUARD and guard < stack)
            ):
                continue
            unit = self.new_unit(Kind.THREAD_STACK)
            hint = ", VM_NOHUGEPAGE from MAP_STACK" if map_stack else ""
            if labelled:
                hint += f", labelled {s.name} by Linux < 4.5"
            self.set(
                i,
                Kind.THREAD_GUARD,
                f"{human_size(guard)} PROT_NONE guard directly below a thread stack",
                unit=unit,
            )
            self.set(
                i + 1,
                Kind.THREAD_STACK,
                f"thread stack: {human_size(stack)} rw above a {human_size(guard)} guard "
                f"(total {human_size(guard + stack)}{hint})",
                unit=unit,
            )

    def decommit_runs(self) -> None:
        """Alternating rw-p / ---p anonymous pieces with small holes: an allocator that
        decommits with PROT_NONE (jemalloc#1328, bdwgc#324). Every hole costs 2 VMAs."""
        i = 0
        n = len(self.e)
        while i < n:
            j = i
            while (
                j < n
                and self.free(j)
                and is_anonymous(self.e[j])
                and self.e[j].perms in ("rw-p", "---p")
                and (j == i or self.e[j].perms != self.e[j - 1].perms)
                and (j == i or self.e[j - 1].end == self.e[j].start)
                and (self.e[j].perms == "rw-p" or self.e[j].end - self.e[j].start < RESERVATION_MIN)
            ):
                j += 1
            if j - i >= DECOMMIT_MIN_VMAS:
                unit = self.new_unit(Kind.DECOMMIT)
                holes = sum(1 for k in range(i, j) if self.e[k].perms == "---p")
                for k in range(i, j):
                    what = "PROT_NONE hole" if self.e[k].perms == "---p" else "committed piece"
                    self.set(
                        k,
                        Kind.DECOMMIT,
                        f"{what} in a run of {j - i} alternating rw-p/---p VMAs ({holes} holes)",
                        unit=unit,
                    )
            i = max(j, i + 1)

    def rest(self) -> None:
        """Whatever no shape claimed."""
        for i, e in enumerate(self.e):
            if not self.free(i):
                continue
            size = e.end - e.start
            label = f"named {e.name}" if e.name else "anonymous"
            if _kernel_labelled_stack(e):
                self.set(
                    i,
                    Kind.THREAD_STACK,
                    f"thread stack labelled {e.name} by Linux < 4.5, no guard below it",
                    unit=self.new_unit(Kind.THREAD_STACK),
                )
            elif e.perms[2] == "x":
                w = "writable and executable" if e.perms[1] == "w" else "executable"
                self.set(i, Kind.JIT, f"{label} {w} memory: JIT-compiled code")
            elif e.perms == "---p" and size >= RESERVATION_MIN:
                self.set(
                    i,
                    Kind.RESERVATION,
                    f"{human_size(size)} PROT_NONE {label} region: address space reserved, "
                    "not committed (heap, code cache or GC reservation)",
                )
            elif e.perms == "---p":
                self.set(i, Kind.ANON, f"small PROT_NONE {label} region (a guard page?)")
            elif e.perms[3] == "s":
                self.set(i, Kind.ANON, f"{label} shared memory")
            else:
                self.set(i, Kind.ANON, f"{label} memory (mmap, malloc'd large blocks, TLS)")


def classify(entries: Sequence[MapsEntry], exe: str | None = None) -> list[ClassifiedVma]:
    """Give every maps entry a :class:`Kind` and a reason, in the order of ``entries``.

    ``exe`` is the program's path when known (readlink of /proc/PID/exe); otherwise it is
    inferred (:func:`find_program`).
    """
    return _Classifier(entries, exe).run()


__all__ = [
    "ARENA_HEAP_MAX",
    "KIND_TITLES",
    "ClassifiedVma",
    "Kind",
    "classify",
    "find_program",
    "human_size",
    "is_anonymous",
    "looks_like_shared_library",
    "typical_stack",
]
