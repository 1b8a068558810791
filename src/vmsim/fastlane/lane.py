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
    from vmsim.mm.core import AddressSpace
    from vmsim.process import Process
    from vmsim.trace.replay import Replayer

__all__ = ["DRIVER", "LaneState", "release", "run_rows"]

_MPROTECT = CALLS.index("mprotect")
_BRK = CALLS.index("brk")
_U64 = (1 << 64) - 1
_CAUSES = list(k.CAUSE_NAMES)
# a process's VMAs go into arrays for a run of at least _MIN_ROWS rows and a quarter of its
# VMA count (each VMA costs about a quarter of what a row saves, taken in and given back)
_MIN_ROWS = 64
_ROW_GAIN = 4
_TAINT_ROOM = 2 * 300
ROWS_TAKEN = [
    0
]  # rows replayed by the lane in this process, for tests and benchmarks  # WrittenWatch.TAINT_MAX (256) ranges and the one that passes it


class LaneState:
    """What the lane holds for one process: its VMAs, and its written watch's taint."""

    __slots__ = ("arrays", "st", "taint", "taint_list")

    def __init__(self, arrays: VmaArrays, taint_list: list[tuple[int, int]] | None) -> None:
        self.arrays = arrays
        self.st = np.zeros(k.NST_STRETCH, np.int64)
        self.taint = np.zeros(_TAINT_ROOM, np.int64)
        self.taint_list = taint_list
        if taint_list:
            n = min(len(taint_list), _TAINT_ROOM // 2)
            self.taint[: 2 * n] = np.array(taint_list[:n], np.int64).reshape(-1)
            self.st[k.S_NTAINT] = n

    def give_back(self, r: Replayer, p: Process) -> None:
        """``p``'s VMAs back to the Python model (Replayer._lane_release)."""
        del r._lane[p]
        self.arrays.to_mm(p.mm)


def release(r: Replayer, p: Process) -> None:
    """Give ``p``'s VMAs back to the Python model (the lane no longer holds them)."""
    r._lane[p].give_back(r, p)


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
    pids = blk.pid[lo:hi]
    if run.default_pid is not None:
        pids = np.where(pids < 0, run.default_pid, pids)
    calls = blk.call[lo:hi].astype(np.int64)
    args = blk.args[lo:hi].view(np.int64)
    a0 = np.ascontiguousarray(args[:, 0])
    a1 = np.ascontiguousarray(args[:, 1])
    a2 = np.ascontiguousarray(args[:, 2])
    neg = blk.argneg[lo:hi].astype(np.int64)
    rets = blk.ret[lo:hi]
    unknown = blk.ret_unknown[lo:hi].astype(np.int64)
    errnos = blk.errno[lo:hi].astype(np.int64)
    linenos = blk.lineno[lo:hi]
    times = blk.time[lo:hi]
    n = hi - lo
    out_before = np.zeros(n, np.int64)
    out_after = np.zeros(n, np.int64)
    out_cause = np.zeros(n, np.int64)
    rep = r.report
    tasks = r.tasks
    limit = r.machine.cfg.max_map_count
    counts_only = r.counts_only
    done = 0  # rows [0, done) are replayed or handed back
    logged = 0  # rows [logged, done) replayed by the lane and not yet booked
    booked: list[tuple[int, int]] = []  # spans of rows replayed by the lane, to book

    def flush() -> None:
        """Book the spans in ``booked`` (the callers add the rows up to ``done`` first)."""
        if not booked:
            return
        idx = np.concatenate([np.arange(a, b) for a, b in booked])
        booked.clear()
        if not len(idx):
            return
        book(
            r,
            CallLog(
                lineno=linenos[idx],
                pid=pids[idx],
                time=times[idx],
                before=out_before[idx],
                after=out_after[idx],
                site=np.zeros(len(idx), np.int32),
                cause=out_cause[idx].astype(np.int32),
            ),
            [_NO_STACK],
            _CAUSES,
        )

    rows = _Rows(a0, rets, unknown, errnos, out_before, out_after, out_cause)
    cur: Process | None = None
    state: LaneState | None = None
    snapped: LaneRow | None = None  # the copy of the replay made before row ``done``
    while done < n:
        pid = int(pids[done])
        p = tasks.get(pid if pid >= 0 else None)
        if p is None or r._held or p in r._lane_off:
            booked.append((logged, done))
            flush()
            if cur is not None and state is not None:
                state.arrays.store_globals(cur.mm)
            cur = state = None
            yield run.syscall(lo + done)
            done += 1
            logged = done
            continue
        if p is not cur:
            if p not in r._lane and (n - done) * _ROW_GAIN < len(p.mm.tree) + _MIN_ROWS:
                # taking the VMAs into arrays, and back later, would cost more than the
                # Python replay of the rest of this run
                booked.append((logged, done))
                flush()
                if cur is not None and state is not None:
                    state.arrays.store_globals(cur.mm)
                cur = state = None
                while done < n:
                    yield run.syscall(lo + done)
                    done += 1
                logged = done
                break
            if cur is not None and state is not None:
                state.arrays.store_globals(cur.mm)
            state = _state(r, p)
            cur = p
        assert state is not None
        arr = state.arrays
        st = state.st
        ww = r._watch
        watching = ww is not None and not ww.sensitive
        ok_pids = np.array([-1 if t is None else t for t, q in tasks.items() if q is p], np.int64)
        arr._reserve()
        r._last = p
        stop_at = k.lane_stretch(
            arr.vm, arr.ix, arr.mm, arr.info, state.taint, st, ok_pids, pids, calls, a0, a1,
            a2, neg, rets, unknown, errnos, done, n, _MPROTECT, _BRK, watching,
            r.use_recorded and bool(p.images), ww.TAINT_MAX if ww is not None else 0,
            not r._crossed and r._snaps_left > 0, snapped is not None, not r._crossed,
            counts_only, limit, r.SNAPSHOT_SLACK, out_before, out_after, out_cause,
        )  # fmt: skip
        stop = int(st[k.S_STOP])
        if watching:
            assert ww is not None
            _sync_taint(state)
            if st[k.S_SENSITIVE]:
                ww.sensitive = True
        if stop_at > done:
            ROWS_TAKEN[0] += stop_at - done
            snapped_row = snapped
            snapped = None
            done = stop_at
            if stop & (k.R_COMPARE | k.R_CROSS):
                j = done - 1  # the row that stopped the stretch, replayed
                if stop & k.R_COMPARE:
                    code = int(st[k.S_CODE])
                    err = arr.error(code) if code else None
                    r._compare(run.syscall(lo + j), -1 if code else 0, err, int(out_before[j]))
                if stop & k.R_CROSS:
                    booked.append((logged, done))
                    logged = done
                    flush()
                    arr.store_globals(p.mm)
                    mark = (
                        snapped_row if snapped_row is not None and snapped_row.i == lo + j else None
                    )
                    r._crossing(mark if mark is not None else LaneRow(run, lo + j))
                continue
        if stop == k.R_END:
            break
        if stop & k.R_SNAP:
            # Replayer.feed: a copy of the replay before a call near the limit
            booked.append((logged, done))
            logged = done
            flush()
            arr.store_globals(p.mm)
            if int(linenos[done]) > rep.lines:
                rep.lines = int(linenos[done])
            snapped = LaneRow(run, lo + done)
            r._snapshot_before(snapped)
            continue
        if stop & (k.R_PID | k.R_ROOM):
            continue  # the loop above finds the row's process, or makes room
        if stop & k.R_CALL and _brk_row(r, p, state, run, lo + done, done, locals_=rows):
            ROWS_TAKEN[0] += 1
            if not r._crossed and int(arr.mm[k.M_NEEDED]) > limit:
                done += 1
                booked.append((logged, done))
                logged = done
                flush()
                arr.store_globals(p.mm)
                mark = snapped if snapped is not None and snapped.i == lo + done - 1 else None
                r._crossing(mark if mark is not None else LaneRow(run, lo + done - 1))
                snapped = None
                continue
            snapped = None
            done += 1
            continue
        # R_NEG, R_BAIL: the Python replay takes this row
        if stop & k.R_BAIL and not st[k.S_ANCHOR]:
            r._lane_off.add(p)  # the engine does not model this process now
        booked.append((logged, done))
        flush()
        state.arrays.store_globals(p.mm)
        if stop & k.R_BAIL:
            release(r, p)
        cur = state = None
        yield run.syscall(lo + done)
        done += 1
        logged = done
    booked.append((logged, done))
    flush()
    if cur is not None and state is not None:
        state.arrays.store_globals(cur.mm)


class _Rows:
    """The columns of a run that a brk row reads and writes."""

    __slots__ = ("a0", "after", "before", "cause", "errnos", "rets", "unknown")

    def __init__(self, *cols: np.ndarray) -> None:
        (self.a0, self.rets, self.unknown, self.errnos, self.before, self.after, self.cause) = cols


def _brk_row(r: Replayer, p: Process, state: LaneState, run: LaneRun, i: int, j: int,
             locals_: _Rows) -> bool:  # fmt: skip
    """Row ``j`` (run row ``i``), a brk call, as Replayer._brk and syscall() replay it; False
    (nothing done) where the lane leaves it to the Python replay."""
    mm = p.mm
    cfg = mm.cfg
    addr = int(locals_.a0[j]) & _U64
    unknown = bool(locals_.unknown[j])
    ret = None if unknown else int(locals_.rets[j])
    if (
        id(p) in r._heap_estimated
        or cfg.rlimit_as is not None
        or cfg.rlimit_data is not None
        or mm.def_flags
        or _merge_any(mm)
        or (
            addr == 0
            and ret is not None
            and r.use_recorded
            and ret != mm.brk
            and mm.brk == mm.start_brk
        )  # the first brk(NULL) shows where the heap starts: _brk() moves it there
    ):
        return False
    arr = state.arrays
    st = state.st
    ww = r._watch
    watching = ww is not None and not ww.sensitive
    out = k.lane_brk(
        arr.vm, arr.ix, arr.mm, arr.info, state.taint, st, int(locals_.a0[j]),
        _s64(mm.brk), _s64(mm.start_brk), watching, ww.TAINT_MAX if ww is not None else 0,
    )  # fmt: skip
    if st[k.S_CODE]:
        return False
    result = int(out) & _U64
    mm.brk = result
    if watching:
        assert ww is not None
        _sync_taint(state)
        if st[k.S_SENSITIVE]:
            ww.sensitive = True
    before = int(st[k.S_BEFORE])
    locals_.before[j] = before
    locals_.after[j] = int(st[k.S_AFTER])
    locals_.cause[j] = int(st[k.S_CAUSE])
    if not r.counts_only and (locals_.errnos[j] or unknown or result != ret):
        r._compare(run.syscall(i), result, None, before)
    return True


def _merge_any(mm: AddressSpace) -> bool:
    """prctl(PR_SET_MEMORY_MERGE): new VMAs are born VM_MERGEABLE (ksm_vma_flags())."""
    ksm = mm.mem.ksm
    if ksm is None:
        return False
    st = ksm.per_mm.get(mm.serial)
    return st is not None and bool(st.merge_any)


def _s64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _sync_taint(state: LaneState) -> None:
    """The taint ranges the compiled watch added, into the watch's own list."""
    tl = state.taint_list
    n = int(state.st[k.S_NTAINT])
    if tl is not None and n != len(tl):
        t = state.taint
        tl.extend((int(t[2 * x]), int(t[2 * x + 1])) for x in range(len(tl), n))


class _Driver:
    """The lane as the replay loop sees it (vmsim.fastlane.runs.LaneDriver)."""

    def run_rows(self, r: Replayer, run: LaneRun) -> Iterator[Syscall]:
        return run_rows(r, run)


DRIVER = _Driver()
