"""/proc/<pid>/ksm_stat and ksm_merging_pages (fs/proc/base.c), read from ``vmsim.mm.ksm``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vmsim.mm.core import AddressSpace


def ksm_stat_text(mm: AddressSpace) -> str:
    """/proc/PID/ksm_stat (proc_pid_ksm_stat() in fs/proc/base.c; ``vmsim.mm.ksm``)."""
    ksm = mm.mem.ksm
    assert ksm is not None
    return ksm.ksm_stat(mm)


def ksm_merging_pages_text(mm: AddressSpace) -> str:
    """/proc/PID/ksm_merging_pages (proc_pid_ksm_merging_pages())."""
    ksm = mm.mem.ksm
    assert ksm is not None
    return ksm.merging_pages_text(mm)


__all__ = ["ksm_merging_pages_text", "ksm_stat_text"]
