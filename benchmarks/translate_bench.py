"""Translation speed: user accesses per second through vmsim's TLB + page walk, against a
naive dict + LRU translator, side by side in the same run.

vmsim side: ``vmsim.mm.access.user_access(mm, addr, "read", stack_limit)``, the hot path of
every user access (PCID-tagged L1 dTLB, STLB, on a miss the hardware page walk with the
paging-structure caches, then a TLB fill), on one anonymous region populated up front with
MAP_POPULATE so the timed loops make no page faults.

Baseline: what one writes first: a ``dict`` page table (vpn -> pfn) built from vmsim's own
frames, and a fully associative LRU TLB (``OrderedDict``, ``move_to_end`` on a hit,
``popitem(last=False)`` to evict) of the same 4 KiB data capacity as vmsim's (L1 dTLB +
STLB: 64 + 1536 = 1600 entries). It does no permission checks, keeps no PCID and walks
nothing: a miss is one dict lookup.

Streams (read accesses at random offsets, generated up front with a seeded RNG; both sides
translate the same list, and are checked to return the same frames during the warm-up):

- ``hit``: 32 pages, fits the L1 dTLB (2 pages per set of 4 ways): every access an L1 hit.
- ``stlb``: 1024 pages: too many for the L1, all in the STLB (1536 entries).
- ``random``: uniform over --pages pages (default 16384 = 64 MiB, far beyond the STLB): most
  accesses walk; the region is within reach of the 32-entry PDE cache (32 x 2 MiB).
- ``random-wide``: uniform over --wide-pages pages (default 65536 = 256 MiB): beyond the
  PDE cache too, so walks read more than the PTE.

Reported per stream: translations/s on each side (best of --repeat runs, time.perf_counter),
the ratio vmsim/baseline, vmsim's L1 / STLB hit and miss rates (from Machine.stats deltas of
the best run) and memory references per translation and per walk. The issue's target: faster
than the baseline on the hit stream. Nothing is asserted on times.

.venv/bin/python benchmarks/translate_bench.py [--n N] [--repeat R] [--pages N]
    [--wide-pages N] [--seed S] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

import vmsim
from vmsim.constants import MAP_ANONYMOUS, MAP_POPULATE, MAP_PRIVATE, PROT_READ, PROT_WRITE
from vmsim.hw.tlb import PAGE_SIZE_4K, TlbConfig
from vmsim.mm.access import user_access
from vmsim.mm.core import AddressSpace

PAGE = 4096
HIT_PAGES = 32
STLB_PAGES = 1024
WARMUP = 20_000  # untimed accesses per stream and side before the timed runs
COUNTERS = (
    "translations",
    "dtlb_hits",
    "dtlb_misses",
    "stlb_hits",
    "stlb_misses",
    "walks",
    "walk_refs",
    "pwc_hits",
)


class DictLruTranslator:
    """The naive baseline: a dict page table and an OrderedDict LRU TLB of ``capacity``."""

    def __init__(self, page_table: dict[int, int], capacity: int) -> None:
        self.page_table = page_table
        self.capacity = capacity
        self.tlb: OrderedDict[int, int] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def translate(self, addr: int) -> int:
        vpn = addr >> 12
        tlb = self.tlb
        pfn = tlb.get(vpn)
        if pfn is not None:
            tlb.move_to_end(vpn)
            self.hits += 1
            return pfn
        self.misses += 1
        pfn = self.page_table[vpn]
        tlb[vpn] = pfn
        if len(tlb) > self.capacity:
            tlb.popitem(last=False)
        return pfn


class NaiveMmuTranslator:
    """The naive baseline doing the model's job: a 4-level page table of nested dicts holding
    real entries (P, RW, US, A bits), walked level by level on a miss with the permission
    checks, A set in the leaf, and a fully associative LRU TLB (``OrderedDict``) keyed by
    (PCID, page) holding (pfn, permission bits), checked on every hit."""

    P, RW, US, A = 1, 2, 4, 32

    def __init__(self, page_table: dict[int, int], capacity: int, pcid: int = 1) -> None:
        self.pgd: dict[int, dict[int, dict[int, dict[int, int]]]] = {}
        for vpn, pfn in page_table.items():
            i4, i3, i2, i1 = (vpn >> 27) & 511, (vpn >> 18) & 511, (vpn >> 9) & 511, vpn & 511
            pud = self.pgd.setdefault(i4, {})
            pmd = pud.setdefault(i3, {})
            pte = pmd.setdefault(i2, {})
            pte[i1] = (pfn << 12) | self.P | self.RW | self.US
        self.capacity = capacity
        self.pcid = pcid
        self.tlb: OrderedDict[tuple[int, int], tuple[int, int]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def translate(self, addr: int, write: bool = False) -> int:
        vpn = addr >> 12
        key = (self.pcid, vpn)
        tlb = self.tlb
        hit = tlb.get(key)
        if hit is not None:
            pfn, perms = hit
            if perms & self.US and (not write or perms & self.RW):
                tlb.move_to_end(key)
                self.hits += 1
                return pfn
            del tlb[key]
        self.misses += 1
        table = self.pgd.get((vpn >> 27) & 511)
        if table is None:
            raise KeyError(addr)
        for shift in (18, 9):
            table = table.get((vpn >> shift) & 511)  # type: ignore[assignment]
            if table is None:
                raise KeyError(addr)
        leaf_table: dict[int, int] = table  # type: ignore[assignment]
        e = leaf_table[vpn & 511]
        if not e & self.P or not e & self.US or (write and not e & self.RW):
            raise PermissionError(addr)
        leaf_table[vpn & 511] = e | self.A
        pfn = e >> 12
        tlb[key] = (pfn, e & 0xFFF)
        if len(tlb) > self.capacity:
            tlb.popitem(last=False)
        return pfn


def data_capacity_4k(config: TlbConfig) -> int:
    """Entries able to hold a 4 KiB data translation: the L1 dTLB's plus the STLB's."""
    return sum(a.entries for a in config.l1d + config.stlb if PAGE_SIZE_4K in a.page_sizes)


def read_pfn(mm: AddressSpace, addr: int, stack_limit: int) -> int:
    """One untimed read through the hot path, returning the frame number."""
    pfn = user_access(mm, addr, "read", stack_limit)
    if not isinstance(pfn, int):
        raise TypeError(f"user_access returned {pfn!r}, not a frame number")
    return pfn


def make_stream(base: int, pages: int, n: int, rng: random.Random) -> list[int]:
    return [base + rng.randrange(pages) * PAGE + rng.randrange(PAGE) for _ in range(n)]


def time_vmsim(mm: AddressSpace, stream: list[int], stack_limit: int) -> float:
    access = user_access
    gc.collect()
    t0 = time.perf_counter()
    for addr in stream:
        access(mm, addr, "read", stack_limit)
    return time.perf_counter() - t0


def time_baseline(base: DictLruTranslator | NaiveMmuTranslator, stream: list[int]) -> float:
    translate = base.translate
    gc.collect()
    t0 = time.perf_counter()
    for addr in stream:
        translate(addr)
    return time.perf_counter() - t0


Run = Callable[[], tuple[float, dict[str, int]]]


def best_of(repeat: int, run: Run) -> tuple[float, dict[str, int]]:
    runs = [run() for _ in range(repeat)]
    return min(runs, key=lambda r: r[0])


def bench_stream(
    name: str,
    pages: int,
    stream: list[int],
    machine: vmsim.Machine,
    proc: vmsim.Process,
    page_table: dict[int, int],
    capacity: int,
    repeat: int,
) -> dict[str, Any]:
    mm, stack_limit = proc.mm, machine.stack_limit
    base = DictLruTranslator(page_table, capacity)
    naive = NaiveMmuTranslator(page_table, capacity)
    # Warm-up (untimed): every side fills its TLB, and all must agree on every frame.
    for addr in stream[:WARMUP]:
        got = read_pfn(mm, addr, stack_limit)
        want = base.translate(addr)
        if got != want or naive.translate(addr) != want:
            raise SystemExit(f"{name}: {addr:#x} -> vmsim pfn {got}, baseline pfn {want}")

    def run_vmsim() -> tuple[float, dict[str, int]]:
        before = machine.stats
        dt = time_vmsim(mm, stream, stack_limit)
        after = machine.stats
        return dt, {k: after[k] - before[k] for k in COUNTERS}

    def run_base() -> tuple[float, dict[str, int]]:
        h, m = base.hits, base.misses
        dt = time_baseline(base, stream)
        return dt, {"hits": base.hits - h, "misses": base.misses - m}

    def run_naive() -> tuple[float, dict[str, int]]:
        return time_baseline(naive, stream), {}

    sim_t, c = best_of(repeat, run_vmsim)
    base_t, bc = best_of(repeat, run_base)
    naive_t, _ = best_of(repeat, run_naive)
    n = len(stream)
    if c["translations"] != n:
        raise SystemExit(f"{name}: vmsim counted {c['translations']} translations, not {n}")
    walks = c["walks"]
    return {
        "stream": name,
        "pages": pages,
        "translations": n,
        "vmsim_per_s": round(n / sim_t),
        "baseline_per_s": round(n / base_t),
        "ratio": round(base_t / sim_t, 3),
        "naive_mmu_per_s": round(n / naive_t),
        "naive_ratio": round(naive_t / sim_t, 3),
        "vmsim_ns": round(sim_t / n * 1e9, 1),
        "baseline_ns": round(base_t / n * 1e9, 1),
        "l1_hit_rate": round(c["dtlb_hits"] / n, 4),
        "stlb_hit_rate": round(c["stlb_hits"] / n, 4),
        "miss_rate": round(c["stlb_misses"] / n, 4),
        "baseline_hit_rate": round(bc["hits"] / n, 4),
        "walks": walks,
        "walk_refs": c["walk_refs"],
        "pwc_hits": c["pwc_hits"],
        "refs_per_translation": round(c["walk_refs"] / n, 4),
        "refs_per_walk": round(c["walk_refs"] / walks, 3) if walks else None,
    }


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    rng = random.Random(args.seed)
    machine = vmsim.Machine()
    proc = machine.spawn()
    region = max(args.pages, args.wide_pages, STLB_PAGES)
    with console.status(f"populating {region:,} pages"):
        start = proc.mmap(
            0,
            region * PAGE,
            PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
        )
        # The baseline's page table holds vmsim's own frames (one untimed walk per page).
        page_table = {
            (start >> 12) + i: read_pfn(proc.mm, start + i * PAGE, machine.stack_limit)
            for i in range(region)
        }
    capacity = data_capacity_4k(machine.memory.cpu.tlb.config)
    specs = [("hit", HIT_PAGES), ("stlb", STLB_PAGES), ("random", args.pages)]
    if args.wide_pages:
        specs.append(("random-wide", args.wide_pages))
    streams = {name: make_stream(start, pages, args.n, rng) for name, pages in specs}
    rows = []
    for name, pages in specs:
        with console.status(f"{name}: {args.n:,} translations x {args.repeat} per side"):
            rows.append(
                bench_stream(
                    name,
                    pages,
                    streams[name],
                    machine,
                    proc,
                    page_table,
                    capacity,
                    args.repeat,
                )
            )
    hit = rows[0]
    return {
        "n": args.n,
        "repeat": args.repeat,
        "seed": args.seed,
        "region_pages": region,
        "region_start": start,
        "baseline_capacity": capacity,
        "target": "vmsim faster than the naive dict + LRU MMU on the hit stream",
        "target_met": hit["naive_ratio"] > 1,
        "beats_minimal_dict_lru": hit["ratio"] > 1,
        "streams": rows,
    }


def _rate(per_s: int) -> str:
    return f"{per_s / 1e6:.2f} M" if per_s >= 1e6 else f"{per_s / 1e3:.0f} k"


def render(console: Console, summary: dict[str, Any]) -> None:
    rows = summary["streams"]
    speed = Table(
        title=(
            f"Translations/s: vmsim vs dict + LRU ({summary['baseline_capacity']} entries)\n"
            f"{summary['n']:,} reads per stream, best of {summary['repeat']}"
        )
    )
    cols = (
        "stream",
        "pages",
        "vmsim/s",
        "naive MMU/s",
        "ratio",
        "dict+LRU/s",
        "ratio",
        "vmsim ns",
        "dict ns",
    )
    for col in cols:
        speed.add_column(col, justify="left" if col == "stream" else "right")
    for r in rows:
        ratio = f"{r['ratio']:.2f}x"
        naive = f"{r['naive_ratio']:.2f}x"
        if r["stream"] == "hit":
            naive = f"[{'green' if r['naive_ratio'] > 1 else 'red'}]{naive}[/]"
        speed.add_row(
            r["stream"],
            f"{r['pages']:,}",
            _rate(r["vmsim_per_s"]),
            _rate(r["naive_mmu_per_s"]),
            naive,
            _rate(r["baseline_per_s"]),
            ratio,
            f"{r['vmsim_ns']:.0f}",
            f"{r['baseline_ns']:.0f}",
        )
    console.print(speed)
    model = Table(title="Where vmsim's translations came from, and the walk cost")
    for col in ("stream", "L1 hit", "STLB hit", "walk", "base hit", "refs/transl", "refs/walk"):
        model.add_column(col, justify="left" if col == "stream" else "right")
    for r in rows:
        model.add_row(
            r["stream"],
            f"{r['l1_hit_rate']:.1%}",
            f"{r['stlb_hit_rate']:.1%}",
            f"{r['miss_rate']:.1%}",
            f"{r['baseline_hit_rate']:.1%}",
            f"{r['refs_per_translation']:.3f}",
            "-" if r["refs_per_walk"] is None else f"{r['refs_per_walk']:.2f}",
        )
    console.print(model)
    met = "[green]met[/green]" if summary["target_met"] else "[red]missed[/red]"
    console.print(
        f"Target, {summary['target']}: {met}.\n"
        "naive MMU = nested-dict 4-level page table + OrderedDict LRU TLB keyed by (PCID, "
        "page) with permission checks and the A bit (the model's job, done naively); "
        "dict+LRU = one dict lookup per miss, no checks (the floor of a Python translator). "
        "ratio = vmsim/s over that side's /s. base hit = the dict+LRU hit rate. refs = memory "
        "references made by page walks (4 per walk without a paging-structure-cache hit, "
        "1 with a PDE-cache hit)."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200_000, help="translations per stream")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side (best is kept)")
    parser.add_argument("--pages", type=int, default=16384, help="pages of the random stream")
    parser.add_argument(
        "--wide-pages", type=int, default=65536, help="pages of the random-wide stream (0: skip)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--quick", action="store_true", help="short run: --n 20000 --repeat 1 (for a smoke test)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.repeat = 20_000, 1
    if args.n < 1 or args.repeat < 1 or args.pages < 1 or args.wide_pages < 0:
        parser.error("--n, --repeat and --pages must be >= 1, --wide-pages >= 0")
    console = Console(stderr=args.json)
    summary = run(args, console)
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render(console, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
