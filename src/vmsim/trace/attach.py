"""Which attached process a task that predates the trace belongs to (``strace -f -p A -p B``).

strace attaches to every thread of each ``-p`` process, but a trace written with ``-o`` never
says which thread group a task is in: its ``Process N attached with M threads`` lines go to
strace's standard error, and the tasks that existed before the attach have no clone() in the
trace. With one snapshot per attached process (``--from-maps PID=FILE``: each PID is a thread
group leader) the replay reads it from the task's first call instead:

- its address: the recorded result of mmap/mremap (the range the kernel chose, free in the
  task's own address space), the recorded break of brk, or the first argument of the others
  (munmap, mprotect, madvise, mlock... of a range in its own address space);
- a process in which that is impossible is ruled out: a successful mmap/mremap result that
  overlaps one of its VMAs, a successful mprotect/madvise/mlock/munlock/msync of a start that
  is not mapped there;
- of the others, the one with a VMA nearest the range (0: touching or inside one). With ASLR two
  processes' mapping areas are far apart (mmap_base is randomised over 2**28 pages), and a
  thread's own mappings, stack and heap arena lie among its process's.

A task whose first call names no address (exit, execve) goes to the first attached process;
the replay says which rule decided each task.
"""

from __future__ import annotations

from collections.abc import Sequence

from vmsim.constants import PAGE_SIZE
from vmsim.process import Process
from vmsim.trace.events import Syscall

__all__ = ["call_address", "owner_of"]

# a successful call of these proves its start address is mapped in the caller's mm
_NEEDS_MAPPED = frozenset(
    {"mprotect", "pkey_mprotect", "madvise", "mlock", "mlock2", "munlock", "msync", "mseal"}
)


def call_address(ev: Syscall) -> tuple[int, int, bool] | None:
    """(address, length, the range was free) that ``ev`` names in its task's address space, or
    None. ``free``: a successful mmap/mremap result (the range was free before the call)."""
    args = ev.args
    ok = ev.errno is None and ev.ret is not None
    if ev.name in ("mmap", "mremap"):
        if ok and ev.ret is not None and ev.ret > 0:
            i = 1 if ev.name == "mmap" else 2
            n = args[i] if len(args) > i else None
            return ev.ret, n if isinstance(n, int) and n > 0 else PAGE_SIZE, True
        if ev.name == "mremap" and args and isinstance(args[0], int) and args[0]:
            return args[0], PAGE_SIZE, False
        return None
    if ev.name == "brk":
        return (ev.ret, 1, False) if ok and ev.ret else None
    named = ev.name in ("munmap", "shmdt") or ev.name in _NEEDS_MAPPED
    if named and args and isinstance(args[0], int) and args[0]:
        return args[0], 1, False
    return None


def _distance(p: Process, start: int, end: int) -> int:
    """The gap between ``[start, end)`` and the nearest VMA of ``p`` (0: it touches or
    overlaps one)."""
    tree = p.mm.tree
    after = tree.find(start)
    if after is not None and after.start <= end:
        return 0
    best = after.start - end if after is not None else 1 << 64
    before = tree.prev_of(start)
    if before is not None:
        best = min(best, start - before.end)
    return best


def owner_of(ev: Syscall, candidates: Sequence[Process]) -> tuple[Process, str] | None:
    """The process of ``candidates`` whose address space ``ev`` (a task's first call) fits,
    with the reason in words; None when the call names no address or fits none."""
    got = call_address(ev)
    if got is None:
        return None
    addr, length, free = got
    ok = ev.errno is None
    fits: list[tuple[int, int, Process]] = []
    for i, p in enumerate(candidates):
        if free and p.mm.tree.find_intersection(addr, addr + length) is not None:
            continue  # the kernel placed it there: the range was free in the caller's mm
        if ok and ev.name in _NEEDS_MAPPED and p.mm.tree.lookup(addr) is None:
            continue  # it succeeded: the address was mapped in the caller's mm
        fits.append((_distance(p, addr, addr + length), i, p))
    if not fits:
        return None
    dist, _, p = min(fits, key=lambda t: (t[0], t[1]))
    where = "at one of its mappings" if dist == 0 else f"{dist:,} bytes from its nearest mapping"
    return p, f"its first call's address {addr:#x} is {where} ({len(fits)} possible)"
