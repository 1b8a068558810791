"""The trace-reader fuzzer: real trace lines, mutated, fed to the strace and ltrace readers.

Shared by the CI test (``test_trace_fuzz.py``, hypothesis, bounded) and the exploration run
(``explore_trace_fuzz.py``, seeded, as many lines as asked). Every mutation takes a
``random.Random``, so a run is reproduced by its seed (hypothesis passes its own ``Random``
and shrinks it).

The corpus is every line of ``tests/fixtures/traces`` (plain, ``.gz``, the ``-ff`` files and
the ltrace logs). Mutations: byte flips (in the UTF-8 bytes, read back with surrogateescape
as the readers' files are), truncation, splices of two lines, huge and odd numbers, odd
Unicode (digits that are not ASCII, bidi controls, surrogates, combining marks), NULs,
duplicated, deleted and reordered lines, strace's own markers (``<unfinished ...>``,
``resumed>``, ``+++``, ``---``, `` > `` frames) in the wrong places, and very long lines.

What every run checks (:func:`check`):

- no exception escapes a reader (nor ``detect_format``);
- every event's line number is one of the input's lines, and a Problem carries the line (a
  str) and a message of bounded length (a message quotes at most a clipped piece of input);
- every number decoded (arguments, return value) fits a 64-bit register, as every number
  strace prints does: vmsim's syscalls refuse anything wider with OverflowError; a decoded
  call has at least the arguments strace prints for it (``decode.MIN_ARGS``);
- a line made unreadable on purpose becomes a Problem with its own line number: a line of
  garbage (a NUL or control character first) for strace, a ``SYS_`` call cut before its
  result for ltrace (other lines ltrace skips by design: they are library calls). The one
  exception is strace's: a line that follows one cut by ``strace: Process N attached`` is
  joined to it and read as one line (a Problem, if any, names the first).
"""

from __future__ import annotations

import gzip
import io
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from vmsim.trace import (
    Problem,
    Syscall,
    detect_format,
    read_ltrace,
    read_strace,
    read_strace_stream,
)
from vmsim.trace.decode import decode_args, decode_value, split_args, too_few_args

TRACES = Path(__file__).resolve().parent.parent / "fixtures" / "traces"
MAX_MESSAGE = 400
REG_MIN, REG_MAX = -(1 << 63), (1 << 64) - 1
_MESSAGE = "strace: Process "  # characters: a Problem message never quotes more than this

ODD_TEXT = [
    "\x00",
    "\x00\x00\x00",
    "\ufeff",
    "\u202e",
    "\u200b",
    "\ud800",
    "\udcff",
    "\u0301",
    "\U0001f600",
    "\uff10\uff19",  # fullwidth 0 9
    "\u0661\u0662",  # Arabic-Indic 1 2
    "\u00b2",  # superscript 2: isdigit() but not a decimal digit
    "\u2460",  # circled 1: isdigit() too
    "\u2167",  # Roman numeral 8: numeric, not a digit
    "\u0969",  # Devanagari 3
    "\r",
    "\t",
    "\x1b[31m",
    ":x:",
    "[bold]",
    "[/]",
    "\\",
    "\\x",
    "\\777",
    '"',
    "/*",
    "*/",
    "<",
    ">",
    "<<",
    "|",
    "=",
    " = ",
    " = ?",
    " = -1",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    ", ",
    " <unfinished ...>",
    "<... mmap resumed>",
    " <detached ...>",
    "+++ exited with 0 +++",
    "--- SIGSEGV {si_signo=SIGSEGV} ---",
    " > ",
    "strace: Process 1 attached",
    "SYS_",
    "SYS_\u00b2(",
    "0x",
    "-0x",
    "09",
    "0\u00b2",
    "1<<",
    "<<MAP_HUGE_SHIFT",
    "MAP_HUGE_SHIFT",
    "NULL",
    "AT_FDCWD",
]

