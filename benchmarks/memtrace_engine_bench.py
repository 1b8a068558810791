"""The access-trace engine's figures (issue 12), side by side in one run, as ratios.

Streams (the same addresses for every side):

* ``tlb-hit``: loads at random offsets of 32 pages (translate_bench.py's hit stream): every
  translation an L1 dTLB hit once warm;
* ``tlb-hit-fetch``: the same addresses as instruction fetches: the TLB path alone (fetches
  are not cache-modelled), against the dict and reference rates of ``tlb-hit``;
* ``stlb-hit`` (listed last): loads at random offsets of 1000 pages (4 MB: past the L1 dTLB's
  reach, within the STLB's): mostly STLB hits, each refilling the L1;
* ``random-1g``: loads at uniform random addresses over 1 GiB of 4 KiB pages, every page
  faulted in (written) first, untimed: almost every translation is a page walk (PWC, and the
  L1D/L2/LLC model for each walk reference and each data line);
* ``real``: a real program's lackey trace, ``ls -l /usr/bin`` recorded by ``vmsim record``
  (``--real PATH`` takes another recording; skipped with a note without valgrind and with
  ``--quick``), laid out as ``vmsim tlb`` does (its .strace over its .maps), held in memory:
  the fast engine alone, its faults through the model included (mostly TLB hits).

Sides: the fast engine (vmsim.memtrace.engine, compiled), the naive dict + LRU translator of
translate_bench.py (a dict page table and an OrderedDict TLB of the STLB's 4 KiB capacity: no
permissions, no walk, no cache model), and the reference engine (every access through
vmsim.mm.access.user_access). Rates are accesses per second of CPU time (``time.process_time``: the machine is shared, and
wall time would measure the other tenants too), ratios are against the dict translator measured in the
same run (the machine may be shared: absolute rates move with its load, ratios much less).

Also: the fast engine's state bytes per touched page (the page-table mirror; the fixed TLB,
PWC and cache arrays reported apart) on the dense 1 GiB, on the real trace and at the sparse
extreme (one touched page in each of 256 page tables), beside the model's own per-page
metadata (tracemalloc over the model faulting pages in).

Targets (issue 12): >= 50 M translations/s on the hit stream, >= 10 M/s on random-1g, <= 72
bytes of engine state per touched page. ``tlb-hit`` and ``tlb-hit-fetch`` run on the engine's
hit path (``_core.hit_run``: every record an L1 hit, then the data line through the cache
model); ``random-1g`` on its general path (a walk per record). The figures measured and where
the time goes: docs/memtrace.md, "The engine's speed". Run: ``.venv/bin/python
benchmarks/memtrace_engine_bench.py [--quick] [--json] [--real TRACE] [--repeat N]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from translate_bench import DictLruTranslator

from vmsim.memtrace.engine import EngineConfig, FastEngine, Model
from vmsim.memtrace.layout import Layout
from vmsim.memtrace.records import KIND_INSTR, KIND_LOAD, KIND_STORE, TraceChunk
from vmsim.memtrace.reference import run_reference

PAGE = 4096
BASE = 0x100000000
GIB = 1 << 30


def chunk(addrs: np.ndarray, kind: int) -> TraceChunk:  # type: ignore[type-arg]
    a = np.ascontiguousarray(addrs, dtype=np.uint64)
    return TraceChunk(a, np.full(len(a), kind, np.uint8), np.zeros(len(a), np.uint16), 1)


def time_fast(warm: TraceChunk, timed: TraceChunk, region: int) -> tuple[float, FastEngine]:
    eng = FastEngine(Model(Layout.of_regions([(BASE, BASE + region)]), EngineConfig()))
    eng.run_chunk(warm)
    eng.run_chunk(TraceChunk(timed.addr[:1000], timed.kind[:1000], timed.size[:1000], 1))
    gc.collect()
    t0 = time.process_time()
    eng.run_chunk(timed)
    return time.process_time() - t0, eng


def time_reference(warm: TraceChunk, timed: TraceChunk, region: int) -> float:
    marks: dict[str, float] = {}

    def chunks() -> Iterator[TraceChunk]:
        yield warm
        marks["t0"] = time.process_time()
        yield timed

    run_reference(chunks(), Layout.of_regions([(BASE, BASE + region)]), EngineConfig())
    return time.process_time() - marks["t0"]


def time_dict(pages: int, timed: np.ndarray) -> float:  # type: ignore[type-arg]
    base = DictLruTranslator({BASE // PAGE + i: 1000 + i for i in range(pages)}, 1536 + 64)
    stream = timed.tolist()
    tr = base.translate
    for a in stream[:2000]:
        tr(a)
    gc.collect()
    t0 = time.process_time()
    for a in stream:
        tr(a)
    return time.process_time() - t0


def measure(
    name: str,
    pages: int,
    addrs: np.ndarray,  # type: ignore[type-arg]
    n_dict: int,
    n_ref: int,
) -> tuple[dict[str, Any], FastEngine, float]:
    """One stream of loads over ``pages`` pages faulted in (written) first, on the three
    sides: (its row, the fast engine after it, the seconds the fault-in took)."""
    region = pages * PAGE
    warm = chunk(BASE + np.arange(pages) * PAGE, KIND_STORE)
    t0 = time.process_time()
    dt_fast, eng = time_fast(warm, chunk(addrs, KIND_LOAD), region)
    fault_in = time.process_time() - t0 - dt_fast
    c = eng.counters()
    n_dict = min(n_dict, len(addrs))
    dt_dict = time_dict(pages, addrs[:n_dict])
    dt_ref = time_reference(warm, chunk(addrs[:n_ref], KIND_LOAD), region)
    row = {
        "stream": name,
        "fast_per_s": len(addrs) / dt_fast,
        "dict_per_s": n_dict / dt_dict,
        "reference_per_s": n_ref / dt_ref,
        "hit_rate": (c.l1_hits + c.stlb_hits) / c.accesses,
    }
    return row, eng, fault_in


def model_bytes_per_page(pages: int) -> float:
    """tracemalloc'd bytes the Python model keeps per resident page it faulted in (page
    tables, frame metadata, LRU, rmap...), over ``pages`` anonymous pages each written with
    a zero byte (a write fault, and no page contents stored)."""
    import vmsim
    from vmsim.constants import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE

    m = vmsim.Machine(ram="64G")
    p = m.spawn()
    addr = p.mmap(0, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    p.write(addr, b"\0")
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(1, pages):
        p.write(addr + i * PAGE, b"\0")  # a zero byte: no page contents kept
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / (pages - 1)


def record_ls(workdir: Path) -> Path:
    """``ls -l /usr/bin`` under lackey (its listing to /dev/null: the recorded program's
    stdout is this process's)."""
    from vmsim.cli.record import record

    out = workdir / "ls.lackey.zst"
    saved = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stdout.flush()
        os.dup2(null, 1)
        record(["ls", "-l", "/usr/bin"], out)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)
    return out


