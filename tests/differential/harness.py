"""Shared pieces of the differential tests: calls, the vmsim adapter and /proc text comparison.

A ``Call`` is one syscall (or memory access) with plain-int arguments.  ``apply(target, call)``
runs it on either side: ``live.LiveChild`` (the kernel) or ``SimTarget`` (vmsim), both of which
answer with ``live.Outcome`` values.  ``compare_state`` diffs what the two sides print in
``/proc/<pid>/maps`` and ``smaps`` after normalising the device and inode numbers of files that
only exist on one side (memfds, ``/dev/zero (deleted)``).
"""

from __future__ import annotations

import difflib
import errno
import re
import traceback
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from .live import LiveChild, Outcome

PAGE = 4096
TASK_SIZE = (1 << 47) - PAGE
MASK64 = (1 << 64) - 1

PROT = {
    1: "PROT_READ",
    2: "PROT_WRITE",
    4: "PROT_EXEC",
    8: "PROT_SEM",
    0x01000000: "PROT_GROWSDOWN",
}
MAP = {
    0x01: "MAP_SHARED",
    0x02: "MAP_PRIVATE",
    0x10: "MAP_FIXED",
    0x20: "MAP_ANONYMOUS",
    0x100: "MAP_GROWSDOWN",
    0x2000: "MAP_LOCKED",
    0x4000: "MAP_NORESERVE",
    0x8000: "MAP_POPULATE",
    0x20000: "MAP_STACK",
    0x40000: "MAP_HUGETLB",
    0x100000: "MAP_FIXED_NOREPLACE",
}
MADV = {
    0: "NORMAL",
    1: "RANDOM",
    2: "SEQUENTIAL",
    3: "WILLNEED",
    4: "DONTNEED",
    8: "FREE",
    9: "REMOVE",
    10: "DONTFORK",
    11: "DOFORK",
    12: "MERGEABLE",
    13: "UNMERGEABLE",
    14: "HUGEPAGE",
    15: "NOHUGEPAGE",
    16: "DONTDUMP",
    17: "DODUMP",
    18: "WIPEONFORK",
    19: "KEEPONFORK",
    20: "COLD",
    21: "PAGEOUT",
    22: "POPULATE_READ",
    23: "POPULATE_WRITE",
    24: "DONTNEED_LOCKED",
    25: "COLLAPSE",
    102: "GUARD_INSTALL",
    103: "GUARD_REMOVE",
}
MREMAP = {1: "MREMAP_MAYMOVE", 2: "MREMAP_FIXED", 4: "MREMAP_DONTUNMAP"}


def _bits(value: int, names: dict[int, str], zero: str) -> str:
    if value == 0:
        return zero
    parts = []
    rest = value
    if names is MAP:
        kind = value & 0x0F
        if kind in (1, 2, 3):
            parts.append({1: "MAP_SHARED", 2: "MAP_PRIVATE", 3: "MAP_SHARED_VALIDATE"}[kind])
            rest &= ~0x0F
    for bit, name in names.items():
        if rest & bit and name not in parts:
            parts.append(name)
            rest &= ~bit
    if rest:
        parts.append(hex(rest))
    return "|".join(parts)


def _h(v: int) -> str:
    return hex(v) if v >= 0 else str(v)


