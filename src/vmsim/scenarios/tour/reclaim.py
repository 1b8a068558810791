"""Chapters 4-6 of the tour: swap, zswap and KSM, each on a small machine of its own.

Chapters 4 and 5 run one workload: a process writes more pages than the machine has RAM
(each page a kilobyte of random bytes then text, so that it compresses about 3 to 1), lets
kswapd run, then reads every page back and compares it with what it wrote. Chapter 4 has a
swap device only; chapter 5 the same device behind zswap (zstd). Chapter 6 writes a few
distinct contents again and again in a MADV_MERGEABLE region and lets ksmd scan it.
"""

from __future__ import annotations

import random

import vmsim
from vmsim.constants import (
    MADV_MERGEABLE,
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    PAGE_SIZE,
    PROT_READ,
    PROT_WRITE,
)
from vmsim.scenarios.proctext import fields, vmstat
from vmsim.scenarios.tour.chapter import Chapter, Figures, size

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
SWAP = "Swap"
ZSWAP = "Compression (zswap)"
KSM = "De-duplication (KSM)"
RAM = 8 << 20
SWAP_SIZE = 32 << 20
WORKLOAD = 12 << 20  # written by the process: half as much again as RAM
RANDOM_BYTES = 1024  # of each page; the rest is text
SEED = 1
KSM_PAGES = 256
KSM_CONTENTS = 8
KSM_MAX_TICKS = 64  # ksmd wake-ups to wait for the merge (pages_to_scan 100 each)
COUNTERS = (
    "pswpout",
    "pswpin",
    "zswpout",
    "zswpin",
    "pgmajfault",
    "pgsteal_kswapd",
    "pgsteal_direct",
)


def _page(rng: random.Random, i: int) -> bytes:
    text = f"page {i:06d} of the tour, written once and read back; " * 80
    return rng.randbytes(RANDOM_BYTES) + text.encode()[: PAGE_SIZE - RANDOM_BYTES]


def pressure_run(zswap: str | None) -> Figures:
    """Write WORKLOAD bytes on a machine of RAM bytes (with a swap device, behind zswap if
    given), tick, read everything back: the counters after the writes and after the reads."""
    m = vmsim.Machine(ram=RAM, swap=SWAP_SIZE, zswap=zswap, seed=SEED)
    p = m.spawn()
    npages = WORKLOAD // PAGE_SIZE
    addr = p.mmap(0, WORKLOAD, RW, ANON)
    rng = random.Random(SEED)
    pages = [_page(rng, i) for i in range(npages)]
    for i, data in enumerate(pages):
        p.write(addr + i * PAGE_SIZE, data)
    m.tick(4)
    written = vmstat(m)
    info = fields(m.meminfo())
    z = m.zswap_stats() if zswap else {}
    wrong = sum(p.read(addr + i * PAGE_SIZE, PAGE_SIZE) != d for i, d in enumerate(pages))
    read = vmstat(m)
    figures: Figures = {
        "ram": RAM,
        "swap": SWAP_SIZE,
        "zswap": zswap or "off",
        "workload": WORKLOAD,
        "pages_written": npages,
        "after_writes": {name: written.get(name, 0) for name in COUNTERS},
        "swap_used_kb": info["SwapTotal"] - info["SwapFree"],
        "zswap_kb": info.get("Zswap", 0),
        "zswapped_kb": info.get("Zswapped", 0),
        "after_reads": {name: read.get(name, 0) for name in COUNTERS},
        "pages_read_back": npages,
        "pages_wrong": wrong,
    }
    if zswap:
        figures["stored_pages"] = z["stored_pages"]
        figures["pool_total_size"] = z["pool_total_size"]
        figures["pool_limit_hit"] = z["pool_limit_hit"]
        figures["written_back_pages"] = z["written_back_pages"]
        figures["compression_ratio"] = (
            round(z["stored_pages"] * PAGE_SIZE / z["pool_total_size"], 2)
            if z["pool_total_size"]
            else 0.0
        )
    return figures


def swap(number: int) -> Chapter:
    """Chapter 4: a workload bigger than RAM, with a swap device."""
    f = pressure_run(None)
    w, r = f["after_writes"], f["after_reads"]
    lines = (
        f"{size(f['workload'])} written on a machine with {size(f['ram'])} of RAM and "
        f"{size(f['swap'])} of swap: reclaim took {w['pgsteal_kswapd'] + w['pgsteal_direct']:,} "
        f"pages (kswapd {w['pgsteal_kswapd']:,}, direct reclaim {w['pgsteal_direct']:,}), "
        f"{w['pswpout']:,} written to swap (swap used {f['swap_used_kb']:,} kB)",
        f"reading all {f['pages_read_back']:,} pages back: {r['pgmajfault']:,} major faults, "
        f"{r['pswpin']:,} pages read from swap (readahead brings neighbours), "
        f"{f['pages_wrong']} page(s) wrong",
    )
    explain = (
        "When free memory falls below the low watermark kswapd wakes (wakeup_kswapd()); an "
        "allocation that finds it below the min watermark reclaims itself (direct reclaim, "
        "__alloc_pages_direct_reclaim()). Both take pages from the inactive LRU lists "
        "(shrink_folio_list()): an anonymous page gets a "
        "swap slot (folio_alloc_swap()), is written out (swap_writeout()), and its PTE becomes "
        "a swap entry (try_to_unmap_one()).",
        "A later access finds the swap entry: do_swap_page() reads the page back (a major "
        "fault) with readahead around it (swapin_readahead()), and maps it again.",
    )
    return Chapter(
        number,
        "swap",
        SWAP,
        "When RAM runs out the kernel writes pages nobody used lately to a swap device and "
        "reads them back on the next touch: slow, but nothing is lost.",
        lines,
        explain,
        f,
        "vmsim demo pressure --ram 8M --swap 32M",
    )


