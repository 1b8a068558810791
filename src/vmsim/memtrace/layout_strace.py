"""The address space of a trace from an strace log of the same run (issue 12 item 2).

``vmsim record`` writes ``OUT.strace``: the traced program's own system calls, in the format
``strace -f -o`` prints. Its memory calls (mmap, munmap, mprotect, mremap, brk, madvise, ...)
are replayed by vmsim's strace replay (:mod:`vmsim.trace`: ``read_strace`` parses the log,
``Replayer`` runs each call on a model process, at the address the log recorded), starting
from an empty address space: what the program mapped before its first call (itself, ld.so,
its stack: valgrind's loader made them) is not in the log; the maps snapshot has it.

A trace is translated in one static layout, while the log's mappings change over the run. The
layout keeps, for every address, the mapping that was there **last**:

1. the VMAs the replay ends with;
2. where none of those is, the ``--maps`` snapshot's VMAs (the program, ld.so, the stack,
   valgrind's own mappings, and what the program had mapped when it was sampled);
3. where neither is, the VMAs the replay removed along the way (munmap, a MAP_FIXED
   mapping over them, mremap, an mprotect that changed them), the most recently removed
   first, each clipped to the space still free.

So a region mapped, unmapped and mapped again at the same address is translated as its last
mapping (the trace's accesses to the earlier one, of the same addresses, then go through
that one's VMA: its permissions and whether it is a file or anonymous memory); a region
mapped and unmapped for good still gets its real VMA. The replay's own notes (calls it could
not replay, results that differ from the log) are kept in ``notes``.

Files: a valgrind log has no ``-y`` paths, so each mapped file descriptor is named by the
``open``/``openat`` that returned it in the log (``/usr/lib/.../libc.so.6``), else ``fdN``.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

from vmsim.constants import PAGE_SHIFT
from vmsim.mm.core import AddressSpace
from vmsim.mm.flags import VM_EXEC, VM_MAYSHARE, VM_READ, VM_WRITE
from vmsim.mm.vma import Vma
from vmsim.procfs import vma_name
from vmsim.snapshot import MapsEntry
from vmsim.trace import split_args
from vmsim.trace.events import Syscall
from vmsim.trace.replay import MEMORY_CALLS, UNLIMITED, Replayer

__all__ = ["StraceLayout", "merge", "replay_log"]

_OPENS = ("open", "openat", "creat")
SYNTHETIC_INO = 1 << 40  # inode numbers of files the log names only by descriptor


class StraceLayout:
    """The replay of one log: ``final`` (the VMAs it ends with), ``removed`` (VMAs it removed,
    in the order removed), ``calls`` (memory calls replayed) and ``notes``."""

    def __init__(self) -> None:
        self.final: list[MapsEntry] = []
        self.removed: list[MapsEntry] = []
        self.calls = 0
        self.notes: list[str] = []
        # [start, end) of every mprotect the log shows succeeding: pages whose permissions
        # the program changed during the run (a write before ld.so made RELRO read-only)
        self.mprotected: list[tuple[int, int]] = []


def _entry(mm: AddressSpace, v: Vma, inos: dict[int, int]) -> MapsEntry:
    f = v.flags
    perms = (
        ("r" if f & VM_READ else "-")
        + ("w" if f & VM_WRITE else "-")
        + ("x" if f & VM_EXEC else "-")
        + ("s" if f & VM_MAYSHARE else "p")
    )
    if v.file is None:
        return MapsEntry(v.start, v.end, perms, 0, (0, 0), 0, vma_name(mm, v), vmflags=f)
    inode = v.file.inode
    ino = inode.ino or inos.setdefault(id(inode), SYNTHETIC_INO + len(inos))
    return MapsEntry(
        v.start, v.end, perms, v.pgoff << PAGE_SHIFT, inode.dev, ino, inode.path, vmflags=f
    )


def _named(events: Iterable[Any]) -> Iterator[Any]:
    """The log's events, each mmap of a descriptor given the path its open returned."""
    paths: dict[tuple[int | None, int], str] = {}
    for ev in events:
        if isinstance(ev, Syscall) and ev.ret is not None and ev.ret >= 0:
            if ev.name in _OPENS and ev.args:
                args = split_args(str(ev.args[0])) if len(ev.args) == 1 else list(ev.args)
                path = next((a for a in args if isinstance(a, str) and a.startswith('"')), None)
                if path is not None:
                    paths[(ev.pid, ev.ret)] = path.strip('"')
            elif ev.name == "mmap" and len(ev.args) >= 5 and isinstance(ev.args[4], int):
                fd = ev.args[4] & 0xFFFFFFFF
                path = paths.get((ev.pid, fd))
                if path is not None and fd not in ev.fd_paths:
                    ev.fd_paths[fd] = path
        yield ev


