"""The exporter's view of the machine, refreshed from /proc at most every ``interval`` seconds,
and the Prometheus metric families built from it.

A refresh is two passes:

1. every process: its map_count (the line count of /proc/PID/maps, [vsyscall] excluded), one
   sample added to its growth history;
2. the exported few: the ``top`` processes by map_count, plus up to ``top`` more that would
   reach the limit soonest (growing ones outside the first set), so cardinality is at most
   ``2 * top`` processes however many run; their maps text is read again and each VMA
   classified as ``vmsim maps`` does (:func:`vmsim.analysis.classify`). The map_count they
   are exported with is that second read's, so their kinds add up to it.

Scrapes in between are served from the last refresh (``prometheus_client`` runs each scrape
in its own thread; one lock orders the refreshes).
"""

from __future__ import annotations

import heapq
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from vmsim.analysis import classify, count_vmas
from vmsim.exporter.growth import History, seconds_to_limit
from vmsim.exporter.procscan import (
    REASONS,
    ProcessId,
    ProcessSample,
    ScanErrors,
    read_maps_text,
    read_max_map_count,
    reason_of,
    scan,
)
from vmsim.snapshot import SnapshotError, parse

GroupBy = Literal["comm", "cgroup", "none"]
GROUP_BY: tuple[GroupBy, ...] = ("comm", "cgroup", "none")
DEFAULT_INTERVAL = 10.0
DEFAULT_WINDOW = 600.0
DEFAULT_TOP = 20


@dataclass(frozen=True)
class ExporterConfig:
    """How the exporter reads and what it exports (the options of ``vmsim exporter``)."""

    proc_root: Path = Path("/proc")
    interval: float = DEFAULT_INTERVAL
    window: float = DEFAULT_WINDOW
    top: int = DEFAULT_TOP
    group_by: GroupBy = "none"
    pid_filter: re.Pattern[str] | None = None
    """Keep a process when the pattern matches all of its PID (decimal) or all of its comm."""
    max_map_count: int | None = None
    """The limit to compare with (a model limit, for tests and what-ifs); None: the sysctl."""
    clock: Callable[[], float] = time.monotonic


@dataclass(frozen=True)
class ExportedProcess:
    pid: int
    comm: str
    threads: int
    map_count: int
    kinds: dict[str, int] | None  # VMAs per kind; None when the maps text could not be parsed
    growth_per_second: float | None
    seconds_to_limit: float | None


@dataclass(frozen=True)
class GroupStats:
    group: str
    processes: int
    map_count_max: int  # the limit is per process: the group's worst process matters
    map_count_sum: int


@dataclass(frozen=True)
class View:
    """The result of one refresh."""

    max_map_count: int | None
    processes: int  # with an address space, after --pid-filter
    exported: list[ExportedProcess] = field(default_factory=list)
    groups: list[GroupStats] = field(default_factory=list)
    duration: float = 0.0  # seconds the refresh took
    timestamp: float = 0.0  # wall clock (time.time) at its end


def _selected(
    samples: list[ProcessSample],
    history: History,
    limit: int | None,
    top: int,
) -> list[tuple[ProcessSample, float | None, float | None]]:
    """The ``top`` processes by map_count (ties by PID), then up to ``top`` more by the
    shortest time to the limit; each with its growth and time to the limit."""
    by_count = heapq.nsmallest(top, samples, key=lambda s: (-s.map_count, s.pid))
    chosen = {s.id for s in by_count}
    out = []
    for s in by_count:
        slope = history.slope(s.id)
        out.append((s, slope, seconds_to_limit(s.map_count, limit, slope) if limit else None))
    if limit is None:
        return out
    soon: list[tuple[float, int, ProcessSample, float]] = []
    for s in samples:
        if s.id in chosen:
            continue
        slope = history.slope(s.id)
        eta = seconds_to_limit(s.map_count, limit, slope)
        if eta is not None and slope is not None:
            soon.append((eta, s.pid, s, slope))
    for eta, _, s, slope in heapq.nsmallest(top, soon, key=lambda x: (x[0], x[1])):
        out.append((s, slope, eta))
    return out


def vma_kinds(maps_text: bytes) -> dict[str, int]:
    """VMAs per kind, as ``vmsim maps`` classifies them; [vsyscall] is not counted (it is not
    a VMA of the process)."""
    entries = parse(maps_text.decode("utf-8", "replace"))
    return dict(Counter(str(v.kind) for v in classify(entries) if v.counted))


