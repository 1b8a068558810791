"""Reading strace output into events, in every shape strace 6 prints.

(Over the project's ~600 lines per module: one state machine, ``_read()``, holds what spans
lines (a call waiting for its -k frames, unfinished calls, exits, a line cut by a strace
message), and both readers feed it: line by line, and in blocks (``read_strace_stream``),
whose fast branch must sit in that same loop to keep the events and their order exact.)

Line grammar (strace ``printleader()`` and ``syscall_exiting_trace()``)::

    [PID-PREFIX][TIME ][[IP] ]NAME(ARGS) = RET[ ERRNAME (strerror)][ <SECONDS>]

- PID prefix: ``[pid  N] `` (``-f`` writing to a terminal), ``N `` (``-f -o FILE``), none
  (one task, or ``-ff`` where the pid is the file suffix).
- TIME: ``-t`` ``HH:MM:SS``, ``-tt`` ``HH:MM:SS.uuuuuu``, ``-ttt`` epoch, ``-r`` relative.
- A call interrupted by another task's output is split into ``NAME(ARGS <unfinished ...>`` and,
  later, ``<... NAME resumed>ARGS) = RET``; the two halves are merged into one :class:`Syscall`
  numbered at the first half, yielded when the second half arrives (the order in which calls
  completed: an mmap that returns an address returned it after any munmap that freed it).
- ``-k`` adds one `` > frame`` line per stack frame after the call's (completed) line.
- ``--- SIGNAME {siginfo} ---`` is a signal; ``+++ exited with N +++`` / ``+++ killed by SIG
  +++`` the end of a task.
- Without ``-o``, strace's own ``strace: Process N attached`` lands in the middle of a line; the
  rest of that line follows on the next one. The two pieces are joined again.

Speed: the common complete-call line is one precompiled regex match; everything else takes the
slower path. Arguments are decoded only for :data:`~vmsim.trace.decode.DECODED_SYSCALLS`. A
file is read in blocks of lines (``read_strace_stream``, what ``vmsim replay`` uses): one
``findall()`` per block splits it and reads its plain complete calls at once.
"""

from __future__ import annotations

import contextlib
import gzip
import heapq
import io
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from vmsim.trace.decode import (
    DECODED_SYSCALLS,
    DELETED,
    MIN_ARGS,
    TASK_AND_TIME,
    Timestamps,
    decode_args,
    too_few_args,
)
from vmsim.trace.events import Arg, Event, Exit, Problem, Signal, Syscall, clip, mutable_twin

__all__ = [
    "TAKEN",
    "open_trace",
    "read_strace",
    "read_strace_files",
    "read_strace_numbered",
    "read_strace_stream",
]

_PREFIX: Final = TASK_AND_TIME + r"(?:\[ *[0-9a-f]+\] )?"  # -i instruction pointer
# the result: a long, or hex; then the end, an errno, -T or a -y path (' ', '<')
_RESULT: Final = r"\) *= (0x[0-9a-f]{1,16}|-?[0-9]{1,19}|\?)(?=[ <]|$)(.*)$"
# The fast path: a complete call on one line.
_CALL = re.compile(_PREFIX + r"([a-z_][a-z0-9_]*)\((.*)" + _RESULT)
_LEADER = re.compile(_PREFIX)
_BODY_CALL = re.compile(r"([\w?]+)\((.*)" + _RESULT)
_UNFINISHED = re.compile(r"([\w?]+)\((.*) <unfinished \.\.\.>$")
_DETACHED = re.compile(r"([\w?]+)\((.*) <detached \.\.\.>$")
_RESUMED = re.compile(r"<\.\.\. ([\w?]+) resumed>(.*)$")
_SIGNAL = re.compile(r"--- (?:stopped by )?(SIG\w+|\d+)\b(.*?) ?---$")
_SI_CODE = re.compile(r"\bsi_code=([^,}]+)")
_SI_ADDR = re.compile(r"\bsi_addr=(0x[0-9a-f]+|NULL)")
_EXITED = re.compile(r"\+\+\+ exited with ([0-9]{1,10}) \+\+\+$")
_KILLED = re.compile(r"\+\+\+ killed by (SIG\w+|\d+)(?: \(core dumped\))? \+\+\+$")
_SUPERSEDED = re.compile(r"\+\+\+ superseded by execve in pid \d+ \+\+\+$")
_ERRNO = re.compile(r"(E[A-Z0-9_]+)(?: \(|$)")
_MESSAGE = "strace: Process "
_FD_IN_ARGS = re.compile(r"(?:^|(?<=[\s(\[{=]))([0-9]{1,10})<(?!<)")
_DECORATION_END = re.compile(r">(\(deleted\))?(?=[,\]})\s]|$)")  # see decode.py
_EMPTY: Final[tuple[str, ...]] = ()
_LONG_MIN: Final = -(1 << 63)
_EXITS: Final = frozenset({"exit", "exit_group"})


