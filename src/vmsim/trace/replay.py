"""Replay a recorded syscall trace through the model (``vmsim replay``).

(Over the project's ~600 lines per module: the Replayer is one state machine, tasks, held
calls, anchors and the report, that every handler reads and updates. What needs none of it
lives apart: the report types in :mod:`vmsim.trace.replay_report`, the proof that lets the
written replay be skipped in :mod:`vmsim.trace.written`.)

One model process per address space: threads (clone with CLONE_VM) share their parent's,
fork copies it, execve replaces it with the ELF loader's layout. Every memory call is run
on the model and its result compared with the recorded one; where the kernel chose an
address (ASLR), the replay places the mapping there too and counts how often its own
choice agreed. Each max_map_count check records the limit the call needed, so one replay
without failures gives the smallest limit that lets the whole trace succeed.

What strace cannot show, and how the replay says so:

- Writes. A private writable VMA gets its anon_vma at its first write fault, and two
  neighbours with different anon_vmas never merge (is_mergeable_anon_vma()). The replay runs
  the trace twice: as if nothing was ever written (the lower bound) and as if every writable
  private VMA was written as soon as it was mapped (the upper bound), and reports the peak as
  ``peak_map_count_range`` with the number of calls whose VMA count depended on it. The
  second replay is skipped when the first proves, call by call, that it could not differ
  (:mod:`vmsim.trace.written`).
- Calls it cannot replay (an unreadable line, an argument it cannot decode, a call the model
  does not implement) are never dropped silently: each is a :class:`Dropped` with its
  file:line.
- Tasks that existed before ``strace -p`` attached have no clone() in the trace; they are
  found by a first pass over the trace (every task no clone() returned) and replayed as
  threads of the attached process, in trace order.
"""

from __future__ import annotations

import copy
import errno as errno_mod
import gc
import itertools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from vmsim.constants import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_STACK,
    MAX_MAP_COUNT_LIMIT,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PAGE_SIZE,
    PROT_GROWSDOWN,
    PROT_GROWSUP,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
)
from vmsim.errors import CAUSE_MAP_COUNT, MmError
from vmsim.fastlane.runs import LaneRow, LaneRun
from vmsim.loader import ExecError, place_top, relocate, resolve
from vmsim.machine import Machine
from vmsim.mm.core import page_align
from vmsim.mm.flags import VM_NOHUGEPAGE, VM_NORESERVE, VM_SHARED, VM_WRITE
from vmsim.mm.mmap import get_unmapped_area
from vmsim.mm.shm import shm_namespace
from vmsim.mm.vma import OpenFile
from vmsim.process import Process
from vmsim.trace.attach import owner_of
from vmsim.trace.events import Exit, Problem, Signal, Syscall
from vmsim.trace.format import format_args
from vmsim.trace.replay_report import Divergence, Dropped, Failure, ReplayError, ReplayReport
from vmsim.trace.written import JUDGED_IN_HANDLER, Judgement, WrittenWatch

__all__ = [
    "Divergence",
    "Dropped",
    "Failure",
    "ReplayError",
    "ReplayReport",
    "Replayer",
    "call_site",
    "replay",
]

CLONE_VM = 0x00000100
CLONE_VFORK = 0x00004000
CLONE_THREAD = 0x00010000
IPC_RMID = 0
MEMORY_CALLS = frozenset(
    {
        "mmap",
        "munmap",
        "mprotect",
        "pkey_mprotect",
        "mremap",
        "madvise",
        "brk",
        "mlock",
        "mlock2",
        "munlock",
        "mseal",
    }
)
GC_SPACES = 256  # forks and execs between collections while replaying (see replay())
UNLIMITED = MAX_MAP_COUNT_LIMIT  # the largest vm.max_map_count: no trace comes near it
# calls _must_wait() may hold back even for a task it knows (or that start a task)
_MAY_WAIT = frozenset({"mmap", "mremap", "execve", "execveat"})
# calls without a handler whose bookkeeping reads or copies the caller's VMAs (_other())
_NEEDS_MODEL = frozenset({"execve", "execveat", "clone", "clone3", "fork", "vfork"})
# an mprotect that leaves its range writable, without PROT_GROWSDOWN/UP, is judged by
# WrittenWatch.before_writable(): prot & _WRITE_OR_GROWS == PROT_WRITE
_WRITE_OR_GROWS = PROT_WRITE | PROT_GROWSDOWN | PROT_GROWSUP
# Memory syscalls a trace may hold that the model does not replay, and why.
UNMODELLED = {
    "remap_file_pages": "remap_file_pages is not modelled",
    "mbind": "memory policies are not modelled",
    "map_shadow_stack": "shadow stacks are not modelled",
    "process_madvise": "advice to another process is not modelled",
}


def _errname(code: int) -> str:
    return errno_mod.errorcode.get(code, str(code))


def _fmt_call(ev: Syscall) -> str:
    """The call as strace prints it: symbolic flags (``PROT_READ|PROT_WRITE``), hex
    addresses and lengths."""
    return f"{ev.name}({', '.join(format_args(ev.name, ev.args))})"


def call_site(stack: tuple[str, ...]) -> str:
    """The first -k frame outside libc, ld.so and libpthread: who asked for the memory."""
    for frame in stack:
        obj = frame.split("(", 1)[0].strip()
        base = obj.rsplit("/", 1)[-1]
        if not base.startswith(("libc.so", "libc-", "ld-linux", "libpthread", "ld.so")):
            return frame
    return stack[0] if stack else _NO_STACK


_NO_STACK = "(no stack: record with strace -k)"


