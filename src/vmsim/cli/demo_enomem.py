"""``vmsim demo enomem``: ENOMEM when trying to *free* memory (spec §1 and §7).

The story, on a model process: map a region, split it with mprotect until the process holds
``max_map_count`` VMAs, then watch munmap of one page in the middle of a VMA fail with ENOMEM
(it would have to split that VMA, and split needs a free VMA slot), while munmap of a whole VMA
still works and frees the slot the first call needed.

:func:`story` drives the model and yields :class:`Step` values holding what the model reported;
the ``render_*`` functions turn them into rich text, one line per step, or JSON. Every number
shown is read back from the model; the expected outcomes (from the spec) are only used to flag
a disagreement.
"""

from __future__ import annotations

import argparse
import errno
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

import vmsim
from vmsim.cli.errors import ModelDeviation, UsageError
from vmsim.cli.render import add_story_modes, excerpt, new_lines, vma_at, write_json
from vmsim.constants import (
    DEFAULT_MAX_MAP_COUNT,
    MAP_ANONYMOUS,
    MAP_NORESERVE,
    MAP_PRIVATE,
    PAGE_SIZE,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
)

PAGE = PAGE_SIZE
# Pages beyond max_map_count: the splits use at most (max_map_count - map_count) + 1 pages, so
# the read-write tail left after them always has pages strictly inside it to unmap.
SPARE_PAGES = 16
PROGRESS_EVERY = 512  # mprotect calls between progress-bar updates

ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class Step:
    """One step of the story, with the values the model reported."""

    id: str
    title: str
    call: str  # the syscall(s) made, C-like; "" if none
    ok: bool  # every call succeeded
    errno: str | None  # errno name of the failing call, e.g. "ENOMEM"
    map_count_before: int
    map_count: int
    max_map_count: int
    explain: str  # the one-line explanation (--explain)
    detail: str  # the longer explanation (rich output)
    maps: tuple[str, ...]  # excerpt of /proc/pid/maps after the step
    expected: str  # what Linux does here, per the spec
    matches_linux: bool
    facts: dict[str, int] = field(default_factory=dict)


def _errno_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def _fmt(addr: int) -> str:
    return f"{addr:#x}"


def _size(nbytes: int) -> str:
    """Bytes in the largest binary unit that keeps a whole number (4096 -> 4 KiB)."""
    for shift, unit in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if nbytes >= 1 << shift and nbytes % (1 << shift) == 0:
            return f"{nbytes >> shift:,} {unit}"
    return f"{nbytes:,} bytes"


