"""The exploration run of the trace-reader fuzzer (see ``trace_fuzz.py``): as many mutated
lines as asked, seeded, stopping at the first failure and printing how to reproduce it.

    .venv/bin/python tests/property/explore_trace_fuzz.py --lines 1000000 --seed 1
    .venv/bin/python tests/property/explore_trace_fuzz.py --case 1:4711   # one case again
    .venv/bin/python tests/property/explore_trace_fuzz.py --lines 100000 --replay  # + replay()

``--replay`` also replays every case through ``vmsim.trace.replay.replay`` (slower), which
must end in a report or a ReplayError, never another exception.

Each case is built from ``random.Random(f"{seed}:{index}")``, so ``--case SEED:INDEX``
rebuilds exactly the case that failed. Prints the lines read, the cases, the time and the
rate at the end.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from trace_fuzz import check, check_decoders, make_case


def run_case(seed: int, index: int, with_replay: bool = False) -> int:
    rng = random.Random(f"{seed}:{index}")
    case = make_case(rng)
    check(case)
    if with_replay:
        from vmsim.trace import read_ltrace, read_strace
        from vmsim.trace.replay import ReplayError, replay

        reader = read_strace if case.fmt == "strace" else read_ltrace
        try:
            replay(lambda: reader(case.lines))
        except ReplayError:
            pass
    for line in rng.sample(case.lines, min(len(case.lines), 8)):
        check_decoders(rng, line)
    return len(case.lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="stop after this many")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--case", metavar="SEED:INDEX", help="run this one case, verbosely")
    parser.add_argument("--replay", action="store_true", help="also replay every case")
    args = parser.parse_args()
    warnings.simplefilter("error")  # as pytest runs (filterwarnings = error)
    if args.case:
        seed, index = (int(x) for x in args.case.split(":"))
        case = make_case(random.Random(f"{seed}:{index}"))
        for n, line in enumerate(case.lines, 1):
            print(f"{n:4} {line[:200]!r}")
        run_case(seed, index, args.replay)
        print("ok")
        return 0
    lines = cases = 0
    start = time.perf_counter()
    index = 0
    while lines < args.lines:
        try:
            lines += run_case(args.seed, index, args.replay)
        except Exception:
            traceback.print_exc()
            print(f"FAILED: case {args.seed}:{index} (after {lines:,} lines); reproduce with")
            print(f"  .venv/bin/python {sys.argv[0]} --case {args.seed}:{index}")
            return 1
        cases += 1
        index += 1
    took = time.perf_counter() - start
    print(
        f"{lines:,} lines in {cases:,} cases, seed {args.seed}: no failure; "
        f"{took:.1f} s ({lines / took:,.0f} lines/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
