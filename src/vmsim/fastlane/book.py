"""The replay report's bookkeeping for a run of calls the fast lane replayed.

``vmsim.trace.replay.Replayer.syscall`` does two things per call after the model has run it:
it compares the model's result with the recorded one (``_compare``: failures, divergences),
and it keeps the report's running figures: ``calls``, ``lines``, the per-call ``deltas`` of
map_count, ``peak_map_count`` (its line and pid), ``vmas_by_site`` and ``vmas_by_cause``, and
the map_count ``series`` (every call that changes map_count is a point, plus every
``series_every``-th call; the series is halved, and its stride doubled, when it reaches
``SERIES_MAX`` points). :func:`book` does the second part for a whole run of calls at once,
from a :class:`CallLog` (one row per call, in trace order), statement for statement as
``syscall`` does it; the lane's driver calls ``_compare`` itself for the rows that need it.

The loop over the rows is compiled (numba); what it leaves to Python is small: the series
points that survive the stride, the deltas of the calls that changed map_count, and one
total per site and cause, added to the report's Counters in the order of each key's first
row (``Counter.most_common`` keeps that order between equal counts, and the report prints
in it). ``tests/unit/test_fastlane_book.py`` replays every fixture trace twice, once with
``syscall``'s own bookkeeping and once with this, and compares the reports field by field.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from numba import njit

if TYPE_CHECKING:
    from vmsim.trace.replay import Replayer

__all__ = ["CallLog", "book"]

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
F64 = npt.NDArray[np.float64]

# the running state the compiled loop reads and writes back, as one int64 array
_CALLS, _TICK, _STRIDE, _PEAK, _PEAK_LINE, _PEAK_PID, _SLEN, _LINES = range(8)
_STATE = 8


@dataclass
class CallLog:
    """One row per call, in trace order: its line, task (-1: None), time (NaN: None),
    map_count before and after the model ran it, and the codes of its call site and of its
    cause (indexes into the name lists given to :func:`book`; read only for calls that
    added VMAs)."""

    lineno: I64
    pid: I64
    time: F64
    before: I64
    after: I64
    site: I32
    cause: I32

    def __len__(self) -> int:
        return len(self.lineno)


@njit(cache=True, nogil=True)
def _book(  # pragma: no cover - compiled
    lineno: I64,
    pid: I64,
    before: I64,
    after: I64,
    site: I32,
    cause: I32,
    counts_only: bool,
    every: int,
    series_max: int,
    st: I64,
    site_sum: I64,
    site_first: I64,
    cause_sum: I64,
    cause_first: I64,
    kept: I64,
) -> int:
    """Replayer.syscall's bookkeeping over the rows. The series is followed as indexes in
    ``kept`` (its first ``st[_SLEN]`` entries on the way in: the points already in the
    report, 0 up; a row ``i`` that becomes a point is ``base + i``); returns how many
    halvings there were. ``st`` is the state in and out."""
    calls = st[_CALLS]
    tick = st[_TICK]
    stride = st[_STRIDE]
    peak = st[_PEAK]
    peak_line = st[_PEAK_LINE]
    peak_pid = st[_PEAK_PID]
    slen = st[_SLEN]
    lines = st[_LINES]
    base = slen
    halvings = 0
    for i in range(len(lineno)):
        line = lineno[i]
        if line > lines:
            lines = line
        calls += 1
        b = before[i]
        a = after[i]
        if counts_only:
            if a != b and a > peak:
                peak = a
                peak_line = line
                peak_pid = pid[i]
            continue
        if a != b:
            d = a - b
            if d > 0:
                s = site[i]
                site_sum[s] += d
                if site_first[s] < 0:
                    site_first[s] = i
                c = cause[i]
                cause_sum[c] += d
                if cause_first[c] < 0:
                    cause_first[c] = i
                if a > peak:
                    peak = a
                    peak_line = line
                    peak_pid = pid[i]
        elif calls % every:
            continue
        tick += 1
        if tick % stride:
            continue
        kept[slen] = base + i
        slen += 1
        if slen >= series_max:
            half = (slen + 1) >> 1  # series[::2]
            for j in range(half):
                kept[j] = kept[2 * j]
            slen = half
            stride *= 2
            halvings += 1
    st[_CALLS] = calls
    st[_TICK] = tick
    st[_STRIDE] = stride
    st[_PEAK] = peak
    st[_PEAK_LINE] = peak_line
    st[_PEAK_PID] = peak_pid
    st[_SLEN] = slen
    st[_LINES] = lines
    return halvings


def _add_in_order(counter: Any, names: list[str], sums: I64, first: I64) -> None:
    """counter[name] += sum for each code that occurred, in the order of its first row."""
    used = np.flatnonzero(first >= 0)
    for code in used[np.argsort(first[used], kind="stable")].tolist():
        counter[names[code]] += int(sums[code])


def book(r: Replayer, log: CallLog, sites: list[str], causes: list[str]) -> None:
    """What ``r.syscall`` does to ``r.report`` after each call's handler and comparison, for
    every row of ``log``; and what ``r.feed`` does to ``report.lines`` for each. The lane
    takes no ``-ff`` trace (``r.files`` empty): a delta's file is None."""
    if r.files:
        raise ValueError("the fast lane's bookkeeping takes no -ff trace (deltas by file)")
    n = len(log)
    if n == 0:
        return
    rep = r.report
    st = np.empty(_STATE, np.int64)
    st[_CALLS] = rep.calls
    st[_TICK] = r._tick
    st[_STRIDE] = r._stride
    st[_PEAK] = rep.peak_map_count
    st[_PEAK_LINE] = rep.peak_line
    st[_PEAK_PID] = -1 if rep.peak_pid is None else rep.peak_pid
    st[_SLEN] = len(rep.series)
    st[_LINES] = rep.lines
    site_sum = np.zeros(max(1, len(sites)), np.int64)
    site_first = np.full(max(1, len(sites)), -1, np.int64)
    cause_sum = np.zeros(max(1, len(causes)), np.int64)
    cause_first = np.full(max(1, len(causes)), -1, np.int64)
    old = len(rep.series)
    kept = np.empty(max(old, r.SERIES_MAX) + 1, np.int64)
    kept[:old] = np.arange(old)
    halvings = _book(
        log.lineno,
        log.pid,
        log.before,
        log.after,
        log.site,
        log.cause,
        r.counts_only,
        r.series_every,
        r.SERIES_MAX,
        st,
        site_sum,
        site_first,
        cause_sum,
        cause_first,
        kept,
    )
    peak_changed = int(st[_PEAK]) != rep.peak_map_count
    rep.calls = int(st[_CALLS])
    rep.lines = int(st[_LINES])
    if peak_changed:
        rep.peak_map_count = int(st[_PEAK])
        rep.peak_line = int(st[_PEAK_LINE])
        rep.peak_pid = None if st[_PEAK_PID] < 0 else int(st[_PEAK_PID])
    if r.track_deltas:
        changed = np.flatnonzero(log.after != log.before)
        delta = (log.after[changed] - log.before[changed]).tolist()
        keys = zip(itertools.repeat(None), log.lineno[changed].tolist())
        rep.deltas.update(zip(keys, delta, strict=True))
    if r.counts_only:
        return
    _add_in_order(rep.vmas_by_site, sites, site_sum, site_first)
    _add_in_order(rep.vmas_by_cause, causes, cause_sum, cause_first)
    r._tick = int(st[_TICK])
    # the series: the points already there that survive, then the rows that became points
    # and survive (a halving keeps every other point: series[::2], as syscall() does)
    idx = kept[: int(st[_SLEN])]
    rows = idx[idx >= old] - old
    times = log.time[rows]
    nan = np.isnan(times)
    if nan.all():
        when: list[float | None] = [None] * len(rows)
    elif nan.any():
        when = [None if math.isnan(t) else t for t in times.tolist()]
    else:
        when = times.tolist()
    new = list(zip(log.lineno[rows].tolist(), when, log.after[rows].tolist(), strict=True))
    if halvings:
        series = rep.series
        rep.series = [series[i] for i in idx[idx < old].tolist()] + new
    else:
        rep.series.extend(new)
    r._stride = int(st[_STRIDE])
