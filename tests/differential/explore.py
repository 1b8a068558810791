"""Run many fuzz seeds against vmsim and group the failures (a helper for FINDINGS.md).

    .venv/bin/python -m tests.differential.explore START COUNT [--shrink]
    .venv/bin/python -m tests.differential.explore seeds=3,17,42 x --shrink --calls=200

Not collected by pytest.  Prints, per distinct failure signature (kind of the first differing
call + kind of difference), the seeds that hit it and, with --shrink, a minimised call list.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict

from .fuzz import SequenceResult, run_calls, shrink
from .harness import infer_mmap_base, spawn_sim
from .live import max_map_count


def make_sim(child, smaps):  # type: ignore[no-untyped-def]
    return spawn_sim(smaps, max_map_count(), infer_mmap_base(smaps))


def signature(res: SequenceResult) -> str:
    """Failure class: the differing call's kind (with advice/flags) and how it differs."""
    last = res.steps[-1] if res.steps else None
    what = res.problems[0].split("\n")[0] if res.problems else "?"
    if not last:
        return what
    call = last.call
    name = call.name
    if name == "madvise":
        name += f"({call.args[2]})"
    elif name == "mremap":
        name += f"(flags={call.args[3]}{',old=0' if call.args[1] == 0 else ''})"
    elif name == "mmap":
        name += f"(flags={call.args[3]:#x})"
    if what.startswith("results differ"):
        k, o = last.kernel, last.other
        what = f"kernel {k.err or 'ok'} vs vmsim {(o.err or 'ok') if o else 'crash'}"
    elif what.startswith("vmsim raised"):
        what = "vmsim crash: " + res.problems[0].strip().split("\n")[-1][:80]
    return f"{name}: {what}"


def main() -> None:
    do_shrink = "--shrink" in sys.argv
    ncalls = int(next((a[8:] for a in sys.argv if a.startswith("--calls=")), "40"))
    if sys.argv[1].startswith("seeds="):
        seeds = [int(x) for x in sys.argv[1][6:].split(",")]
    else:
        seeds = list(range(int(sys.argv[1]), int(sys.argv[1]) + int(sys.argv[2])))
    groups: dict[str, list[SequenceResult]] = defaultdict(list)
    t0 = time.time()
    total = ok = calls = 0
    for seed in seeds:
        res = run_calls(None, make_sim, seed=seed, ncalls=ncalls)
        total += 1
        calls += res.compared
        if res.ok:
            ok += 1
        else:
            groups[signature(res)].append(res)
    print(f"{total} sequences, {ok} ok, {calls} calls compared, {time.time() - t0:.1f}s")
    for sig, results in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        print(f"\n=== {sig}: {len(results)} seeds {[r.seed for r in results][:12]}")
        first = min(results, key=lambda r: len(r.steps))
        if do_shrink:
            calls_list = [st.call for st in first.steps[4:]]
            small = shrink(
                calls_list, make_sim, lambda r, sig=sig: not r.ok and signature(r) == sig
            )
            rerun = run_calls(small, make_sim, seed=first.seed)
            print(rerun.report())
        else:
            print(first.report()[-3000:])


if __name__ == "__main__":
    main()
