"""The OOM killer (mm/oom_kill.c): when reclaim cannot make room, kill the task whose death
frees the most memory.

A task is anything with the fields of ``OomTask`` (a ``vmsim.Process``); the machine
installs ``out_of_memory()`` over its process list as ``Kernel.oom_handler``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from vmsim.errors import KernelPanic
from vmsim.mm.internal import entry_pfn, present
from vmsim.phys.frames import PageFlag

if TYPE_CHECKING:
    from vmsim.mm.core import AddressSpace
    from vmsim.mm.kernel import Kernel

__all__ = ["OOM_SCORE_ADJ_MIN", "OomTask", "oom_badness", "out_of_memory"]

OOM_SCORE_ADJ_MIN = -1000


class OomTask(Protocol):
    """What the OOM killer reads and sets of a task (task_struct / signal_struct)."""

    mm: AddressSpace  # task->mm
    alive: bool  # not exited
    oom_score_adj: int  # /proc/<pid>/oom_score_adj: -1000 (never) .. 1000
    oom_killed: bool  # tsk_is_oom_victim(): SIGKILL sent by the OOM killer

    def exit(self) -> None: ...


def oom_badness(mem: Kernel, task: OomTask) -> int:
    """oom_badness(): pages the task would free (RSS, swap entries, page tables), moved by
    oom_score_adj in thousandths of RAM + swap; -1000 is never chosen."""
    if task.oom_score_adj <= OOM_SCORE_ADJ_MIN or not task.alive:
        return -(1 << 62)
    mm = task.mm
    rss = swapents = 0
    zero = mem.frames.zero_pfn
    if mm.pt_used:
        for m in mm.pt.iter_leaves(0, mm.cfg.task_size):
            if present(m.entry):
                pfn = entry_pfn(m.entry)
                if m.level > 1:  # a PMD-mapped THP or a hugetlb page
                    # get_mm_rss(): hugetlb pages are not in the RSS counters, nor is the
                    # huge zero page
                    if pfn != mem.thp.huge_zero_pfn and not mem.frames.flags(pfn) & PageFlag.HUGE:
                        rss += 1 << (9 * (m.level - 1))
                elif pfn != zero:
                    rss += 1
            else:
                swapents += 1
    total = mem.frames.total_pages + mem.swap.total
    return rss + swapents + mm.pt.table_pages + task.oom_score_adj * total // 1000


def out_of_memory(mem: Kernel, tasks: Sequence[OomTask]) -> bool:
    """out_of_memory(): kill the task with the highest oom_badness(); True if memory was
    freed now (the victim was not the one allocating, which dies on its way out)."""
    candidates = [t for t in tasks if t.alive and t.oom_score_adj > OOM_SCORE_ADJ_MIN]
    if not candidates:
        # select_bad_process() found nobody: out_of_memory() panics
        raise KernelPanic(
            "System is deadlocked on memory",
            "Out of memory and no killable processes...",
        )
    victim = max(candidates, key=lambda t: oom_badness(mem, t))
    mem.vmstat["oom_kill"] += 1
    victim.oom_killed = True
    if mem.task is victim.mm:
        return False
    victim.exit()
    return True
