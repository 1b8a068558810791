"""The guest's system calls in a lackey trace, as strace would print them.

``valgrind --trace-syscalls=yes`` (which ``vmsim record`` passes) prints every system call the
*guest* program makes, in the same log as lackey's accesses and at its place among them, with
the addresses the guest sees (valgrind runs the guest in its own address space: the addresses
lackey prints are those of these calls). The lines look like (valgrind 3.19,
``coregrind/m_syswrap/syswrap-main.c``)::

    SYSCALL[PID,TID](NR) sys_NAME ( ARGS ) --> [pre-success] Success(0xRET)
    SYSCALL[PID,TID](NR) sys_NAME ( ARGS )[sync] --> Failure(0xERRNO)
    SYSCALL[PID,TID](NR) sys_NAME ( ARGS ) --> [async] ...
    SYSCALL[PID,TID](NR) ... [async] --> Success(0xRET)          (the end of a blocking call)

:func:`strace_lines` turns them into strace's ``PID NAME(ARGS) = RET`` lines (the shape of
``strace -f -o FILE``), which :mod:`vmsim.trace.strace` reads: memory calls with their flags
by name (``mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0)``), other
calls with numbers in hex and string arguments quoted. ``TID`` is valgrind's thread number,
not a Linux tid: every line carries the process id.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable, Iterator
from typing import Final

from vmsim.memtrace.readers import TraceEvent
from vmsim.trace.format import format_args

__all__ = ["parse_args", "strace_lines"]

_LINE: Final = re.compile(r"SYSCALL\[(\d+),(\d+)\]\((\d+)\) (.*?)\s*$")
_CALL: Final = re.compile(r"(?:sys_)?(\w+) ?\( ?(.*?) ?\)(\[sync\])? --> (.*)$")
_HEAD: Final = re.compile(r"sys_(\w+) \( ?(.*?) ?\)(?:\s|$)")
_RESULT: Final = re.compile(r"(?:\[[\w-]+\] )?(Success|Failure)\(0x([0-9a-fA-F]+)\)")
_ASYNC_END: Final = re.compile(r"\.\.\. \[async\] --> (.*)$")
_STRING_ARG: Final = re.compile(r"0x[0-9a-fA-F]+\((.*)\)$", re.S)
_FD_ARGS: Final = {"mmap": (4,)}  # unsigned 32-bit in valgrind's print: -1 is 4294967295


def parse_args(text: str) -> list[str]:
    """Valgrind's argument list split at the top-level commas (a string argument prints as
    ``0xADDR(text)``, whose text may hold commas and parentheses)."""
    out: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            out.append(text[start:i].strip())
            start = i + 1
    tail = text[start:].strip()
    if tail or out:
        out.append(tail)
    return out


def _arg(name: str, i: int, text: str) -> int | str:
    m = _STRING_ARG.match(text)
    if m:
        return '"' + m.group(1).replace("\\", "\\\\").replace('"', '\\"') + '"'
    try:
        value = int(text, 0)
    except ValueError:
        return text
    if i in _FD_ARGS.get(name, ()) and value >= 1 << 31:
        value -= 1 << 32
    return value


def _clone_args(args_text: str) -> str:
    """Valgrind prints clone's arguments in the kernel's x86-64 order, the flags in hex
    without ``0x`` (``sys_clone ( 1200011, 0x0, 0x0, 0x4a27a10, 0x0 )``); strace prints
    ``clone(child_stack=..., flags=..., child_tidptr=...)``."""
    raw = parse_args(args_text)
    try:
        flags = int(raw[0], 16)
        stack = int(raw[1], 0)
    except (IndexError, ValueError):
        return args_text
    shown = f"child_stack={'NULL' if stack == 0 else hex(stack)}, flags={hex(flags)}"
    if len(raw) > 3:
        shown += f", child_tidptr={raw[3]}"
    return shown


def _call(pid: str, name: str, args_text: str, result: str) -> str | None:
    m = _RESULT.search(result)
    if not m:
        return None
    if name == "clone":
        shown = _clone_args(args_text)
    else:
        args = [_arg(name, i, a) for i, a in enumerate(parse_args(args_text))]
        shown = ", ".join(
            a if isinstance(a, str) else f
            for a, f in zip(args, format_args(name, args), strict=True)
        )
    value = int(m.group(2), 16)
    if m.group(1) == "Success":
        ret = hex(value) if name in ("mmap", "mremap", "brk", "shmat") else str(value)
        return f"{pid} {name}({shown}) = {ret}"
    code = errno.errorcode.get(value, f"E{value}")
    return f"{pid} {name}({shown}) = -1 {code} ({os.strerror(value)})"


def strace_lines(events: Iterable[TraceEvent]) -> Iterator[str]:
    """strace ``-f -o`` lines for the ``SYSCALL[`` events of a lackey trace, in order. A call
    that never completed (the program ended in it, e.g. ``exit_group``) ends with ``= ?``;
    valgrind's notes about calls it does not implement are left out."""
    pending: dict[tuple[str, str], tuple[str, str]] = {}
    waiting: tuple[str, str, str] | None = None  # a call whose result is on a " --> " line
    for event in events:
        if event.text.startswith(" --> "):
            if waiting is not None:
                line = _call(*waiting, event.text[5:])
                if line is not None:
                    yield line
            waiting = None
            continue
        waiting = None
        m = _LINE.match(event.text)
        if not m:
            continue
        pid, tid, _nr, rest = m.groups()
        end = _ASYNC_END.match(rest)
        if end:
            started = pending.pop((pid, tid), None)
            if started is not None:
                line = _call(pid, started[0], started[1], end.group(1))
                if line is not None:
                    yield line
            continue
        call = _CALL.match(rest)
        if not call:
            # a message of the wrapper after the arguments, the result on the next line:
            # "sys_clone ( ... )   clone(fork): process 1 created child 2" / " --> Success(2)"
            head = _HEAD.match(rest)
            if head is not None:
                waiting = (pid, head.group(1), head.group(2))
            continue
        name, args_text, _sync, result = call.groups()
        if name in ("exit_group", "exit"):  # valgrind ends the process: the call returns not
            yield f"{pid} {name}({args_text}) = ?"
            if name == "exit_group":
                yield f"{pid} +++ exited with {args_text} +++"
            continue
        if result.startswith("[async]"):
            pending[(pid, tid)] = (name, args_text)
            continue
        line = _call(pid, name, args_text, result)
        if line is not None:
            yield line
    for (pid, _tid), (name, args_text) in pending.items():
        yield f"{pid} {name}({args_text}) = ?"