class VmaCollector(Collector):
    """A ``prometheus_client`` collector: each collect() serves the last refresh, refreshing
    first when it is ``interval`` seconds old or more."""

    def __init__(self, config: ExporterConfig) -> None:
        self.config = config
        self.errors = ScanErrors()
        self.history = History(config.window)
        self.refreshes = 0
        self._lock = threading.Lock()
        self._view: View | None = None
        self._refreshed_at: float | None = None
        self._last_limit: int | None = None
        # kinds of the exported processes by the hash of the maps text they came from: most
        # do not change between refreshes, and classifying is the costly part
        self._kinds_cache: dict[ProcessId, tuple[int, dict[str, int]]] = {}

    # --- reading -----------------------------------------------------------------------

    def limit(self) -> int | None:
        """--max-map-count, else vm.max_map_count (the last value read, if it cannot be read
        now: the error is counted)."""
        if self.config.max_map_count is not None:
            return self.config.max_map_count
        try:
            self._last_limit = read_max_map_count(self.config.proc_root)
        except OSError as exc:
            self.errors.add(reason_of(exc))
        except ValueError:
            self.errors.add("parse")
        return self._last_limit

    def _wanted(self, pid: int, comm: str) -> bool:
        pattern = self.config.pid_filter
        return (
            pattern is None
            or pattern.fullmatch(str(pid)) is not None
            or pattern.fullmatch(comm) is not None
        )

    def refresh(self) -> View:
        """Read /proc now (whatever the interval) and return the new view."""
        cfg = self.config
        started = time.perf_counter()
        now = cfg.clock()
        limit = self.limit()
        samples: list[ProcessSample] = []
        try:
            wanted = self._wanted if cfg.pid_filter is not None else None
            for s in scan(
                cfg.proc_root, self.errors, cgroup=cfg.group_by == "cgroup", wanted=wanted
            ):
                samples.append(s)
                self.history.add(s.id, now, s.map_count)
        except OSError as exc:  # the proc root itself could not be listed
            self.errors.add(reason_of(exc))
        self.history.keep_only(s.id for s in samples)
        exported = []
        kept = []
        for s, slope, eta in _selected(samples, self.history, limit, cfg.top):
            details = self._details(s.id)
            if details is None:
                continue  # exited (or PID reused) since the first pass: counted
            kept.append(s)
            map_count, kinds = details
            exported.append(ExportedProcess(s.pid, s.comm, s.threads, map_count, kinds, slope, eta))
        exported_ids = {s.id for s in kept}
        for who in [w for w in self._kinds_cache if w not in exported_ids]:
            del self._kinds_cache[who]
        view = View(
            max_map_count=limit,
            processes=len(samples),
            exported=exported,
            groups=self._groups(samples),
            duration=time.perf_counter() - started,
            timestamp=time.time(),
        )
        self.refreshes += 1
        return view

    def _details(self, who: ProcessId) -> tuple[int, dict[str, int] | None] | None:
        """map_count and VMAs per kind of ``who``, from one more read of its maps (so the
        kinds add up to the map_count exported); kinds None if the text cannot be parsed;
        None if the process is gone. Errors are counted."""
        try:
            text = read_maps_text(self.config.proc_root, who)
        except OSError as exc:
            self.errors.add(reason_of(exc))
            return None
        except ValueError:  # its stat line is garbled
            self.errors.add("parse")
            return None
        map_count = count_vmas(text)
        if map_count == 0:  # exiting: its mm is gone
            self.errors.add("vanished")
            return None
        key = hash(text)
        cached = self._kinds_cache.get(who)
        if cached is not None and cached[0] == key:
            return map_count, cached[1]  # the same text as last time: the same kinds
        try:
            kinds = vma_kinds(text)
        except SnapshotError:
            self.errors.add("parse")
            return map_count, None
        self._kinds_cache[who] = (key, kinds)
        return map_count, kinds

    def _groups(self, samples: list[ProcessSample]) -> list[GroupStats]:
        if self.config.group_by == "none":
            return []
        members: dict[str, list[int]] = {}
        for s in samples:
            key = s.comm if self.config.group_by == "comm" else (s.cgroup or "/")
            members.setdefault(key, []).append(s.map_count)
        stats = [GroupStats(g, len(m), max(m), sum(m)) for g, m in members.items()]
        return heapq.nsmallest(self.config.top, stats, key=lambda g: (-g.map_count_max, g.group))

    def view(self) -> View:
        """The last refresh, refreshed first when it is ``interval`` seconds old (or none)."""
        with self._lock:
            now = self.config.clock()
            if (
                self._view is None
                or self._refreshed_at is None
                or now - self._refreshed_at >= self.config.interval
            ):
                self._view = self.refresh()
                self._refreshed_at = now
            return self._view

    # --- exposition ----------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        yield from families(self.view(), self.errors, self.refreshes, self.config.group_by)