class Call(NamedTuple):
    """One operation, as the fuzzer generates it. ``args`` are ints (``data`` for writes)."""

    name: str
    args: tuple[Any, ...]

    def __str__(self) -> str:
        a = self.args
        n = self.name
        if n == "mmap":
            fd = a[4]
            fds = "-1" if fd == -1 else (f"badfd({fd})" if fd >= LiveChild.RAW_FD else f"fd{fd}")
            return (
                f"mmap({_h(a[0])}, {_h(a[1])}, {_bits(a[2], PROT, 'PROT_NONE')}, "
                f"{_bits(a[3], MAP, '0')}, {fds}, {_h(a[5])})"
            )
        if n == "mprotect":
            return f"mprotect({_h(a[0])}, {_h(a[1])}, {_bits(a[2], PROT, 'PROT_NONE')})"
        if n == "madvise":
            adv = "MADV_" + MADV[a[2]] if a[2] in MADV else str(a[2])
            return f"madvise({_h(a[0])}, {_h(a[1])}, {adv})"
        if n == "mremap":
            return (
                f"mremap({_h(a[0])}, {_h(a[1])}, {_h(a[2])}, {_bits(a[3], MREMAP, '0')}, "
                f"{_h(a[4])})"
            )
        if n == "write":
            return f"write({_h(a[0])}, <{len(a[1])} bytes {a[1][:4].hex()}…>)"
        if n in ("memfd_create",):
            return f"memfd_create({a[0]!r}{', ' + _h(a[1]) if len(a) > 1 else ''})"
        if n in ("ftruncate", "close"):
            return f"{n}(fd{a[0]}{''.join(', ' + _h(x) for x in a[1:])})"
        return f"{n}({', '.join(_h(x) for x in a)})"


class Target(Protocol):
    def maps(self) -> str: ...
    def smaps(self) -> str: ...


def apply(target: Any, call: Call) -> Outcome:
    """Run ``call`` on a LiveChild or a SimTarget."""
    if call.name == "close":
        return target.close_fd(*call.args)
    return getattr(target, call.name)(*call.args)


class SimTarget:
    """``vmsim.Process`` behind the LiveChild interface (logical fds, ``Outcome`` results)."""

    RAW_FD = LiveChild.RAW_FD

    def __init__(self, proc: Any) -> None:
        import vmsim

        self.p = proc
        self.fds: list[int] = []
        self._faults = (vmsim.Segfault, vmsim.BusError)

    def _fd(self, lfd: int) -> int:
        if lfd < 0 or lfd >= self.RAW_FD:
            return lfd
        return self.fds[lfd]

    def _run(self, fn: Any, *args: Any, addr: int = 0) -> Outcome:
        try:
            ret = fn(*args)
        except OSError as exc:
            return Outcome(err=errno.errorcode.get(exc.errno or 0, str(exc.errno)))
        except self._faults as exc:
            return Outcome(ret=max(exc.addr - addr, 0), err="FAULT")
        except Exception as exc:
            raise SimCrash(traceback.format_exc()) from exc
        return Outcome(ret=ret)

    def mmap(
        self, addr: int, length: int, prot: int, flags: int, fd: int = -1, offset: int = 0
    ) -> Outcome:
        return self._run(self.p.mmap, addr, length, prot, flags, self._fd(fd), offset)

    def munmap(self, addr: int, length: int) -> Outcome:
        return self._run(self.p.munmap, addr, length)

    def mprotect(self, addr: int, length: int, prot: int) -> Outcome:
        return self._run(self.p.mprotect, addr, length, prot)

    def mremap(
        self, addr: int, old_size: int, new_size: int, flags: int = 0, new_addr: int = 0
    ) -> Outcome:
        return self._run(self.p.mremap, addr, old_size, new_size, flags, new_addr)

    def madvise(self, addr: int, length: int, advice: int) -> Outcome:
        return self._run(self.p.madvise, addr, length, advice)

    def mlock(self, addr: int, length: int) -> Outcome:
        return self._run(self.p.mlock, addr, length)

    def munlock(self, addr: int, length: int) -> Outcome:
        return self._run(self.p.munlock, addr, length)

    def msync(self, addr: int, length: int, flags: int) -> Outcome:
        return self._run(self.p.msync, addr, length, flags)

    def mseal(self, addr: int, length: int, flags: int = 0) -> Outcome:
        return self._run(self.p.mseal, addr, length, flags)

    def brk(self, addr: int) -> Outcome:
        return self._run(self.p.brk, addr)

    def memfd_create(self, name: str, flags: int = 0) -> Outcome:
        out = self._run(self.p.memfd_create, name, flags)
        if out.err is None:
            assert out.ret is not None
            self.fds.append(out.ret)
            return Outcome(ret=len(self.fds) - 1)
        return out

    def ftruncate(self, lfd: int, size: int) -> Outcome:
        out = self._run(self.p.ftruncate, self._fd(lfd), size)
        return Outcome(ret=0) if out.err is None and out.ret is None else out

    def close_fd(self, lfd: int) -> Outcome:
        out = self._run(self.p.close, self._fd(lfd))
        return Outcome(ret=0) if out.err is None and out.ret is None else out

    def read(self, addr: int, n: int) -> Outcome:
        out = self._run(self.p.read, addr, n, addr=addr)
        if out.err is None:
            return Outcome(ret=n, data=bytes(out.ret))  # type: ignore[arg-type]
        return out

    def write(self, addr: int, data: bytes) -> Outcome:
        out = self._run(self.p.write, addr, data, addr=addr)
        return Outcome(ret=len(data)) if out.err is None else out

    def maps(self) -> str:
        return str(self.p.maps())

    def smaps(self) -> str:
        return str(self.p.smaps())

    @property
    def map_count(self) -> int:
        return int(self.p.map_count)


