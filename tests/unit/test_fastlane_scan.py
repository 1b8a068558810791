"""Twin tests of the fast lane's strace scanner (vmsim.fastlane.scan) against the Python
reader (vmsim.trace.strace.read_strace_stream, what ``vmsim replay`` reads with): every line
the scanner takes must decode to the reader's Syscall for that line, field for field, and
every time it computes must be the reader's."""

from __future__ import annotations

import dataclasses
import gzip
import io
import math
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmsim.fastlane.scan import Clock, ScannedBlock, reader_lines, scan_block
from vmsim.trace import strace
from vmsim.trace.decode import Timestamps
from vmsim.trace.events import Event, Problem, Syscall
from vmsim.trace.strace import read_strace_stream

TRACES = Path(__file__).resolve().parents[1] / "fixtures" / "traces"
_PID_SUFFIX = re.compile(r"\.(\d+)(?:\.gz)?$")


def _strace_fixtures() -> list[Path]:
    out = []
    for path in sorted(TRACES.rglob("*")):
        if path.is_dir() or "ltrace" in path.name:
            continue
        if ".strace" in path.name or path.parent.name == "threads-ff":
            out.append(path)
    return out


FIXTURES = _strace_fixtures()


def _bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _reader(data: bytes, pid: int | None = None) -> list[Event]:
    """The reader's events of ``data`` read as open_trace() reads a file."""
    handle = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="surrogateescape")
    return list(read_strace_stream(handle, pid=pid))


def _scan(data: bytes, block_lines: int) -> tuple[list[tuple[int, ScannedBlock, bytes]], Clock]:
    """Scan ``data`` in blocks of ``block_lines`` lines, the clock and carry handed on."""
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    out = []
    clock = Clock.fresh()
    carry = False
    lineno = 1
    for i in range(0, max(len(lines), 1), block_lines):
        chunk = b"\n".join(lines[i : i + block_lines])
        if i + block_lines < len(lines) or data.endswith(b"\n"):
            chunk += b"\n"
        block = scan_block(chunk, lineno, clock, carry)
        out.append((i, block, chunk))
        clock, carry = block.clock, block.carry
        lineno += reader_lines(chunk)
    return out, clock


def _check(data: bytes, block_lines: int, pid: int | None = None) -> tuple[int, int]:
    """Every taken line equals the reader's event; every known time the reader's. Returns
    (lines taken, lines)."""
    events = _reader(data, pid)
    by_line: dict[int, Event] = {}
    for ev in events:
        by_line.setdefault(ev.lineno, ev)
    blocks, _ = _scan(data, block_lines)
    taken = total = 0
    for _, block, chunk in blocks:
        for i in range(len(block)):
            total += 1
            lineno = int(block.lineno[i])
            ev = by_line.get(lineno)
            t = float(block.time[i])
            if not block.taken[i]:
                if (
                    not math.isnan(t)
                    and ev is not None
                    and not isinstance(ev, Problem)
                    and "\n" not in ev.raw
                ):
                    assert ev.time == t, (lineno, ev, t)
                continue
            taken += 1
            mine = block.syscall(chunk, i, pid)
            assert isinstance(ev, Syscall), (lineno, ev, mine)
            assert dataclasses.replace(ev, stack=()) == mine, (lineno, ev, mine)
    return taken, total


@pytest.mark.parametrize("block_lines", [4096, 7])
@pytest.mark.parametrize("path", FIXTURES, ids=[str(p.relative_to(TRACES)) for p in FIXTURES])
def test_fixture_twin(path: Path, block_lines: int) -> None:
    """Every line of every strace fixture, in blocks of many lines and of a few (the clock
    and a line cut by a strace message handed from block to block)."""
    data = _bytes(path)
    m = _PID_SUFFIX.search(path.name) if path.parent.name == "threads-ff" else None
    pid = int(m.group(1)) if m else None
    taken, total = _check(data, block_lines, pid)
    assert total > 0
    if path.name.startswith("fill_map_count"):
        # all but execve, the exit_group and the '+++' line, and the first lines that are
        # other calls (access, openat, read, ...)
        assert taken / total > 0.99, (taken, total)


