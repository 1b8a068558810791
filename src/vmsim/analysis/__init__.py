"""Explain real address spaces: what each VMA of a /proc/PID/maps snapshot is for, and how much
room is left under vm.max_map_count.

- :mod:`~vmsim.analysis.classify`: the kind of every VMA (thread stack and guard, arena heap,
  library segment, ...) with the rule that decided it;
- :mod:`~vmsim.analysis.report`: counts per kind and per file, headroom, what more fits;
- :mod:`~vmsim.analysis.sources`: maps/smaps files, stdin, JVM hs_err files, live processes,
  and the scan of every process (``vmsim top``).

The library never prints; :mod:`vmsim.cli.maps` and :mod:`vmsim.cli.top` render.
"""

from __future__ import annotations

from vmsim.analysis.classify import KIND_TITLES, ClassifiedVma, Kind, classify
from vmsim.analysis.report import (
    FileSummary,
    KindSummary,
    Level,
    MapsReport,
    Projection,
    Verdict,
    build_report,
    verdict,
)
from vmsim.analysis.sources import (
    ProcessVmas,
    Snapshot,
    SnapshotInputError,
    analyze,
    count_vmas,
    parse_text,
    read_pid,
    read_snapshot,
    scan_processes,
    system_max_map_count,
)

__all__ = [
    "KIND_TITLES",
    "ClassifiedVma",
    "FileSummary",
    "Kind",
    "KindSummary",
    "Level",
    "MapsReport",
    "ProcessVmas",
    "Projection",
    "Snapshot",
    "SnapshotInputError",
    "Verdict",
    "analyze",
    "build_report",
    "classify",
    "count_vmas",
    "parse_text",
    "read_pid",
    "read_snapshot",
    "scan_processes",
    "system_max_map_count",
    "verdict",
]
