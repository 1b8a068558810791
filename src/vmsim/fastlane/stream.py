"""A trace's events with runs of lines left to the fast lane (:class:`~.runs.LaneRun`).

:func:`lane_events` reads an strace file in blocks of whole lines, scans each block
(:func:`vmsim.fastlane.scan.scan_block`) and yields what
:func:`vmsim.trace.strace.read_strace_stream` yields for the same file, in the same order,
except that each run of lines the lane may replay is one :class:`LaneRun` instead of one
``Syscall`` per line. The lines around the runs go through the Python reader
(:func:`vmsim.trace.strace.read_strace_numbered`), which keeps its state across them.

A line goes into a run when the scanner took it (a complete call on one line, decoded
fully) and: it is one of the calls the lane replays (:data:`LANE_CALLS`), its timestamp if it
has one is a ``-t``/``-tt`` clock time (the reader's clock then goes on from the run's last
one; ``-ttt``/``-r`` stamps are not taken yet), no ``-k`` frame follows it
(the frames are part of its call, and may start the next block), and the block holds no ``\\r`` (the reader splits lines
there too). Which rows the replay then replays with the lane is its decision
(``Replayer``): a run is only a place where it may.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import re
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from vmsim.fastlane._scan import CK_RELATIVE
from vmsim.fastlane.lane import DRIVER
from vmsim.fastlane.runs import LaneRun
from vmsim.fastlane.scan import CALLS, ScannedBlock, scan_block
from vmsim.trace.decode import Timestamps
from vmsim.trace.events import Event
from vmsim.trace.strace import _BULK, TAKEN, read_strace_numbered

__all__ = ["BLOCK_BYTES", "LANE_CALLS", "lane_events", "lane_may_take"]

BLOCK_BYTES = 1 << 20
LANE_CALLS = frozenset({"mprotect", "munmap", "brk"})
_CODES = frozenset(i for i, name in enumerate(CALLS) if name in LANE_CALLS)
_FRAME = b" > "


def _blocks(raw: IO[bytes]) -> Iterator[bytes]:
    while True:
        block = raw.read(BLOCK_BYTES)
        if not block:
            return
        if not block.endswith(b"\n"):
            block += raw.readline()
        yield block


@contextlib.contextmanager
def _open(path: Path) -> Iterator[IO[bytes]]:
    """The file's bytes, decompressed when it is gzip (by its name or its magic bytes)."""
    with open(path, "rb") as raw:
        if raw.peek(2)[:2] == b"\x1f\x8b" or path.suffix == ".gz":
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                yield gz  # type: ignore[misc]
        else:
            yield raw


_CODE_TABLE = np.array([name in LANE_CALLS for name in CALLS], dtype=bool)


def _eligible(block: ScannedBlock, buf: bytes, framed_next: bool) -> list[bool]:
    """Which lines may go into a run; ``framed_next``: the next block starts with a -k
    frame (which belongs to this block's last call). A stamped line may, when the stamps are
    ``-t``/``-tt`` clock times (the clock has decided nothing: no ``-ttt``/``-r`` stamp)."""
    n = len(block)
    if block.cr or n == 0:
        return [False] * n
    ok = (block.taken != 0) & _CODE_TABLE[block.call]
    stamped = ~np.isnan(block.time)
    if block.clock.words[CK_RELATIVE] != -1:
        ok &= ~stamped
    data = np.frombuffer(buf, dtype=np.uint8)
    nxt = block.start[1:]
    room = nxt + 3 <= len(data)
    frame = np.zeros(n, dtype=bool)
    at = nxt[room]
    frame[:-1][room] = (data[at] == 32) & (data[at + 1] == 62) & (data[at + 2] == 32)
    frame[-1] = framed_next
    return (ok & ~frame).tolist()  # type: ignore[no-any-return]


def _ahead(blocks: Iterator[bytes]) -> Iterator[tuple[bytes, bool]]:
    """Each block, and whether the next one starts with a -k frame line."""
    prev = next(blocks, None)
    for buf in blocks:
        assert prev is not None
        yield prev, buf.startswith(_FRAME)
        prev = buf
    if prev is not None:
        yield prev, False


_STAMPED = re.compile(r"^(?:\[pid +[0-9]+\] |[0-9]+ +)?[0-9]+\.[0-9]")


def lane_may_take(head: list[str]) -> bool:
    """Whether the lane may take lines of a trace that starts with ``head``: not when its
    calls carry ``-ttt``/``-r`` timestamps or -k frames (the lane takes neither yet)."""
    return not any(line.startswith(" > ") or _STAMPED.match(line) for line in head)


def lane_events(
    path: Path, on_block: Callable[[int], None] | None = None
) -> Iterator[Event | LaneRun]:
    """The events of the strace file ``path`` (``.gz`` too) with LaneRuns (see the module
    text). ``on_block`` gets the bytes read so far after each block."""
    pending: deque[LaneRun] = deque()

    def items(raw: IO[bytes]) -> Iterator[tuple[int, Any]]:
        lineno = 1
        carry = False
        clock = None
        done = 0
        for buf, framed_next in _ahead(_blocks(raw)):
            done += len(buf)
            block = scan_block(buf, lineno, clock, carry)
            clock, carry = block.clock, block.carry
            n = len(block)
            if block.cr:
                # universal newlines: the reader's lines, numbered as it numbers them
                text = buf.decode("utf-8", "surrogateescape")
                for line in io.StringIO(text, newline=None):
                    yield lineno, line
                    lineno += 1
                clock = None  # lost: scan_block starts afresh (no run takes a stamp anyway)
                if on_block is not None:
                    on_block(done)
                continue
            ok = _eligible(block, buf, framed_next)
            times = block.time.tolist()
            start = block.start.tolist()
            end = block.end.tolist()
            i = 0
            while i < n:
                j = i
                if ok[i]:
                    while j < n and ok[j]:
                        j += 1
                    yield lineno + i, TAKEN
                    # the reader asks for the next line: every event before the run is out;
                    # its clock goes on from the run's last stamp (-t/-tt: the day from it)
                    pending.append(LaneRun(block, buf, i, j, DRIVER))
                    last = times[j - 1]
                    if last == last:  # not NaN
                        reader_clock._last = last
                        reader_clock._day = int(last // 86400) * 86400
                    i = j
                    continue
                while j < n and not ok[j]:
                    j += 1
                text = buf[start[i] : end[j - 1]].decode("utf-8", "surrogateescape")
                yield from enumerate(_BULK.findall(text), lineno + i)
                i = j
            lineno += n
            if on_block is not None:
                on_block(done)

    reader_clock = Timestamps()
    with _open(path) as raw:
        for ev in read_strace_numbered(items(raw), clock=reader_clock):
            while pending:
                yield pending.popleft()
            yield ev
    while pending:
        yield pending.popleft()
