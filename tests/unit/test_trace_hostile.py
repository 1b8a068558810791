"""Regressions found by the trace-reader fuzzer (tests/property/trace_fuzz.py): each line
here crashed a reader or a decoder, or came back as a call with values no register holds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vmsim.trace import Problem, Syscall, open_trace, read_ltrace, read_strace
from vmsim.trace.decode import decode_args, decode_value

MMAP = "mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000"


def only(events: list[object]) -> object:
    assert len(events) == 1, events
    return events[0]


@pytest.mark.parametrize(
    "line",
    [
        # a return value of 7,204 digits: int() refuses more than 4,300
        "mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = " + "9" * 7204,
        # below LONG_MIN
        "munmap(0x7f0000000000, 4096) = -9999999999999999999",
        # a pid and a -ttt stamp of thousands of digits
        "1" * 5000 + " " + MMAP,
        "1" * 5000 + ".5 " + MMAP,
        # decoded calls with fewer arguments than strace ever prints
        "123 mmap(NULL) = 0x7f0000000000",
        "mremap(0x7f0000000000) = 0x7f0000000000",
        "munmap(0x7f0000000000 <detached ...>",
    ],
)
def test_strace_line_is_a_problem(line: str) -> None:
    ev = only(list(read_strace([line + "\n"])))
    assert isinstance(ev, Problem), ev
    assert ev.lineno == 1


@pytest.mark.parametrize(
    "token",
    [
        "09",  # not octal
        "0\u00b2",  # superscript two: isdigit(), and int() refuses it
        "\u00b2",
        "\uff11\uff12",  # fullwidth digits: not what strace prints
        "9" * 5000,
        "18446744073709551616",  # 2**64
        "0x1ffffffffffffffff",
        "1<<99999999999",  # would allocate a huge int
        "1<<64",
        '"\\x"',  # a bad escape inside a complete string
        '"\\403"',  # an octal escape past \377: a DeprecationWarning in Python
        "0\u00b23<x>",  # an fd decoration on a non-number
    ],
)
def test_decoders_keep_what_is_not_a_64_bit_value_as_text(token: str) -> None:
    assert decode_value(token, {}) == token
    assert decode_args("munmap", f"0x1000, {token}", {})[1] == token


def test_decoders_still_read_every_form_strace_prints() -> None:
    assert decode_value("017", {}) == 0o17
    assert decode_value("-1", {}) == -1
    assert decode_value("0xffffffffffffffff", {}) == (1 << 64) - 1
    assert decode_value("18446744073709551615", {}) == (1 << 64) - 1
    assert decode_value("21<<MAP_HUGE_SHIFT", {}) == 21 << 26
    fds: dict[int, str] = {}
    assert decode_value("3</usr/lib/libc.so.6>", fds) == 3 and fds == {3: "/usr/lib/libc.so.6"}


def test_a_long_resumed_name_is_clipped_in_the_problem() -> None:
    ev = only(list(read_strace(["<... " + "m" * 90_000 + " resumed>) = 0\n"])))
    assert isinstance(ev, Problem)
    assert len(ev.message) < 300 and "more characters" in ev.message
    ev = only(list(read_ltrace(["<... SYS_" + "m" * 90_000 + " resumed>) = 0\n"])))
    assert isinstance(ev, Problem)
    assert len(ev.message) < 300


@pytest.mark.parametrize(
    "line",
    [
        "SYS_\u00b2(0, 4096) = 0",  # a syscall number that isdigit() but is no number
        "SYS_" + "1" * 5000 + "(0) = 0",
        "SYS_mmap(0, 4096, 3, 34) = " + "1" * 5000,
        "SYS_mmap(0, 4096, 3, 34) = 0x" + "f" * 40,
        "SYS_mmap(0) = 0x7f0000000000",
        "[pid " + "7" * 5000 + "] SYS_munmap(0x7f0000000000, 4096) = 0",
    ],
)
def test_ltrace_line_never_crashes(line: str) -> None:
    events = list(read_ltrace([line + "\n"]))
    for ev in events:
        if isinstance(ev, Syscall):
            assert all(not isinstance(a, int) or -(1 << 63) <= a < 1 << 64 for a in ev.args)
            assert ev.ret is None or -(1 << 63) <= ev.ret < 1 << 64
    assert events, line


def test_open_trace_of_a_pipe_loses_nothing(tmp_path: Path) -> None:
    """open_trace() used to open the file twice (once to sniff gzip's magic), so a pipe lost
    the first buffer-full of lines."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    text = "".join(f"{MMAP}\n" for _ in range(5000))
    pid = os.fork()
    if pid == 0:  # the writer
        try:
            with open(fifo, "w") as out:
                out.write(text)
        finally:
            os._exit(0)
    try:
        with open_trace(fifo) as fh:
            got = fh.read()
    finally:
        os.waitpid(pid, 0)
    assert got == text