class Replayer:
    """Feeds trace events to the model; see the module docstring."""

    def __init__(
        self,
        *,
        max_map_count: int = 65530,
        from_maps: str | dict[int, str] | None = None,
        cwd: Path = Path("."),
        use_recorded_addresses: bool = True,
        strict: bool = False,
        machine_options: dict[str, Any] | None = None,
        series_every: int = 1,
        exe: Path | None = None,
        assume_written: bool = False,
        known_children: set[int] | None = None,
        files: dict[int, str] | None = None,
        track_deltas: bool = False,
        watch_written: bool = False,
        counts_only: bool = False,
        snapshot: bool = False,
    ) -> None:
        self.machine = Machine(max_map_count=max_map_count, **(machine_options or {}))
        self.from_maps = from_maps
        self.cwd = cwd
        self.use_recorded = use_recorded_addresses
        self.strict = strict
        self.series_every = max(1, series_every)
        self.report = ReplayReport(max_map_count=max_map_count)
        self.tasks: dict[int | None, Process] = {}
        self._anchored: dict[int, set[str]] = {}
        self.exe = exe
        self._exe_used = False
        self._top_placed: set[int] = set()
        self._held: dict[int | None, list[tuple[int, Syscall | Exit]]] = {}
        self._last: Process | None = None
        self._unmodelled: dict[str, int] = {}
        self._tick = 0
        self._stride = 1
        # the thread group of each task: execve replaces the mm of its own group only
        self._tgid: dict[int | None, int | None] = {}
        self.assume_written = assume_written
        # the change of map_count per call, to compare the written and unwritten replays
        self.track_deltas = track_deltas
        # whether some call so far could have come out differently had the program written
        # to its memory (followed only with watch_written: see vmsim.trace.written)
        self._watch = WrittenWatch(use_recorded_addresses) if watch_written else None
        self._pre: Judgement = None
        # a replay run for its VMA counts only (the unlimited and the written ones): no
        # comparison with the recorded results, no causes, sites or series
        self.counts_only = counts_only
        # tasks some clone() in the trace returns (None: not known, so wait for the clone)
        self.known_children = known_children
        # -ff: the file of each task; lines are counted per file
        self.files = files or {}
        self._file_lines: dict[str | None, int] = {}
        self._first: Process | None = None
        # the processes given a snapshot each (strace -p A -p B), and their trace pids
        self._attached: dict[Process, int] = {}
        self.shm = shm_namespace(self.machine)
        # processes whose heap is a placeholder until their first brk(NULL) shows it
        self._heap_estimated: set[int] = set()
        # the replay without a limit (min_max_map_count) is this one until the first call
        # that needs more than max_map_count: near the limit, a copy of this replay is kept
        # before each call, and if that call is the first to cross it, ``resume`` holds the
        # copy (made unlimited) and the call, for replay() to go on from (see _snapshot())
        self._snaps_left = self.SNAPSHOTS_MAX if snapshot else 0
        self._snapshot: tuple[Replayer, Syscall | LaneRow] | None = None
        self._crossed = False
        self.resume: tuple[Replayer, Syscall | LaneRow] | None = None
        self._handlers = self._make_handlers()
        self._sites: dict[tuple[str, ...], str] = {}
        self._spaces = 0  # forks and execs so far
        # the fast lane (vmsim.fastlane.lane): the processes whose VMAs it holds (their
        # Python model is stale until _lane_release()), and those it no longer takes
        self._lane: dict[Process, Any] = {}
        self._lane_off: set[Process] = set()

    def _make_handlers(
        self,
    ) -> dict[str, Callable[[Process, Syscall], tuple[int, MmError | None]]]:
        return {
            "mmap": self._mmap,
            "munmap": self._plain("munmap", 2),
            "mprotect": self._mprotect,
            "pkey_mprotect": self._mprotect,
            "mremap": self._mremap,
            "madvise": self._plain("madvise", 3),
            "brk": self._brk,
            "mlock": self._mlock,
            "mlock2": self._mlock,
            "munlock": self._plain("munlock", 2),
            "mseal": self._plain("mseal", 3),
            "mlockall": self._plain("mlockall", 1),
            "munlockall": self._plain("munlockall", 0),
            "shmat": self._shmat,
            "shmdt": self._shmdt,
        }

    # ------------------------------------------------------- the unlimited replay
    SNAPSHOTS_MAX = 3
    # how far below max_map_count a call may start and still need more than it: two splits
    # (mprotect, madvise, mlock, munmap or mmap of a range inside one VMA), six for mremap
    # (check_mremap_params()); a call that needs more is caught in _crossing() (no resume)
    SNAPSHOT_SLACK = 2
    SNAPSHOT_SLACK_MREMAP = 6

    def _near_limit(self, ev: Syscall, limit: int) -> bool:
        p = self.tasks.get(ev.pid)
        if p is None or ev.name not in self._handlers:
            return False
        if p in self._lane:
            self._lane_release(p)
        slack = self.SNAPSHOT_SLACK_MREMAP if ev.name == "mremap" else self.SNAPSHOT_SLACK
        return len(p.mm.tree) + slack > limit

    def _snapshot_before(self, ev: Syscall | LaneRow) -> None:
        """Keep a copy of this replay, about to run ``ev`` near the limit, as the replay
        without a limit would be at this point: until a call needs more than max_map_count
        the two are the same (every limit check passes in both; the limit decides nothing
        else), and what this one does beyond the other (comparing with the recorded results,
        following the written hypothesis) changes no model state. The copy replays nothing
        here; replay() feeds it the rest of the trace if ``ev`` turns out to be the first
        call to cross the limit."""
        self._snapshot = None
        if self._snaps_left <= 0 or self._crossed:
            return  # (the lane's rows keep these two up to date; feed()'s copies may lag)
        self._snaps_left -= 1
        ns = self.shm
        if ns.segments or ns.files or ns.next_id:
            # the model finds a machine's IPC namespace by the machine: a copy would not
            self._snaps_left = 0
            return
        rep = ReplayReport(max_map_count=UNLIMITED)
        rep.lines = self.report.lines  # held calls age by it
        memo: dict[int, Any] = {id(self.report): rep, id(self._watch): None}
        try:
            twin = copy.deepcopy(self, memo)
        except (TypeError, AttributeError, copy.Error, RecursionError):
            self._snaps_left = 0  # something in the model cannot be copied: replay again
            return
        twin.machine.cfg.max_map_count = UNLIMITED
        twin.shm = shm_namespace(twin.machine)
        twin.counts_only = True
        twin.track_deltas = False
        twin._snaps_left = 0
        twin._crossed = True
        twin._handlers = twin._make_handlers()
        self._snapshot = (twin, ev)

    def _crossing(self, ev: Syscall | LaneRow | None) -> None:
        """The first call that needed more than max_map_count (``ev``; None: one not run
        straight from feed()) has run: the copy made just before it, if any, is where the
        replay without a limit goes on from."""
        self._crossed = True
        self._snaps_left = 0
        snap = self._snapshot
        self._snapshot = None
        if snap is not None and ev is not None and snap[1] is ev:
            self.resume = snap

    # ------------------------------------------------------------- processes
    def _spawn_attached(self) -> None:
        """``from_maps`` as {pid: snapshot}: the processes strace attached to, each a thread
        group led by its pid, spawned from its snapshot (in pid order) before the first call."""
        assert isinstance(self.from_maps, dict)
        for pid, text in sorted(self.from_maps.items()):
            p = self.machine.spawn(maps=text)
            self.report.processes += 1
            self.report.estimates.append(f"initial layout of pid {pid}: from its maps snapshot")
            self.tasks[pid] = p
            self._tgid[pid] = pid
            self._attached[p] = pid
            if self._first is None:
                self._first = p

    def _initial(self, ev: Syscall | None) -> Process:
        m = self.machine
        if isinstance(self.from_maps, str):
            self.report.estimates.append("initial layout: from the given maps snapshot")
            self.report.processes += 1
            return m.spawn(maps=self.from_maps)
        if ev is not None and ev.name == "execve" and (ev.ret == 0):
            p = m.spawn()
            self.report.processes += 1
            self._exec(p, ev)
            return p
        self.report.processes += 1
        fresh = ev is not None and ev.name == "brk" and ev.args[:1] == (0,)
        if fresh and self.exe is not None:
            # the execve was not traced, but --exe names the program: load it
            p = m.spawn()
            try:
                p.execve(str(self.exe), self.cwd)
                self._exe_used = True
                self.report.estimates.append(
                    f"initial layout: {self.exe} loaded (the trace starts with ld.so's "
                    "brk(NULL): an execve it does not show)"
                )
                return p
            except (ExecError, OSError) as e:
                p.exit()
                self.report.estimates.append(f"--exe {self.exe}: {e}")
        p = m.spawn(layout="linux")
        self._heap_estimated.add(id(p))
        if fresh:
            # ld.so's first call: the trace starts at an execve it does not show (-e
            # trace=%memory), before any library is mapped: keep only what the kernel's
            # loader maps (the program, ld.so, [vvar], [vdso], [stack])
            for vma in list(p.mm.tree):
                path = vma.file.inode.path if vma.file is not None else vma.name
                if path is None or not (path.startswith(("[", "/usr/bin/")) or "ld-linux" in path):
                    p.munmap(vma.start, vma.end - vma.start)
            self.report.estimates.append(
                "initial layout: estimated as a fresh exec (the trace starts with ld.so's "
                "brk(NULL) and no execve: the program and ld.so are placeholders; use --exe "
                "or record with -e trace=%memory,%process)"
            )
            return p
        self.report.estimates.append(
            "initial layout: estimated (the usual fresh-process layout; the trace does not "
            "start with execve and no --from-maps snapshot was given)"
        )
        return p

    def _exec(self, p: Process, ev: Syscall) -> None:
        """Load the binary of a successful execve: --exe for the first one, else the recorded
        path (relative ones against --cwd; where that is missing and --exe was given, the
        file of the same name beside --exe). ``#!`` scripts are followed to their ELF
        interpreter as binfmt_script does."""
        path = ev.args[0] if ev.args and isinstance(ev.args[0], str) else None
        try:
            if self.exe is not None and not self._exe_used:
                path = str(self.exe)
                self._exe_used = True
            elif path is not None and self.exe is not None:
                recorded = resolve(path.strip('"'), self.cwd)
                beside = self.exe.parent / recorded.name
                if not recorded.exists() and beside.exists():
                    path = str(beside)
            if path is None:
                raise ExecError("execve path not in the trace")
            for note in p.execve(path.strip('"'), self.cwd):
                if "'#!' script" in note:
                    self.report.estimates.append(f"{self._where(ev)}: {note}")
        except (ExecError, OSError) as e:
            p.execve(None)
            self.report.estimates.append(
                f"{self._where(ev)}: execve layout estimated: {e} (use --cwd or --from-maps)"
            )

    def _where(self, ev: Syscall | Problem) -> str:
        file = self._file_of(ev)
        return f"{file}:{ev.lineno}" if file else f"line {ev.lineno}"

    def _file_of(self, ev: Syscall | Signal | Exit | Problem) -> str | None:
        if isinstance(ev, Problem):
            return ev.file
        return self.files.get(ev.pid) if self.files and ev.pid is not None else None

    def process_for(self, pid: int | None, ev: Syscall | None) -> Process:
        p = self.tasks.get(pid)
        if p is None:
            if not self.tasks and isinstance(self.from_maps, dict):
                self._spawn_attached()  # strace -p A -p B: one snapshot per process
                p = self.tasks.get(pid)
                if p is not None:
                    return p
            if not self.tasks:
                p = self._initial(ev)
                self._first = p
            elif None in self.tasks and pid is not None:
                p = self.tasks[None]
            elif (
                self.known_children is not None
                and pid not in self.known_children
                and self._first is not None
            ):
                # no clone() in the whole trace returns this task: it existed before the
                # trace began (strace -p of a multi-threaded process): a thread of the
                # attached process (of several: see vmsim.trace.attach)
                p = self._first
                why = "the first traced process"
                leaders = self._attached
                if not leaders:  # no per-process snapshots: nothing says which group
                    why += " (several attached together? --from-maps PID=SNAPSHOT for each)"
                found = owner_of(ev, list(leaders)) if len(leaders) > 1 and ev else None
                if found is not None:
                    p, reason = found
                    why = f"pid {leaders[p]}: {reason}"
                    self._tgid[pid] = leaders[p]
                elif len(leaders) > 1:
                    why += f" (pid {leaders[p]}: no address in its first call fits one)"
                    self._tgid[pid] = leaders[p]
                self.report.estimates.append(
                    f"task {pid}: existed before the trace began (no clone() returns it); "
                    f"replayed as a thread of {why}"
                )
            elif self._last is not None:
                # a task whose creating clone() never showed up: assume a thread of the
                # process that ran last
                p = self._last
                self.report.estimates.append(
                    f"task {pid}: no clone() created it in the trace; taken as a thread of "
                    f"pid {p.pid} (line {ev.lineno if ev else '?'})"
                )
            else:
                p = self._initial(None)
            self.tasks[pid] = p
            self._tgid.setdefault(pid, pid)
        return p

    # --------------------------------------------------------------- the loop
    def feed(self, events: Iterable[Syscall | Signal | Exit | Problem | LaneRun]) -> ReplayReport:
        rep = self.report
        per_file = bool(self.files)
        file_lines = self._file_lines
        tasks = self.tasks
        syscall = self.syscall
        cfg = self.machine.cfg
        limit = cfg.max_map_count
        # before the first call that needs more than the limit: follow the limit checks
        # (``open_``), and near the limit copy the replay before each call (``snap``)
        open_ = not self._crossed
        snap = open_ and self._snaps_left > 0
        near = limit - max(self.SNAPSHOT_SLACK, self.SNAPSHOT_SLACK_MREMAP)  # below: not near
        for ev in events:
            if open_ and cfg.map_count_needed > limit:
                self._crossing(None)  # crossed by a call held back or replayed out of line
                open_ = snap = False
            if (
                type(ev) is Syscall
                and not per_file
                and not self._held
                and ev.name not in _MAY_WAIT
                and ev.pid in tasks
            ):
                # the common case, which _must_wait() always lets through
                if ev.lineno > rep.lines:
                    rep.lines = ev.lineno
                if snap and len(tasks[ev.pid].mm.tree._vmas) > near and self._near_limit(ev, limit):
                    self._snapshot_before(ev)
                    snap = self._snaps_left > 0
                syscall(ev)
                if open_ and cfg.map_count_needed > limit:
                    self._crossing(ev)
                    open_ = snap = False
                continue
            if isinstance(ev, LaneRun):
                for sub in ev.driver.run_rows(self, ev):
                    self._feed_row(sub)
                open_ = not self._crossed
                snap = open_ and self._snaps_left > 0
                continue
            if per_file:
                file = self._file_of(ev) if not isinstance(ev, Problem) else ev.file
                if ev.lineno > file_lines.get(file, 0):
                    file_lines[file] = ev.lineno
            elif ev.lineno > rep.lines:
                rep.lines = ev.lineno
            if isinstance(ev, Problem):
                rep.problems.append(ev)
                rep.drop(Dropped(ev.lineno, ev.line[:200], ev.message, ev.file))
                if self.strict:
                    raise ReplayError(ev.message, ev.lineno)
                continue
            if isinstance(ev, Signal):
                continue
            if self._held:
                self._hold_or_run(ev)
            elif isinstance(ev, Exit):
                self.tasks.pop(ev.pid, None)
            elif self._must_wait(ev):
                self._held.setdefault(ev.pid, []).append((rep.lines, ev))
            else:
                # nothing held: as in the common case above
                if snap and self._near_limit(ev, limit):
                    self._snapshot_before(ev)
                    snap = self._snaps_left > 0
                syscall(ev)
                if open_ and cfg.map_count_needed > limit:
                    self._crossing(ev)
                    open_ = snap = False
        self._flush(force=True)
        if open_ and cfg.map_count_needed > limit:
            self._crossing(None)
        if per_file:
            rep.lines = sum(file_lines.values())
        rep.min_max_map_count = self.machine.cfg.map_count_needed
        for name, n in sorted(self._unmodelled.items()):
            rep.estimates.append(
                f"{n} successful {name}() call(s) not replayed ({UNMODELLED[name]}); "
                "later results touching those ranges may diverge (listed as dropped)"
            )
        return rep

    def _feed_row(self, ev: Syscall) -> None:
        """What feed()'s loop does with ``ev``, a call of a LaneRun the lane did not take
        (the loop's own copy of these steps is inlined for speed)."""
        rep = self.report
        cfg = self.machine.cfg
        limit = cfg.max_map_count
        if not self._crossed and cfg.map_count_needed > limit:
            self._crossing(None)
        if self.files:
            file = self._file_of(ev)
            if ev.lineno > self._file_lines.get(file, 0):
                self._file_lines[file] = ev.lineno
        elif ev.lineno > rep.lines:
            rep.lines = ev.lineno
        if self._held:
            self._hold_or_run(ev)
        elif self._must_wait(ev):
            self._held.setdefault(ev.pid, []).append((rep.lines, ev))
        else:
            if not self._crossed and self._snaps_left > 0 and self._near_limit(ev, limit):
                self._snapshot_before(ev)
            self.syscall(ev)
            if not self._crossed and cfg.map_count_needed > limit:
                self._crossing(ev)

    def _lane_release(self, p: Process) -> None:
        """The Python model takes ``p``'s VMAs back from the fast lane."""
        self._lane[p].give_back(self, p)

    # strace prints a call when the tracer sees its exit, which can lag behind the kernel's
    # own order between threads: an mmap may print its result before the munmap (of another
    # thread) that freed the range. A call whose recorded address is still busy in the model
    # waits (with the rest of its task's calls) until the range is free, up to a bound.
    HOLD_LIMIT = 512

    def _must_wait(self, ev: Syscall | Exit) -> bool:
        if (
            ev.pid is not None
            and self.tasks
            and ev.pid not in self.tasks
            and None not in self.tasks
        ):
            if self.known_children is not None and ev.pid not in self.known_children:
                return False  # no clone() will come: the task predates the trace
            # a new task's first calls can print before its parent's clone() returns
            return not (isinstance(ev, Syscall) and ev.name in ("execve", "execveat"))
        if not isinstance(ev, Syscall) or ev.name not in ("mmap", "mremap"):
            return False
        if ev.pid is None or ev.errno is not None or ev.ret is None or ev.ret < 0:
            return False
        if ev.name == "mmap":
            flags = ev.args[3] if len(ev.args) > 3 and isinstance(ev.args[3], int) else 0
            if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE):
                return False
            length = ev.args[1] if isinstance(ev.args[1], int) else 0
        else:
            flags = ev.args[3] if len(ev.args) > 3 and isinstance(ev.args[3], int) else 0
            if not flags & MREMAP_MAYMOVE or flags & MREMAP_FIXED or ev.ret == ev.args[0]:
                return False
            length = ev.args[2] if isinstance(ev.args[2], int) else 0
        p = self.tasks.get(ev.pid)
        if p is None:
            return False
        if p in self._lane:
            self._lane_release(p)
        return p.mm.tree.find_intersection(ev.ret, ev.ret + page_align(length)) is not None

    def _hold_or_run(self, ev: Syscall | Exit) -> None:
        if ev.pid in self._held:
            self._held[ev.pid].append((self.report.lines, ev))
        elif self._must_wait(ev):
            self._held[ev.pid] = [(self.report.lines, ev)]
        elif isinstance(ev, Exit):
            self.tasks.pop(ev.pid, None)
        else:
            self.syscall(ev)
        self._flush(force=False)

    def _flush(self, force: bool) -> None:
        progress = True
        while progress and self._held:
            progress = False
            for pid in list(self._held):
                queue = self._held[pid]
                while queue:
                    seen, ev = queue[0]
                    stale = self.report.lines - seen > self.HOLD_LIMIT
                    if not (force or stale) and self._must_wait(ev):
                        break
                    queue.pop(0)
                    progress = True
                    if isinstance(ev, Exit):
                        self.tasks.pop(ev.pid, None)
                    else:
                        self.syscall(ev)
                if not queue:
                    del self._held[pid]

    def syscall(self, ev: Syscall) -> None:
        name = ev.name
        handler = self._handlers.get(name)  # no execve, clone or shm bookkeeping call
        if handler is None:
            self._other(ev)
            return
        p = self.tasks.get(ev.pid)
        if p is None:
            p = self.process_for(ev.pid, ev)
        if self._lane and p in self._lane:
            self._lane_release(p)
        self._last = p
        rep = self.report
        rep.calls += 1
        table = p.mm.tree._vmas  # len(tree), without the method call: map_count
        before = len(table)
        ww = self._watch
        watch = ww is not None and not ww.sensitive
        if watch and name not in JUDGED_IN_HANDLER:
            # mmap and mprotect may move an image first (ASLR): they judge after that
            assert ww is not None
            self._pre = ww.before(p, ev)
        try:
            result, err = handler(p, ev)
        except (TypeError, IndexError, ValueError) as e:
            if ww is not None:
                ww.sensitive = True
            rep.problems.append(Problem(ev.lineno, ev.raw, f"cannot replay {name}: {e}"))
            rep.drop(
                Dropped(ev.lineno, ev.raw[:200], f"cannot replay {name}: {e}", self._file_of(ev))
            )
            if self.strict:
                raise ReplayError(f"cannot replay {name}: {e}", ev.lineno) from e
            e.__traceback__ = None  # no cycle through its frames (see replay())
            return
        if self.assume_written and err is None:
            self._written(p, ev, result)
        if watch:
            assert ww is not None
            pre = self._pre
            if pre is not None:
                if pre is False:
                    ww.sensitive = True
                elif type(pre) is tuple:
                    ww.after(p, ev, result, err, pre)
        after = len(table)
        if self.counts_only:
            if after != before:
                if self.track_deltas:
                    file = self.files.get(ev.pid) if self.files and ev.pid is not None else None
                    rep.deltas[(file, ev.lineno)] = after - before
                if after > rep.peak_map_count:
                    rep.peak_map_count, rep.peak_line, rep.peak_pid = after, ev.lineno, ev.pid
            return
        # the common case, model and kernel agree on success, costs one comparison
        if err is not None or ev.errno is not None or result != ev.ret:
            self._compare(ev, result, err, before)
        if after != before:
            delta = after - before
            if self.track_deltas:
                file = self.files.get(ev.pid) if self.files and ev.pid is not None else None
                rep.deltas[(file, ev.lineno)] = delta
            if delta > 0:
                stack = ev.stack
                rep.vmas_by_site[self._site(stack) if stack else _NO_STACK] += delta
                rep.vmas_by_cause[self._cause(p, ev, err)] += delta
                if after > rep.peak_map_count:
                    rep.peak_map_count, rep.peak_line, rep.peak_pid = after, ev.lineno, ev.pid
        elif rep.calls % self.series_every:
            return
        # _sample(ev, after), inline: every call that changes map_count is a point
        self._tick += 1
        if self._tick % self._stride:
            return
        series = rep.series
        series.append((ev.lineno, ev.time, after))
        if len(series) >= self.SERIES_MAX:
            rep.series = series[::2]
            self._stride *= 2

    def _other(self, ev: Syscall) -> None:
        """A call without a handler: execve, clone and friends, shmget/shmctl, or one the
        model does not replay."""
        name = ev.name
        if self._lane and name in _NEEDS_MODEL:
            p = self.tasks.get(ev.pid)
            if p is not None and p in self._lane:
                self._lane_release(p)
        if name == "execve" or name == "execveat":
            if ev.ret == 0:
                if not self.tasks:
                    self.process_for(ev.pid, ev)
                else:
                    self._execve(ev)
            return
        if name in ("clone", "clone3", "fork", "vfork"):
            self._clone(ev)
            return
        if name in UNMODELLED and ev.ret is not None and ev.errno is None:
            self._unmodelled[name] = self._unmodelled.get(name, 0) + 1
            self.report.drop(Dropped(ev.lineno, _fmt_call(ev), UNMODELLED[name], self._file_of(ev)))
        elif name == "shmget" and ev.errno is None and ev.ret is not None:
            self._shmget(ev)
        elif name == "shmctl" and ev.errno is None:
            self._shmctl(ev)

    SITE_CACHE_MAX = 4096

    def _site(self, stack: tuple[str, ...]) -> str:
        """call_site(stack), remembered per stack: a -k trace repeats a few stacks."""
        cache = self._sites
        site = cache.get(stack)
        if site is None:
            site = call_site(stack)
            if len(cache) >= self.SITE_CACHE_MAX:
                cache.clear()
            cache[stack] = site
        return site

    SERIES_MAX = 20000

    def _clone(self, ev: Syscall) -> None:
        if ev.ret is None or ev.ret < 0:
            return
        parent = self.process_for(ev.pid, None)
        flags = 0
        if ev.name in ("clone", "clone3"):
            # strace prints clone(child_stack=..., flags=..., ...): flags come second there;
            # the raw syscall order (ltrace -S) and clone3's struct put them first
            pos = 1 if ev.name == "clone" and "flags=" in ev.raw and len(ev.args) > 1 else 0
            a = ev.args[pos] if len(ev.args) > pos else 0
            flags = a if isinstance(a, int) else 0
        elif ev.name == "vfork":
            flags = CLONE_VM | CLONE_VFORK
        if ev.ret in self.tasks and self._tgid.get(ev.ret) == ev.ret:
            # the child's execve printed before its parent's vfork()/clone() returned (a
            # vfork parent resumes only once the child has exec'd): it has its own mm now
            return
        if flags & CLONE_VM:
            self.tasks[ev.ret] = parent
        else:
            # a fork's anon_vmas are not singular: the written replay must run
            if self._watch is not None:
                self._watch.sensitive = True
            self._new_space()
            self.tasks[ev.ret] = parent.fork()
            self.report.processes += 1
        # a thread joins its parent's thread group; anything else (fork, vfork,
        # posix_spawn's CLONE_VM|CLONE_VFORK) is a process of its own, even sharing the mm
        self._tgid[ev.ret] = self._tgid.get(ev.pid, ev.pid) if flags & CLONE_THREAD else ev.ret

    def _new_space(self) -> None:
        """A fork or exec makes an address space (and an exec or exit drops one): with the
        cyclic collector off while replaying (see replay()), collect the dropped ones now
        and then."""
        self._spaces += 1
        if self._spaces % GC_SPACES == 0 and not gc.isenabled():
            gc.collect()

    def _execve(self, ev: Syscall) -> None:
        """A successful execve: a new mm for the caller's thread group only (de_thread()
        ends its other threads). A vfork/posix_spawn child shares its parent's mm until
        this point; the parent keeps the old one."""
        group = self._tgid.get(ev.pid, ev.pid)
        self._new_space()
        p = self.machine.spawn()
        self.report.processes += 1
        self._exec(p, ev)
        for tid in [t for t, g in self._tgid.items() if g == group and t != ev.pid]:
            self.tasks.pop(tid, None)
            del self._tgid[tid]
        # after a non-leader thread's execve the task goes on under the leader's pid
        self.tasks[ev.pid] = p
        self._tgid[ev.pid] = ev.pid

    # ------------------------------------------------------------ comparison
    def _compare(self, ev: Syscall, result: int, err: MmError | None, before: int) -> None:
        rep = self.report
        rec_err = ev.errno
        if err is not None:
            model = f"-1 {_errname(err.errno or 0)}"
            fail = Failure(
                ev.lineno,
                _fmt_call(ev),
                _errname(err.errno or 0),
                err.cause,
                err.detail,
                before,
                ev.pid,
                ev.stack,
                self._file_of(ev),
            )
            if rec_err == fail.errno and err.cause is None:
                # the kernel failed the same way, and not for a limit (max_map_count,
                # overcommit, rlimits, address space): the call fails at any limit
                # (MAP_HUGETLB with an empty pool, munmap(0, 0))
                if len(rep.failures_anyway) < 1000:
                    rep.failures_anyway.append(fail)
            elif rep.first_failure is None or len(rep.failures) < 1000:
                # first_failure is the first call a limit broke; a model failure no limit
                # explains (cause None) is a divergence, listed with the failures only
                if rep.first_failure is None and err.cause is not None:
                    rep.first_failure = fail
                rep.failures.append(fail)
        else:
            model = hex(result) if result > 9 else str(result)
        if ev.ret is None:
            return
        if rec_err is not None:
            recorded = f"-1 {rec_err}"
        else:
            recorded = hex(ev.ret) if ev.ret > 9 else str(ev.ret)
        if recorded != model:
            why = "model and kernel disagree"
            if err is not None and err.cause == CAUSE_MAP_COUNT:
                why = f"the model hit max_map_count {rep.max_map_count}: {err.detail}"
            elif rec_err == "ENOMEM" and err is None:
                why = (
                    "the kernel refused with ENOMEM where the model succeeded: a different "
                    "limit (max_map_count, overcommit, rlimits) or an earlier divergence"
                )
            rep.divergences.append(
                Divergence(ev.lineno, _fmt_call(ev), recorded, model, why, self._file_of(ev))
            )

    def _cause(self, p: Process, ev: Syscall, err: MmError | None) -> str:
        name = ev.name
        a = ev.args
        if name == "munmap":
            return "partial munmap"
        if name in ("mprotect", "pkey_mprotect"):
            if type(a[0]) is int:
                # the VMA at a[0]: after a split there, the one that starts there (a dict
                # get of the tree's table, which is keyed by start), else a lookup
                tree = p.mm.tree
                vma = tree._vmas.get(a[0]) or tree.lookup(a[0])
            else:
                vma = p.mm.tree.lookup(int(a[0])) if isinstance(a[0], int) else None
            if vma is not None and vma.file is None and vma.name is None:  # is_anonymous
                flags = vma.flags
                if flags & VM_NOHUGEPAGE:
                    return "thread stack"  # MAP_STACK sets VM_NOHUGEPAGE: stack + guard split
                if flags & VM_NORESERVE and vma.start % (64 << 20) == 0:
                    return "malloc arena"  # glibc grows a HEAP_MAX-aligned arena heap
            return "mprotect guard" if a[2] == PROT_NONE else "mprotect split"
        if name == "mmap":
            flags = a[3] if isinstance(a[3], int) else 0
            length = a[1] if isinstance(a[1], int) else 0
            if flags & MAP_STACK:
                return "thread stack"
            if not flags & MAP_ANONYMOUS:
                return "file mapping"
            if length in (64 << 20, 128 << 20) and a[2] == PROT_NONE:
                return "malloc arena"
            return "anonymous mmap"
        if name in ("mlock", "mlock2", "munlock"):
            return "mlock split"
        if name == "madvise":
            return "madvise split"
        return name

    # ------------------------------------------------------------- the calls
    @staticmethod
    def _ints(ev: Syscall, n: int) -> list[int]:
        args = ev.args
        out = list(args[:n]) if len(args) >= n else [*args, *([0] * (n - len(args)))]
        for i, v in enumerate(out):
            if type(v) is not int:
                if v is None:
                    out[i] = 0
                elif not isinstance(v, int):
                    raise ValueError(f"argument {i + 1} is not a number: {v!r}")
        return out  # type: ignore[return-value]

    def _plain(
        self, method: str, nargs: int
    ) -> Callable[[Process, Syscall], tuple[int, MmError | None]]:
        """A handler for a call that returns 0 or fails: the first ``nargs`` arguments are
        passed to the Process method of the same name."""

        def handler(p: Process, ev: Syscall) -> tuple[int, MmError | None]:
            args = self._ints(ev, nargs)
            try:
                getattr(p, method)(*args)
                return 0, None
            except MmError as e:
                return -1, e.with_traceback(None)  # see replay()

        return handler

    def _file(self, p: Process, fd: int, ev: Syscall) -> None:
        """Make sure fd refers to a model file (by -y path when the trace has it)."""
        path = ev.fd_paths.get(fd)
        cur = p.files.get(fd)
        if cur is not None and (path is None or cur.inode.path == path):
            return
        name = path or f"fd{fd}"
        inode = self.machine.inode_for(name, (0, 0), 0, 1 << 46)
        p.files[fd] = OpenFile(inode)

    def _mmap(self, p: Process, ev: Syscall) -> tuple[int, MmError | None]:
        addr, length, prot, flags, fd, off = self._ints(ev, 6)
        if not flags & MAP_ANONYMOUS:
            self._file(p, fd & 0xFFFFFFFF if fd >= 0 else fd, ev)
        mm = p.mm
        placed = (
            self.use_recorded
            and ev.errno is None
            and ev.ret is not None
            and not flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)
        )
        if placed:
            assert ev.ret is not None
            if len(p.images) > 1 and id(p) not in self._top_placed:
                # the first mmap(NULL) after execve locates the interpreter and mmap_base
                self._top_placed.add(id(p))
                held = self._watch.before_move(p) if self._watch else []
                if place_top(mm, p.images[-1], ev.ret, length):
                    self._anchored.setdefault(id(p), set()).add(p.images[-1].path)
                if self._watch:
                    self._watch.after_move(p, held)
            f = p.files.get(fd) if not flags & MAP_ANONYMOUS else None
            hint = addr & ~(PAGE_SIZE - 1)
            own = get_unmapped_area(
                mm, f, hint, page_align(length), off >> 12, flags & ~MAP_FIXED, 0
            )
            self.report.placements += 1
            if own == ev.ret:
                self.report.placements_agreed += 1
            mm.placement_hint = ev.ret
        ww = self._watch
        if ww is not None:
            self._pre = ww.before(p, ev) if not ww.sensitive else None
        try:
            return p.mmap(addr, length, prot, flags, fd, off), None
        except MmError as e:
            return -1, e.with_traceback(None)  # see replay()
        finally:
            mm.placement_hint = None

    def _anchor(self, p: Process, addr: int, length: int) -> None:
        """ld.so makes each image's RELRO read-only right after relocating it: a recorded
        mprotect(PROT_READ) on a range the model has not mapped reveals where ASLR put the
        program or the interpreter; move that image there."""
        done = self._anchored.setdefault(id(p), set())
        for img in p.images:
            if img.path in done:
                continue
            rng = img.relro_range(img.bias)
            if rng is None or rng[1] - rng[0] != page_align(length):
                continue
            held = self._watch.before_move(p) if self._watch else []
            moved = relocate(p.mm, img, img.bias + (addr - rng[0]))
            if self._watch:
                self._watch.after_move(p, held)
            if moved:
                done.add(img.path)
                self.report.estimates.append(
                    f"{img.path}: placed at {img.lo:#x} (found from its RELRO mprotect)"
                )
                return

    def _mprotect(self, p: Process, ev: Syscall) -> tuple[int, MmError | None]:
        a = ev.args
        ints = False
        if len(a) == 3:
            x, y, z = a  # the common case, without _ints()'s copy
            if type(x) is int and type(y) is int and type(z) is int:
                addr, length, prot = x, y, z
                ints = True
        if not ints:
            addr, length, prot = self._ints(ev, 3)
        if (
            self.use_recorded
            and p.images
            and ev.ret == 0
            and prot == PROT_READ
            and p.mm.tree.lookup(addr) is None
        ):
            self._anchor(p, addr, length)
        ww = self._watch
        if ww is not None:
            if ww.sensitive:
                self._pre = None
            elif ints and prot & _WRITE_OR_GROWS == PROT_WRITE and ev.name == "mprotect":
                # the fill-to-limit hot path: ww.before(p, ev) without its argument checks
                self._pre = ww.before_writable(p, addr, length)
            else:
                self._pre = ww.before(p, ev)
        try:
            p.mprotect(addr, length, prot)
            return 0, None
        except MmError as e:
            return -1, e.with_traceback(None)  # see replay()

    def _mremap(self, p: Process, ev: Syscall) -> tuple[int, MmError | None]:
        n = 5 if len(ev.args) >= 5 else 4
        args = self._ints(ev, n) + ([0] if n == 4 else [])
        old, old_len, new_len, flags, new_addr = args
        mm = p.mm
        if (
            self.use_recorded
            and flags & MREMAP_MAYMOVE
            and not flags & MREMAP_FIXED
            and ev.errno is None
            and ev.ret is not None
            and ev.ret != old
        ):
            mm.placement_hint = ev.ret
        try:
            return p.mremap(old, old_len, new_len, flags, new_addr), None
        except MmError as e:
            return -1, e.with_traceback(None)  # see replay()
        finally:
            mm.placement_hint = None

    def _brk(self, p: Process, ev: Syscall) -> tuple[int, MmError | None]:
        (addr,) = self._ints(ev, 1)
        mm = p.mm
        if id(p) in self._heap_estimated and addr == 0 and ev.ret is not None:
            self._anchor_heap(p, ev.ret, ev)
        # the first brk(NULL) reveals the randomised start of the heap
        if (
            addr == 0
            and ev.ret is not None
            and self.use_recorded
            and ev.ret != mm.brk
            and mm.brk == mm.start_brk
            and mm.tree.find_intersection(ev.ret, ev.ret + 1) is None
        ):
            mm.start_brk = mm.brk = ev.ret
        return p.brk(addr), None

    def _anchor_heap(self, p: Process, brk: int, ev: Syscall) -> None:
        """An estimated layout's heap is a placeholder: the first brk(NULL) shows where the
        kernel put the break (randomize_va_space: up to 32 MiB past the program's bss).
        The placeholder [heap] goes and the break starts there, empty, as after exec."""
        self._heap_estimated.discard(id(p))
        mm = p.mm
        if brk == mm.brk or not self.use_recorded:
            return
        if mm.tree.find_intersection(brk, brk + PAGE_SIZE) is not None and not (
            mm.start_brk <= brk < mm.brk
        ):
            return
        if mm.brk > mm.start_brk:
            p.munmap(mm.start_brk, page_align(mm.brk) - mm.start_brk)
        mm.start_brk = mm.brk = brk
        self.report.estimates.append(
            f"{self._where(ev)}: heap anchored at {brk:#x} (the first brk(NULL))"
        )

    def _mlock(self, p: Process, ev: Syscall) -> tuple[int, MmError | None]:
        addr, length = self._ints(ev, 2)
        flags = self._ints(ev, 3)[2] if ev.name == "mlock2" and len(ev.args) > 2 else 0
        try:
            p.mlock2(addr, length, flags)
            return 0, None
        except MmError as e:
            return -1, e.with_traceback(None)  # see replay()

    @property
    def written_sensitive(self) -> bool:
        """With watch_written: whether a replay as if every writable private VMA had been
        written could differ from this one (see :mod:`vmsim.trace.written`)."""
        return self._watch is None or self._watch.sensitive

    # ------------------------------------------------------ the written hypothesis
    def _written(self, p: Process, ev: Syscall, result: int) -> None:
        """As if the program wrote to every writable private VMA the call left behind: each
        takes its anon_vma now, as its first write fault would (__anon_vma_prepare())."""
        name = ev.name
        a = ev.args
        if name in ("mmap", "shmat"):
            lo = result
            hi = result + page_align(int(a[1] or 0)) if name == "mmap" else result + 1
        elif name == "mremap":
            lo, hi = result, result + page_align(int(a[2] or 0))
        elif name in ("mprotect", "pkey_mprotect"):
            lo, hi = int(a[0] or 0), int(a[0] or 0) + page_align(int(a[1] or 0))
        elif name == "brk":
            lo, hi = p.mm.start_brk, max(p.mm.brk, p.mm.start_brk + 1)
        else:
            return
        mm = p.mm
        for vma in mm.tree.range(lo, hi):
            if vma.anon_vma is None and vma.flags & VM_WRITE and not vma.flags & VM_SHARED:
                mm.anon_vma_prepare(vma)

    # --------------------------------------------------------------- SysV shm
    def _shmget(self, ev: Syscall) -> None:
        """A recorded segment, under its recorded id (shmget is %ipc: traced when asked)."""
        key, size, flags = self._ints(ev, 3)
        assert ev.ret is not None
        if ev.ret not in self.shm.segments:
            try:
                self.shm.shmget(self.machine, key, size, flags | 0o1000, shmid=ev.ret)
            except MmError as e:
                self.report.drop(
                    Dropped(ev.lineno, _fmt_call(ev), f"shmget: {e}", self._file_of(ev))
                )

    def _shmctl(self, ev: Syscall) -> None:
        shmid, cmd = self._ints(ev, 2)
        if cmd & 0xFF == IPC_RMID and shmid in self.shm.segments:
            self.shm.rmid(self.machine, shmid)

    def _shmat(self, p: Process, ev: Syscall) -> tuple[int, MmError | None]:
        shmid, addr, flags = self._ints(ev, 3)
        if shmid not in self.shm.segments and ev.errno is None and ev.ret is not None:
            # the trace has no shmget for it (not traced, or before strace -p): one page
            self.shm.shmget(self.machine, 0, PAGE_SIZE, 0o1000, shmid=shmid)
            self.report.estimates.append(
                f"{self._where(ev)}: shmat of segment {shmid} without its shmget in the "
                "trace: its size is taken as one page (trace with -e trace=%memory,%ipc)"
            )
        mm = p.mm
        if self.use_recorded and not addr and ev.errno is None and ev.ret is not None:
            mm.placement_hint = ev.ret
        try:
            return p.shmat(shmid, addr, flags), None
        except MmError as e:
            return -1, e.with_traceback(None)  # see replay()
        finally:
            mm.placement_hint = None

    def _shmdt(self, p: Process, ev: Syscall) -> tuple[int, MmError | None]:
        (addr,) = self._ints(ev, 1)
        try:
            p.shmdt(addr)
            return 0, None
        except MmError as e:
            return -1, e.with_traceback(None)  # see replay()


