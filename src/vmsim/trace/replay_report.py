"""What ``vmsim replay`` reports: the report and its entries (see :mod:`vmsim.trace.replay`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from vmsim.trace.events import Problem


class _Located:
    """An entry of the report that points at a line: ``file:line`` for an -ff trace, else
    ``line N``."""

    lineno: int
    file: str | None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.lineno}" if self.file else f"line {self.lineno}"


class ReplayError(Exception):
    """A fatal replay problem (with --strict, a malformed line)."""

    def __init__(self, message: str, lineno: int | None = None) -> None:
        super().__init__(f"line {lineno}: {message}" if lineno else message)
        self.lineno = lineno


@dataclass
class Divergence(_Located):
    lineno: int
    call: str
    recorded: str
    model: str
    why: str
    file: str | None = None
    """The -ff file the call is in (None for a single trace)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.lineno,
            "call": self.call,
            "recorded": self.recorded,
            "model": self.model,
            "why": self.why,
        }


@dataclass
class Failure(_Located):
    lineno: int
    call: str
    errno: str
    cause: str | None
    detail: str
    map_count: int
    pid: int | None
    stack: tuple[str, ...] = ()
    file: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.lineno,
            "call": self.call,
            "errno": self.errno,
            "cause": self.cause,
            "detail": self.detail,
            "map_count": self.map_count,
            "pid": self.pid,
            "stack": list(self.stack),
        }


@dataclass(frozen=True)
class Dropped(_Located):
    """A line or call the replay could not run on the model: never silent."""

    lineno: int
    call: str
    reason: str
    file: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.lineno, "call": self.call, "reason": self.reason}


@dataclass
class ReplayReport:
    max_map_count: int
    lines: int = 0
    calls: int = 0
    problems: list[Problem] = field(default_factory=list)
    divergences: list[Divergence] = field(default_factory=list)
    peak_map_count: int = 0
    peak_line: int = 0
    peak_pid: int | None = None
    first_failure: Failure | None = None
    failures: list[Failure] = field(default_factory=list)
    min_max_map_count: int = 0
    vmas_by_site: Counter[str] = field(default_factory=Counter)
    vmas_by_cause: Counter[str] = field(default_factory=Counter)
    placements: int = 0
    placements_agreed: int = 0
    estimates: list[str] = field(default_factory=list)
    series: list[tuple[int, float | None, int]] = field(default_factory=list)
    processes: int = 0
    """Address spaces the trace created: the first program, each fork, each execve."""
    dropped: list[Dropped] = field(default_factory=list)
    dropped_count: int = 0
    """Every dropped line or call (``dropped`` keeps the first DROPPED_KEPT)."""
    failures_anyway: list[Failure] = field(default_factory=list)
    """Failures the kernel recorded too, where the model names no limit as the cause (an
    argument check, MAP_HUGETLB with an empty pool, munmap(0, 0)): they happen at any
    limit, so ``first_failure`` (the call a limit broke) skips them."""
    peak_map_count_range: tuple[int, int] | None = None
    """[as if nothing was written, as if every writable private VMA was written]."""
    write_dependent_calls: int = 0
    """Calls that left more VMAs when written (their neighbours' anon_vmas kept them apart)."""
    deltas: dict[tuple[str | None, int], int] = field(default_factory=dict, repr=False)
    passes: list[str] = field(default_factory=list, repr=False)
    """The replays run, for benchmarks: "limited", then "unlimited" if the trace hit the
    limit, "written" unless the limited replay proved it could not differ."""

    DROPPED_KEPT = 1000

    def drop(self, item: Dropped) -> None:
        self.dropped_count += 1
        if len(self.dropped) < self.DROPPED_KEPT:
            self.dropped.append(item)

    def to_json(self) -> dict[str, Any]:
        return {
            "max_map_count": self.max_map_count,
            "lines": self.lines,
            "calls": self.calls,
            "problems": [
                {"file": getattr(p, "file", None), "line": p.lineno, "message": p.message}
                for p in self.problems
            ],
            "dropped_count": self.dropped_count,
            "dropped": [d.to_json() for d in self.dropped],
            "divergences": [d.to_json() for d in self.divergences],
            "peak_map_count": self.peak_map_count,
            "peak_map_count_range": (
                list(self.peak_map_count_range) if self.peak_map_count_range else None
            ),
            "write_dependent_calls": self.write_dependent_calls,
            "peak_line": self.peak_line,
            "peak_pid": self.peak_pid,
            "first_failure": self.first_failure.to_json() if self.first_failure else None,
            "failures_anyway": [f.to_json() for f in self.failures_anyway],
            "min_max_map_count": self.min_max_map_count,
            "vmas_by_site": dict(self.vmas_by_site.most_common()),
            "vmas_by_cause": dict(self.vmas_by_cause.most_common()),
            "placement": {"recorded": self.placements, "agreed": self.placements_agreed},
            "estimates": self.estimates,
            "processes": self.processes,
        }


__all__ = [
    "Divergence",
    "Dropped",
    "Failure",
    "ReplayError",
    "ReplayReport",
]