def time_real(path: Path, repeat: int) -> dict[str, Any]:
    """The fast engine over a recorded trace held in memory, laid out as vmsim tlb does:
    best CPU time of ``repeat`` passes, and the mirror's bytes per touched page."""
    from vmsim.cli.tlb import strace_layout
    from vmsim.memtrace.readers import open_memtrace

    chunks = list(open_memtrace(path))
    records = sum(len(c.addr) for c in chunks)
    best = float("inf")
    for _ in range(repeat):
        lay = strace_layout(Path(f"{path}.strace"), Path(f"{path}.maps"))
        eng = FastEngine(Model(lay, EngineConfig()))
        gc.collect()
        t0 = time.process_time()
        for c in chunks:
            eng.run_chunk(c)
        eng.finish()
        best = min(best, time.process_time() - t0)
    c = eng.counters()
    return {
        "stream": "real",
        "trace": str(path),
        "records": records,
        "fast_per_s": records / best,
        "hit_rate": (c.l1_hits + c.stlb_hits) / c.accesses,
        "touched_pages": c.touched_pages,
        "mirror_bytes_per_page": eng.mirror_bytes() / c.touched_pages,
    }


def real_trace(path: Path | None, quick: bool, repeat: int) -> dict[str, Any] | str:
    """:func:`time_real` of ``path``, else of ``ls -l /usr/bin`` recorded now; a note when
    there is none."""
    if path is not None:
        return time_real(path, repeat)
    if quick:
        return "real trace skipped (--quick)"
    if shutil.which("valgrind") is None:
        return "real trace skipped: valgrind is not installed"
    with tempfile.TemporaryDirectory() as work:
        return time_real(record_ls(Path(work)), repeat)


