"""Event counters (mm/vmstat.c: vm_event_states, and the per-task fault counters).

``FaultStats`` counts faults and translations of one address space or of the whole machine;
``VMSTAT_EVENTS`` are the /proc/vmstat events kept in ``Kernel.vmstat``; ``VMSTAT_ORDER`` is
the order of the lines of /proc/vmstat the model shows (``vmsim.procfs.vmstat_text``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = [
    "COMPACT_VMSTAT_EVENTS",
    "THP_VMSTAT_EVENTS",
    "UNEVICTABLE_VMSTAT_EVENTS",
    "VMSTAT_EVENTS",
    "VMSTAT_ORDER",
    "FaultStats",
]


@dataclass(slots=True)
class FaultStats:
    """Event counters of one address space, or of the whole machine (vmstat names)."""

    pgfault: int = 0  # every page fault handled (minor + major)
    pgmajfault: int = 0  # faults that had to read a file page from its backing store
    zero_page_maps: int = 0  # read faults answered with the shared zero page
    anon_faults: int = 0  # write faults that allocated a fresh anonymous page
    cow_faults: int = 0  # write faults that copied a page (wp_page_copy / do_cow_fault)
    cow_reuse: int = 0  # write faults on a read-only anonymous page mapped once: no copy
    file_faults: int = 0  # faults that mapped a page-cache page
    fault_around: int = 0  # extra page-cache pages mapped around a read fault
    spurious_faults: int = 0  # TLB entry stricter than the page tables: re-walked
    tlb_l1_hits: int = 0  # translations answered by an L1 TLB
    tlb_stlb_hits: int = 0  # ... by the STLB
    tlb_misses: int = 0  # ... by a page walk
    walks: int = 0  # page walks (TLB misses)
    walk_refs: int = 0  # memory references made by those walks
    pwc_hits: int = 0  # walks that started below the top thanks to a paging-structure cache
    cow_ksm: int = 0  # writes that copied a KSM page

    @property
    def translations(self) -> int:
        """User accesses translated (one per page touched)."""
        return self.tlb_l1_hits + self.tlb_stlb_hits + self.tlb_misses

    def as_dict(self) -> dict[str, int]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["translations"] = self.translations
        return d


# The thp_* lines of /proc/vmstat, in the kernel's order (vmstat_text[] of 6.18); kept by
# vmsim.mm.huge_memory and vmsim.mm.khugepaged.
THP_VMSTAT_EVENTS = (
    "thp_migration_success",
    "thp_migration_fail",
    "thp_migration_split",
    "thp_fault_alloc",
    "thp_fault_fallback",
    "thp_fault_fallback_charge",
    "thp_collapse_alloc",
    "thp_collapse_alloc_failed",
    "thp_file_alloc",
    "thp_file_fallback",
    "thp_file_fallback_charge",
    "thp_file_mapped",
    "thp_split_page",
    "thp_split_page_failed",
    "thp_deferred_split_page",
    "thp_underused_split_page",
    "thp_split_pmd",
    "thp_scan_exceed_none_pte",
    "thp_scan_exceed_swap_pte",
    "thp_scan_exceed_share_pte",
    "thp_split_pud",
    "thp_zero_page_alloc",
    "thp_zero_page_alloc_failed",
    "thp_swpout",
    "thp_swpout_fallback",
)

# The unevictable_pgs_* lines of /proc/vmstat, in vmstat_text[] order (vmsim.mm.mlock;
# scanned, cleared and stranded are never moved by the model)
UNEVICTABLE_VMSTAT_EVENTS = (
    "unevictable_pgs_culled",
    "unevictable_pgs_scanned",
    "unevictable_pgs_rescued",
    "unevictable_pgs_mlocked",
    "unevictable_pgs_munlocked",
    "unevictable_pgs_cleared",
    "unevictable_pgs_stranded",
)

# The compact_* lines of /proc/vmstat, in vmstat_text[] order (vmsim.mm.compaction)
COMPACT_VMSTAT_EVENTS = (
    "compact_migrate_scanned",
    "compact_free_scanned",
    "compact_isolated",
    "compact_stall",
    "compact_fail",
    "compact_success",
    "compact_daemon_wake",
    "compact_daemon_migrate_scanned",
    "compact_daemon_free_scanned",
)
# vmstat_text[] from pgmigrate_success to the last thp_* line: thp_migration_* sit between
# pgmigrate_* and compact_*, the other thp_* lines after htlb_buddy_alloc_*
_MIGRATION_TO_THP = (
    "pgmigrate_success",
    *THP_VMSTAT_EVENTS[:3],
    *COMPACT_VMSTAT_EVENTS,
    "htlb_buddy_alloc_success",
    "htlb_buddy_alloc_fail",
    *UNEVICTABLE_VMSTAT_EVENTS,
    *THP_VMSTAT_EVENTS[3:],
)

VMSTAT_EVENTS = (
    "pgscan_kswapd",
    "pgscan_direct",
    "pgsteal_kswapd",
    "pgsteal_direct",
    "pgactivate",
    "pgdeactivate",
    "pgrefill",
    "pgrotated",
    "allocstall_normal",
    "kswapd_wake",
    "pageoutrun",
    "oom_kill",
    *_MIGRATION_TO_THP,
    "swap_ra",
    "swap_ra_hit",
    "swpin_zero",
    "swpout_zero",
    "ksm_swpin_copy",
    "pgscan_anon",
    "pgscan_file",
    "pgsteal_anon",
    "pgsteal_file",
    "workingset_refault_anon",
    "workingset_refault_file",
    "workingset_activate_anon",
    "workingset_activate_file",
    "workingset_restore_anon",
    "workingset_restore_file",
    "nr_written",
)


# The lines of /proc/vmstat the model keeps, in the kernel's order (vmstat_text[] of 6.18;
# ksm_zero_pages is not one of them: it is in /sys/kernel/mm/ksm).
VMSTAT_ORDER = (
    "nr_free_pages",
    "nr_mlock",
    "nr_inactive_anon",
    "nr_active_anon",
    "nr_inactive_file",
    "nr_active_file",
    "nr_unevictable",
    "workingset_refault_anon",
    "workingset_refault_file",
    "workingset_activate_anon",
    "workingset_activate_file",
    "workingset_restore_anon",
    "workingset_restore_file",
    "nr_anon_pages",
    "nr_mapped",
    "nr_file_pages",
    "nr_dirty",
    "nr_shmem",
    "nr_anon_transparent_hugepages",
    "nr_written",
    "nr_page_table_pages",
    "nr_swapcached",
    "pswpin",
    "pswpout",
    "allocstall_normal",
    "pgactivate",
    "pgdeactivate",
    "pgfault",
    "pgmajfault",
    "pgrefill",
    "pgsteal_kswapd",
    "pgsteal_direct",
    "pgscan_kswapd",
    "pgscan_direct",
    "pgscan_anon",
    "pgscan_file",
    "pgsteal_anon",
    "pgsteal_file",
    "pageoutrun",
    "pgrotated",
    "oom_kill",
    *_MIGRATION_TO_THP,
    "swap_ra",
    "swap_ra_hit",
    "swpin_zero",
    "swpout_zero",
    "ksm_swpin_copy",
    "cow_ksm",
    "zswpin",
    "zswpout",
    "zswpwb",
)