@pytest.mark.parametrize(
    "name", ["arenas.strace.gz", "arenas.r.strace", "arenas.ttt.strace", "threads.strace"]
)
def test_clock_after_fixture(name: str) -> None:
    """The clock the scanner hands on is the reader's clock at the end of the trace (-tt,
    -r, -ttt), read back into a Timestamps."""
    data = _bytes(TRACES / name)
    reader_clock = Timestamps()
    lines = data.decode("utf-8", "surrogateescape").splitlines(keepends=True)
    for _ in strace._read(enumerate(lines, 1), None, reader_clock):
        pass
    _, clock = _scan(data, 50)
    assert not clock.lost
    mine = Timestamps()
    clock.into(mine)
    assert (mine.relative, mine._day, mine._total_ns, mine._last) == (
        reader_clock.relative,
        reader_clock._day,
        reader_clock._total_ns,
        reader_clock._last,
    )
    assert Clock.of(reader_clock).words.tolist() == clock.words.tolist()


def test_lost_clock_is_not_handed_on() -> None:
    """After a line cut by a strace message (the reader joins it with the next), the clock
    is lost: stamped lines are not taken, and into() refuses."""
    data = (
        b"5 12:00:00.000001 mmap(NULL, 4096, PROT_READstrace: Process 6 attached\n"
        b", MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000\n"
        b"5 12:00:01.000001 munmap(0x7f0000000000, 4096) = 0\n"
        b"5 munmap(0x7f0000000000, 4096) = 0\n"
    )
    block = scan_block(data, 1)
    assert block.taken.tolist() == [0, 0, 0, 1]
    assert block.clock.lost
    with pytest.raises(ValueError, match="lost"):
        block.clock.into(Timestamps())
    events = _reader(data)
    assert [type(ev).__name__ for ev in events] == ["Syscall", "Syscall", "Syscall"]
    assert block.syscall(data, 3) == dataclasses.replace(events[2], stack=())


@pytest.mark.parametrize("block_lines", [1, 100])
def test_line_cut_by_strace_message(block_lines: int) -> None:
    """The reader joins a line cut by 'strace: Process N attached' with the next one: that
    next line, a complete call on its own, is not taken (in the same block or the next)."""
    data = (
        b"5 brk(NULL strace: Process 6 attached\n"
        b"munmap(0x1000, 4096) = 0\n"
        b"munmap(0x2000, 4096) = 0\n"
    )
    blocks, _ = _scan(data, block_lines)
    assert [int(t) for _, b, _ in blocks for t in b.taken] == [0, 0, 1]
    assert _check(data, block_lines) == (1, 3)


@pytest.mark.parametrize("block_lines", [1, 100])
def test_carriage_return(block_lines: int) -> None:
    """A '\\r' ends a line for the reader (universal newlines), not for the scanner: a block
    holding one takes nothing, and the next blocks are numbered as the reader numbers."""
    data = (
        b"munmap(0x1000, 4096) = 0\rmunmap(0x2000, 4096) = 0\n"
        b"munmap(0x3000, 4096) = 0\n"
        b"munmap(0x4000, 4096) = 0\n"
    )
    assert reader_lines(data) == 4
    block = scan_block(data, 1)
    assert block.cr
    assert block.taken.tolist() == [0, 0, 0]
    taken, _ = _check(data, block_lines)
    assert taken == (2 if block_lines == 1 else 0)


def test_clock_lost_at_possible_problem() -> None:
    """A stamped call line the reader makes a Problem (too few arguments) never reaches its
    clock: the scanner, which cannot tell for every such line, loses the clock there."""
    data = (
        b"1 23:00:00 munmap(0x1000) = 0\n"
        b"1 00:00:01 munmap(0x1000, 4096) = 0\n"
        b"1 munmap(0x1000, 4096) = 0\n"
    )
    block = scan_block(data, 1)
    assert block.taken.tolist() == [0, 0, 1]
    assert block.clock.lost
    assert _check(data, 100) == (1, 3)