def families(view: View, errors: ScanErrors, refreshes: int, group_by: GroupBy) -> Iterator[Metric]:
    """The metric families of one view (names as issue 15 gives them)."""
    limit = GaugeMetricFamily(
        "vmsim_max_map_count",
        "vm.max_map_count: the most VMAs a process may have (or --max-map-count)",
    )
    if view.max_map_count is not None:
        limit.add_metric([], view.max_map_count)
    yield limit

    pc = ["pid", "comm"]
    count = GaugeMetricFamily(
        "vmsim_process_map_count",
        "VMAs of the process: lines of /proc/PID/maps minus [vsyscall] (top processes only)",
        labels=pc,
    )
    ratio = GaugeMetricFamily(
        "vmsim_process_map_count_ratio", "map_count / vmsim_max_map_count", labels=pc
    )
    threads = GaugeMetricFamily("vmsim_process_threads", "threads of the process", labels=pc)
    vmas = GaugeMetricFamily(
        "vmsim_process_vmas",
        "VMAs of the process by kind, as vmsim maps classifies them",
        labels=[*pc, "kind"],
    )
    growth = GaugeMetricFamily(
        "vmsim_process_map_count_growth_per_second",
        "slope of a least-squares fit of map_count over the recent samples (VMAs per second)",
        labels=pc,
    )
    eta = GaugeMetricFamily(
        "vmsim_process_seconds_to_limit",
        "seconds until map_count reaches the limit at the fitted growth (absent if not growing)",
        labels=pc,
    )
    for p in view.exported:
        labels = [str(p.pid), p.comm]
        count.add_metric(labels, p.map_count)
        threads.add_metric(labels, p.threads)
        if view.max_map_count:
            ratio.add_metric(labels, p.map_count / view.max_map_count)
        for kind, n in sorted((p.kinds or {}).items()):
            vmas.add_metric([*labels, kind], n)
        if p.growth_per_second is not None:
            growth.add_metric(labels, p.growth_per_second)
        if p.seconds_to_limit is not None:
            eta.add_metric(labels, p.seconds_to_limit)
    yield from (count, ratio, threads, vmas, growth, eta)

    if group_by != "none":
        g = ["group_by", "group"]
        gp = GaugeMetricFamily("vmsim_group_processes", "processes in the group", labels=g)
        gmax = GaugeMetricFamily(
            "vmsim_group_map_count_max", "the largest map_count in the group", labels=g
        )
        gratio = GaugeMetricFamily(
            "vmsim_group_map_count_ratio_max",
            "the largest map_count in the group / vmsim_max_map_count",
            labels=g,
        )
        gsum = GaugeMetricFamily(
            "vmsim_group_map_count_sum", "VMAs of all processes in the group", labels=g
        )
        for grp in view.groups:
            labels = [group_by, grp.group]
            gp.add_metric(labels, grp.processes)
            gmax.add_metric(labels, grp.map_count_max)
            gsum.add_metric(labels, grp.map_count_sum)
            if view.max_map_count:
                gratio.add_metric(labels, grp.map_count_max / view.max_map_count)
        yield from (gp, gmax, gratio, gsum)

    procs = GaugeMetricFamily(
        "vmsim_processes", "processes with an address space seen by the last refresh"
    )
    procs.add_metric([], view.processes)
    yield procs
    err = CounterMetricFamily(
        "vmsim_scrape_errors",
        "processes (or the limit) that could not be read, by reason",
        labels=["reason"],
    )
    for reason in REASONS:
        err.add_metric([reason], errors.counts[reason])
    yield err
    refreshed = CounterMetricFamily("vmsim_refreshes", "refreshes from /proc")
    refreshed.add_metric([], refreshes)
    yield refreshed
    took = GaugeMetricFamily(
        "vmsim_refresh_duration_seconds", "how long the last refresh from /proc took"
    )
    took.add_metric([], view.duration)
    yield took
    when = GaugeMetricFamily(
        "vmsim_refresh_timestamp_seconds", "when the last refresh ended (Unix time)"
    )
    when.add_metric([], view.timestamp)
    yield when


__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_TOP",
    "DEFAULT_WINDOW",
    "GROUP_BY",
    "ExportedProcess",
    "ExporterConfig",
    "GroupBy",
    "GroupStats",
    "View",
    "VmaCollector",
    "families",
    "vma_kinds",
]
