"""Memory-pressure speed: pages swapped out and in per second through the model, and zswap's
compression path against the compressor's own raw speed, side by side in the same run.

(a) Swap traffic. For each swap device (``disk``, rotational; ``ssd``; ``zram``, compressed in
RAM with lz4) and
zswap setting (off; a zstd or lz4 pool in front of the device): a fresh ``Machine`` (--ram,
small, but large enough to hold the pages; --swap, large) with one process that writes
--pages pages of mixed content (untimed), then, timed:

- swap-out: ``madvise(MADV_PAGEOUT)`` (21) of the whole region: reclaim_pages(), each page
  unmapped, given a swap slot and stored in the pool or on the device (a zero page: only
  its bit in the swap zeromap);
- swap-in: every page read back in address order: a major fault reads the readahead window
  into the swap cache (by aligned swap cluster on the rotational disk, by VMA on ssd and
  zram; up to 2**page-cluster = 8 pages, growing with the hits), minor faults after that; on
  zram a slot named once is read straight into the page (no swap cache, no readahead).

Baseline in the same run: the same reads on the same pages while they are resident (no fault:
the TLB and page-table path only), so "in/resident" is what a swap-in costs over a plain read.
Every page is checked against what was written (outside the timed loops). Reported: pages/s
(best of --repeat), major faults, pswpin/pswpout, zswpin/zswpout and swpout_zero/swpin_zero
(the zero pages: a bit each in the swap zeromap, no I/O and no zswap, as in Linux 6.12+).

(b) zswap compression, as Linux 6.18 does it. The zero pages never reach zswap (the swap core
sets their zeromap bit first), so the pool gets the other pages: for each compressor (zstd,
lz4, deflate) the model's store path, ``vmsim.mm.zswap.Zswap.store()`` then ``load()`` of
every non-zero page (the compressor, a page that does not compress below a page kept as is,
the zsmalloc size classes, the pool's RAM, the LRU of entries), against
``vmsim.mm.zswap.Compressor(name).compress()`` on the same non-zero pages and
``decompress()`` on the blobs the pool keeps compressed, timed in the same run. Reported: MB/s
of pages in (store, compress) and out (load, decompress), the model/raw time ratio (the pool's
overhead over its compressor; the load also hands back the pages stored as is, copied, not
decompressed), and the compression ratio.

Page contents (seeded): 55% log-like text (compresses ~3x), 20% random bytes (incompressible:
zswap stores them as is, a whole page each, stored_incompressible_pages), 10% zero pages (the
swap zeromap), 15% half text, half zeros. Nothing is asserted on times; a page that reads back
wrong ends the run with status 1.

.venv/bin/python benchmarks/pressure_bench.py [--pages N] [--zswap-pages N] [--repeat R]
    [--ram SIZE] [--swap SIZE] [--seed S] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

import vmsim
from vmsim.constants import MADV_PAGEOUT, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from vmsim.mm.zswap import COMPRESSORS, PAGE_SIZE, Compressor, PoolMemory, Zswap

PAGE = PAGE_SIZE
ZERO = bytes(PAGE)
MB = 1e6  # throughput in MB/s (10**6 bytes), as compressors are usually quoted
SWAP_CONFIGS = (
    ("disk", None),
    ("disk", "zstd"),
    ("disk", "lz4"),
    ("ssd", None),
    ("zram", None),
    ("zram", "zstd"),
)
MIX = (("text", 0.55), ("random", 0.20), ("zero", 0.10), ("half", 0.15))
WORDS = (
    "alloc",
    "cache",
    "commit",
    "dirty",
    "evict",
    "fault",
    "flush",
    "frame",
    "inode",
    "lookup",
    "merge",
    "page",
    "reclaim",
    "request",
    "session",
    "slot",
    "swap",
    "update",
    "write",
)
LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")


def text_page(rng: random.Random, size: int = PAGE) -> bytes:
    lines = []
    n = 0
    ts = 1_700_000_000_000 + rng.randrange(10**9)
    while n < size:
        ts += rng.randrange(1, 5000)
        line = (
            f"{ts} {rng.choice(LEVELS)} {rng.choice(WORDS)}: {rng.choice(WORDS)} "
            f"{rng.choice(WORDS)} id={rng.randrange(100_000)} took {rng.randrange(900)}ms\n"
        )
        lines.append(line)
        n += len(line)
    return "".join(lines).encode()[:size]


def mixed_pages(n: int, rng: random.Random) -> list[bytes]:
    """``n`` pages of the mix above, in a seeded random order."""
    kinds = [k for k, _ in MIX]
    weights = [w for _, w in MIX]
    pages = []
    for kind in rng.choices(kinds, weights, k=n):
        if kind == "text":
            pages.append(text_page(rng))
        elif kind == "random":
            pages.append(rng.randbytes(PAGE))
        elif kind == "zero":
            pages.append(bytes(PAGE))
        else:
            pages.append(text_page(rng, PAGE // 2) + bytes(PAGE // 2))
    return pages


def vmstat(m: vmsim.Machine) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in m.vmstat().splitlines())}


def best_of(repeat: int, run: Callable[[], tuple[float, ...]]) -> tuple[float, ...]:
    runs = [run() for _ in range(repeat)]
    return min(runs, key=lambda r: sum(r))


# --- (a) swap traffic ------------------------------------------------------------------------


def swap_round(
    pages: list[bytes], ram: int, swap: int, device: str, zswap: str | None
) -> dict[str, Any]:
    """One fresh machine: write (untimed), read resident, page out, read back."""
    m = vmsim.Machine(
        ram=ram, swap=swap, swap_device=device, zswap=zswap, zswap_max_pool_percent=50
    )
    p = m.spawn()
    n = len(pages)
    base = p.mmap(0, n * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    addrs = [base + i * PAGE for i in range(n)]
    for addr, data in zip(addrs, pages, strict=True):
        p.write(addr, data)
    read = p.read
    sw = m.memory.swap
    if sw.pswpout or sw.swpout_zero or (sw.zswap and sw.zswap.zswpout):
        raise SystemExit(f"{device}/{zswap}: --ram too small, pages swapped while writing")

    gc.collect()
    t0 = time.perf_counter()
    for addr in addrs:
        read(addr, PAGE)
    resident = time.perf_counter() - t0

    before = vmstat(m)
    gc.collect()
    t0 = time.perf_counter()
    p.madvise(base, n * PAGE, MADV_PAGEOUT)
    out_t = time.perf_counter() - t0
    mid = vmstat(m)
    zswap_out = m.zswap_stats()  # the pool after the page-out (the reads empty it)
    if any(p.mincore(base, n * PAGE)):
        raise SystemExit(f"{device}/{zswap}: MADV_PAGEOUT left pages resident")

    gc.collect()
    got = []
    t0 = time.perf_counter()
    for addr in addrs:
        got.append(read(addr, PAGE))
    in_t = time.perf_counter() - t0
    after = vmstat(m)
    bad = [i for i, (g, w) in enumerate(zip(got, pages, strict=True)) if g != w]
    return {
        "resident_s": resident,
        "out_s": out_t,
        "in_s": in_t,
        "bad_pages": bad,
        "pswpout": mid["pswpout"] - before["pswpout"],
        "zswpout": mid["zswpout"] - before["zswpout"],
        "pswpin": after["pswpin"] - mid["pswpin"],
        "zswpin": after["zswpin"] - mid["zswpin"],
        "swpout_zero": mid["swpout_zero"] - before["swpout_zero"],
        "swpin_zero": after["swpin_zero"] - mid["swpin_zero"],
        "majfaults": after["pgmajfault"] - mid["pgmajfault"],
        "faults": after["pgfault"] - mid["pgfault"],
        "zswap": zswap_out,
    }


def bench_swap(
    args: argparse.Namespace, pages: list[bytes], console: Console
) -> list[dict[str, Any]]:
    rows = []
    n = len(pages)
    for device, zswap in SWAP_CONFIGS:
        name = f"{device}, zswap {zswap or 'off'}"
        with console.status(f"swap: {name}: {n:,} pages x {args.repeat}"):
            runs = [
                swap_round(pages, args.ram, args.swap, device, zswap) for _ in range(args.repeat)
            ]
        bad = sorted({i for r in runs for i in r["bad_pages"]})
        out_t = min(r["out_s"] for r in runs)
        in_t = min(r["in_s"] for r in runs)
        res_t = min(r["resident_s"] for r in runs)
        last = runs[-1]
        rows.append(
            {
                "device": device,
                "zswap": zswap,
                "pages": n,
                "swap_out_per_s": round(n / out_t),
                "swap_in_per_s": round(n / in_t),
                "resident_read_per_s": round(n / res_t),
                "in_over_resident": round(in_t / res_t, 2),
                "majfaults": last["majfaults"],
                "faults": last["faults"],
                "pswpout": last["pswpout"],
                "zswpout": last["zswpout"],
                "pswpin": last["pswpin"],
                "zswpin": last["zswpin"],
                "swpout_zero": last["swpout_zero"],
                "swpin_zero": last["swpin_zero"],
                "zswap_stored_incompressible": last["zswap"]["stored_incompressible_pages"],
                "bad_pages": bad[:20],
                "verified": not bad,
            }
        )
    return rows


# --- (b) zswap compression -------------------------------------------------------------------


def new_pool(name: str) -> Zswap:
    """A pool with RAM enough for every page (no limit, no writeback): the store path only."""
    next_pfn = iter(range(1 << 40))
    return Zswap(
        name,
        1 << 30,
        PoolMemory(lambda: next(next_pfn), lambda pfn: None),
        lambda key, data: None,
        max_pool_percent=100,
    )


def time_model(name: str, keys: list[tuple[int, int]], pages: list[bytes]) -> tuple[float, float]:
    """Zswap.store() of every page, then load() of every page: (store s, load s)."""
    pool = new_pool(name)
    store, load = pool.store, pool.load
    gc.collect()
    t0 = time.perf_counter()
    for key, data in zip(keys, pages, strict=True):
        store(key, data)
    t1 = time.perf_counter()
    out = [load(key) for key in keys]
    t2 = time.perf_counter()
    for data, back in zip(pages, out, strict=True):
        if back is not None and back != data:
            raise SystemExit(f"zswap {name}: a page loaded back differs")
    return t1 - t0, t2 - t1


def time_raw(comp: Compressor, pages: list[bytes], kept: list[bytes]) -> tuple[float, float]:
    """The compressor alone: compress() every page the pool is offered, decompress() what
    the pool keeps compressed."""
    compress, decompress = comp.compress, comp.decompress
    gc.collect()
    t0 = time.perf_counter()
    for data in pages:
        compress(data)
    t1 = time.perf_counter()
    for blob in kept:
        decompress(blob)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def bench_zswap(
    args: argparse.Namespace, pages: list[bytes], console: Console
) -> list[dict[str, Any]]:
    rows = []
    offered = [data for data in pages if data != ZERO]  # 6.18: the zeros go to the zeromap
    zero = len(pages) - len(offered)
    n = len(offered)
    keys = [(0, i + 1) for i in range(n)]
    for name in COMPRESSORS:
        comp = Compressor(name)
        kept = [b for b in (comp.compress(data) for data in offered) if len(b) < PAGE]
        with console.status(f"zswap {name}: {n:,} pages x {args.repeat}, model and raw"):
            m_store, m_load = best_of(args.repeat, partial(time_model, name, keys, offered))
            r_comp, r_decomp = best_of(args.repeat, partial(time_raw, comp, offered, kept))
        pool = new_pool(name)
        for key, data in zip(keys, offered, strict=True):
            pool.store(key, data)
        stats = pool.stats()
        if stats["stored_pages"] - stats["stored_incompressible_pages"] != len(kept):
            raise SystemExit(f"zswap {name}: the pool compressed other pages than the raw run")
        rows.append(
            {
                "compressor": name,
                "pages": len(pages),
                "zero_pages": zero,
                "pages_offered": n,
                "model_store_MBps": round(n * PAGE / m_store / MB, 1) if n else None,
                "raw_compress_MBps": round(n * PAGE / r_comp / MB, 1) if n else None,
                "store_overhead": round(m_store / r_comp, 2) if n else None,
                "model_load_MBps": round(n * PAGE / m_load / MB, 1) if n else None,
                "raw_decompress_MBps": round(len(kept) * PAGE / r_decomp / MB, 1) if kept else None,
                "load_overhead": round(m_load / r_decomp, 2) if kept else None,
                "model_store_us_per_page": round(m_store / n * 1e6, 2) if n else None,
                "raw_compress_us_per_page": round(r_comp / n * 1e6, 2) if n else None,
                "stored_pages": stats["stored_pages"],
                "stored_incompressible_pages": stats["stored_incompressible_pages"],
                "compression_ratio": round(stats["stored_pages"] * PAGE / pool.memory.bytes, 2)
                if pool.memory.bytes
                else None,
            }
        )
    return rows


# --- report ----------------------------------------------------------------------------------


def _rate(per_s: float) -> str:
    return f"{per_s / 1e6:.2f}M" if per_s >= 1e6 else f"{per_s / 1e3:.1f}k"


def render(console: Console, summary: dict[str, Any]) -> None:
    swap = Table(
        title=(
            f"(a) Pages swapped out and in per second: {summary['pages']:,} pages, best of "
            f"{summary['repeat']}, RAM {summary['ram_bytes'] >> 20} MiB, swap "
            f"{summary['swap_bytes'] >> 20} MiB"
        ),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),
    )
    for col in (
        "device",
        "zswap",
        "out/s",
        "in/s",
        "resident\nread/s",
        "in/\nresident",
        "major\nfaults",
        "pswp\nout/in",
        "zswp\nout/in",
        "zero\nout/in",
        "data",
    ):
        left = col in ("device", "zswap")
        swap.add_column(col, justify="left" if left else "right", no_wrap=left)
    for r in summary["swap"]:
        swap.add_row(
            r["device"],
            r["zswap"] or "off",
            _rate(r["swap_out_per_s"]),
            _rate(r["swap_in_per_s"]),
            _rate(r["resident_read_per_s"]),
            f"{r['in_over_resident']:.1f}x",
            f"{r['majfaults']:,}",
            f"{r['pswpout']:,}/{r['pswpin']:,}",
            f"{r['zswpout']:,}/{r['zswpin']:,}",
            f"{r['swpout_zero']:,}/{r['swpin_zero']:,}",
            "[green]ok[/green]" if r["verified"] else "[bold red]LOST[/bold red]",
        )
    console.print(swap)
    z = Table(
        title=(
            f"(b) zswap store/load (model) vs the compressor alone (raw), Linux 6.18: "
            f"{summary['zswap_pages']:,} pages, the zero ones to the swap zeromap, best of "
            f"{summary['repeat']}"
        ),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),
    )
    for col in (
        "compressor",
        "store\nMB/s",
        "compress\nMB/s",
        "store/\nraw",
        "load\nMB/s",
        "decompress\nMB/s",
        "load/\nraw",
        "zero\npages",
        "stored\npages",
        "stored\nas is",
        "ratio",
    ):
        left = col == "compressor"
        z.add_column(col, justify="left" if left else "right", no_wrap=left)

    def num(x: float | None, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    for r in summary["zswap"]:
        z.add_row(
            r["compressor"],
            num(r["model_store_MBps"], ".0f"),
            num(r["raw_compress_MBps"], ".0f"),
            num(r["store_overhead"], ".2f") + "x" * (r["store_overhead"] is not None),
            num(r["model_load_MBps"], ".0f"),
            "-" if r["raw_decompress_MBps"] is None else f"{r['raw_decompress_MBps']:.0f}",
            "-" if r["load_overhead"] is None else f"{r['load_overhead']:.2f}x",
            f"{r['zero_pages']:,}",
            f"{r['stored_pages']:,}",
            f"{r['stored_incompressible_pages']:,}",
            "-" if r["compression_ratio"] is None else f"{r['compression_ratio']:.2f}x",
        )
    console.print(z)
    console.print(
        "out = MADV_PAGEOUT of every page; in = every page read back (a major fault per "
        "readahead window of up to 8 pages, by swap cluster on disk, by VMA on ssd; zram "
        "reads each slot named once straight in, a major fault each); resident read = the "
        "same reads before the "
        "page-out; in/resident = swap-in time over resident-read time; zero out/in = "
        "swpout_zero/swpin_zero (zero pages: the swap zeromap, no I/O, no zswap). store/load "
        "MB/s count every page offered to zswap (4 KiB each, the non-zero pages); compress "
        "MB/s the same pages; decompress MB/s counts the pages the pool kept compressed (not "
        "those stored as is); store/raw and load/raw = model time over raw compressor time; "
        "ratio = stored page bytes over the pool's size-class bytes (pages stored as is 1:1)."
    )


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    rng = random.Random(args.seed)
    swap_pages = mixed_pages(args.pages, rng)
    zswap_pages = mixed_pages(args.zswap_pages, rng)
    return {
        "seed": args.seed,
        "repeat": args.repeat,
        "pages": args.pages,
        "zswap_pages": args.zswap_pages,
        "ram_bytes": args.ram,
        "swap_bytes": args.swap,
        "mix": dict(MIX),
        "swap": bench_swap(args, swap_pages, console),
        "zswap": bench_zswap(args, zswap_pages, console),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--pages", type=int, default=4096, help="pages swapped out and in")
    parser.add_argument("--zswap-pages", type=int, default=4096, help="pages through each pool")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (best is kept)")
    parser.add_argument("--ram", type=vmsim.parse_size, default=None, help="default: 2x --pages")
    parser.add_argument("--swap", type=vmsim.parse_size, default=None, help="default: 4x --pages")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--quick", action="store_true", help="short run: 512 pages, --repeat 1 (a smoke test)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    if args.quick:
        args.pages, args.zswap_pages, args.repeat = 512, 512, 1
    if args.pages < 8 or args.zswap_pages < 1 or args.repeat < 1:
        parser.error("--pages must be >= 8, --zswap-pages and --repeat >= 1")
    # RAM: the pages, twice over (watermarks, page tables, the zswap pool), 8 MiB at least
    args.ram = args.ram or max(8 << 20, 2 * args.pages * PAGE)
    args.swap = args.swap or 4 * args.pages * PAGE
    console = Console(stderr=args.json)
    summary = run(args, console)
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render(console, summary)
    bad = [r for r in summary["swap"] if not r["verified"]]
    if bad:
        Console(stderr=True).print(
            "[bold red]data lost[/bold red]: pages read back differ from what was written in "
            + "; ".join(
                f"{r['device']}/zswap {r['zswap'] or 'off'} (pages {r['bad_pages'][:5]})"
                for r in bad
            )
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