def _clone_children(events: Iterable[Any]) -> set[int]:
    """Every task a successful clone/fork/vfork in the trace returns (a first, cheap pass)."""
    out: set[int] = set()
    for ev in events:
        if (
            type(ev) is Syscall
            and ev.name in ("clone", "clone3", "fork", "vfork")
            and ev.ret is not None
            and ev.ret > 0
        ):
            out.add(ev.ret)
    return out


def _starts_with_execve(events: Iterator[Any]) -> bool:
    for ev in events:
        if type(ev) is Syscall:
            return ev.name in ("execve", "execveat") and ev.ret == 0
        if type(ev) is LaneRun:
            return False  # its rows are mprotect and munmap calls
    return False


class _Events:
    """A re-readable trace read once: the first full pass keeps its events and later
    passes replay them instead of parsing the file again, for a trace of up to CACHE_LINES
    lines (a call and each of its -k frames count as one: ~0.6 KB kept per call, less per
    frame, so at most ~150 MB); a longer trace is read afresh for each pass."""

    CACHE_LINES = 250_000

    def __init__(self, read: Callable[[], Iterator[Any]]) -> None:
        self._read = read
        self._kept: list[Any] | None = None
        self._too_long = False

    def tail(self, first: Any) -> Iterator[Any] | None:
        """The events from ``first`` (the very object an earlier pass yielded) to the end,
        if the trace is kept."""
        kept = self._kept
        if kept is None:
            return None
        if type(first) is LaneRow:  # a row of a LaneRun: the run from that row on
            for i, ev in enumerate(kept):
                if ev is first.run:
                    return itertools.chain(
                        [first.run.tail(first.i)], itertools.islice(kept, i + 1, None)
                    )
            return None
        for i, ev in enumerate(kept):
            if ev is first:
                return itertools.islice(kept, i, None)
        return None

    def __call__(self) -> Iterator[Any]:
        if self._kept is not None:
            return iter(self._kept)
        if self._too_long:
            return self._read()
        return self._keep()

    def _keep(self) -> Iterator[Any]:
        kept: list[Any] | None = []
        room = self.CACHE_LINES
        for ev in self._read():
            if kept is not None:
                kept.append(ev)
                room -= len(ev) if type(ev) is LaneRun else 1 + len(getattr(ev, "stack", ()))
                if room < 0:
                    kept = None
                    self._too_long = True
            yield ev
        if kept is not None:
            self._kept = kept


