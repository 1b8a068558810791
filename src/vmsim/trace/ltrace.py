"""Reading ``ltrace -S`` output: the syscalls, with raw numbers, among library calls.

ltrace prints syscalls as ``SYS_mmap(0x7f2290bdb000, 0x3ae0, 3, 50) = 0x7f2290bdb000``: every
argument is a number (no flag names), errors are the raw negative kernel value (``= -12``,
turned here into ``ret=-1, errno='ENOMEM'`` as strace shows them), and syscalls its table
does not know are ``SYS_<number>`` (``SYS_435`` is clone3 for ltrace 0.7.3). Library calls
(``malloc(100) = 0x...``, ``<... malloc resumed> ) = ...``) are skipped; so is everything
else that is not a syscall, a signal or an exit.

ltrace prints at most the arguments its prototype lists: ``SYS_mmap`` shows four (no fd, no
offset), and ``SYS_clone3`` shows a pointer to its struct, so its flags are unknown.
"""

from __future__ import annotations

import errno as errno_module
import re
from collections.abc import Iterable, Iterator
from typing import Final

from vmsim.trace.decode import (
    DECODED_SYSCALLS,
    TASK_AND_TIME,
    Timestamps,
    decode_value,
    split_args,
    too_few_args,
)
from vmsim.trace.events import Arg, Event, Exit, Problem, Signal, Syscall, clip

__all__ = ["read_ltrace"]

_PREFIX: Final = TASK_AND_TIME + r"(?:\[0x[0-9a-f]+\] )?"  # -i
_LINE = re.compile(_PREFIX + r"(.*)$")
_CALL = re.compile(r"SYS_(\w+)\((.*)\) *= (\S+)(.*)$")
_UNFINISHED = re.compile(r"SYS_(\w+)\((.*) <unfinished \.\.\.>$")
_NO_RETURN = re.compile(r"SYS_(\w+)\((.*) <no return \.\.\.>$")
_RESUMED = re.compile(r"<\.\.\. SYS_(\w+) resumed>(.*)$")
_SIGNAL = re.compile(r"--- (SIG\w+)")
_EXITED = re.compile(r"\+\+\+ exited \(status ([0-9]{1,10})\) \+\+\+$")
_KILLED = re.compile(r"\+\+\+ killed by (SIG\w+) \+\+\+$")
_DURATION = re.compile(r" <(\d+\.\d+)>$")

# x86-64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl) newer than ltrace 0.7.3's table.
SYSCALL_NAMES: Final = {
    317: "seccomp", 318: "getrandom", 319: "memfd_create", 320: "kexec_file_load", 321: "bpf",
    322: "execveat", 323: "userfaultfd", 324: "membarrier", 325: "mlock2",
    326: "copy_file_range", 327: "preadv2", 328: "pwritev2", 329: "pkey_mprotect",
    330: "pkey_alloc", 331: "pkey_free", 332: "statx", 333: "io_pgetevents", 334: "rseq",
    424: "pidfd_send_signal", 425: "io_uring_setup", 426: "io_uring_enter",
    427: "io_uring_register", 428: "open_tree", 429: "move_mount", 430: "fsopen",
    431: "fsconfig", 432: "fsmount", 433: "fspick", 434: "pidfd_open", 435: "clone3",
    436: "close_range", 437: "openat2", 438: "pidfd_getfd", 439: "faccessat2",
    440: "process_madvise", 441: "epoll_pwait2", 442: "mount_setattr", 443: "quotactl_fd",
    444: "landlock_create_ruleset", 445: "landlock_add_rule", 446: "landlock_restrict_self",
    447: "memfd_secret", 448: "process_mrelease", 449: "futex_waitv",
    450: "set_mempolicy_home_node", 451: "cachestat", 452: "fchmodat2",
    453: "map_shadow_stack", 454: "futex_wake", 455: "futex_wait", 456: "futex_requeue",
    457: "statmount", 458: "listmount", 459: "lsm_get_self_attr", 460: "lsm_set_self_attr",
    461: "lsm_list_modules", 462: "mseal",
}  # fmt: skip

_MAX_ERRNO: Final = 4095  # include/linux/err.h: -4095..-1 are errors


def _name(text: str) -> str:
    if text.isascii() and text.isdigit() and len(text) <= 6:
        return SYSCALL_NAMES.get(int(text), f"syscall_{text}")
    return text


def _args(name: str, text: str) -> tuple[Arg, ...]:
    if name in DECODED_SYSCALLS:
        return tuple([decode_value(t) for t in split_args(text)])
    return (text,) if text else ()


