"""Page-table and MMU-walk speed: operations per second on the hardware building blocks.

Populates a 4-level (or 5-level) PageTables with --pages 4 KiB PTEs in one contiguous
region (default 65,536 pages = 256 MiB, 128 PTE tables), then times, each on --ops addresses:

- ``get``: PageTables.get() (a lookup, no checks), random addresses in the region;
- ``walk seq`` / ``walk rand``: mmu.walk() for reads, sequential then random pages, no
  paging-structure cache: 4 memory references per walk;
- ``walk+pwc seq`` / ``walk+pwc rand``: the same with the default paging-structure caches;
- ``set`` / ``clear``: PageTables.set() of fresh PTEs, then clear() of them (table freeing).

Timed with time.perf_counter; the address lists are built before timing. Not part of make.

.venv/bin/python benchmarks/pagetable_bench.py [--pages N] [--ops N] [--levels 4|5] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable

from vmsim.hw.mmu import PagingStructureCache, walk
from vmsim.hw.pagetable import PageTables
from vmsim.hw.pte import make_pte

BASE = 0x7F00_0000_0000


def user_pte(pfn: int) -> int:
    return make_pte(
        pfn,
        present=True,
        writable=True,
        user=True,
        nx=True,
        accessed=False,
        dirty=False,
        global_=False,
    )


def timed(fn: Callable[[], object], n: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    return n / dt, dt


def run(pages: int, ops: int, levels: int, seed: int) -> dict[str, dict[str, float]]:
    rng = random.Random(seed)
    pt = PageTables(levels)
    for i in range(pages):
        pt.set(BASE + (i << 12), user_pte(0x100000 + i))
    seq = [BASE + ((i % pages) << 12) for i in range(ops)]
    rnd = [BASE + (rng.randrange(pages) << 12) + rng.randrange(4096) for _ in range(ops)]
    results: dict[str, dict[str, float]] = {}

    def record(name: str, fn: Callable[[], object], n: int, refs: int | None = None) -> None:
        rate, dt = timed(fn, n)
        results[name] = {"ops_per_s": rate, "seconds": dt}
        if refs is not None:
            results[name]["memory_refs_per_walk"] = refs / n

    def do_get() -> None:
        get = pt.get
        for va in rnd:
            get(va)

    def do_walk(addrs: list[int], pwc: PagingStructureCache | None, acc: list[int]) -> None:
        refs = 0
        for va in addrs:
            refs += walk(pt, va, "read", pwc=pwc).memory_refs
        acc.append(refs)

    record("get rand", do_get, ops)
    for label, addrs in (("seq", seq), ("rand", rnd)):
        acc: list[int] = []
        record(f"walk {label}", lambda a=addrs, c=acc: do_walk(a, None, c), ops)
        results[f"walk {label}"]["memory_refs_per_walk"] = acc[0] / ops
        acc = []
        pwc = PagingStructureCache()
        record(f"walk+pwc {label}", lambda a=addrs, c=acc, p=pwc: do_walk(a, p, c), ops)
        results[f"walk+pwc {label}"]["memory_refs_per_walk"] = acc[0] / ops

    fresh = [0x10_0000_0000 + (i << 12) for i in range(ops)]
    entry = user_pte(0x42)

    def do_set() -> None:
        s = pt.set
        for va in fresh:
            s(va, entry)

    def do_clear() -> None:
        c = pt.clear
        for va in fresh:
            c(va)

    record("set", do_set, ops)
    record("clear", do_clear, ops)
    results["tables"] = {"table_pages": float(pt.table_pages)}
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=65536)
    ap.add_argument("--ops", type=int, default=500_000)
    ap.add_argument("--levels", type=int, choices=(4, 5), default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    res = run(args.pages, args.ops, args.levels, args.seed)
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"{args.levels}-level tables, {args.pages} PTEs populated, {args.ops} ops each")
    for name, r in res.items():
        if "ops_per_s" not in r:
            continue
        refs = r.get("memory_refs_per_walk")
        extra = f"  {refs:.2f} refs/walk" if refs is not None else ""
        print(f"  {name:<15} {r['ops_per_s'] / 1e6:6.2f} M/s{extra}")


if __name__ == "__main__":
    main()
