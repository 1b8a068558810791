"""The fast lane's report bookkeeping (vmsim.fastlane.book) against Replayer.syscall's own.

Each trace is replayed once as ``vmsim replay`` does it, while a wrapper around
``Replayer.syscall`` writes a CallLog row for every call with a handler (its line, task,
time, map_count before and after, call site and cause, computed as syscall() computes them).
The log then goes through ``book`` on a fresh report, and every field syscall() keeps must
come out the same: calls, peak (value, line, pid), deltas, sites and causes (with their
order), the series (with its halvings: a small, odd SERIES_MAX), the tick and the stride.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vmsim.fastlane.book import CallLog, book
from vmsim.trace import sniff_and_read
from vmsim.trace.events import Syscall
from vmsim.trace.replay import _NO_STACK, UNLIMITED, Replayer, ReplayReport

TRACES = Path(__file__).parent.parent / "fixtures" / "traces"
PROGRAMS = Path(__file__).parent.parent / "fixtures" / "programs"
CASES = [
    "python.strace.gz",
    "arenas.strace.gz",
    "threads.strace",
    "fill_map_count.exec.strace.gz",
    "corpus/gcc.k.strace.gz",
    "corpus/initdb.strace.gz",
]


class _Logged(Replayer):
    """A Replayer that logs, per handled call, what syscall()'s bookkeeping reads."""

    rows: list[tuple[int, int, float, int, int, str, str]]

    def syscall(self, ev: Syscall) -> None:
        if ev.name not in self._handlers:
            super().syscall(ev)
            return
        p = self.tasks.get(ev.pid)
        if p is None:
            p = self.process_for(ev.pid, ev)
        table = p.mm.tree._vmas
        before = len(table)
        problems = len(self.report.problems)
        super().syscall(ev)
        assert len(self.report.problems) == problems, "a call the model could not replay"
        after = len(table)
        site = cause = ""
        if after > before and not self.counts_only:
            site = self._site(ev.stack) if ev.stack else _NO_STACK
            cause = self._cause(p, ev, None)
        t = math.nan if ev.time is None else ev.time
        pid = -1 if ev.pid is None else ev.pid
        self.rows.append((ev.lineno, pid, t, before, after, site, cause))


def _codes(names: list[str]) -> tuple[list[str], np.ndarray]:
    table: dict[str, int] = {}
    codes = np.array([table.setdefault(n, len(table)) for n in names], np.int32)
    return list(table), codes


def _log(rows: list[tuple[int, int, float, int, int, str, str]]) -> tuple[CallLog, Any, Any]:
    sites, site = _codes([r[5] for r in rows])
    causes, cause = _codes([r[6] for r in rows])
    log = CallLog(
        lineno=np.array([r[0] for r in rows], np.int64),
        pid=np.array([r[1] for r in rows], np.int64),
        time=np.array([r[2] for r in rows], np.float64),
        before=np.array([r[3] for r in rows], np.int64),
        after=np.array([r[4] for r in rows], np.int64),
        site=site,
        cause=cause,
    )
    return log, sites, causes


def _fields(r: Replayer) -> dict[str, Any]:
    rep: ReplayReport = r.report
    return {
        "calls": rep.calls,
        "peak": (rep.peak_map_count, rep.peak_line, rep.peak_pid),
        "deltas": list(rep.deltas.items()),
        "sites": list(rep.vmas_by_site.items()),
        "causes": list(rep.vmas_by_cause.items()),
        "series": rep.series,
        "tick": r._tick,
        "stride": r._stride,
    }


def _twin(name: str, *, series_max: int, every: int, **options: Any) -> None:
    path = TRACES / name
    cls = type("Logged", (_Logged,), {"SERIES_MAX": series_max})
    a = cls(series_every=every, cwd=PROGRAMS, **options)
    a.rows = []
    a.feed(sniff_and_read(path))
    assert a.rows, "no handled call in the trace"
    b = cls(series_every=every, cwd=PROGRAMS, **options)
    log, sites, causes = _log(a.rows)
    # the log in a few runs, as the lane hands them over between calls it does not take
    cuts = sorted({0, len(a.rows) // 3, len(a.rows) // 2, len(a.rows) - 1, len(a.rows)})
    for lo, hi in itertools.pairwise(cuts):
        part = CallLog(*(getattr(log, f)[lo:hi] for f in CallLog.__dataclass_fields__))
        book(b, part, sites, causes)
    assert _fields(b) == _fields(a)
    assert b.report.lines == max(row[0] for row in a.rows)


@pytest.mark.parametrize("name", CASES)
def test_book_is_syscalls_bookkeeping(name: str) -> None:
    _twin(name, series_max=Replayer.SERIES_MAX, every=1, track_deltas=True)


@pytest.mark.parametrize("name", CASES)
def test_book_halves_the_series_as_syscall_does(name: str) -> None:
    _twin(name, series_max=63, every=3)


@pytest.mark.parametrize("name", ["fill_map_count.exec.strace.gz", "arenas.strace.gz"])
def test_book_in_a_counts_only_replay(name: str) -> None:
    _twin(
        name,
        series_max=64,
        every=1,
        counts_only=True,
        track_deltas=True,
        max_map_count=UNLIMITED,
    )


def test_book_refuses_a_per_file_trace() -> None:
    r = Replayer(files={1: "t.1"})
    log, sites, causes = _log([(1, 1, math.nan, 0, 1, _NO_STACK, "x")])
    with pytest.raises(ValueError, match="-ff"):
        book(r, log, sites, causes)