def story(max_map_count: int, progress: ProgressFn | None = None) -> Iterator[Step]:
    """Run the story on a fresh model machine, yielding each step as soon as it is done.

    ``progress(vmas_added)`` is called now and then during the long splitting step.
    """
    machine = vmsim.Machine(max_map_count=max_map_count)
    try:
        proc = machine.spawn(layout="linux")
    except OSError as exc:
        raise UsageError(
            f"--max-map-count {max_map_count} is too small for a fresh process: {exc}"
        ) from exc
    limit = max_map_count
    start = proc.map_count
    text = proc.maps()
    yield Step(
        id="spawn",
        title="A fresh process",
        call="execve()",
        ok=True,
        errno=None,
        map_count_before=0,
        map_count=start,
        max_map_count=limit,
        explain=f"a new process starts with {start} VMAs (program, libraries, heap, stack, vdso)",
        detail=(
            "The kernel tracks a process's memory as VMAs: one per contiguous range with the "
            "same protection and backing. Each line of /proc/pid/maps is one VMA (the last "
            "one, [vsyscall], is not in the process's tree and is not counted). "
            f"vm.max_map_count caps the count per process at {limit:,}."
        ),
        maps=tuple(text.splitlines()),
        expected="map_count = lines of /proc/pid/maps - 1",
        matches_linux=True,
    )

    if start + 3 > limit:
        raise UsageError(
            f"--max-map-count {limit} leaves no room: the fresh process already holds {start} "
            f"VMAs (need at least {start + 3})"
        )
    npages = -(-(limit + SPARE_PAGES) // 256) * 256  # whole MiB
    before = text
    region = proc.mmap(
        0, npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE
    )
    end = region + npages * PAGE
    mapped = proc.map_count
    text = proc.maps()
    yield Step(
        id="mmap",
        title="The process maps memory",
        call=f"mmap(NULL, {npages * PAGE:,}, PROT_READ|PROT_WRITE, "
        "MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE, -1, 0)",
        ok=True,
        errno=None,
        map_count_before=start,
        map_count=mapped,
        max_map_count=limit,
        explain=f"one {_size(npages * PAGE)} read-write region at {_fmt(region)} is one VMA",
        detail=(
            f"{npages:,} pages, {_size(npages * PAGE)}, but a single VMA: the size of a "
            "mapping does not matter to the count, only how many pieces it is in."
        ),
        maps=new_lines(before, text),
        expected="a new mapping adds 1 VMA",
        matches_linux=mapped == start + 1,
    )

    # First split on its own, to show the three pieces.
    first = region + PAGE
    proc.mprotect(first, PAGE, PROT_READ)
    count = proc.map_count
    yield Step(
        id="first-split",
        title="Splitting: one page made read-only",
        call=f"mprotect({_fmt(first)}, 4096, PROT_READ)",
        ok=True,
        errno=None,
        map_count_before=mapped,
        map_count=count,
        max_map_count=limit,
        explain=(
            "read-only page in the middle of the region: 1 VMA becomes 3 (two splits), "
            f"{count - mapped:+d} VMAs"
        ),
        detail=(
            "A VMA has one protection, so changing one page in its middle cuts it in three: "
            "rw- | r-- | rw-. split_vma() runs twice and each split costs one VMA. Allocators, "
            "garbage collectors and JITs do this all the time (guard pages, W^X, decommit)."
        ),
        maps=excerpt(proc.maps(), region, end),
        expected="a middle split adds 2 VMAs",
        matches_linux=count == mapped + 2,
    )

    # Keep splitting: page 2k+1 read-only, +2 each, until one slot or none is left.
    k, calls, middle, edge = 1, 1, 1, 0
    while proc.map_count <= limit - 2:
        c = proc.map_count
        proc.mprotect(region + (2 * k + 1) * PAGE, PAGE, PROT_READ)
        calls += 1
        middle += 1
        k += 1
        if proc.map_count != c + 2:
            raise ModelDeviation(
                f"mprotect of page {2 * k - 1} moved map_count {c} -> {proc.map_count}; "
                "Linux splits the middle of a VMA into 3 (+2)"
            )
        if progress is not None and calls % PROGRESS_EVERY == 0:
            progress(proc.map_count - mapped)
    if proc.map_count == limit - 1:
        # One slot left: a change at the *edge* of a VMA splits it once (+1). Page 2k starts
        # the read-write tail and its left neighbour is read-only, so PROT_NONE cannot merge.
        c = proc.map_count
        proc.mprotect(region + 2 * k * PAGE, PAGE, PROT_NONE)
        calls += 1
        edge += 1
        if proc.map_count != c + 1:
            raise ModelDeviation(f"edge mprotect moved map_count {c} -> {proc.map_count}")
    if progress is not None:
        progress(proc.map_count - mapped)
    full = proc.map_count
    tail_start = region + (2 * k + edge) * PAGE
    text = proc.maps()
    yield Step(
        id="split",
        title="Splitting until the limit",
        call=f"mprotect(page 2k+1, 4096, PROT_READ) x {middle:,}"
        + (" + mprotect(page 2k, 4096, PROT_NONE)" if edge else ""),
        ok=True,
        errno=None,
        map_count_before=mapped,
        map_count=full,
        max_map_count=limit,
        explain=(
            f"{calls:,} mprotect calls ({middle:,} middle splits at +2"
            + (f", {edge} edge split at +1" if edge else "")
            + f"): map_count {full:,}, max_map_count {limit:,}"
        ),
        detail=(
            f"Every other page of the region is now read-only. The process holds {full:,} "
            f"VMAs, exactly vm.max_map_count, while using almost no RAM: the limit counts "
            "pieces, not bytes."
            + (
                " The last step changed a page at the edge of a VMA, which splits it once "
                "(+1), since a middle split (+2) no longer fits."
                if edge
                else ""
            )
        ),
        maps=excerpt(text, region, end),
        expected="map_count reaches max_map_count; each middle split +2, each edge split +1",
        matches_linux=full == limit,
        facts={"calls": calls, "middle_splits": middle, "edge_splits": edge},
    )

    # Free one page in the middle of the read-write tail: munmap must split that VMA.
    hole = tail_start + PAGE
    tail = vma_at(text, hole)
    if tail is None or not (tail.start < hole and hole + PAGE < tail.end):
        raise ModelDeviation(f"expected a VMA strictly around {_fmt(hole)}, found {tail}")
    call = f"munmap({_fmt(hole)}, 4096)"
    failed_errno: str | None = None
    try:
        proc.munmap(hole, PAGE)
    except OSError as exc:
        failed_errno = _errno_name(exc)
    after = proc.map_count
    yield Step(
        id="munmap-middle",
        title="Freeing one page fails",
        call=call,
        ok=failed_errno is None,
        errno=failed_errno,
        map_count_before=full,
        map_count=after,
        max_map_count=limit,
        explain=(
            "munmap of a page strictly inside a VMA must split it (one more VMA); "
            f"map_count {full:,} >= max_map_count {limit:,}: {failed_errno or 'succeeded'}"
        ),
        detail=(
            f"The page at {_fmt(hole)} lies strictly inside the VMA "
            f"{tail.start:x}-{tail.end:x}. Unmapping it leaves two VMAs where there was one, "
            "so munmap needs one more VMA. vms_gather_munmap_vmas() checks map_count >= "
            "max_map_count before it splits and returns ENOMEM, 'Cannot allocate memory': "
            "freeing memory fails with out-of-memory, whatever the RAM (RavenDB, jemalloc#970, "
            "OCaml#14865)."
        ),
        maps=(tail.text,),
        expected="ENOMEM, map_count unchanged",
        matches_linux=failed_errno == "ENOMEM" and after == full,
    )

    # Free a whole VMA instead: the first read-only page.
    whole = vma_at(proc.maps(), first)
    if whole is None or (whole.start, whole.end) != (first, first + PAGE):
        raise ModelDeviation(f"expected a one-page VMA at {_fmt(first)}, found {whole}")
    proc.munmap(first, PAGE)
    freed = proc.map_count
    yield Step(
        id="munmap-whole",
        title="Freeing a whole VMA works",
        call=f"munmap({_fmt(first)}, 4096)",
        ok=True,
        errno=None,
        map_count_before=after,
        map_count=freed,
        max_map_count=limit,
        explain=f"munmap of one whole VMA needs no split, so no check: {freed - after:+d} VMA",
        detail=(
            "Removing a whole VMA (or trimming one at its edge) never needs a new VMA, so "
            "the kernel does not check the limit. One slot is free again."
        ),
        maps=(whole.text + "   <- unmapped",),
        expected="succeeds, map_count - 1",
        matches_linux=freed == after - 1,
    )

    retry_errno: str | None = None
    try:
        proc.munmap(hole, PAGE)
    except OSError as exc:
        retry_errno = _errno_name(exc)
    final = proc.map_count
    text = proc.maps()
    yield Step(
        id="munmap-retry",
        title="The failed call now succeeds",
        call=call,
        ok=retry_errno is None,
        errno=retry_errno,
        map_count_before=freed,
        map_count=final,
        max_map_count=limit,
        explain=(
            f"with map_count {freed:,} < {limit:,} the same munmap splits the VMA: "
            f"{retry_errno or 'succeeds'}, map_count {final:,}"
        ),
        detail=(
            "The same call, one free slot later: the VMA is split around the hole and the "
            "page is freed. Fixes in the wild: unmap whole mappings, avoid partial unmaps and "
            "protection changes, or raise vm.max_map_count (sysctl, as root)."
        ),
        maps=excerpt(text, tail.start, tail.end),
        expected="succeeds, map_count + 1",
        matches_linux=retry_errno is None and final == freed + 1,
    )


# --- rendering ----------------------------------------------------------------------------


def _result(step: Step) -> str:
    if step.errno:
        return f"[bold red]-1 {step.errno}[/bold red]"
    return "[green]ok[/green]"


def render_step(console: Console, number: int, step: Step) -> None:
    """One step as a section: title, explanation, the call and its result, a maps excerpt."""
    console.rule(f"[bold]{number}. {escape(step.title)}[/bold]", align="left")
    console.print(escape(step.detail))
    console.print(f"[cyan]{escape(step.call)}[/cyan] -> {_result(step)}", soft_wrap=True)
    change = (
        "(unchanged)"
        if step.map_count == step.map_count_before
        else f"{step.map_count_before:,} -> [bold]{step.map_count:,}[/bold]"
    )
    console.print(f"map_count {change}  (max_map_count {step.max_map_count:,})")
    if step.maps:
        console.print("[dim]/proc/pid/maps:[/dim]")
        for line in step.maps:
            console.print(Text("  " + line, style="dim"), soft_wrap=True)
    if not step.matches_linux:
        console.print(f"[bold yellow]model disagrees with Linux:[/bold yellow] {step.expected}")
    console.print()


def render_takeaway(console: Console, limit: int) -> None:
    """The moral, once every step has been shown."""
    console.print(
        Panel(
            f"vm.max_map_count ({limit:,}) counts VMAs, not bytes. Once a process holds that "
            "many, every call that has to split a VMA fails: mprotect or mlock on part of a VMA "
            "(ENOMEM; madvise reports EAGAIN), and munmap of a range strictly inside one "
            "(ENOMEM). Unmapping whole VMAs still works and makes room again.",
            title="takeaway",
            title_align="left",
            expand=False,
        )
    )


def explain_line(number: int, step: Step) -> str:
    """The --explain form: exactly one line per step."""
    result = f"-1 {step.errno}" if step.errno else "ok"
    flag = "" if step.matches_linux else f"  [MODEL DISAGREES: Linux: {step.expected}]"
    return (
        f"{number}. {step.title}: {step.call} -> {result}; map_count "
        f"{step.map_count_before} -> {step.map_count}: {step.explain}{flag}"
    )


def register(subparsers: Any) -> None:
    """Add ``enomem`` to the ``vmsim demo`` subcommands."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "enomem",
        help="why munmap can fail with ENOMEM at vm.max_map_count",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "--max-map-count",
        type=int,
        default=DEFAULT_MAX_MAP_COUNT,
        metavar="N",
        help=f"vm.max_map_count of the model machine (default {DEFAULT_MAX_MAP_COUNT})",
    )
    add_story_modes(parser, "machine-readable list of steps")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, console: Console) -> int:
    """Tell the story in the requested form; ModelDeviation if the model strays from Linux."""
    if args.max_map_count < 1:
        raise UsageError(f"--max-map-count must be positive, got {args.max_map_count}")
    steps: list[Step] = []
    if args.json or args.explain:
        for step in story(args.max_map_count):
            steps.append(step)
            if args.explain:
                console.print(explain_line(len(steps), step), markup=False, soft_wrap=True)
    else:
        console.print(
            Panel(
                "ENOMEM when trying to [i]free[/i] memory: why munmap() fails at "
                "vm.max_map_count, told by the model step by step.",
                expand=False,
            )
        )
        with Progress(
            TextColumn("splitting"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("VMAs added"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task("split", total=None, visible=False)

            def progress(added: int) -> None:
                bar.update(task, completed=added, visible=True)

            for step in story(args.max_map_count, progress):
                if step.id == "first-split":
                    bar.update(task, total=step.max_map_count - step.map_count_before)
                if step.id == "split":
                    bar.update(task, visible=False)
                steps.append(step)
                render_step(console, len(steps), step)
        render_takeaway(console, args.max_map_count)
    deviations = [step for step in steps if not step.matches_linux]
    if args.json:
        write_json(
            {
                "demo": "enomem",
                "max_map_count": args.max_map_count,
                "matches_linux": not deviations,
                "steps": [asdict(step) for step in steps],
            }
        )
    if deviations:
        raise ModelDeviation(
            "the model disagrees with Linux at step(s): "
            + ", ".join(f"{step.id} (expected {step.expected})" for step in deviations)
        )
    return 0


__all__ = ["Step", "register", "run", "story"]
