"""The fast lane's driver: a replay's LaneRun rows through the compiled VMA engine.

:func:`run_rows` is what ``Replayer.feed`` does with a :class:`~.runs.LaneRun`: for each row
(one mprotect or munmap line) it does what ``feed``'s common case and ``Replayer.syscall``
do for that call, in the same order, on the process's VMAs in arrays
(:class:`~.vmas.VmaArrays`), with one compiled call per line (``_vmas.lane_mprotect`` /
``lane_munmap``: the handler's RELRO question, the written watch before and after, the
model's call, the cause), and the report's figures kept for the whole run at once
(:func:`~.book.book`). A row it does not take is handed back, as the ``Syscall`` the Python
reader gives, to ``feed``, which replays it the Python way: a row whose process is not known
yet, while calls are held back (``Replayer._held``), with a negative argument, in the
written replay (``assume_written``), a RELRO mprotect the loader may have to look at
(``Replayer._anchor``), or a call the engine declines (BAIL: page tables, hugetlb, ...,
after which the process stays with the Python model).

The arrays of a process are its model while the lane holds them: ``Replayer._lane`` maps
the process to them, and ``Replayer._lane_release`` writes them back (``VmaArrays.to_mm``)
before any Python code looks at that process's VMAs. The machine-wide numbers (committed
pages, map_count_needed) are written back after each run and before every row handed back.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from vmsim.fastlane import _vmas as k
from vmsim.fastlane.book import CallLog, book
from vmsim.fastlane.runs import LaneRow, LaneRun
from vmsim.fastlane.scan import CALLS
from vmsim.fastlane.vmas import VmaArrays
from vmsim.trace.events import Syscall
from vmsim.trace.replay import _NO_STACK

if TYPE_CHECKING:
    from vmsim.process import Process
    from vmsim.trace.replay import Replayer

__all__ = ["LaneState", "release", "run_rows"]

_MPROTECT = CALLS.index("mprotect")
_MUNMAP = CALLS.index("munmap")
_CAUSES = list(k.CAUSE_NAMES)
_SLACK = 2  # Replayer.SNAPSHOT_SLACK: mprotect and munmap
_TAINT_ROOM = 2 * 300  # WrittenWatch.TAINT_MAX (256) ranges and the one that passes it


class LaneState:
    """What the lane holds for one process: its VMAs, and its written watch's taint."""

    __slots__ = ("arrays", "st", "taint", "taint_list")

    def __init__(self, arrays: VmaArrays, taint_list: list[tuple[int, int]] | None) -> None:
        self.arrays = arrays
        self.st = np.zeros(k.NST, np.int64)
        self.taint = np.zeros(_TAINT_ROOM, np.int64)
        self.taint_list = taint_list
        if taint_list:
            n = min(len(taint_list), _TAINT_ROOM // 2)
            self.taint[: 2 * n] = np.array(taint_list[:n], np.int64).reshape(-1)
            self.st[k.S_NTAINT] = n


def release(r: Replayer, p: Process) -> None:
    """Give ``p``'s VMAs back to the Python model (the lane no longer holds them)."""
    state = r._lane.pop(p)
    state.arrays.to_mm(p.mm)


def _state(r: Replayer, p: Process) -> LaneState:
    state = r._lane.get(p)
    if state is None:
        ww = r._watch
        taint = ww._taint_of(p) if ww is not None else None
        state = r._lane[p] = LaneState(VmaArrays.from_mm(p.mm), taint)
    else:
        state.arrays.refresh_globals(p.mm)
    return state


def run_rows(r: Replayer, run: LaneRun) -> Iterator[Syscall]:
    """Replay the rows of ``run`` the lane takes; yield the others, in order, as Syscalls for
    ``Replayer.feed`` to replay (see the module text)."""
    lo, hi = run.lo, run.hi
    if r.files or r.assume_written:
        for i in range(lo, hi):
            yield run.syscall(i)
        return
    blk = run.block
    pids = blk.pid[lo:hi].tolist()
    calls = blk.call[lo:hi].tolist()
    args = blk.args[lo:hi].view(np.int64)
    a0 = args[:, 0].tolist()
    a1 = args[:, 1].tolist()
    a2 = args[:, 2].tolist()
    neg = blk.argneg[lo:hi].tolist()
    rets = blk.ret[lo:hi].tolist()
    unknown = blk.ret_unknown[lo:hi].tolist()
    errnos = blk.errno[lo:hi].tolist()
    linenos = blk.lineno[lo:hi].tolist()
    default_pid = run.default_pid
    rep = r.report
    tasks = r.tasks
    limit = r.machine.cfg.max_map_count
    counts_only = r.counts_only
    # the log of the rows taken since the last flush
    log_line: list[int] = []
    log_pid: list[int] = []
    log_before: list[int] = []
    log_after: list[int] = []
    log_cause: list[int] = []

    def flush() -> None:
        if log_line:
            n = len(log_line)
            book(
                r,
                CallLog(
                    lineno=np.array(log_line, np.int64),
                    pid=np.array(log_pid, np.int64),
                    time=np.full(n, math.nan),  # rows in runs carry no timestamp
                    before=np.array(log_before, np.int64),
                    after=np.array(log_after, np.int64),
                    site=np.zeros(n, np.int32),
                    cause=np.array(log_cause, np.int32),
                ),
                [_NO_STACK],
                _CAUSES,
            )
            log_line.clear()
            log_pid.clear()
            log_before.clear()
            log_after.clear()
            log_cause.clear()

    cur: Process | None = None
    state: LaneState | None = None

    def hand_back() -> None:
        flush()
        if cur is not None and state is not None:
            state.arrays.store_globals(cur.mm)

    for j in range(hi - lo):
        i = lo + j
        pid = pids[j] if pids[j] >= 0 else default_pid
        p = tasks.get(pid)
        call = calls[j]
        mask = 7 if call == _MPROTECT else 3
        if p is None or r._held or neg[j] & mask or p in r._lane_off:
            hand_back()
            cur = state = None
            yield run.syscall(i)
            continue
        if p is not cur:
            if cur is not None and state is not None:
                state.arrays.store_globals(cur.mm)
            state = _state(r, p)
            cur = p
        assert state is not None
        arr = state.arrays
        st = state.st
        marker: LaneRow | None = None
        if not r._crossed and r._snaps_left > 0 and int(arr.mm[k.M_COUNT]) + _SLACK > limit:
            # Replayer.feed: a copy of the replay before a call near the limit
            flush()
            arr.store_globals(p.mm)
            if linenos[j] > rep.lines:
                rep.lines = linenos[j]
            marker = LaneRow(run, i)
            r._snapshot_before(marker)
        r._last = p
        ww = r._watch
        watching = ww is not None and not ww.sensitive
        arr._reserve()
        if call == _MPROTECT:
            anchoring = (
                r.use_recorded
                and bool(p.images)
                and not unknown[j]
                and rets[j] == 0
                and errnos[j] == 0
            )
            code = k.lane_mprotect(
                arr.vm, arr.ix, arr.mm, arr.info, state.taint, st, a0[j], a1[j], a2[j],
                watching, anchoring, ww.TAINT_MAX if ww is not None else 0,
            )  # fmt: skip
        else:
            code = k.lane_munmap(arr.vm, arr.ix, arr.mm, arr.info, st, a0[j], a1[j])
        if code == k.BAIL:
            if not st[k.S_ANCHOR]:
                r._lane_off.add(p)  # the engine does not model this process now
            hand_back()
            release(r, p)
            cur = state = None
            yield run.syscall(i)
            continue
        if watching:
            assert ww is not None
            tl = state.taint_list
            n = int(st[k.S_NTAINT])
            if tl is not None and n != len(tl):
                t = state.taint
                tl.extend((int(t[2 * x]), int(t[2 * x + 1])) for x in range(len(tl), n))
            if st[k.S_SENSITIVE]:
                ww.sensitive = True
        before = int(st[k.S_BEFORE])
        after = int(st[k.S_AFTER])
        if not counts_only and (code or errnos[j] or unknown[j] or rets[j] != 0):
            err = arr.error(code) if code else None
            r._compare(run.syscall(i), -1 if code else 0, err, before)
        log_line.append(linenos[j])
        log_pid.append(-1 if pid is None else pid)
        log_before.append(before)
        log_after.append(after)
        log_cause.append(int(st[k.S_CAUSE]))
        if not r._crossed and int(arr.mm[k.M_NEEDED]) > limit:
            flush()
            arr.store_globals(p.mm)
            r._crossing(marker if marker is not None else LaneRow(run, i))
    hand_back()