HUGE = [
    "18446744073709551616",
    "-9223372036854775809",
    "0xffffffffffffffffffffffffffffffff",
    "9" * 400,
    "-" + "9" * 400,
    "0x" + "f" * 400,
    "1" + "0" * 4300,  # past Python's default int() digit limit (4300)
    "0x" + "1" * 5000,
    "07777777777777777777777777",
    "08",
    "1e400",
    "99:99:99.999999",
    "23:59:59.9999999999",
    "1" * 30 + "." + "9" * 30,
    "4294967296",
    "-4096",
]


@cache
def corpus() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(format, lines) of every fixture trace: 'strace' or 'ltrace'."""
    out: list[tuple[str, tuple[str, ...]]] = []
    paths = sorted(p for p in TRACES.rglob("*") if p.is_file())
    for path in paths:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        text = data.decode("utf-8", "surrogateescape")
        lines = tuple(text.splitlines(keepends=True))
        if not lines:
            continue
        out.append((detect_format(list(lines[:50])), lines))
    return tuple(out)


def _bytes(line: str) -> bytearray:
    try:
        return bytearray(line.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:  # a lone surrogate the file decoding cannot give
        return bytearray(line.encode("utf-8", "surrogatepass"))


def _text(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", "surrogateescape")


def flip(rng: random.Random, line: str, other: str) -> str:
    data = _bytes(line)
    if not data:
        return line
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8) if rng.random() < 0.7 else rng.randrange(1, 256)
    return _text(data)


def truncate(rng: random.Random, line: str, other: str) -> str:
    return line[: rng.randrange(len(line) + 1)]


def splice(rng: random.Random, line: str, other: str) -> str:
    return line[: rng.randrange(len(line) + 1)] + other[rng.randrange(len(other) + 1) :]


def number(rng: random.Random, line: str, other: str) -> str:
    """Replace a run of digits (or hex digits after 0x) with a huge or odd number."""
    spots = [i for i, c in enumerate(line) if c.isdigit()]
    value = rng.choice(HUGE)
    if not spots:
        return line + value
    i = rng.choice(spots)
    j = i
    while j < len(line) and (line[j].isalnum()):
        j += 1
    while i > 0 and line[i - 1].isalnum():
        i -= 1
    return line[:i] + value + line[j:]


def odd(rng: random.Random, line: str, other: str) -> str:
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(line) + 1)
        line = line[:i] + rng.choice(ODD_TEXT) + line[i:]
    return line


def replace_char(rng: random.Random, line: str, other: str) -> str:
    if not line:
        return line
    i = rng.randrange(len(line))
    return line[:i] + rng.choice([*ODD_TEXT, "", "0", "a", " "]) + line[i + 1 :]


def repeat(rng: random.Random, line: str, other: str) -> str:
    """A very long line: a piece of it repeated."""
    if not line:
        return "A" * 100_000
    i = rng.randrange(len(line))
    piece = line[i : i + rng.randint(1, 20)].replace("\n", "") or "x"
    return line[:i] + piece * rng.randint(100, 20_000) + line[i:]


def strip_newline(rng: random.Random, line: str, other: str) -> str:
    return line.rstrip("\n") + rng.choice(["", "\r\n", "\r", "\n\n"])


MUTATIONS: tuple[Callable[[random.Random, str, str], str], ...] = (
    flip,
    truncate,
    splice,
    number,
    odd,
    replace_char,
    repeat,
    strip_newline,
)


@dataclass
class Case:
    """One input: its format, lines, and the line numbers that must be Problems."""

    fmt: str
    lines: list[str]
    must_fail: set[int] = field(default_factory=set)


def make_case(rng: random.Random, max_lines: int = 60) -> Case:
    """A window of a real trace, mutated."""
    fmt, source = rng.choice(corpus())
    n = rng.randint(1, max_lines)
    start = rng.randrange(max(1, len(source) - n + 1))
    lines = list(source[start : start + n])
    _, donor_lines = rng.choice(corpus())
    for _ in range(rng.randint(0, max(1, len(lines) // 3))):
        i = rng.randrange(len(lines))
        how = rng.random()
        if how < 0.08 and len(lines) > 1:
            del lines[i]
        elif how < 0.14:
            lines.insert(i, lines[i])
        elif how < 0.2 and len(lines) > 1:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        else:
            mutate = rng.choice(MUTATIONS)
            lines[i] = mutate(rng, lines[i], rng.choice(donor_lines))
    # re-split: a mutation may have added or removed line breaks
    text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    lines = text.split("\n")[:-1]
    lines = [line + "\n" for line in lines]
    case = Case(fmt, lines)
    # lines broken on purpose, whose Problem the reader must report
    for _ in range(rng.randint(0, 2)):
        i = rng.randrange(len(lines) + 1)
        if fmt == "strace":
            junk = rng.choice(["\x00", "\x01", "\x7f", "#"]) + flip(
                rng, rng.choice(donor_lines), ""
            )
            junk = junk.replace("\n", " ").replace("\r", " ")
            lines.insert(i, junk + "\n")
        else:
            cut = f"SYS_mmap(0, 4096, 3, 34{rng.choice(['', ',', ', 4'])}\n"
            lines.insert(i, cut)
        case.must_fail = {n + 1 if n >= i + 1 else n for n in case.must_fail}
        case.must_fail.add(i + 1)
    return case


def _read(fmt: str, lines: Iterable[str]) -> list[object]:
    reader = read_strace if fmt == "strace" else read_ltrace
    return list(reader(lines))


def check(case: Case) -> list[object]:
    """Read ``case`` with its reader (and with the other one: a sniffing mistake must not
    crash either); return the events of its own reader. Raises AssertionError on a broken
    invariant; any other exception is a reader bug."""
    detect_format(case.lines[:50])
    n = len(case.lines)
    events = _read(case.fmt, case.lines)
    _read("ltrace" if case.fmt == "strace" else "strace", case.lines)
    if case.fmt == "strace":
        # the block reader (vmsim replay's) reads the same text into the same events
        streamed = list(read_strace_stream(io.StringIO("".join(case.lines))))
        assert streamed == events, "read_strace_stream() and read_strace() disagree"
    problems: dict[int, Problem] = {}
    for ev in events:
        lineno = getattr(ev, "lineno", None)
        assert isinstance(lineno, int) and 1 <= lineno <= n, f"line number {lineno} of {n}"
        if isinstance(ev, Problem):
            assert isinstance(ev.line, str)
            assert isinstance(ev.message, str) and ev.message
            assert len(ev.message) <= MAX_MESSAGE, f"message of {len(ev.message)} chars"
            problems.setdefault(ev.lineno, ev)
        elif isinstance(ev, Syscall):
            assert too_few_args(ev.name, ev.args) is None, ev
            for arg in (*ev.args, ev.ret):
                assert arg is None or isinstance(arg, int | str), repr(arg)
                # a decoded number is what one 64-bit register holds
                assert not isinstance(arg, int) or REG_MIN <= arg <= REG_MAX, arg
    for lineno in sorted(case.must_fail):
        if case.fmt == "strace" and lineno > 1 and _MESSAGE in case.lines[lineno - 2]:
            continue  # joined to the line a strace message cut: read as one line
        assert lineno in problems, (
            f"line {lineno} is unreadable on purpose but no Problem names it: "
            f"{case.lines[lineno - 1][:120]!r}"
        )
    return events


def check_decoders(rng: random.Random, text: str) -> None:
    """The argument decoders on the argument text of a mutated line (strace's readers call
    them only for some calls; here every piece goes through all of them)."""
    inner = text[text.find("(") + 1 :] if "(" in text else text
    inner = inner[: inner.rfind(")")] if ")" in inner else inner
    split_args(inner)
    decode_args(rng.choice(["mmap", "clone", "clone3", "execve", "mremap"]), inner, {})
    for token in split_args(inner)[:8]:
        decode_value(token, {})


def lines_of(cases: Iterable[Case]) -> int:
    return sum(len(c.lines) for c in cases)


__all__ = ["MUTATIONS", "Case", "check", "check_decoders", "corpus", "make_case"]
