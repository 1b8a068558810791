"""``vmsim demo sidechannel``: a TLB timing side channel (prime + probe on the STLB, after
TLBleed, Gras et al., USENIX Security 2018) and what each mitigation does to it.

An attacker process and a victim process of one machine share its core. The victim's secret
key decides which page of its table each key bit touches (page A or B, in two different STLB
sets); the attacker fills those sets with its own pages, lets the victim run, then times its
own accesses with the access-trace engine's cycle model (an L1 TLB hit, an STLB hit, or a page
walk priced by the cache level of each page-table entry it read) and reads each bit from
which set was slower. It never reads the victim's state. ``--victim lackey`` makes the victim
a real C program (compiled with gcc, its lookup loop recorded by Valgrind lackey) instead of
the documented model. Each mitigation is measured over the same secrets: accuracy per bit (0.5
is a coin toss) and the page walks it costs beyond ``none`` on a benign schedule with the same
switches (two processes taking turns over 2 MiB each). ``docs/sidechannel.md`` says what
the model simplifies.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.table import Table

from vmsim.cli.commands import add_command
from vmsim.cli.errors import CliError, UsageError
from vmsim.cli.render import add_story_modes, write_json
from vmsim.scenarios import sidechannel
from vmsim.scenarios.sidechannel import VICTIMS, Result
from vmsim.scenarios.sidechannel_victim import VictimUnavailable

_WHAT = {
    "none": "one address space, one PCID, no flush (threads; TLBleed's shared TLB)",
    "pcid": "two processes, PCIDs, no flush (Cpu.switch_to): tagged, same sets",
    "flush": "full TLB flush on every switch (no PCID)",
    "kpti": "PCIDs + KPTI: every switch enters the kernel on its own PCID",
    "partition": "STLB sets partitioned by PCID (half the sets each)",
    "random": "STLB set index hashed with a per-PCID key",
}


def register(subparsers: Any) -> None:
    """Add ``sidechannel`` to the ``vmsim demo`` subcommands."""
    parser = add_command(
        subparsers, "sidechannel", "a TLB timing side channel and its mitigations", __doc__, run
    )
    add_story_modes(parser, "one JSON object: accuracy and extra walks per mitigation")
    parser.add_argument("--trials", type=int, default=100, metavar="N", help="trials (100)")
    parser.add_argument("--bits", type=int, default=16, metavar="B", help="secret bits (16)")
    parser.add_argument("--seed", type=int, default=1, metavar="S", help="random seed (1)")
    parser.add_argument(
        "--victim",
        choices=VICTIMS,
        default="model",
        help="the victim: 'model' (a documented model of a table lookup, the default) or "
        "'lackey' (the C program data/sidechannel_victim.c, compiled with gcc and recorded "
        "by valgrind --tool=lackey: needs both)",
    )


def _json(r: Result) -> dict[str, Any]:
    return {
        "demo": "sidechannel",
        "cpu": r.cpu,
        "trials": r.trials,
        "bits": r.bits,
        "seed": r.seed,
        "victim": r.victim,
        "latencies": {
            "l1_tlb_hit": r.hit_cycles[0],
            "stlb_hit": r.hit_cycles[1],
            "walk_overhead": r.hit_cycles[2],
            "l1d": r.latencies[0],
            "l2": r.latencies[1],
            "llc": r.latencies[2],
            "dram": r.latencies[3],
        },
        "accuracy": {m.name: m.accuracy for m in r.mitigations.values()},
        "extra_walks": {m.name: m.extra_walks for m in r.mitigations.values()},
        "walks": {m.name: m.walks for m in r.mitigations.values()},
        "attack_walks": {m.name: m.attack_walks for m in r.mitigations.values()},
        "cycles": {m.name: m.cycles for m in r.mitigations.values()},
        "probe_cycles": {m.name: m.probe_cycles for m in r.mitigations.values()},
    }


def run(args: argparse.Namespace, console: Console) -> int:
    if args.trials < 1:
        raise UsageError(f"--trials {args.trials}: need at least one trial")
    if not 1 <= args.bits <= sidechannel.MAX_BITS:
        raise UsageError(
            f"--bits {args.bits}: between 1 and {sidechannel.MAX_BITS} (two STLB sets a bit)"
        )
    try:
        r = sidechannel.run(trials=args.trials, bits=args.bits, seed=args.seed, victim=args.victim)
    except VictimUnavailable as e:
        raise CliError(str(e)) from None
    if args.json:
        write_json(_json(r))
        return 0
    l1, stlb, walk = r.hit_cycles
    refs = ", ".join(
        f"{n} {c}" for n, c in zip(("L1D", "L2", "LLC", "DRAM"), r.latencies, strict=True)
    )
    console.print(
        f"[bold]TLB side channel[/bold] on {r.cpu}: {r.trials} trials of a {r.bits}-bit secret "
        f"(seed {r.seed}, victim: {r.victim}); a probe costs {l1} cycles (L1 TLB hit), {stlb} "
        f"(STLB hit), or a walk: {walk} + each page-table entry read ({refs})"
    )
    t = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 2, 0, 0))
    for name in ("mitigation", "accuracy", "extra walks", "attack walks/trial", "cycles/probe"):
        t.add_column(name, justify="left" if name == "mitigation" else "right")
    if args.explain:
        t.add_column("what the switch does")
    for m in r.mitigations.values():
        row = [
            m.name,
            f"{m.accuracy:.3f}",
            f"{m.extra_walks:+d}",
            f"{m.attack_walks / r.trials:.1f}",
            f"{m.cycles:.2f}",
        ]
        if args.explain:
            row.append(_WHAT.get(m.name, ""))
        t.add_row(*row)
    console.print(t)
    console.print(
        "accuracy is per secret bit: 1.0 recovers the key, 0.5 is a coin toss. "
        "extra walks: page walks beyond [bold]none[/bold] when two benign processes (2 MiB "
        "each) take turns as often."
    )
    return 0