# Events are built as mutable twins (see mutable_twin): -k frames may still be appended.
_SyscallBuilder: Final[Any] = mutable_twin(Syscall)
_SignalBuilder: Final[Any] = mutable_twin(Signal)


def _finish(built: Any) -> Any:
    """Turn a builder into its frozen event (the fast path does this inline)."""
    if built.stack:
        built.stack = tuple(built.stack)
    built.__class__ = Syscall if type(built) is _SyscallBuilder else Signal
    return built


@dataclass(slots=True)
class _Unfinished:
    lineno: int
    time: float | None
    name: str
    args: str
    raw: str


def read_strace(lines: Iterable[str], *, pid: int | None = None) -> Iterator[Event]:
    """Read strace output, one event per call, signal, exit or unreadable line.

    ``pid`` is the task of lines without a pid prefix (the ``-ff`` file suffix), else None.
    Never raises on bad input: unreadable lines become :class:`Problem` events.
    """
    return _read(enumerate(lines, 1), pid, Timestamps())


# Bulk reading (_bulk()): one findall() over a block of lines gives a tuple per line. Its
# first branch takes the common complete call whose reading needs none of _CALL's cases: a
# -f pid or none, no timestamp, arguments with no string, bracket or -y path, a result that
# is a plain number (no errno, no '?'), then nothing or a -T time. Any such line _CALL reads
# the same way (its arguments hold no ')', so '(.*)' stops at the same place). The second
# branch is every other line, read by the line-by-line path.
_BULK = re.compile(
    r"^((?:([0-9]{1,10}) +)?([a-z_][a-z0-9_]*)\(([^\"<>(){}\[\]\n]*)\) *= "
    r"(0x[0-9a-f]{1,16}|[0-9]{1,19})(?: <([0-9]+\.[0-9]+)>)?$|.*)$",
    re.MULTILINE,
)
_BLOCK_CHARS: Final = 1 << 20


def _bulk(
    head: list[str], handle: IO[str], on_block: Callable[[], None] | None = None
) -> Iterator[Any]:
    """The lines of ``head`` then of ``handle`` (the rest of the same text stream), for
    _read(): read in blocks of whole lines, each block parsed by one _BULK.findall()."""
    yield head
    findall = _BULK.findall
    read = handle.read
    while True:
        block = read(_BLOCK_CHARS)
        if not block:
            return
        if block[-1] != "\n":
            block += handle.readline()
        if on_block is not None:
            on_block()
        if "\r" in block:  # a stream that keeps '\r\n': the line-by-line path strips it
            yield list(io.StringIO(block, newline="\n"))
        else:
            yield findall(block[:-1] if block[-1] == "\n" else block)


def read_strace_stream(
    handle: IO[str],
    head: list[str] | None = None,
    *,
    pid: int | None = None,
    on_block: Callable[[], None] | None = None,
) -> Iterator[Event]:
    """:func:`read_strace` of a text stream (its lines ``head`` already read from it), read
    in blocks: the same events, faster. ``on_block`` is called after each block is read."""
    items = itertools.chain.from_iterable(_bulk(head or [], handle, on_block))
    return _read(enumerate(items, 1), pid, Timestamps())