class SimCrash(Exception):
    """vmsim raised something that is neither OSError nor a fault: always a vmsim bug."""


def normalize_outcome(out: Outcome) -> Outcome:
    """Calls returning 0 on success: vmsim may return None; treat as 0."""
    if out.err is None and out.ret is None:
        return Outcome(ret=0)
    return out


# ---------------------------------------------------------------------------------------------
# /proc/<pid>/maps text

MAPS_LINE = re.compile(
    r"^([0-9a-f]{8,16})-([0-9a-f]{8,16}) ([r-][w-][x-][ps]) ([0-9a-f]{8,16}) "
    r"([0-9a-f]{2,}):([0-9a-f]{2,}) (\d+) ( *)(.*)$"
)


@dataclass(frozen=True)
class MapsLine:
    start: int
    end: int
    perms: str
    offset: int
    major: int
    minor: int
    inode: int
    name: str

    def render(
        self, major: int | None = None, minor: int | None = None, ino: int | None = None
    ) -> str:
        """The line exactly as fs/proc/task_mmu.c prints it (name at column 73)."""
        major = self.major if major is None else major
        minor = self.minor if minor is None else minor
        ino = self.inode if ino is None else ino
        head = (
            f"{self.start:08x}-{self.end:08x} {self.perms} {self.offset:08x} "
            f"{major:02x}:{minor:02x} {ino} "
        )
        if self.name:
            return head.ljust(72) + " " + self.name
        return head


def parse_maps_line(line: str) -> MapsLine | None:
    m = MAPS_LINE.match(line)
    if not m:
        return None
    return MapsLine(
        int(m[1], 16),
        int(m[2], 16),
        m[3],
        int(m[4], 16),
        int(m[5], 16),
        int(m[6], 16),
        int(m[7]),
        m[9],
    )


def is_ephemeral(line: MapsLine) -> bool:
    """Files whose dev/inode differ between kernel and vmsim: memfds, shared anonymous memory,
    MAP_HUGETLB files."""
    return line.name.startswith("/memfd:") or line.name in (
        "/dev/zero (deleted)",
        "/anon_hugepage (deleted)",
    )


def normalize_maps(text: str) -> tuple[list[str], list[str]]:
    """(normalised lines, format problems).  Ephemeral files get dev 00:00 and inode = order of
    first appearance, so the same sharing structure compares equal on both sides."""
    out: list[str] = []
    problems: list[str] = []
    ids: dict[tuple[int, int, int], int] = {}
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    else:
        problems.append("text does not end with a newline")
    for raw in lines:
        ml = parse_maps_line(raw)
        if ml is None:
            problems.append(f"unparsable line: {raw!r}")
            out.append(raw)
            continue
        if ml.render() != raw:
            problems.append(f"badly formatted line: {raw!r} (expected {ml.render()!r})")
        if is_ephemeral(ml):
            key = (ml.major, ml.minor, ml.inode)
            k = ids.setdefault(key, len(ids) + 1)
            out.append(ml.render(0, 0, k))
        else:
            out.append(raw)
    return out, problems