def replay(
    events: Iterable[Syscall | Signal | Exit | Problem] | Callable[[], Iterator[Any]],
    *,
    max_map_count: int = 65530,
    written_range: bool = True,
    **options: Any,
) -> ReplayReport:
    """Replay ``events`` at ``max_map_count``.

    ``events`` may be a callable that yields the events afresh; then the replay also:

    - finds the tasks that existed before the trace began (``strace -p``: no clone()
      returns them) when the trace does not start with execve, by a first pass;
    - replays again as if every writable private VMA was written, for
      ``peak_map_count_range`` (see the module docstring; ``written_range=False`` skips
      it, and the range is then unknown: None), unless the first replay showed that no
      call could come out differently (see :mod:`vmsim.trace.written`);
    - if the trace hit the limit, replays without a limit for the smallest max_map_count
      that lets every call succeed.

    The trace is parsed once when it fits in ``_Events.CACHE_LINES``.
    """
    # A replay allocates two VMAs per split and keeps them: the cyclic garbage collector's
    # scans of the growing model (every 700 allocations by default; every 70,000 was still
    # 10-25% of a replay's time) find nothing to free, so it is off while replaying. What
    # a replay leaves for it: the models of processes that exec'd or exited (collected
    # after every GC_SPACES forks and execs, see _new_space()); a failed call's exception
    # has its traceback dropped (its frames made a cycle: ~20 objects per failure).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _replay(events, max_map_count=max_map_count, written_range=written_range, **options)
    finally:
        if enabled:
            gc.enable()