# ---------------------------------------------------------------- mutated real lines
# One line per feature of the grammar, each a twin check on its own: the fixtures lack some
# of them, and the hypothesis test need not draw them.
EXAMPLES = [
    b"mmap(NULL, 4096, 0x3 /* PROT_READ|PROT_WRITE */, 0x20 /* MAP_??? */, -1, 0) = 0x7f00",
    b"mmap(NULL, 2097152, PROT_READ|0x100, MAP_PRIVATE|MAP_ANONYMOUS|21<<MAP_HUGE_SHIFT, -1, 0)"
    b" = -1 ENOMEM (Cannot allocate memory) <0.000011>",
    b"munmap(-0x10, 1<<12) = 0",
    b"munmap(0x10, 3<<0x4) = 0",
    b"munmap(0x1000, 0777) = 0",
    b"munmap(0x1000, 18446744073709551615) = 0",
    b"munmap(0x1000, 12345678901234567890) = 0",
    b"munmap(-9223372036854775808, -1) = 0",
    b"mprotect(0x1000, 4096, PROT_READ | PROT_WRITE) = 0",
    b"mprotect(0xABCDEF000, 4096, AT_FDCWD|PROT_READ) = 0",
    b"madvise(0x1000, 4096, MADV_DONTNEED) = -1 EINVAL",
    b"madvise(0x1000, 4096, MADV_DONTNEED) = -1 EINVAL <0.5>",
    b"madvise(0x1000, 4096, MADV_DONTNEED) = ? ERESTARTSYS (To be restarted) <0.25>",
    b"pkey_mprotect(0x1000, 4096, PROT_READ, -1) = 0",
    b"mlockall(MCL_CURRENT|MCL_FUTURE) = 0",
    b"munlockall() = 0",
    b"brk(0x55) = 0x55 <12345678901234.5>",
    b"brk(NULL) = 0x7fffffffffffffff",
    b"brk(NULL) = -123456789012345678",
    b"mremap(0x7f0000000000, 8192, 16384, MREMAP_MAYMOVE|MREMAP_FIXED, 0x7f1000000000) = 0x7f1000000000",
    b"[pid  12] mmap(NULL, 1, PROT_EXEC, MAP_SHARED, 3</usr/lib/x86_64-linux-gnu/libc.so.6>, 0x1000) = 0x7f00",
    b"  12  mmap(NULL, 1, PROT_NONE, MAP_SHARED|MAP_FILE, 0, 0) = 0x7f00",
    b"12 10:00:00 munmap(0x1000, 010) = ? <0.1>",
    b"munmap(0x1000, 4096) = -12 ENOMEM (Cannot allocate memory)",  # ret -1 with an errno
]


def _pool() -> list[bytes]:
    """Real lines of the fixtures (every shape the readers meet), and a few the fixtures
    lack: -X verbose remainders, shifts, negative and octal numbers, errno forms, '= ?'."""
    lines: list[bytes] = []
    for name, count in (
        ("fill_map_count.exec.strace.gz", 120),
        ("threads.strace", 200),
        ("threads.raw.strace", 200),
        ("threads.stderr.strace", 226),
        ("tiny.verbose.strace", 19),
        ("arenas.ttt.strace", 120),
        ("arenas.r.strace", 120),
        ("corpus/java-zgc.strace.gz", 400),
    ):
        lines += _bytes(TRACES / name).split(b"\n")[:count]
    lines += EXAMPLES
    lines += [
        b"mmap(NULL, 4096, 0x3 /* PROT_READ|PROT_WRITE */, 0x20 /* MAP_??? */, -1, 0) = 0x7f00",
        b"mmap(NULL, 2097152, PROT_READ|0x100, MAP_PRIVATE|MAP_ANONYMOUS|21<<MAP_HUGE_SHIFT,"
        b" -1, 0) = -1 ENOMEM (Cannot allocate memory) <0.000011>",
        b"[pid  12] 00:00:01.5 mremap(0x7f0000000000, 8192, 16384, MREMAP_MAYMOVE) = 0x7f1000",
        b"12 madvise(0x1000, 4096, MADV_DONTNEED) = -1 EINVAL",
        b"12 23:59:59.999999 munmap(0x1000, 010) = ? <0.1>",
        b"pkey_mprotect(0x1000, 4096, PROT_READ, -1) = 0",
        b"mlockall(MCL_CURRENT|MCL_FUTURE) = 0",
        b"munlockall() = 0",
        b"brk(0x55) = 0x55 <12345678901234.5>",
        b"12 0.000001 mmap(NULL, -4096, PROT_NONE, MAP_SHARED, 3</tmp/a b>, 0) = -1 EPERM",
        b"mprotect(0x1000, 4096, PROT_READ | PROT_WRITE) = 0",
        b"munmap(-0x10, 1<<12) = 0",
        b"--- SIGSEGV {si_signo=SIGSEGV, si_code=SEGV_MAPERR, si_addr=0x10} ---",
        b"+++ exited with 0 +++",
        b" > /usr/lib/libc.so.6(mmap+0x1) [0x1]",
    ]
    return [line for line in lines if line]


