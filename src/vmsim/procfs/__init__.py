"""/proc as the model shows it, byte for byte as Linux prints it, one module per kernel file:

- :mod:`.task_mmu`: /proc/<pid>/maps, smaps, smaps_rollup and pagemap (fs/proc/task_mmu.c);
- :mod:`.base`: /proc/<pid>/ksm_stat and ksm_merging_pages (fs/proc/base.c);
- :mod:`.page`: /proc/kpageflags (fs/proc/page.c);
- :mod:`.meminfo`: /proc/meminfo (fs/proc/meminfo.c);
- :mod:`.vmstat`: /proc/vmstat (mm/vmstat.c).
"""

from vmsim.procfs.base import ksm_merging_pages_text, ksm_stat_text
from vmsim.procfs.meminfo import meminfo_text
from vmsim.procfs.page import kpageflags
from vmsim.procfs.task_mmu import (
    GATE_END,
    GATE_LINE,
    GATE_START,
    PM_FILE,
    PM_GUARD_REGION,
    PM_MMAP_EXCLUSIVE,
    PM_PFRAME_MASK,
    PM_PRESENT,
    PM_SOFT_DIRTY,
    PM_SWAP,
    PM_UFFD_WP,
    PSS_SHIFT,
    SMAPS_KB_FIELDS,
    MemSizeStats,
    header,
    maps_text,
    pagemap_entries,
    smaps_account,
    smaps_rollup_text,
    smaps_text,
    thp_eligible,
    vma_name,
)
from vmsim.procfs.vmstat import vmstat_text

__all__ = [
    "GATE_END",
    "GATE_LINE",
    "GATE_START",
    "PM_FILE",
    "PM_GUARD_REGION",
    "PM_MMAP_EXCLUSIVE",
    "PM_PFRAME_MASK",
    "PM_PRESENT",
    "PM_SOFT_DIRTY",
    "PM_SWAP",
    "PM_UFFD_WP",
    "PSS_SHIFT",
    "SMAPS_KB_FIELDS",
    "MemSizeStats",
    "header",
    "kpageflags",
    "ksm_merging_pages_text",
    "ksm_stat_text",
    "maps_text",
    "meminfo_text",
    "pagemap_entries",
    "smaps_account",
    "smaps_rollup_text",
    "smaps_text",
    "thp_eligible",
    "vma_name",
    "vmstat_text",
]
