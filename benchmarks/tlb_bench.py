"""TLB speed: translations per second, vmsim's TlbHierarchy against a naive baseline.

The baseline is what one writes first: the same geometry (L1 dTLB/iTLB, unified STLB, LRU per
set, PCID and global tags, STLB refill of the L1), with one ``OrderedDict`` per set keyed by a
``(page base, page size, tag)`` tuple, entries as small objects, ``move_to_end`` on a hit, and
a ``dict`` page table to fill misses. Both models run the same streams in the same process and
must agree on every hit and miss count (checked), so the ratio compares equal work:

- ``hit``: 48 pages cycled (3 per L1 dTLB set of 4 ways): every lookup is an L1 hit.
- ``stlb``: 1024 pages cycled: too many for the L1, all in the STLB (1536 entries).
- ``random``: uniform over 65536 pages (256 MiB): mostly misses, each filled from the page
  table (the walk itself is not modelled here; the hw.mmu benchmark adds it).

Issue 3's target: faster than the baseline on hits (the baseline does about 1 M/s).

.venv/bin/python benchmarks/tlb_bench.py [--n N] [--repeat R] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import OrderedDict
from collections.abc import Callable

from vmsim.hw.tlb import DEFAULT_TLB_CONFIG, TlbArrayConfig, TlbConfig, TlbHierarchy

PAGE = 4096
PCID = 1


class _NaiveEntry:
    __slots__ = ("global_", "page_size", "pcid", "perms", "pfn", "vbase")

    def __init__(
        self, vbase: int, page_size: int, pfn: int, perms: int, pcid: int, global_: bool
    ) -> None:
        self.vbase = vbase
        self.page_size = page_size
        self.pfn = pfn
        self.perms = perms
        self.pcid = pcid
        self.global_ = global_


class _NaiveArray:
    def __init__(self, cfg: TlbArrayConfig) -> None:
        self.ways = cfg.ways
        self.page_sizes = cfg.page_sizes
        self.sets: list[OrderedDict[tuple[int, int, int], _NaiveEntry]] = [
            OrderedDict() for _ in range(cfg.sets)
        ]


class NaiveTlb:
    """The dict + OrderedDict LRU baseline (same semantics as TlbHierarchy)."""

    GLOBAL = -1

    def __init__(self, config: TlbConfig = DEFAULT_TLB_CONFIG) -> None:
        self.levels = {
            name: [_NaiveArray(c) for c in getattr(config, name)] for name in ("l1d", "l1i", "stlb")
        }
        self.probes = {
            name: sorted(((s, a) for a in arrays for s in a.page_sizes), key=lambda p: p[0])
            for name, arrays in self.levels.items()
        }
        self.hits = {"L1": 0, "STLB": 0, "miss": 0}

    def _find(self, level: str, vaddr: int, pcid: int) -> _NaiveEntry | None:
        for size, arr in self.probes[level]:
            base = vaddr - vaddr % size
            s = arr.sets[(vaddr // size) % len(arr.sets)]
            for tag in (pcid, self.GLOBAL):
                key = (base, size, tag)
                if key in s:
                    s.move_to_end(key)
                    return s[key]
        return None

    def _fill(self, level: str, e: _NaiveEntry) -> None:
        for arr in self.levels[level]:
            if e.page_size in arr.page_sizes:
                s = arr.sets[(e.vbase // e.page_size) % len(arr.sets)]
                key = (e.vbase, e.page_size, self.GLOBAL if e.global_ else e.pcid)
                if key in s:
                    s.move_to_end(key)
                elif len(s) >= arr.ways:
                    s.popitem(last=False)
                s[key] = e

    def lookup(self, vaddr: int, pcid: int, kind: str = "data") -> tuple[_NaiveEntry | None, str]:
        l1 = "l1d" if kind == "data" else "l1i"
        e = self._find(l1, vaddr, pcid)
        if e is not None:
            self.hits["L1"] += 1
            return e, "L1"
        e = self._find("stlb", vaddr, pcid)
        if e is not None:
            self.hits["STLB"] += 1
            self._fill(l1, e)
            return e, "STLB"
        self.hits["miss"] += 1
        return None, "miss"

    def insert(
        self,
        vaddr: int,
        page_size: int,
        pfn: int,
        perms: int,
        pcid: int,
        global_: bool = False,
        kind: str = "data",
    ) -> None:
        e = _NaiveEntry(vaddr - vaddr % page_size, page_size, pfn, perms, pcid, global_)
        self._fill("l1d" if kind == "data" else "l1i", e)
        self._fill("stlb", e)


def make_stream(name: str, n: int, rng: random.Random) -> list[int]:
    base = 0x7F00_0000_0000
    if name == "hit":
        pages = [base + i * PAGE for i in range(48)]
        return [pages[i % 48] + (i * 8) % PAGE for i in range(n)]
    if name == "stlb":
        return [base + (i % 1024) * PAGE + 16 for i in range(n)]
    return [base + rng.randrange(65536) * PAGE + rng.randrange(PAGE) for _ in range(n)]


def run_fast(stream: list[int], table: dict[int, int]) -> tuple[float, tuple[int, int, int]]:
    tlb = TlbHierarchy()
    lookup, insert = tlb.lookup, tlb.insert
    t0 = time.perf_counter()
    for vaddr in stream:
        e, _ = lookup(vaddr, PCID)
        if e is None:
            insert(vaddr, PAGE, table[vaddr >> 12], 0b111, PCID)
    dt = time.perf_counter() - t0
    s = tlb.stats
    return dt, (s.dtlb_hits, s.stlb_hits, s.stlb_misses)


def run_naive(stream: list[int], table: dict[int, int]) -> tuple[float, tuple[int, int, int]]:
    tlb = NaiveTlb()
    lookup, insert = tlb.lookup, tlb.insert
    t0 = time.perf_counter()
    for vaddr in stream:
        e, _ = lookup(vaddr, PCID)
        if e is None:
            insert(vaddr, PAGE, table[vaddr >> 12], 0b111, PCID)
    dt = time.perf_counter() - t0
    return dt, (tlb.hits["L1"], tlb.hits["STLB"], tlb.hits["miss"])


Runner = Callable[[list[int], dict[int, int]], tuple[float, tuple[int, int, int]]]


def best(runner: Runner, stream: list[int], table: dict[int, int], repeat: int) -> tuple:
    runs = [runner(stream, table) for _ in range(repeat)]
    return min(r[0] for r in runs), runs[0][1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="lookups per stream")
    ap.add_argument("--repeat", type=int, default=3, help="runs per model (best is kept)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    rows = []
    for name in ("hit", "stlb", "random"):
        stream = make_stream(name, args.n, rng)
        table = {v >> 12: (v >> 12) & 0xFFFFF for v in set(stream)}
        fast_t, fast_counts = best(run_fast, stream, table, args.repeat)
        naive_t, naive_counts = best(run_naive, stream, table, args.repeat)
        if fast_counts != naive_counts:
            print(f"{name}: models disagree {fast_counts} != {naive_counts}", file=sys.stderr)
            return 1
        rows.append(
            {
                "stream": name,
                "lookups": args.n,
                "l1_hits": fast_counts[0],
                "stlb_hits": fast_counts[1],
                "misses": fast_counts[2],
                "vmsim_per_s": round(args.n / fast_t),
                "baseline_per_s": round(args.n / naive_t),
                "ratio": round(naive_t / fast_t, 2),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"{'stream':8} {'L1 hits':>9} {'STLB hits':>9} {'misses':>9} "
        f"{'vmsim/s':>12} {'baseline/s':>12} {'ratio':>6}"
    )
    for r in rows:
        print(
            f"{r['stream']:8} {r['l1_hits']:>9} {r['stlb_hits']:>9} {r['misses']:>9} "
            f"{r['vmsim_per_s']:>12,} {r['baseline_per_s']:>12,} {r['ratio']:>5}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
