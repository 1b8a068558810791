"""A trace's events with runs of lines left to the fast lane (:class:`~.runs.LaneRun`).

:func:`lane_events` reads an strace file in blocks of whole lines, scans each block
(:func:`vmsim.fastlane.scan.scan_block`) and yields what
:func:`vmsim.trace.strace.read_strace_stream` yields for the same file, in the same order,
except that each run of lines the lane may replay is one :class:`LaneRun` instead of one
``Syscall`` per line. The lines around the runs go through the Python reader
(:func:`vmsim.trace.strace.read_strace_numbered`), which keeps its state across them.

A line goes into a run when the scanner took it (a complete call on one line, decoded
fully) and: it is one of the calls the lane replays (:data:`LANE_CALLS`), it has no
timestamp (the reader's clock is not followed across runs yet), no ``-k`` frame follows it
(the frames are part of its call, and may start the next block), and the block holds no ``\\r`` (the reader splits lines
there too). Which rows the replay then replays with the lane is its decision
(``Replayer``): a run is only a place where it may.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import re
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from vmsim.fastlane.lane import DRIVER
from vmsim.fastlane.runs import LaneRun
from vmsim.fastlane.scan import CALLS, ScannedBlock, scan_block
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


def _eligible(block: ScannedBlock, buf: bytes, framed_next: bool) -> list[bool]:
    """Which lines may go into a run; ``framed_next``: the next block starts with a -k
    frame (which belongs to this block's last call)."""
    n = len(block)
    out = [False] * n
    if block.cr:
        return out
    taken = block.taken.tolist()
    call = block.call.tolist()
    start = block.start.tolist()
    times = block.time.tolist()
    for i in range(n):
        if taken[i] and call[i] in _CODES and math.isnan(times[i]):
            if i + 1 < n:
                s = start[i + 1]
                out[i] = buf[s : s + 3] != _FRAME
            else:
                out[i] = not framed_next
    return out


def _ahead(blocks: Iterator[bytes]) -> Iterator[tuple[bytes, bool]]:
    """Each block, and whether the next one starts with a -k frame line."""
    prev = next(blocks, None)
    for buf in blocks:
        assert prev is not None
        yield prev, buf.startswith(_FRAME)
        prev = buf
    if prev is not None:
        yield prev, False


_STAMPED = re.compile(r"^(?:\[pid +[0-9]+\] |[0-9]+ +)?[0-9]+[:.][0-9]")


def lane_may_take(head: list[str]) -> bool:
    """Whether the lane may take lines of a trace that starts with ``head``: not when its
    calls carry timestamps or -k frames (the lane takes neither yet)."""
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
            start = block.start.tolist()
            end = block.end.tolist()
            i = 0
            while i < n:
                j = i
                if ok[i]:
                    while j < n and ok[j]:
                        j += 1
                    yield lineno + i, TAKEN
                    # the reader asks for the next line: every event before the run is out
                    pending.append(LaneRun(block, buf, i, j, DRIVER))
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

    with _open(path) as raw:
        for ev in read_strace_numbered(items(raw)):
            while pending:
                yield pending.popleft()
            yield ev
    while pending:
        yield pending.popleft()
