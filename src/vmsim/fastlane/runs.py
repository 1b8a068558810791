"""The events the fast lane adds to a trace's event stream (no numba here: the replay loop
imports this module whatever engine runs).

A :class:`LaneRun` stands, in the stream :func:`vmsim.fastlane.stream.lane_events` yields, for
a run of complete call lines the lane may replay itself, at the place in the event order
where :func:`vmsim.trace.strace.read_strace_stream` would have yielded their calls. The
replay either replays its rows with the lane or turns each back into the ``Syscall`` the
Python reader gives (:meth:`LaneRun.syscall`): the same call either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from vmsim.fastlane.scan import ScannedBlock
    from vmsim.trace.events import Syscall


class LaneDriver(Protocol):
    """What replays a LaneRun (vmsim.fastlane.lane.DRIVER): handed to the replay with each
    run, so that the replay loop needs no import of the compiled code."""

    def run_rows(self, r: Any, run: LaneRun) -> Iterator[Syscall]: ...


__all__ = ["LaneDriver", "LaneRow", "LaneRun"]


@dataclass(eq=False, slots=True)
class LaneRun:
    """Rows ``lo`` to ``hi`` (exclusive) of a scanned block: taken lines, one call each."""

    block: ScannedBlock
    buf: bytes
    lo: int
    hi: int
    driver: LaneDriver
    default_pid: int | None = None

    def __len__(self) -> int:
        return self.hi - self.lo

    @property
    def lineno(self) -> int:
        """The first row's line number."""
        return int(self.block.lineno[self.lo])

    def syscall(self, i: int) -> Syscall:
        """Row ``i`` as the Python reader's Syscall."""
        return self.block.syscall(self.buf, i, self.default_pid)

    def tail(self, i: int) -> LaneRun:
        """The rows from ``i`` on."""
        return LaneRun(self.block, self.buf, i, self.hi, self.driver, self.default_pid)


@dataclass(eq=False, slots=True)
class LaneRow:
    """One row of a run: what a replay's snapshot names as the call it was taken before
    (``Replayer._snapshot_before``), for the replay without a limit to go on from."""

    run: LaneRun
    i: int
