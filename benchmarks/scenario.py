"""The fill-to-limit scenario: what both sides measure, and the arithmetic shared by them.

Both sides make exactly the same calls (see README.md); each returns a ``SideResult``. The
per-call cost "at ~N VMAs" is read from the per-call timings of the fill phase: call k runs with
``map_count = after_mmap + 2k`` (every mprotect of page 2k+1 splits the middle of the rw tail,
costing 2 VMAs), so the calls around ~N VMAs are found by arithmetic, the same way on both sides.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

PAGE_SIZE = 4096
DEFAULT_PAGES = 1 << 17
DEFAULT_WINDOW = 256  # calls in each per-call window
LOW_TARGET = 1_000  # VMAs
HIGH_TARGET = 65_000  # VMAs
PHASES = ("mmap", "fill", "maps", "unmap", "teardown")
PHASE_TITLES = {
    "mmap": "mmap region",
    "fill": "mprotect 2k+1 to ENOMEM",
    "maps": "read maps at limit",
    "unmap": "munmap r/o pages",
    "teardown": "munmap region",
}
COUNT_KEYS = ("before_mmap", "after_mmap", "at_limit", "after_unmap", "after_teardown")


@dataclass(frozen=True)
class Phase:
    """One timed phase: how many calls it made and its wall time."""

    calls: int
    seconds: float


@dataclass
class SideResult:
    """One run of the scenario on one side (the kernel or vmsim)."""

    side: str
    npages: int
    max_map_count: int
    map_count: dict[str, int]
    fill_errno: str
    phases: dict[str, Phase]
    split_ns: list[int] = field(repr=False)
    maps_bytes: int = 0

    @property
    def total_seconds(self) -> float:
        return sum(phase.seconds for phase in self.phases.values())


@dataclass(frozen=True)
class Window:
    """Median cost of the mprotect splits made around ``target`` VMAs."""

    target: int
    first_call: int
    calls: int
    map_count_from: int
    map_count_to: int
    median_ns: float


def window(result: SideResult, target: int, size: int = DEFAULT_WINDOW) -> Window:
    """The ``size`` successful splits whose map_count (before the call) is centred on ``target``."""
    splits = len(result.split_ns)
    if splits == 0:
        raise ValueError(f"{result.side}: no successful split to time")
    size = max(1, min(size, splits))
    centre = round((target - result.map_count["after_mmap"]) / 2)
    first = min(max(0, centre - size // 2), splits - size)
    base = result.map_count["after_mmap"]
    return Window(
        target=target,
        first_call=first,
        calls=size,
        map_count_from=base + 2 * first,
        map_count_to=base + 2 * (first + size - 1),
        median_ns=statistics.median(result.split_ns[first : first + size]),
    )


def targets(max_map_count: int, size: int = DEFAULT_WINDOW) -> tuple[int, int]:
    """The low and high map_count targets, pulled below the limit if it is small."""
    high = min(HIGH_TARGET, max_map_count - 2 * size)
    low = min(LOW_TARGET, high // 2)
    return low, high


def best_of(results: list[SideResult]) -> SideResult:
    """Fastest time of each phase and each per-call timing over repeats of identical runs."""
    first = results[0]
    for other in results[1:]:
        if other.map_count != first.map_count or other.fill_errno != first.fill_errno:
            raise RuntimeError(
                f"{first.side}: repeats disagree: {first.map_count} vs {other.map_count}"
            )
    phases = {
        name: Phase(first.phases[name].calls, min(r.phases[name].seconds for r in results))
        for name in first.phases
    }
    split_ns = [min(column) for column in zip(*(r.split_ns for r in results), strict=True)]
    return SideResult(
        side=first.side,
        npages=first.npages,
        max_map_count=first.max_map_count,
        map_count=dict(first.map_count),
        fill_errno=first.fill_errno,
        phases=phases,
        split_ns=split_ns,
        maps_bytes=first.maps_bytes,
    )
