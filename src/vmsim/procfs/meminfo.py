"""/proc/meminfo (fs/proc/meminfo.c), for the lines the model keeps."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmsim.constants import PAGE_SIZE

if TYPE_CHECKING:
    from vmsim.mm.core import MmConfig
    from vmsim.mm.kernel import Kernel


def meminfo_text(mem: Kernel, cfg: MmConfig) -> str:
    """/proc/meminfo, for the lines the model keeps (kernel order and format)."""
    frames = mem.frames
    info = frames.meminfo()
    kb = PAGE_SIZE >> 10
    sizes = mem.node.lru.sizes()
    swap = mem.swap
    z = swap.zswap
    commit_limit = cfg.ram_pages * cfg.overcommit_ratio // 100 + cfg.swap_pages
    swapcached = len(swap.cache)
    # si_mem_available(): free above the reserve (one zone: its high watermark) plus the
    # page cache that can go (at least half of it, or the low watermark's worth, stays)
    pagecache = sizes["active_file"] + sizes["inactive_file"]
    pagecache -= min(pagecache // 2, mem.node.wmark_low)
    available = max(frames.free_pages - mem.node.wmark_high + pagecache, 0)
    rows = [
        ("MemTotal", info["MemTotal"]),
        ("MemFree", info["MemFree"]),
        ("MemAvailable", available * kb),
        ("Buffers", 0),
        ("Cached", info["Cached"]),
        ("SwapCached", swapcached * kb),
        ("Active", (sizes["active_anon"] + sizes["active_file"]) * kb),
        ("Inactive", (sizes["inactive_anon"] + sizes["inactive_file"]) * kb),
        ("Active(anon)", sizes["active_anon"] * kb),
        ("Inactive(anon)", sizes["inactive_anon"] * kb),
        ("Active(file)", sizes["active_file"] * kb),
        ("Inactive(file)", sizes["inactive_file"] * kb),
        ("Unevictable", sizes["unevictable"] * kb),
        ("Mlocked", info["Mlocked"]),
        ("SwapTotal", swap.total * kb),
        ("SwapFree", swap.free * kb),
        ("Zswap", (z.pool_total_size >> 10) if z else 0),
        ("Zswapped", (z.stored_pages * kb) if z else 0),
        ("Dirty", info["Dirty"]),
        ("Writeback", 0),
        ("AnonPages", info["AnonPages"]),
        ("Mapped", info["Mapped"]),
        ("Shmem", info["Shmem"]),
        ("PageTables", info["PageTables"]),
        ("CommitLimit", commit_limit * kb),
        ("Committed_AS", cfg.committed_pages * kb),
        ("AnonHugePages", frames.nr_anon_thps * kb),
    ]
    text = "".join(f"{label + ':':<16}{value:>8} kB\n" for label, value in rows)
    if mem.hugetlb is not None:  # hugetlb_report_meminfo(): its own formats
        text += "".join(f"{label}{value}\n" for label, value in mem.hugetlb.meminfo_rows())
    return text


__all__ = ["meminfo_text"]