def replay_log(events: Iterable[Any]) -> StraceLayout:
    """Replay the log's memory calls from an empty address space; keep the VMAs it ends with
    and every VMA it removed on the way (module docstring)."""
    out = StraceLayout()
    r = Replayer(max_map_count=UNLIMITED, from_maps="", use_recorded_addresses=True)
    inos: dict[int, int] = {}
    seen: dict[tuple[Any, ...], MapsEntry] = {}

    def look() -> None:
        p = r._first
        if p is None:
            return
        mm = p.mm
        now: dict[tuple[Any, ...], MapsEntry] = {}
        for v in mm.tree:
            key = (v.start, v.end, v.flags, v.pgoff, id(v.file) if v.file else None, v.name)
            e = seen.get(key)
            now[key] = e if e is not None else _entry(mm, v, inos)
        out.removed.extend(e for k, e in seen.items() if k not in now)
        seen.clear()
        seen.update(now)

    def watched() -> Iterator[Any]:
        pending = False
        for ev in _named(events):
            if pending:
                look()
                pending = False
            if isinstance(ev, Syscall) and ev.name in MEMORY_CALLS:
                out.calls += 1
                pending = True
                a = ev.args
                if (
                    ev.name in ("mprotect", "pkey_mprotect")
                    and ev.ret == 0
                    and len(a) >= 2
                    and isinstance(a[0], int)
                    and isinstance(a[1], int)
                ):
                    out.mprotected.append((a[0], a[0] + ((a[1] + 4095) & -4096)))
            yield ev

    report = r.feed(watched())
    look()
    out.final = sorted(seen.values(), key=lambda e: e.start)
    if report.processes > 1:
        out.notes.append(
            f"the strace log has {report.processes} address spaces: the first one's "
            "mappings are used"
        )
    if report.dropped_count:
        out.notes.append(f"{report.dropped_count} call(s) of the strace log not replayed")
    if report.divergences:
        out.notes.append(
            f"{len(report.divergences)} call(s) of the strace log came out differently in "
            f"the replay (first: line {report.divergences[0].lineno}; a call on a mapping "
            "made before the log begins, such as ld.so's mprotect of the program's RELRO, "
            "fails in a replay that starts empty)"
        )
    return out


def merge(base: list[MapsEntry], log: StraceLayout) -> list[MapsEntry]:
    """The layout of the module docstring: the replay's final VMAs, then ``base`` (a maps
    snapshot's entries) where they leave space, then the removed VMAs, newest first, each
    clipped to the space still free."""
    starts: list[int] = []
    ends: list[int] = []
    out: list[MapsEntry] = []

    def add(e: MapsEntry) -> None:
        lo = e.start
        while lo < e.end:
            i = bisect.bisect_right(starts, lo)
            if i and ends[i - 1] > lo:  # inside an occupied interval: skip past it
                lo = ends[i - 1]
                continue
            hi = min(e.end, starts[i]) if i < len(starts) else e.end
            piece = e
            if lo != e.start or hi != e.end:
                offset = e.offset + (lo - e.start) if e.ino else e.offset
                piece = replace(e, start=lo, end=hi, offset=offset)
            starts.insert(i, lo)
            ends.insert(i, hi)
            out.append(piece)
            lo = hi

    for e in log.final:
        add(e)
    for e in base:
        if e.name != "[vsyscall]":
            add(e)
    for e in reversed(log.removed):
        add(e)
    out.sort(key=lambda e: e.start)
    return out
