"""/proc/vmstat (mm/vmstat.c vmstat_show()), for the counters the model keeps, in the kernel's order."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmsim.mm.vmstat import VMSTAT_ORDER

if TYPE_CHECKING:
    from vmsim.mm.kernel import Kernel


def vmstat_text(mem: Kernel) -> str:
    """/proc/vmstat, for the counters the model keeps, in the kernel's order."""
    f = mem.frames
    sizes = mem.node.lru.sizes()
    z = mem.swap.zswap
    st = mem.stats
    ev = mem.vmstat
    values = {
        "nr_free_pages": f.free_pages,
        "nr_inactive_anon": sizes["inactive_anon"],
        "nr_active_anon": sizes["active_anon"],
        "nr_inactive_file": sizes["inactive_file"],
        "nr_active_file": sizes["active_file"],
        "nr_unevictable": sizes["unevictable"],
        "nr_mlock": f.nr_mlock,
        "nr_anon_pages": f.nr_anon_mapped,
        "nr_mapped": f.nr_file_mapped,
        "nr_file_pages": f.nr_file_pages,
        "nr_dirty": f.nr_file_dirty,
        "nr_shmem": f.nr_shmem,
        "nr_anon_transparent_hugepages": f.nr_anon_thps >> 9,
        "nr_page_table_pages": f.nr_pagetable,
        "nr_swapcached": len(mem.swap.cache),
        "pswpin": mem.swap.pswpin,
        "pswpout": mem.swap.pswpout,
        "pgfault": st.pgfault,
        "pgmajfault": st.pgmajfault,
        "zswpin": z.zswpin if z else 0,
        "zswpout": z.zswpout if z else 0,
        "zswpwb": z.zswpwb if z else 0,
        "cow_ksm": st.cow_ksm,
        "swpin_zero": mem.swap.swpin_zero,
        "swpout_zero": mem.swap.swpout_zero,
    }
    rows = [(k, values[k] if k in values else ev[k]) for k in VMSTAT_ORDER]
    return "".join(f"{k} {v}\n" for k, v in rows)


__all__ = ["vmstat_text"]
