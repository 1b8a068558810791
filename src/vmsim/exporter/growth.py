"""How fast each process's map_count grows: a least-squares line through its recent samples.

The exporter samples every process once per refresh; the samples of the last ``window``
seconds are kept per process (by PID *and* start time, so a reused PID starts afresh) and the
slope of the least-squares line through them is the growth in VMAs per second. A process is
growing when that slope is above zero; only then has it a time to the limit:
``(limit - map_count) / slope`` (0 when it is already there).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vmsim.exporter.procscan import ProcessId

MIN_SAMPLES = 3
"""Fewer samples than this give no fit: two points are a difference, not a trend."""


@dataclass(frozen=True)
class Sample:
    t: float  # seconds, monotonic clock
    map_count: int


def least_squares_slope(samples: Sequence[Sample]) -> float | None:
    """The slope (VMAs per second) of the least-squares line through ``samples``; None with
    fewer than :data:`MIN_SAMPLES` samples or when they all share one time."""
    n = len(samples)
    if n < MIN_SAMPLES:
        return None
    first = samples[0].map_count
    if all(s.map_count == first for s in samples):
        return 0.0
    t_mean = sum(s.t for s in samples) / n
    y_mean = sum(s.map_count for s in samples) / n
    sxx = sum((s.t - t_mean) ** 2 for s in samples)
    if sxx == 0.0:
        return None
    sxy = sum((s.t - t_mean) * (s.map_count - y_mean) for s in samples)
    return sxy / sxx


def seconds_to_limit(map_count: int, limit: int, slope: float | None) -> float | None:
    """Seconds until ``map_count`` reaches ``limit`` at ``slope`` VMAs per second; None when
    not growing (slope None or <= 0): never +Inf."""
    if slope is None or slope <= 0.0:
        return None
    return max(0.0, (limit - map_count) / slope)


class History:
    """The recent samples of every process, for :func:`least_squares_slope`."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._samples: dict[ProcessId, deque[Sample]] = {}

    def add(self, who: ProcessId, t: float, map_count: int) -> None:
        samples = self._samples.get(who)
        if samples is None:
            samples = self._samples[who] = deque()
        samples.append(Sample(t, map_count))
        while samples and samples[0].t < t - self.window:
            samples.popleft()

    def keep_only(self, alive: Iterable[ProcessId]) -> None:
        """Forget every process not in ``alive`` (it exited, or its PID was reused)."""
        alive = set(alive)
        for who in [w for w in self._samples if w not in alive]:
            del self._samples[who]

    def slope(self, who: ProcessId) -> float | None:
        samples = self._samples.get(who)
        return least_squares_slope(samples) if samples is not None else None

    def samples(self, who: ProcessId) -> list[Sample]:
        return list(self._samples.get(who, ()))

    def __len__(self) -> int:
        return len(self._samples)


__all__ = ["MIN_SAMPLES", "History", "Sample", "least_squares_slope", "seconds_to_limit"]