def zswap(number: int) -> Chapter:
    """Chapter 5: the same workload, the swap device behind zswap."""
    f = pressure_run("zstd")
    w, r = f["after_writes"], f["after_reads"]
    lines = (
        f"the same {size(f['workload'])} with zswap (zstd): {w['zswpout']:,} pages compressed "
        f"into the pool; {w['pswpout']:,} reached the swap device: "
        f"{f['written_back_pages']:,} written back from the pool to make room, and "
        f"{w['pswpout'] - f['written_back_pages']:,} that zswap_store() refused while the pool "
        f"was at its limit (hit {f['pool_limit_hit']} time(s))",
        f"the pool holds {f['stored_pages']:,} pages in {f['pool_total_size']:,} bytes: "
        f"{f['compression_ratio']}x",
        f"reading everything back: {r['zswpin']:,} pages decompressed, {r['pswpin']:,} read "
        f"from the device, {f['pages_wrong']} page(s) wrong",
    )
    explain = (
        "zswap sits in front of the swap device: swap_writeout() offers the page to "
        "zswap_store(), which compresses it (crypto_acomp) into the zsmalloc pool; only what "
        "zswap rejects or writes back when the pool is full reaches the device.",
        "do_swap_page() -> swap_read_folio() tries zswap_load() first: a decompression, no "
        "I/O. Pages of zeros never get that far: the swap zeromap records them in one bit.",
    )
    return Chapter(
        number,
        "zswap",
        ZSWAP,
        "Compressing pages in RAM is faster than writing them to disk: zswap keeps swapped "
        "pages compressed and only falls back to the device when its pool is full.",
        lines,
        explain,
        f,
        "vmsim demo pressure --ram 8M --swap 32M --zswap zstd",
    )


def ksm(number: int) -> Chapter:
    """Chapter 6: identical pages merged by ksmd, and a write that breaks the sharing."""
    m = vmsim.Machine(ksm=True)
    p = m.spawn()
    addr = p.mmap(0, KSM_PAGES * PAGE_SIZE, RW, ANON)
    p.madvise(addr, KSM_PAGES * PAGE_SIZE, MADV_MERGEABLE)
    contents = [(f"content {k} ".encode() * PAGE_SIZE)[:PAGE_SIZE] for k in range(KSM_CONTENTS)]
    for i in range(KSM_PAGES):
        p.write(addr + i * PAGE_SIZE, contents[i % KSM_CONTENTS])
    ticks = 0
    stats = m.ksm_stats()
    while stats["pages_sharing"] + stats["pages_shared"] < KSM_PAGES and ticks < KSM_MAX_TICKS:
        m.tick(1)
        ticks += 1
        stats = m.ksm_stats()
    merged = dict(stats)
    cow_before = p.stats["cow_ksm"]
    p.write(addr, b"changed")
    cow = p.stats["cow_ksm"] - cow_before
    m.tick(2)
    after = m.ksm_stats()
    figures: Figures = {
        "pages": KSM_PAGES,
        "distinct_contents": KSM_CONTENTS,
        "ticks": ticks,
        "full_scans": merged["full_scans"],
        "pages_shared": merged["pages_shared"],
        "pages_sharing": merged["pages_sharing"],
        "saved_kb": merged["pages_sharing"] * PAGE_SIZE // 1024,
        "general_profit": merged["general_profit"],
        "write_cow_faults": cow,
        "pages_shared_after_write": after["pages_shared"],
        "pages_sharing_after_write": after["pages_sharing"],
        "read_back": p.read(addr, 7).decode(),
    }
    lines = (
        f"{KSM_PAGES} pages holding {KSM_CONTENTS} distinct contents, advised MADV_MERGEABLE: "
        f"after {ticks} ksmd wake-ups ({merged['full_scans']} full scans) "
        f"{merged['pages_shared']} KSM pages are shared by {merged['pages_sharing']} more "
        f"mappings: {figures['saved_kb']:,} kB saved",
        f"a write to a merged page: {cow} copy-on-write fault, the writer gets its own copy "
        f"({figures['read_back']!r}); after ksmd's next pass pages_sharing "
        f"{after['pages_sharing']}",
    )
    explain = (
        "ksmd (ksm_do_scan()) walks the MADV_MERGEABLE VMAs, checksums each page, looks for "
        "an equal page in the stable tree then the unstable tree (cmp_and_merge_page()), and "
        "merges by write-protecting both PTEs and pointing them at one KSM page "
        "(try_to_merge_one_page() -> replace_page()).",
        "A write to a KSM page is a write-protect fault: do_wp_page() always copies it (a KSM "
        "page is never reused in place), so merging is invisible to the program.",
    )
    return Chapter(
        number,
        "ksm",
        KSM,
        "Identical pages need only one frame: KSM finds them and shares them copy-on-write, "
        "trading CPU time for memory.",
        lines,
        explain,
        figures,
        "vmsim demo pressure --ksm; vmsim estimate PID",
    )


__all__ = ["KSM", "SWAP", "ZSWAP", "ksm", "pressure_run", "swap", "zswap"]