POOL = _pool()

STAMPED = [  # a -tt clock across midnight, a -r sum, a -ttt epoch
    b"1 23:59:59.999999 munmap(0x1000, 4096) = 0\n1 00:00:00.000001 munmap(0x1000, 4096) = 0\n"
    b"1 12:00:00.5 munmap(0x1000, 4096) = 0\n1 00:00:01 munmap(0x1000, 4096) = 0\n",
    b"1 0.000001 brk(NULL) = 0x1000\n1 0.100000 brk(NULL) = 0x1000\n1 1.5 brk(NULL) = 0x1000\n",
    b"1 1795709776.755996 brk(NULL) = 0x1000\n1 1795709776.1 brk(NULL) = 0x1000\n",
    b"1 100000000.0 brk(NULL) = 0x1000\n1 0.5 brk(NULL) = 0x1000\n",  # 1e8: -ttt
]


# Lines the scanner leaves to the reader: a Problem to it, an argument it keeps as text, or
# (the scanner's choice) the path of an unlinked file, a -y path on another argument.
DECLINED = [
    b"munmap(0x1000) = 0",  # fewer than MIN_ARGS: a Problem
    b"brk(NULL) = -9999999999999999999",  # below -2**63: a Problem
    b"munmap(0x1000, 18446744073709551616) = 0",  # past 2**64: kept as text
    b"mprotect(0x1000, 4096, PROT_BOGUS) = 0",
    b"mprotect(0x1000, 4096, 1<<64) = 0",
    b"mprotect(0x1000, 4096, -1<<2) = 0",  # a Python int, but not taken
    b"mmap(NULL, 1, PROT_READ, MAP_SHARED, 4</memfd:x>(deleted), 0) = 0x7f00",
    b"munmap(3</x>, 4096) = 0",
    b"mmap(NULL, 1, PROT_READ, MAP_SHARED, 3, 0 <unfinished ...>",
    b"<... mmap resumed>) = 0x7f00",
    b"mmap(NULL, 1, PROT_READ,MAP_SHARED, 3, 0) = 0x7f00",
    b"munmap(0x1000, 4096) = 0 ",
    b"munmap(0x1000, 4096) = 0x8000000000000000",
    b"munmap(0x1000, 2<<63) = 0",  # past 2**64: kept as text
    b"1 12:00:00.1234567890123 munmap(0x1000, 4096) = 0",  # not a time column: no call
    b"mprotect(0x1000, 4096, CLONE_PAXENT_SETTID) = 0",  # CLONE_PARENT_SETTID's shape
    b"mprotect(0x1000, 4096, ENOMEM) = 0",  # an errno name, not a flag
    b"munmap(0x1000, mmap) = 0",  # a call name, not a flag
]


@pytest.mark.parametrize("line", EXAMPLES, ids=range(len(EXAMPLES)))
def test_grammar_example(line: bytes) -> None:
    """Each a complete memory call the reader decodes to ints: taken, and its twin."""
    taken, total = _check(line + b"\n", 1)
    assert (taken, total) == (1, 1)


@pytest.mark.parametrize("line", DECLINED, ids=range(len(DECLINED)))
def test_declined_example(line: bytes) -> None:
    taken, total = _check(line + b"\n", 1)
    assert (taken, total) == (0, 1)


@pytest.mark.parametrize("data", STAMPED, ids=["tt-midnight", "r", "ttt", "ttt-1e8"])
def test_clock_examples(data: bytes) -> None:
    for block_lines in (1, 100):
        taken, total = _check(data, block_lines)
        assert taken == total  # every line taken: its time too