def parse_smaps(text: str) -> list[tuple[str, str | None]]:
    """[(header line, VmFlags value or None)] per VMA."""
    records: list[tuple[str, str | None]] = []
    header: str | None = None
    flags: str | None = None
    for line in text.split("\n"):
        if MAPS_LINE.match(line):
            if header is not None:
                records.append((header, flags))
            header, flags = line, None
        elif line.startswith("VmFlags:"):
            flags = line[len("VmFlags:") :].strip()
    if header is not None:
        records.append((header, flags))
    return records


def vmflags_by_range(smaps: str) -> dict[tuple[int, int], set[str]]:
    res: dict[tuple[int, int], set[str]] = {}
    for header, flags in parse_smaps(smaps):
        ml = parse_maps_line(header)
        if ml is not None:
            res[(ml.start, ml.end)] = set((flags or "").split())
    return res


def diff_text(a: list[str], b: list[str], an: str = "kernel", bn: str = "vmsim") -> str:
    return "\n".join(difflib.unified_diff(a, b, an, bn, lineterm="", n=2))


def compare_state(k_maps: str, k_smaps: str, s_maps: str, s_smaps: str) -> list[str]:
    """Human-readable differences between the kernel's and vmsim's /proc texts (empty = same)."""
    problems: list[str] = []
    kn, kprob = normalize_maps(k_maps)
    sn, sprob = normalize_maps(s_maps)
    if kprob:
        problems.append("HARNESS: kernel maps did not parse: " + "; ".join(kprob[:3]))
    if sprob:
        problems.append("vmsim maps text format: " + "; ".join(sprob[:5]))
    if kn != sn:
        problems.append("maps differ:\n" + diff_text(kn, sn))
        return problems
    krec = parse_smaps(k_smaps)
    srec = parse_smaps(s_smaps)
    kh, _ = normalize_maps("".join(h + "\n" for h, _ in krec))
    sh, _ = normalize_maps("".join(h + "\n" for h, _ in srec))
    if kh != sh:
        problems.append("smaps headers differ:\n" + diff_text(kh, sh))
        return problems
    if kh != kn:
        problems.append("smaps headers differ from maps:\n" + diff_text(kn, kh, "maps", "smaps"))
    flag_diffs = []
    for line, (_, kf), (_, sf) in zip(kh, krec, srec, strict=True):
        if (kf or "").split() != (sf or "").split():
            flag_diffs.append(
                f"  {line.rstrip()}\n    kernel VmFlags: {kf}\n    vmsim  VmFlags: {sf}"
            )
    if flag_diffs:
        problems.append("VmFlags differ:\n" + "\n".join(flag_diffs))
    return problems


def infer_mmap_base(maps: str) -> int:
    """End of the highest mapping below [stack], ignoring [vvar]/[vvar_vclock]/[vdso]: in a live
    process ld.so is the first top-down mapping and ends at mm->mmap_base."""
    lines = [ml for ml in map(parse_maps_line, maps.splitlines()) if ml is not None]
    stack = next(ml for ml in lines if ml.name == "[stack]")
    below = [
        ml
        for ml in lines
        if ml.end <= stack.start and ml.name not in ("[vvar]", "[vvar_vclock]", "[vdso]")
    ]
    return max(ml.end for ml in below)


def spawn_sim(smaps_text: str, max_map_count: int, mmap_base: int | None) -> SimTarget:
    import vmsim

    machine = vmsim.Machine(max_map_count=max_map_count)
    if mmap_base is None:
        proc = machine.spawn(maps=smaps_text)
    else:
        proc = machine.spawn(maps=smaps_text, mmap_base=mmap_base)
    return SimTarget(proc)


def vmsim_ready() -> str | None:
    """None if the vmsim API the differential tests need is importable, else why not."""
    try:
        import vmsim

        proc = vmsim.Machine().spawn()
        for name in ("mmap", "munmap", "mprotect", "mremap", "madvise", "maps", "smaps", "brk"):
            getattr(proc, name)
    except Exception as exc:
        return f"vmsim core not available yet: {exc!r}"
    return None