def _replay(
    events: Iterable[Syscall | Signal | Exit | Problem] | Callable[[], Iterator[Any]],
    *,
    max_map_count: int,
    written_range: bool,
    **options: Any,
) -> ReplayReport:
    if callable(events):
        events = _Events(events)
    if callable(events) and "known_children" not in options and not _starts_with_execve(events()):
        options = {**options, "known_children": _clone_children(events())}
    source = events() if callable(events) else events
    two = callable(events) and written_range and not options.get("assume_written")
    r = Replayer(
        max_map_count=max_map_count,
        track_deltas=two,
        watch_written=two,
        snapshot=isinstance(events, _Events) and not options.get("files"),
        **options,
    )
    rep = r.feed(source)
    rep.passes.append("limited")
    hit_limit = any(f.cause == CAUSE_MAP_COUNT for f in rep.failures)
    if hit_limit and callable(events):
        resume = r.resume
        tail = events.tail(resume[1]) if resume and isinstance(events, _Events) else None
        if resume is not None and tail is not None:
            # the same as replaying from the start, without replaying the calls before the
            # first one the limit broke (see Replayer._snapshot_before())
            r2 = resume[0]
            r2.feed(tail)
        else:
            r2 = Replayer(max_map_count=UNLIMITED, counts_only=True, **options)
            r2.feed(events())
        r.resume = None
        rep.passes.append("unlimited")
        rep.min_max_map_count = r2.report.min_max_map_count
    elif hit_limit:
        rep.min_max_map_count = 0  # unknown: the events could not be read twice
        rep.estimates.append(
            "min_max_map_count unknown: the trace hit the limit and could not be re-read"
        )
    if two and callable(events) and not r.written_sensitive:
        # no call could have come out differently had the program written its memory
        rep.peak_map_count_range = (rep.peak_map_count, rep.peak_map_count)
        rep.write_dependent_calls = 0
    elif two and callable(events):
        w = Replayer(
            max_map_count=max_map_count,
            track_deltas=True,
            counts_only=True,
            **{**options, "assume_written": True},
        )
        written = w.feed(events())
        rep.passes.append("written")
        rep.peak_map_count_range = (
            rep.peak_map_count,
            max(rep.peak_map_count, written.peak_map_count),
        )
        rep.write_dependent_calls = sum(
            1
            for key in written.deltas.keys() | rep.deltas.keys()
            if written.deltas.get(key, 0) > rep.deltas.get(key, 0)
        )
        if rep.write_dependent_calls:
            rep.estimates.append(
                f"{rep.write_dependent_calls} call(s) leave more VMAs if the program wrote to "
                "its memory (written VMAs keep their own anon_vma and do not merge): peak "
                f"map_count {rep.peak_map_count_range[0]} if nothing was written, "
                f"{rep.peak_map_count_range[1]} if everything writable was"
            )
    elif options.get("assume_written"):
        rep.peak_map_count_range = (rep.peak_map_count, rep.peak_map_count)
    return rep
