"""The fast lane's VMA engine (vmsim.fastlane.vmas) against the Python model: splits at
65k VMAs in ascending, descending and random order.

One PROT_READ mapping of 2 * N + 1 pages (N = 32,767 by default) in a process of the
"linux" layout, then mprotect(base + (2i + 1) pages, 1 page, PROT_READ|PROT_WRITE) for every
i in the chosen order: each call splits one VMA in three, so the process ends with
2 * N + 1 more VMAs (65,534 + the layout's at the default N), at an unlimited
max_map_count. Timed with time.perf_counter, best of --runs:

* "model": ``Process.mprotect`` of the Python model;
* "engine": ``VmaArrays.mprotect`` called from Python (argument handling + numba dispatch
  + the compiled call);
* "engine, compiled loop": the same compiled call from a compiled loop over the arguments
  (what a compiled replay driver pays: no dispatch);

and the ratios model / engine. Then munmap of every other page in the same orders (each
VMA of the result goes away), and the conversions from_mm / to_mm at the end.

.venv/bin/python benchmarks/fastlane_vmas_bench.py [--n N] [--runs R] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit

import vmsim
from vmsim.constants import (
    MAP_ANONYMOUS,
    MAP_NORESERVE,
    MAP_PRIVATE,
    MAX_MAP_COUNT_LIMIT,
    PROT_READ,
    PROT_WRITE,
)
from vmsim.fastlane import _vmas as k
from vmsim.fastlane.vmas import VmaArrays
from vmsim.process import Process

PAGE = 4096
RW = PROT_READ | PROT_WRITE


@njit(cache=False)
def _mprotect_loop(vm, ix, mm, info, addrs, length, prot):  # type: ignore[no-untyped-def]
    bad = 0
    for a in addrs:
        if k.mprotect(vm, ix, mm, info, a, length, prot) != 0:
            bad += 1
    return bad


@njit(cache=False)
def _munmap_loop(vm, ix, mm, info, addrs, length):  # type: ignore[no-untyped-def]
    bad = 0
    for a in addrs:
        if k.munmap(vm, ix, mm, info, a, length) != 0:
            bad += 1
    return bad


def setup(n: int) -> tuple[Process, int]:
    m = vmsim.Machine(max_map_count=MAX_MAP_COUNT_LIMIT)
    p = m.spawn("linux")
    base = p.mmap(0, (2 * n + 1) * PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE)
    return p, base


def orders(n: int) -> dict[str, list[int]]:
    rng = np.random.default_rng(1)
    return {
        "ascending": list(range(n)),
        "descending": list(range(n - 1, -1, -1)),
        "random": [int(i) for i in rng.permutation(n)],
    }


def best(runs: int, fn: Callable[[int, list[int]], float], n: int, order: list[int]) -> float:
    return min(fn(n, order) for _ in range(runs))


def addrs_of(base: int, order: list[int]) -> list[int]:
    return [base + (2 * i + 1) * PAGE for i in order]


def split_model(n: int, order: list[int]) -> float:
    p, base = setup(n)
    addrs = addrs_of(base, order)
    t = time.perf_counter()
    for a in addrs:
        p.mprotect(a, PAGE, RW)
    return time.perf_counter() - t


def split_engine(n: int, order: list[int]) -> float:
    p, base = setup(n)
    e = VmaArrays.from_mm(p.mm)
    addrs = addrs_of(base, order)
    t = time.perf_counter()
    for a in addrs:
        e.mprotect(a, PAGE, RW)
    dt = time.perf_counter() - t
    assert e.map_count == p.map_count + 2 * n
    return dt


def split_loop(n: int, order: list[int]) -> float:
    p, base = setup(n)
    e = VmaArrays.from_mm(p.mm)
    e.reserve(2 * n)
    addrs = np.array(addrs_of(base, order), dtype=np.int64)
    t = time.perf_counter()
    bad = _mprotect_loop(e.vm, e.ix, e.mm, e.info, addrs, PAGE, RW)
    dt = time.perf_counter() - t
    assert bad == 0 and e.map_count == p.map_count + 2 * n
    return dt


def split_all(n: int) -> tuple[Process, int]:
    p, base = setup(n)
    for a in addrs_of(base, list(range(n))):
        p.mprotect(a, PAGE, RW)
    return p, base


def unmap_model(n: int, order: list[int]) -> float:
    p, base = split_all(n)
    addrs = addrs_of(base, order)
    t = time.perf_counter()
    for a in addrs:
        p.munmap(a, PAGE)
    return time.perf_counter() - t


def unmap_engine(n: int, order: list[int]) -> float:
    p, base = split_all(n)
    e = VmaArrays.from_mm(p.mm)
    addrs = addrs_of(base, order)
    t = time.perf_counter()
    for a in addrs:
        e.munmap(a, PAGE)
    dt = time.perf_counter() - t
    assert e.map_count == p.map_count - n
    return dt


def unmap_loop(n: int, order: list[int]) -> float:
    p, base = split_all(n)
    e = VmaArrays.from_mm(p.mm)
    addrs = np.array(addrs_of(base, order), dtype=np.int64)
    t = time.perf_counter()
    bad = _munmap_loop(e.vm, e.ix, e.mm, e.info, addrs, PAGE)
    dt = time.perf_counter() - t
    assert bad == 0 and e.map_count == p.map_count - n
    return dt


def measure(n: int, runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n": n, "splits": {}, "unmaps": {}}
    for name, order in orders(n).items():
        for what, fns in (
            ("splits", (split_model, split_engine, split_loop)),
            ("unmaps", (unmap_model, unmap_engine, unmap_loop)),
        ):
            tm, te, tl = (best(runs, fn, n, order) for fn in fns)
            out[what][name] = {
                "model_us": tm / n * 1e6,
                "engine_us": te / n * 1e6,
                "loop_us": tl / n * 1e6,
                "model/engine": tm / te,
                "model/loop": tm / tl,
            }
    p, _base = split_all(n)
    t = time.perf_counter()
    e = VmaArrays.from_mm(p.mm)
    out["from_mm_ms"] = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    e.to_mm(p.mm)
    out["to_mm_ms"] = (time.perf_counter() - t) * 1e3
    out["vmas"] = p.map_count
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32_767, help="splits (default 32,767)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    t = time.perf_counter()
    p, base = setup(4)
    e = VmaArrays.from_mm(p.mm)
    e.mprotect(base + PAGE, PAGE, RW)
    e.munmap(base + PAGE, PAGE)
    _mprotect_loop(e.vm, e.ix, e.mm, e.info, np.array([base + 3 * PAGE]), PAGE, RW)
    _munmap_loop(e.vm, e.ix, e.mm, e.info, np.array([base + 3 * PAGE]), PAGE)
    warm = time.perf_counter() - t
    res = measure(args.n, args.runs)
    res["first_calls_s"] = warm  # numba compile or cache load, and the loops' compile
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"{res['vmas']} VMAs at the end; first calls (compile / cache load) {warm:.1f} s")
    for what in ("splits", "unmaps"):
        print(f"\n{what} (us per call)      model   engine   loop   model/engine  model/loop")
        for name, r in res[what].items():
            print(
                f"  {name:18} {r['model_us']:8.2f} {r['engine_us']:8.2f} {r['loop_us']:6.3f}"
                f"   {r['model/engine']:10.1f}x  {r['model/loop']:9.1f}x"
            )
    print(f"\nfrom_mm {res['from_mm_ms']:.0f} ms, to_mm {res['to_mm_ms']:.0f} ms")


if __name__ == "__main__":
    main()