def bench(quick: bool, real: Path | None = None, repeat: int = 3) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    out: dict[str, Any] = {"streams": []}
    n_fast, n_dict, n_ref = (
        (4_000_000, 300_000, 20_000) if quick else (20_000_000, 1_000_000, 60_000)
    )
    # -- tlb-hit
    hit_pages = 32
    hit = BASE + rng.integers(0, hit_pages, n_fast) * PAGE + rng.integers(0, PAGE, n_fast)
    row, _, _ = measure("tlb-hit", hit_pages, hit, n_dict, n_ref)
    out["streams"].append(row)
    # -- the same hit stream as instruction fetches: the TLB path alone (no data-cache model)
    warm = chunk(BASE + np.arange(hit_pages) * PAGE, KIND_STORE)
    dt_fetch, _ = time_fast(warm, chunk(hit, KIND_INSTR), hit_pages * PAGE)
    out["streams"].append(
        {**row, "stream": "tlb-hit-fetch", "fast_per_s": n_fast / dt_fetch, "hit_rate": 1.0}
    )
    # -- random over 1 GiB of 4 KiB pages
    region = (256 << 20) if quick else GIB
    pages = region // PAGE
    rnd = BASE + rng.integers(0, region, n_fast // 2)
    row, eng, fault_in = measure(f"random-{region >> 20}m", pages, rnd, n_dict, n_ref)
    c = eng.counters()
    row["walk_refs_by_level"] = c.walk_refs_by_level
    row["data_refs_by_level"] = c.data_refs_by_level
    row["fault_in_s"] = fault_in
    row["faults_per_s"] = pages / fault_in
    out["streams"].append(row)
    # -- STLB hits: loads over 1000 pages (4 MB: past the L1 dTLB's 64 entries, within the
    # STLB's 1536): mostly STLB hits, the general path with an L1 refill per record
    stlb_pages = 1000
    stlb = (
        BASE + rng.integers(0, stlb_pages, n_fast // 4) * PAGE + rng.integers(0, PAGE, n_fast // 4)
    )
    out["streams"].append(measure("stlb-hit", stlb_pages, stlb, n_dict, n_ref)[0])
    out["touched_pages"] = c.touched_pages
    out["mirror_bytes_per_page"] = eng.mirror_bytes() / c.touched_pages
    out["fixed_bytes"] = eng.state_bytes() - eng.mirror_bytes()
    # the other extreme: one page in each of 256 page tables (2 MiB regions)
    sparse = chunk(BASE + np.arange(256) * (2 << 20), KIND_STORE)
    eng = FastEngine(Model(Layout.of_regions([(BASE, BASE + (512 << 20))]), EngineConfig()))
    eng.run_chunk(sparse)
    out["sparse_mirror_bytes_per_page"] = eng.mirror_bytes() / eng.counters().touched_pages
    out["model_bytes_per_page"] = model_bytes_per_page(2000 if quick else 20000)
    out["real"] = real_trace(real, quick, repeat)
    return out


def render(r: dict[str, Any]) -> None:
    print("access-trace engine (issue 12): translations per second, ratios to the dict+LRU")
    print(
        f"{'stream':<14}{'fast':>12}{'dict+LRU':>12}{'reference':>12}{'fast/dict':>11}"
        f"{'fast/ref':>10}{'hit rate':>10}"
    )
    for s in r["streams"]:
        print(
            f"{s['stream']:<14}{s['fast_per_s'] / 1e6:>10.2f} M{s['dict_per_s'] / 1e6:>10.2f} M"
            f"{s['reference_per_s'] / 1e6:>10.3f} M{s['fast_per_s'] / s['dict_per_s']:>10.1f}x"
            f"{s['fast_per_s'] / s['reference_per_s']:>9.0f}x{s['hit_rate']:>10.4f}"
        )
    rnd = r["streams"][2]
    print(
        f"  {rnd['stream']}: walk refs by level [L1D, L2, LLC, DRAM] {rnd['walk_refs_by_level']}, "
        f"data refs {rnd['data_refs_by_level']}"
    )
    print(f"  fault-in through the model: {rnd['faults_per_s']:.0f} faults/s")
    print("targets: fast >= 50 M/s on tlb-hit, >= 10 M/s on random-1024m (issue 12)")
    print(
        f"engine state: {r['mirror_bytes_per_page']:.1f} bytes per touched page "
        f"({r['touched_pages']} pages; target <= 72) + {r['fixed_bytes'] / 1024:.0f} KiB fixed "
        f"(TLBs, PWC, caches, log); the model's own metadata: "
        f"{r['model_bytes_per_page']:.0f} bytes per resident page"
    )
    print(
        f"  sparse (one page in each of 256 page tables): "
        f"{r['sparse_mirror_bytes_per_page']:.0f} bytes per touched page"
    )
    real = r["real"]
    if isinstance(real, str):
        print(f"  {real}")
    else:
        print(
            f"  real trace {real['trace']}: {real['records']:,} records, fast engine "
            f"{real['fast_per_s'] / 1e6:.1f} M/s (faults through the model included), hit rate "
            f"{real['hit_rate']:.4f}, {real['mirror_bytes_per_page']:.0f} bytes per touched page "
            f"({real['touched_pages']} pages)"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller streams and region")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--real", type=Path, help="a vmsim record trace (default: ls -l /usr/bin)")
    ap.add_argument("--repeat", type=int, default=3, help="passes over the real trace (best)")
    args = ap.parse_args(argv)
    r = bench(args.quick, args.real, args.repeat)
    if args.json:
        print(json.dumps(r))
    else:
        render(r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