# the pool's complete memory calls: drawn from more often, the lines a scanner bug would show
CALL_POOL = [
    line
    for line in POOL
    if re.search(
        rb"\b(mmap|munmap|mprotect|pkey_mprotect|brk|madvise|mremap|mlock\w*|munlock\w*)\(", line
    )
    and b") = " in line.replace(b")  ", b") ").replace(b")   ", b") ")
] or POOL
_NUMBERS = [
    b"18446744073709551616",  # 2**64
    b"18446744073709551615",
    b"9223372036854775808",
    b"-9223372036854775808",
    b"-9223372036854775809",
    b"99999999999999999999",
    b"0xffffffffffffffff",
    b"0x10000000000000000",
    b"-0x8000000000000000",
    b"-0x8000000000000001",
    b"0777",
    b"089",
    b"-1",
    b"-0",
    b"1<<63",
    b"1<<64",
    b"2<<63",
    b"-1<<2",
    b"0x1_0",
    b"0XFF",
    b"PROT_BOGUS",
    b"prot_read",
    b"MAP_HUGE_2MB|MAP_FILE",
    b"AT_FDCWD",
    b"3<>",
    b"3</usr/lib/x86_64-linux-gnu/libc.so.6>",
    b"0</x>",
    b"3</x>(deleted)",
]
_BYTES = b'0123456789 ,|()<>-xE:.?=*/[]"\r\t\x0b\x1c\x85\xff\xc2\xa0aZ_;'


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    line = bytearray(draw(st.sampled_from(CALL_POOL if draw(st.integers(0, 9)) < 7 else POOL)))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.integers(0, 5))
        pos = draw(st.integers(0, len(line)))
        if op == 0:  # insert bytes
            line[pos:pos] = (
                draw(st.binary(min_size=1, max_size=3))
                if draw(st.booleans())
                else bytes([draw(st.sampled_from(_BYTES))])
            )
        elif op == 1:  # delete a range
            line[pos : pos + draw(st.integers(1, 4))] = b""
        elif op == 2 and pos < len(line):  # replace a byte
            line[pos] = draw(st.sampled_from(_BYTES))
        elif op == 3:  # truncate
            del line[pos:]
        else:  # a number or name where one stood
            spans = [m.span() for m in re.finditer(rb"-?\w+", bytes(line))]
            if spans:
                a, b = draw(st.sampled_from(spans))
                line[a:b] = draw(st.sampled_from(_NUMBERS))
    return bytes(line).replace(b"\n", b"")


_STAMPS = st.one_of(
    st.just(b""),
    st.builds(
        lambda h, m, s, f: b"%02d:%02d:%02d%s " % (h, m, s, f),
        st.sampled_from([0, 11, 12, 23, 24, 99]),
        st.integers(0, 59),
        st.integers(0, 59),
        st.sampled_from([b"", b".5", b".000001", b".999999", b".123456789012", b".1234567890123"]),
    ),
    st.builds(
        lambda i, f: b"%d.%s " % (i, f),
        st.sampled_from([0, 1, 99999999, 100000000, 1795709776, 10**19]),
        st.sampled_from([b"0", b"000001", b"999999", b"123456789", b"123456789012"]),
    ),
)


def _with_stamp(line: bytes, stamp: bytes) -> bytes:
    """``line`` with its time column replaced by ``stamp`` (or put after its pid)."""
    m = re.match(rb"( *(?:\[pid +\d+\] |\d+ +)?)(?:[0-9:.]+ +)?", line)
    assert m is not None
    return m.group(1) + stamp + line[m.end() :]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(_mutated(), _STAMPS, st.booleans()), min_size=1, max_size=8),
    st.integers(1, 8),
    st.booleans(),
)
def test_mutated_lines_twin(
    items: list[tuple[bytes, bytes, bool]], block_lines: int, newline: bool
) -> None:
    """Mutated real lines, in blocks: never an exception, every taken line the reader's
    Syscall, every known time the reader's time (lines it makes a Problem are not taken)."""
    lines = [_with_stamp(line, stamp) if restamp else line for line, stamp, restamp in items]
    data = b"\n".join(lines) + (b"\n" if newline else b"")
    _check(data, block_lines)