class _Taken:
    """The type of :data:`TAKEN`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "TAKEN"


TAKEN: Final = _Taken()
"""In :func:`read_strace_numbered`'s input, in place of a run of complete call lines that
the fast lane (:mod:`vmsim.fastlane`) replayed itself: the call held so far is yielded."""


def read_strace_numbered(
    numbered: Iterable[tuple[int, Any]], *, pid: int | None = None, clock: Timestamps | None = None
) -> Iterator[Event]:
    """:func:`read_strace` of numbered lines, where the fast lane has taken some: each item is
    (line number, line) or (number, :data:`TAKEN`) for a run of lines the lane replayed, the
    next item numbered after the run. The lane takes only complete calls on one line that
    need nothing held here: no ``-k`` frame follows them, and no line cut by a strace
    message waits for its rest (RuntimeError: the lane broke that rule). Between runs this
    yields exactly the events :func:`read_strace` yields for the same lines. ``clock`` is
    the timestamp state, which the lane keeps up to date for the lines it took."""
    return _read(numbered, pid, clock if clock is not None else Timestamps())


def _read(
    numbered: Iterable[tuple[int, Any]], default_pid: int | None, clock: Timestamps
) -> Iterator[Event]:
    call_match = _CALL.match
    decoded = DECODED_SYSCALLS
    min_args = MIN_ARGS
    parse_time = clock.parse
    # The last call or signal: -k frames may follow it, so it is yielded at the next line.
    held: Any = None  # a _SyscallBuilder or _SignalBuilder
    held_final: type = Syscall  # what ``held`` becomes
    held_exiting = False  # ``held`` is in ``exiting``: its '+++' line yields it
    building = _SyscallBuilder
    after: Event | None = None  # yielded right after ``held``
    # exit/exit_group calls wait for their task's '+++' line: strace -k prints their stack
    # after it, possibly with other tasks' lines in between.
    exiting: dict[int | None, Any] = {}
    pending: dict[int | None, _Unfinished] = {}
    carry = ""  # the head of a line cut by 'strace: Process N attached'
    carry_lineno = 0
    lineno = 0
    for lineno, line in numbered:
        if type(line) is tuple:
            # a line read in bulk (_bulk()): (the line, pid, name, args, result, -T seconds),
            # the last five set only for a complete call on one line that _BULK's first
            # branch takes: read here as the _CALL path below reads it, without its checks
            whole, pid_text, name, args_text, ret_text, dur = line
            if name and not carry:
                if held is not None:
                    if not held_exiting:
                        if held.stack:
                            held.stack = tuple(held.stack)
                        held.__class__ = held_final
                        yield held
                    if after is not None:
                        yield after
                        after = None
                no_paths: dict[int, str] = {}
                if name in decoded:
                    values = decode_args(name, args_text, no_paths)
                    if len(values) < min_args.get(name, 0):
                        held = None
                        yield Problem(lineno, whole, too_few_args(name, values) or "")
                        continue
                else:
                    values = (args_text,) if args_text else ()
                held = building(
                    lineno,
                    int(pid_text) if pid_text else default_pid,
                    None,
                    name,
                    values,
                    no_paths,
                    int(ret_text, 16) if ret_text[1:2] == "x" else int(ret_text),
                    None,
                    float(dur) if dur else None,
                    _EMPTY,
                    whole,
                )
                held_final = Syscall
                held_exiting = False
                continue
            line = whole
        elif line is TAKEN:
            if carry:
                raise RuntimeError(
                    f"line {lineno}: the fast lane took lines while line {carry_lineno}, cut "
                    "by a strace message, waited for its rest"
                )
            if held is not None:
                if not held_exiting:
                    yield _finish(held)
                held = None
                if after is not None:
                    yield after
                    after = None
            continue
        elif line.endswith("\n"):
            line = line[:-2] if line.endswith("\r\n") else line[:-1]
        start = lineno
        if carry:
            line = carry + line
            start = carry_lineno
            carry = ""
        m = call_match(line)
        if m is not None:
            if held is not None:
                if not held_exiting:
                    if held.stack:
                        held.stack = tuple(held.stack)
                    held.__class__ = held_final
                    yield held
                if after is not None:
                    yield after
                    after = None
            pid_b, pid_p, stamp, name, args_text, ret_text, tail = m.groups()
            pid_text = pid_b or pid_p
            fd_paths: dict[int, str] = {}
            if name in decoded:
                args: tuple[Arg, ...] = decode_args(name, args_text, fd_paths)
                if len(args) < min_args.get(name, 0):
                    held = None
                    yield Problem(start, line, too_few_args(name, args) or "")
                    continue
            else:
                args = (args_text,) if args_text else ()
                if "<" in args_text:
                    _scan_fd_paths(args_text, fd_paths)
            if ret_text == "?":
                ret = None
            elif ret_text[1:2] == "x":
                ret = int(ret_text, 16)
            else:
                ret = int(ret_text)
                if ret < _LONG_MIN:
                    held = None
                    yield Problem(start, line, f"return value {ret_text} is not a long")
                    continue
            errno = duration = None
            if tail:
                if tail.startswith(" <") and tail.endswith(">"):  # just -T: ' <0.000040>'
                    try:
                        duration = float(tail[2:-1])
                    except ValueError:
                        errno, duration = _parse_tail(tail, ret, fd_paths)
                else:
                    errno, duration = _parse_tail(tail, ret, fd_paths)
                if errno is not None and ret is not None:
                    ret = -1
            held = building(
                start,
                int(pid_text) if pid_text else default_pid,
                parse_time(stamp) if stamp else None,
                name,
                args,
                fd_paths,
                ret,
                errno,
                duration,
                _EMPTY,
                line,
            )
            held_final = Syscall
            held_exiting = ret is None and name in _EXITS
            if held_exiting:
                exiting[held.pid] = held
            continue

        # The slow path: everything but a complete call on one line.
        if line.startswith(" > "):
            if held is not None:
                if held.stack:
                    held.stack.append(line[3:])
                else:
                    held.stack = [line[3:]]
            else:
                yield Problem(lineno, line, "-k stack frame without a call or signal before it")
            continue
        cut = line.find(_MESSAGE)
        if cut >= 0:
            # strace's own message; without -o it may land in the middle of a call's line.
            if line[:cut].strip():
                carry, carry_lineno = line[:cut], start
            continue
        if not line.strip() or line.startswith("strace: "):
            continue
        if held is not None:
            if not held_exiting:
                yield _finish(held)
            held = None
            if after is not None:
                yield after
                after = None
        leader = _LEADER.match(line)
        assert leader is not None  # every part of _PREFIX is optional
        pid_text = leader.group(1) or leader.group(2)
        task = int(pid_text) if pid_text else default_pid
        stamp = leader.group(3)
        time = parse_time(stamp) if stamp else None
        body = line[leader.end() :]

        if body.startswith("<..."):
            rm = _RESUMED.match(body)
            first = pending.pop(task, None)
            if rm is None:
                yield Problem(start, line, "malformed '<... NAME resumed>' line")
                continue
            if first is None or first.name != rm.group(1):
                if first is not None:
                    yield _never_returned(first, task)
                yield Problem(
                    start,
                    line,
                    f"'<... {clip(rm.group(1), 60)} resumed>' without a matching "
                    "'<unfinished ...>' "
                    f"of pid {task}",
                )
                continue
            rest = rm.group(2)
            raw = first.raw + "\n" + line
            if rest.endswith(" <unfinished ...>"):  # interrupted again
                first.args += rest[: -len(" <unfinished ...>")]
                first.raw = raw
                pending[task] = first
                continue
            bm = _BODY_CALL.match(f"{first.name}({first.args}{rest}")
            if bm is None:
                yield Problem(start, line, "resumed call has no ' = ' result (cut short?)")
                continue
            held = _complete(first.lineno, task, first.time, bm, raw)
            if isinstance(held, Problem):
                yield held
                held = None
                continue
            held_final = Syscall
            held_exiting = held.ret is None and held.name in _EXITS
            if held_exiting:
                exiting[task] = held
            continue

        if body.startswith("---"):
            sm = _SIGNAL.match(body)
            if sm is None:
                yield Problem(start, line, "malformed signal line")
                continue
            info = sm.group(2)
            code = _SI_CODE.search(info)
            addr = _SI_ADDR.search(info)
            held = _SignalBuilder(
                start,
                task,
                time,
                sm.group(1),
                code.group(1) if code else None,
                (0 if addr.group(1) == "NULL" else int(addr.group(1), 16)) if addr else None,
                line,
            )
            held_final, held_exiting = Signal, False
            continue

        if body.startswith("+++"):
            first = pending.pop(task, None)
            if first is not None:
                yield _never_returned(first, task)
            em = _EXITED.match(body)
            km = None if em is not None else _KILLED.match(body)
            if em is not None:
                end: Event = Exit(start, task, time, int(em.group(1)), None, line)
            elif km is not None:
                end = Exit(start, task, time, None, km.group(1), line)
            elif _SUPERSEDED.match(body):
                end = Exit(start, task, time, None, None, line)
            else:
                yield Problem(start, line, "malformed '+++' line")
                continue
            call = exiting.pop(task, None)
            if call is not None:  # the task's exit call takes the -k frames that follow
                held, held_final, held_exiting, after = call, Syscall, False, end
            else:
                yield end
            continue

        um = _UNFINISHED.match(body)
        if um is not None:
            first = pending.pop(task, None)
            if first is not None:
                yield _never_returned(first, task)
            pending[task] = _Unfinished(start, time, um.group(1), um.group(2), line)
            continue

        bm = _BODY_CALL.match(body)
        if bm is not None:  # a call the fast path does not take ('????(...)', odd spacing)
            held = _complete(start, task, time, bm, line)
            if isinstance(held, Problem):
                yield held
                held = None
                continue
            held_final = Syscall
            held_exiting = held.ret is None and held.name in _EXITS
            if held_exiting:
                exiting[task] = held
            continue
        dm = _DETACHED.match(body)
        if dm is not None:
            fd_paths = {}
            args = _args(dm.group(1), dm.group(2), fd_paths)
            why = too_few_args(dm.group(1), args)
            if why is not None:
                yield Problem(start, line, why)
                continue
            held = _SyscallBuilder(
                start, task, time, dm.group(1), args, fd_paths, None, None, None, _EMPTY, line,
            )  # fmt: skip
            held_final, held_exiting = Syscall, False
            continue
        if re.match(r"[\w?]+\(", body):
            yield Problem(start, line, "syscall line has no ' = ' result (cut short?)")
        else:
            yield Problem(start, line, "not an strace line")

    if held is not None:
        if not held_exiting:
            yield _finish(held)
        if after is not None:
            yield after
    if carry:
        yield Problem(carry_lineno, carry, "line cut by a strace message never continued")
    # Calls still open when the trace ends: exit calls whose '+++' line never came, and
    # unfinished calls that never resumed (the trace was cut, or strace detached).
    leftover: list[Syscall | Problem] = [_finish(call) for call in exiting.values()]
    leftover += [_never_returned(first, task) for task, first in pending.items()]
    yield from sorted(leftover, key=lambda call: call.lineno)


def _args(name: str, text: str, fd_paths: dict[int, str]) -> tuple[Arg, ...]:
    if name in DECODED_SYSCALLS:
        return decode_args(name, text, fd_paths)
    if "<" in text:
        _scan_fd_paths(text, fd_paths)
    return (text,) if text else ()


def _complete(lineno: int, task: int | None, time: float | None, m: re.Match[str], raw: str) -> Any:
    name, args_text, ret_text, tail = m.groups()
    fd_paths: dict[int, str] = {}
    args = _args(name, args_text, fd_paths)
    why = too_few_args(name, args)
    if why is not None:
        return Problem(lineno, raw, why)
    ret = None if ret_text == "?" else int(ret_text, 0 if ret_text[1:2] == "x" else 10)
    if ret is not None and ret < _LONG_MIN:
        return Problem(lineno, raw, f"return value {ret_text} is not a long")
    errno, duration = _parse_tail(tail, ret, fd_paths) if tail else (None, None)
    if errno is not None and ret is not None:
        ret = -1
    return _SyscallBuilder(
        lineno, task, time, name, args, fd_paths, ret, errno, duration, _EMPTY, raw
    )


def _never_returned(first: _Unfinished, task: int | None) -> Syscall | Problem:
    """An ``<unfinished ...>`` call whose task went on to something else, exited or the trace
    ended: it never returned (``ret`` None)."""
    fd_paths: dict[int, str] = {}
    args = _args(first.name, first.args, fd_paths)
    why = too_few_args(first.name, args)
    if why is not None:
        return Problem(first.lineno, first.raw, why)
    return Syscall(
        first.lineno, task, first.time, first.name, args, fd_paths, None, None, None, _EMPTY,
        first.raw,
    )  # fmt: skip


def _parse_tail(
    tail: str, ret: int | None, fd_paths: dict[int, str]
) -> tuple[str | None, float | None]:
    """Errno and -T duration from what follows the return value:
    ``' ENOMEM (Cannot allocate memory) <0.000028>'``, ``'</etc/ld.so.cache> <0.000031>'``,
    ``' ERESTARTSYS (To be restarted if SA_RESTART is set)'``, ``' (Timeout)'``."""
    duration = None
    if tail.endswith(">"):
        i = tail.rfind(" <")
        if i >= 0:
            try:
                duration = float(tail[i + 2 : -1])
                tail = tail[:i]
            except ValueError:
                pass
    if tail.startswith("<") and ret is not None:  # -y on a returned fd: '= 3</etc/x>'
        end = _DECORATION_END.search(tail, 1)
        if end is not None:
            fd_paths[ret] = tail[1 : end.start()] + (DELETED if end.group(1) else "")
            tail = tail[end.end() :]
    tail = tail.lstrip()
    if tail.startswith("E"):
        em = _ERRNO.match(tail)
        if em is not None:
            return em.group(1), duration
    return None, duration


def _scan_fd_paths(text: str, fd_paths: dict[int, str]) -> None:
    """-y paths in the arguments of a call whose arguments stay undecoded."""
    for m in _FD_IN_ARGS.finditer(text):
        end = _DECORATION_END.search(text, m.end())
        if end is not None:
            deleted = DELETED if end.group(1) else ""
            fd_paths[int(m.group(1))] = text[m.end() : end.start()] + deleted


def open_trace(path: Path) -> IO[str]:
    """Open a trace file as text, decompressing ``.gz`` (by name or by its magic bytes).

    The file is opened once and its first bytes are peeked at, not read: a pipe or
    ``/dev/stdin`` loses nothing. A corrupt or truncated ``.gz`` raises ``gzip.BadGzipFile``
    (an OSError), ``EOFError`` or ``zlib.error`` while it is read.
    """
    raw = open(path, "rb")  # noqa: SIM115 (the returned text stream owns it)
    try:
        if raw.peek(2)[:2] == b"\x1f\x8b" or path.suffix == ".gz":
            return _GzipText(raw)
        return io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape")
    except BaseException:
        raw.close()
        raise


class _GzipText(io.TextIOWrapper):
    """Text from a gzip stream over ``raw``; closing it closes ``raw`` too (GzipFile leaves
    a file object it was given open)."""

    def __init__(self, raw: io.BufferedReader) -> None:
        super().__init__(
            gzip.GzipFile(fileobj=raw, mode="rb"), encoding="utf-8", errors="surrogateescape"
        )
        self._raw_file = raw

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw_file.close()


_PID_SUFFIX = re.compile(r"\.(\d+)(?:\.gz)?$")


def read_strace_files(paths: list[Path]) -> Iterator[Event]:
    """Read the per-task files of ``strace -ff -o P`` (``P.<pid>``), the pid from each suffix.

    With absolute timestamps (``-t``, ``-tt``, ``-ttt``) the events of all files are merged by
    time (ties keep file order); without them, or with ``-r`` (relative to each file's own
    previous line), the files follow one another in the order given. Line numbers are those
    within each file.
    """
    with contextlib.ExitStack() as stack:
        streams: list[tuple[list[Event], Iterator[Event], Timestamps]] = []
        for path in paths:
            m = _PID_SUFFIX.search(path.name)
            clock = Timestamps()
            handle = stack.enter_context(open_trace(path))
            items = itertools.chain.from_iterable(_bulk([], handle))
            events = _tag_problems(
                _read(enumerate(items, 1), int(m.group(1)) if m else None, clock), path.name
            )
            head: list[Event] = []
            for event in events:  # look ahead to the first timestamp
                head.append(event)
                if not isinstance(event, Problem):
                    break
            streams.append((head, events, clock))
        # Merge when every file that has an event has a timestamp on its first one.
        firsts = [
            next((e for e in head if not isinstance(e, Problem)), None) for head, _, _ in streams
        ]
        timed = all(e.time is not None for e in firsts if e is not None) and not any(
            clock.relative for _, _, clock in streams
        )
        if not timed:
            for head, events, _ in streams:
                yield from head
                yield from events
            return
        keyed = [_keyed(index, head, events) for index, (head, events, _) in enumerate(streams)]
        for _, _, _, event in heapq.merge(*keyed):
            yield event


def _tag_problems(events: Iterator[Event], name: str) -> Iterator[Event]:
    """-ff: a Problem names its file (its line number is within that file)."""
    for event in events:
        if type(event) is Problem:
            yield Problem(event.lineno, event.line, event.message, name)
        else:
            yield event


def _keyed(
    index: int, head: list[Event], events: Iterator[Event]
) -> Iterator[tuple[float, int, int, Event]]:
    """Events with a sort key: their time (a Problem takes the time of the event before it)."""
    last = 0.0
    seq = 0
    for source in (head, events):
        for event in source:
            if not isinstance(event, Problem) and event.time is not None and event.time > last:
                last = event.time  # never backwards: merge needs each stream sorted
            seq += 1
            yield last, index, seq, event
