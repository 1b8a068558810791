"""Fill-to-limit benchmark: vmsim side by side with the live kernel (see README.md).

.venv/bin/python benchmarks/run.py [--repeat N] [--json] [--pages N] [--no-kernel] [--check]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import kernel_side
import report
import vmsim_side
from rich.console import Console
from scenario import DEFAULT_PAGES, DEFAULT_WINDOW, SideResult, best_of

DEFAULT_MAX_MAP_COUNT = 65530


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--repeat", type=int, default=1, metavar="N", help="best of N runs per side"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object, no tables")
    parser.add_argument("--pages", type=int, default=DEFAULT_PAGES, help="region size in pages")
    parser.add_argument(
        "--window", type=int, default=DEFAULT_WINDOW, help="calls per timing window"
    )
    parser.add_argument("--no-kernel", action="store_true", help="run the vmsim side only")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a target is missed or the counts disagree"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.pages < 4 or args.window < 1:
        parser.error("--repeat and --window must be >= 1, --pages >= 4")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(stderr=args.json)
    kernel: SideResult | None = None
    skipped: str | None = "--no-kernel" if args.no_kernel else None
    if not args.no_kernel:
        try:
            binary = kernel_side.build()
            with console.status("kernel side: fill_limit"):
                kernel = best_of([kernel_side.run(binary, args.pages) for _ in range(args.repeat)])
        except kernel_side.KernelUnavailable as exc:
            skipped = str(exc)
            console.print(f"[yellow]Skipping the kernel side:[/yellow] {skipped}")

    # Same limit and same starting count as the kernel-side process, so both make the same calls.
    max_map_count = kernel.max_map_count if kernel else DEFAULT_MAX_MAP_COUNT
    before = kernel.map_count["before_mmap"] if kernel else None
    runs = []
    with console.status("vmsim side"):
        for _ in range(args.repeat):
            runs.append(vmsim_side.run(args.pages, max_map_count, before))
            gc.collect()
    sim = best_of(runs)

    summary = report.summarise(kernel, sim, skipped, args.repeat, args.window)
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        report.render(console, summary)
    if args.check:
        failed = [
            name
            for name in ("speed_ok", "scaling_ok", "counts_agree")
            if summary.get(name) is False
        ]
        if failed:
            console.print(f"[red]targets missed:[/red] {', '.join(failed)}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