def _result(text: str) -> tuple[int | None, str | None]:
    """Return value and errno from ltrace's raw result (``-12``, ``0xfffffffffffffff4``)."""
    if len(text) > 20:  # no 64-bit value is longer (and int() refuses 4300 digits)
        return None, None
    try:
        value = int(text, 16) if text.startswith("0x") else int(text)
    except ValueError:
        return None, None
    if not -(1 << 63) <= value < 1 << 64:
        return None, None
    if value >= (1 << 64) - _MAX_ERRNO:
        value -= 1 << 64
    if -_MAX_ERRNO <= value < 0:
        return -1, errno_module.errorcode.get(-value, f"E{-value}")
    return value, None


def read_ltrace(lines: Iterable[str], *, pid: int | None = None) -> Iterator[Event]:
    """Read ``ltrace -S`` output (with or without ``-f``, ``-t``/``-tt``/``-ttt``, ``-T``).

    ``pid`` is the task of lines without a pid prefix. Never raises on bad input.
    """
    clock = Timestamps()
    pending: dict[int | None, tuple[int, float | None, str, str, str]] = {}
    for lineno, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        m = _LINE.match(line)
        assert m is not None  # every part of the prefix is optional
        body = m.group(4)
        if not body.startswith(("SYS_", "<... SYS_", "---", "+++")):
            if body.startswith("[pid "):
                yield Problem(lineno, line, "malformed '[pid N]' prefix")
            continue  # a library call, or its resumption
        pid_text = m.group(1) or m.group(2)
        task = int(pid_text) if pid_text else pid
        stamp = m.group(3)
        time = clock.parse(stamp) if stamp else None

        if body.startswith("<..."):
            rm = _RESUMED.match(body)
            if rm is None:
                yield Problem(lineno, line, "malformed '<... SYS_NAME resumed>' line")
                continue
            first = pending.pop(task, None)
            if first is None or first[2] != rm.group(1):
                if first is not None:
                    yield _never_returned(task, *first)
                yield Problem(
                    lineno,
                    line,
                    f"'<... SYS_{clip(rm.group(1), 60)} resumed>' without a matching start",
                )
                continue
            start, time, raw_name, args_text, raw = first
            body = f"SYS_{raw_name}({args_text}{rm.group(2).lstrip()}"
            line = raw + "\n" + line
        else:
            start = lineno

        if body.startswith("SYS_"):
            cm = _CALL.match(body)
            if cm is not None:
                earlier = pending.pop(task, None) if start == lineno else None
                if earlier is not None:  # the task went on: that call never returned
                    yield _never_returned(task, *earlier)
                raw_name, args_text, ret_text, tail = cm.groups()
                args_text = args_text.rstrip()  # resumed: '<... SYS_x resumed> )'
                ret, err = _result(ret_text)
                if ret is None and ret_text != "?":
                    yield Problem(
                        lineno,
                        line,
                        f"return value {clip(ret_text, 40)!r} is not a 64-bit number",
                    )
                    continue
                dm = _DURATION.search(tail)
                duration = float(dm.group(1)) if dm else None
                yield _syscall(start, task, time, raw_name, args_text, ret, err, duration, line)
                continue
            um = _UNFINISHED.match(body) or _NO_RETURN.match(body)
            if um is not None:
                # '<no return ...>' usually stays so, but ltrace sometimes resumes it later.
                earlier = pending.pop(task, None)
                if earlier is not None:
                    yield _never_returned(task, *earlier)
                pending[task] = (start, time, um.group(1), um.group(2), line)
                continue
            yield Problem(lineno, line, "syscall line has no ' = ' result (cut short?)")
            continue

        if body.startswith("---"):
            sm = _SIGNAL.match(body)
            if sm is None:
                yield Problem(lineno, line, "malformed signal line")
            else:
                yield Signal(lineno, task, time, sm.group(1), None, None, line)
            continue

        earlier = pending.pop(task, None)
        if earlier is not None:
            yield _never_returned(task, *earlier)
        em = _EXITED.match(body)
        if em is not None:
            yield Exit(lineno, task, time, int(em.group(1)), None, line)
            continue
        km = _KILLED.match(body)
        if km is not None:
            yield Exit(lineno, task, time, None, km.group(1), line)
            continue
        yield Problem(lineno, line, "malformed '+++' line")

    for task, earlier in sorted(pending.items(), key=lambda item: item[1][0]):
        yield _never_returned(task, *earlier)


def _never_returned(
    task: int | None, lineno: int, time: float | None, raw_name: str, args_text: str, raw: str
) -> Syscall | Problem:
    return _syscall(lineno, task, time, raw_name, args_text, None, None, None, raw)


def _syscall(
    lineno: int,
    task: int | None,
    time: float | None,
    raw_name: str,
    args_text: str,
    ret: int | None,
    err: str | None,
    duration: float | None,
    raw: str,
) -> Syscall | Problem:
    """The call's event, or a Problem if it shows fewer arguments than the replay reads."""
    name = _name(raw_name)
    args = _args(name, args_text)
    why = too_few_args(name, args)
    if why is not None:
        return Problem(lineno, raw, why)
    return Syscall(lineno, task, time, name, args, {}, ret, err, duration, (), raw)
