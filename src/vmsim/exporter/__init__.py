"""``vmsim exporter``: per-process VMA counts for Prometheus, so an alert fires before a process
runs out of VMAs (``vm.max_map_count``).

- :mod:`~vmsim.exporter.procscan`: what is read from /proc (stat, maps line counts, cgroup),
  race-free against exits and PID reuse, errors counted by reason;
- :mod:`~vmsim.exporter.growth`: least-squares growth per process and the time to the limit;
- :mod:`~vmsim.exporter.collector`: refreshes at most every ``interval`` seconds, picks the
  ``top`` processes, classifies their VMAs, builds the metric families;
- :mod:`~vmsim.exporter.server`: the HTTP endpoint (``prometheus_client``).

The rules that alert on these metrics are ``contrib/prometheus/vmsim-rules.yml``.
"""

from __future__ import annotations

from vmsim.exporter.collector import (
    DEFAULT_INTERVAL,
    DEFAULT_TOP,
    DEFAULT_WINDOW,
    GROUP_BY,
    ExportedProcess,
    ExporterConfig,
    GroupBy,
    View,
    VmaCollector,
)
from vmsim.exporter.growth import History, least_squares_slope, seconds_to_limit
from vmsim.exporter.procscan import REASONS, ProcessId, ProcessSample, ScanErrors, scan
from vmsim.exporter.server import make_registry, render, serve

__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_TOP",
    "DEFAULT_WINDOW",
    "GROUP_BY",
    "REASONS",
    "ExportedProcess",
    "ExporterConfig",
    "GroupBy",
    "History",
    "ProcessId",
    "ProcessSample",
    "ScanErrors",
    "View",
    "VmaCollector",
    "least_squares_slope",
    "make_registry",
    "render",
    "scan",
    "seconds_to_limit",
    "serve",
]
