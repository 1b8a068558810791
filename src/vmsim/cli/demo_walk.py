"""``vmsim demo walk``: one virtual address translated by the page walker, level by level.

The story, on a model machine: a process maps a few anonymous pages (or, given ADDRESS, the
page holding it, with MAP_FIXED) and accesses the address twice. The first access misses the
TLB: the walk faults, the kernel maps a page, and the retried walk reads one entry per level,
each selected by 9 bits of the virtual address (4 levels: PML4/PGD, PDPT/PUD, PD/PMD, PT/PTE;
5 with --five-level, PML5 on top). The second access hits the TLB and reads no entry.

:func:`story` drives the model and returns a :class:`Walk` holding what the model reported:
the entries are those the walk read, decoded with ``vmsim.hw.pte.decode``; the physical
address, the TLB level and the memory references come from ``Process.translate``. The
``render_*`` functions turn it into rich tables, one line per step, or JSON. Hardware rules
(each index is the VA's bits, the leaf gives the frame) only flag a disagreement.
"""

from __future__ import annotations

import argparse
import errno
from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

import vmsim
from vmsim.cli.errors import ModelDeviation, UsageError
from vmsim.cli.render import add_story_modes, write_json
from vmsim.constants import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    PAGE_SHIFT,
    PAGE_SIZE,
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
    TASK_SIZE_4LEVEL,
    TASK_SIZE_5LEVEL,
)
from vmsim.hw.pagetable import LEVEL_NAMES, level_shift
from vmsim.hw.pte import PteFields, decode
from vmsim.mm.access import Translation

PAGE = PAGE_SIZE
DEFAULT_PAGES = 4  # mapped when no ADDRESS is given; the walk uses the first
ACCESSES = ("read", "write", "exec")
# The CPU's names for the tables, by level (Intel SDM ch. 4); Linux's are LEVEL_NAMES.
INTEL_NAMES = {5: "PML5", 4: "PML4", 3: "PDPT", 2: "PD", 1: "PT"}
_U64 = (1 << 64) - 1

# What handle_mm_fault() did, by the kind the model reports (mm/memory.c).
FAULT_WHAT = {
    "zero-page": "do_anonymous_page() mapped the shared zero page read-only",
    "anon": "do_anonymous_page() mapped a new zeroed page",
    "cow": "do_wp_page() copied the page (wp_page_copy)",
    "reuse": "do_wp_page() made the page writable (reuse)",
    "spurious": "the PTE already allowed it (spurious fault)",
}


@dataclass(frozen=True)
class Level:
    """One entry the walk read: where it sits, its raw value and its fields."""

    level: int  # 5..1, top first
    name: str  # the CPU's name of the table: PML4, PDPT, PD, PT (PML5 on top with 5 levels)
    linux_name: str  # Linux's: PGD, (P4D,) PUD, PMD, PTE
    index: int  # the index the walk used in this table
    bits: tuple[int, int]  # the VA bits that select it, high and low
    entry: int
    entry_hex: str
    kind: str  # "table" (points to the next table) | "leaf" (maps the page) | "none" ...
    present: bool
    writable: bool
    user: bool
    accessed: bool
    dirty: bool
    huge: bool
    global_: bool
    special: bool
    nx: bool
    pkey: int
    pfn: int  # of the next table, or of the page for a leaf


@dataclass(frozen=True)
class Access:
    """One access to the address, as ``Process.translate`` reported it."""

    access: str
    tlb: str | None  # "L1" | "STLB" | None: page walk
    page_walk: bool
    memory_refs: int  # entries the walker read from memory
    faults: tuple[str, ...]  # what the kernel did before the access could complete
    pfn: int
    paddr: int
    page_size: int


@dataclass(frozen=True)
class Step:
    """One line of --explain."""

    id: str
    explain: str


@dataclass(frozen=True)
class Walk:
    """The whole story: the mapping, both accesses, the entries, the steps."""

    address: int
    access: str
    five_level: bool
    paging_levels: int
    va_bits: int
    mapping: str  # the mmap call, C-like
    before: str  # how far the page tables reached before the first access
    first: Access
    second: Access
    levels: tuple[Level, ...]
    offset: int
    paddr: int
    steps: tuple[Step, ...]
    expected: str
    matches_linux: bool


def _fmt(n: int) -> str:
    return f"{n:#x}"


def _bits(level: int) -> tuple[int, int]:
    low = level_shift(level)
    return low + 8, low


def level_names(level: int, levels: int) -> tuple[str, str]:
    """(CPU name, Linux name) of the table at ``level``: with 4 levels the top one is the
    PML4 and Linux calls it the PGD (its P4D is folded into it)."""
    linux = "PGD" if level == levels else LEVEL_NAMES[level]
    return INTEL_NAMES[level], linux


def parse_address(text: str) -> int:
    """ADDRESS as given: hex with 0x, or decimal. UsageError if it is not a 64-bit number."""
    try:
        addr = int(text, 0)
    except ValueError:
        raise UsageError(
            f"ADDRESS {text!r} is not a number: give it in hex (0x7ffff7ffb000) or decimal"
        ) from None
    if addr < 0:
        raise UsageError(f"ADDRESS {text} is negative: addresses are unsigned")
    if addr > _U64:
        raise UsageError(f"ADDRESS {text} does not fit in 64 bits")
    return addr


def check_user_address(proc: vmsim.Process, addr: int) -> None:
    """UsageError unless ``addr`` is a canonical user address below TASK_SIZE."""
    pt = proc.mm.pt
    bits = pt.va_bits
    five = pt.levels == 5
    if not pt.canonical(addr):
        hint = "" if five else "; --five-level allows 57-bit addresses"
        raise UsageError(
            f"ADDRESS {_fmt(addr)} is not canonical: with {pt.levels}-level paging bits "
            f"63-{bits - 1} must all equal bit {bits - 1} ({bits}-bit virtual addresses), "
            f"else the CPU raises #GP before any page walk{hint}"
        )
    if addr >> 63:
        raise UsageError(
            f"ADDRESS {_fmt(addr)} is in the kernel half of the address space (user "
            f"addresses end below {_fmt(1 << (bits - 1))}): a process can neither map nor "
            "access it, the kernel's pages there are supervisor-only"
        )
    task_size = TASK_SIZE_5LEVEL if five else TASK_SIZE_4LEVEL
    if addr >= task_size:
        raise UsageError(
            f"ADDRESS {_fmt(addr)} is at or above TASK_SIZE ({_fmt(task_size)}): Linux keeps "
            "the last page of the user half unmapped"
        )


def _fields(level: int, levels: int, step_idx: int, entry: int) -> Level:
    f: PteFields = decode(entry, level)
    name, linux = level_names(level, levels)
    return Level(
        level=level,
        name=name,
        linux_name=linux,
        index=step_idx,
        bits=_bits(level),
        entry=entry,
        entry_hex=f"{entry:#018x}",
        kind=f.kind,
        present=f.present,
        writable=f.writable,
        user=f.user,
        accessed=f.accessed,
        dirty=f.dirty,
        huge=f.huge,
        global_=f.global_,
        special=f.special,
        nx=f.nx,
        pkey=f.pkey,
        pfn=f.pfn,
    )


def _access(t: Translation) -> Access:
    return Access(
        access=t.access,
        tlb=t.tlb,
        page_walk=t.tlb is None,
        memory_refs=t.memory_refs,
        faults=tuple(t.faults),
        pfn=t.pfn,
        paddr=t.paddr,
        page_size=t.page_size,
    )


def _tlb_name(access: str, level: str) -> str:
    return f"L1 {'iTLB' if access == 'exec' else 'dTLB'}" if level == "L1" else level


def _access_line(n: str, a: Access, addr: int, zero_pfn: int) -> str:
    what = "; ".join(FAULT_WHAT.get(f, f) for f in a.faults)
    if a.tlb is not None:
        head = f"{n} {a.access} of {_fmt(addr)}: {_tlb_name(a.access, a.tlb)} hit, no page walk "
        head += f"({a.memory_refs} memory references)"
    else:
        head = f"{n} {a.access} of {_fmt(addr)}: TLB miss -> page walk"
        if a.faults:
            head += f"; it faulted and the kernel ran: {what}; the retried walk"
        head += f" read {a.memory_refs} entries ({a.memory_refs} memory references)"
    frame = " (the shared zero page)" if a.pfn == zero_pfn else ""
    fill = ", cached in the TLB" if a.tlb is None else ""
    return f"{head} -> pfn {_fmt(a.pfn)}{frame}{fill}"


def _level_line(lv: Level, zero_pfn: int) -> str:
    hi, lo = lv.bits
    head = f"{lv.name} ({lv.linux_name}) index {lv.index} (bits {hi}-{lo}): entry {lv.entry_hex}"
    if lv.kind == "table":
        target = f"table at pfn {_fmt(lv.pfn)}"
    elif lv.kind == "leaf":
        size = 1 << level_shift(lv.level)
        kind = "page" if size == PAGE else f"{size >> 20} MiB page"
        zero = " (the shared zero page)" if lv.pfn == zero_pfn else ""
        target = f"{kind} frame pfn {_fmt(lv.pfn)}{zero}"
    else:
        target = f"{lv.kind}: the walk stops here"
    rights = [
        "present" if lv.present else "not present",
        "user" if lv.user else "supervisor",
        "writable" if lv.writable else "read-only",
    ]
    if lv.accessed:
        rights.append("accessed")
    if lv.dirty and lv.kind == "leaf":
        rights.append("dirty")
    rights.append("no-exec" if lv.nx else "exec")
    if lv.special:
        rights.append("special (no struct page)")
    return f"{head} -> {target}, {', '.join(rights)}"


def story(address: int | None = None, access: str = "read", five_level: bool = False) -> Walk:
    """Map, access twice, read back the walk. UsageError for an address that cannot be
    mapped (non-canonical, kernel half, above TASK_SIZE, refused by mmap)."""
    if access not in ACCESSES:
        raise UsageError(f"--access must be one of {', '.join(ACCESSES)}, not {access!r}")
    machine = vmsim.Machine(five_level=five_level)
    proc = machine.spawn()
    pt = proc.mm.pt
    zero_pfn = machine.memory.frames.zero_pfn
    prot = PROT_READ | (PROT_EXEC if access == "exec" else PROT_WRITE)
    prot_text = "PROT_READ|PROT_EXEC" if access == "exec" else "PROT_READ|PROT_WRITE"
    if address is None:
        length, flags, flag_text, hint = DEFAULT_PAGES * PAGE, 0, "", 0
    else:
        check_user_address(proc, address)
        hint = address & ~(PAGE - 1)
        length, flags, flag_text = PAGE, MAP_FIXED, "|MAP_FIXED"
    try:
        start = proc.mmap(hint, length, prot, MAP_PRIVATE | MAP_ANONYMOUS | flags)
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        raise UsageError(
            f"ADDRESS {_fmt(hint)}: mmap(MAP_FIXED) of its page fails with {name} ({exc.strerror})"
        ) from None
    addr = start if address is None else address
    mapping = (
        f"mmap({_fmt(hint) if hint else 'NULL'}, {length}, {prot_text}, "
        f"MAP_PRIVATE|MAP_ANONYMOUS{flag_text}, -1, 0) = {_fmt(start)}"
    )
    levels_n = pt.levels
    reach = pt.walk(addr)
    last = reach[-1]
    l_name, l_linux = level_names(last.level, levels_n)
    before = (
        f"before any access the walk would stop at {l_name} ({l_linux}) index {last.idx}: "
        f"entry {_fmt(last.entry)} ({decode(last.entry, last.level).kind})"
    )

    t1 = proc.translate(addr, access)
    t2 = proc.translate(addr, access)
    first, second = _access(t1), _access(t2)
    # The entries as the first access left them (A and D set by the walker).
    levels = tuple(_fields(s.level, levels_n, s.idx, s.entry) for s in t1.entries)
    leaf = levels[-1]
    offset = addr & (first.page_size - 1)
    paddr = first.paddr

    steps = [
        Step("map", f"{mapping}: a VMA only; {before}"),
        Step("first-access", _access_line("first", first, addr, zero_pfn)),
    ]
    steps += [Step(f"level-{lv.level}", _level_line(lv, zero_pfn)) for lv in levels]
    steps.append(
        Step(
            "physical-address",
            f"physical address = pfn {_fmt(leaf.pfn)} << {PAGE_SHIFT} | offset {_fmt(offset)} "
            f"(bits {level_shift(leaf.level) - 1}-0) = {_fmt(paddr)}",
        )
    )
    steps.append(Step("second-access", _access_line("second", second, addr, zero_pfn)))

    # Hardware rules the walk must follow (SDM ch. 4): one entry per level down to a leaf,
    # each index the VA's 9 bits, the frame from the leaf, a TLB hit for the same access.
    indices_ok = all(lv.index == (addr >> level_shift(lv.level)) & 511 for lv in levels)
    ok = (
        [lv.level for lv in levels] == list(range(levels_n, leaf.level - 1, -1))
        and all(lv.kind == "table" for lv in levels[:-1])
        and leaf.kind == "leaf"
        and indices_ok
        and paddr == (leaf.pfn << PAGE_SHIFT) + offset
        and first.page_walk
        and second.tlb is not None
        and second.pfn == first.pfn
    )
    return Walk(
        address=addr,
        access=access,
        five_level=five_level,
        paging_levels=levels_n,
        va_bits=pt.va_bits,
        mapping=mapping,
        before=before,
        first=first,
        second=second,
        levels=levels,
        offset=offset,
        paddr=paddr,
        steps=tuple(steps),
        expected=(
            "one entry per level, each index = the VA's 9 bits, paddr = leaf pfn << 12 | "
            "offset; the first access walks, the second hits the TLB"
        ),
        matches_linux=ok,
    )


# --- rendering ----------------------------------------------------------------------------


def _flag(on: bool) -> str:
    return "[green]1[/green]" if on else "[dim]0[/dim]"


def va_table(walk: Walk) -> Table:
    """The virtual address cut into its fields: one column per level, then the offset."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    cells = []
    for lv in walk.levels:
        hi, lo = lv.bits
        table.add_column(f"{lv.name}\n{hi}-{lo}", justify="right")
        cells.append(str(lv.index))
    low = level_shift(walk.levels[-1].level) - 1
    table.add_column(f"offset\n{low}-0", justify="right")
    cells.append(_fmt(walk.offset))
    table.add_row(*cells)
    return table


def levels_table(walk: Walk) -> Table:
    """The entries the walk read, top first, with their fields."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("table", no_wrap=True)
    table.add_column("index", justify="right")
    table.add_column("entry", no_wrap=True)
    for name in ("P", "RW", "US", "A", "D", "PS", "NX"):
        table.add_column(name, justify="center")
    table.add_column("pfn", justify="right", no_wrap=True)
    table.add_column("points to")
    for lv in walk.levels:
        ps = _flag(lv.huge) if lv.level in (2, 3) else ""
        target = (
            "next table" if lv.kind == "table" else ("the page" if lv.kind == "leaf" else lv.kind)
        )
        table.add_row(
            f"{lv.name} ({lv.linux_name})",
            str(lv.index),
            lv.entry_hex,
            _flag(lv.present),
            _flag(lv.writable),
            _flag(lv.user),
            _flag(lv.accessed),
            _flag(lv.dirty),
            ps,
            _flag(lv.nx),
            _fmt(lv.pfn),
            target,
        )
    return table


def _access_text(n: str, a: Access) -> str:
    faults = ", ".join(a.faults) if a.faults else "no fault"
    if a.tlb is None:
        return f"{n} {a.access}: [bold]TLB miss[/bold], page walk, {a.memory_refs} memory references ({faults})"
    return (
        f"{n} {a.access}: [bold]{_tlb_name(a.access, a.tlb)} hit[/bold], "
        f"{a.memory_refs} memory references ({faults})"
    )


def render(console: Console, walk: Walk) -> None:
    console.print(
        Panel(
            f"Translating {_fmt(walk.address)} ({walk.access}) with {walk.paging_levels}-level "
            f"paging ({walk.va_bits}-bit virtual addresses): each level's index is 9 bits of "
            "the address, each entry gives the frame of the next table, the last one the page.",
            expand=False,
        )
    )
    console.print(f"[cyan]{escape(walk.mapping)}[/cyan]", soft_wrap=True)
    console.print(escape(walk.before))
    console.print()
    console.print(va_table(walk))
    console.print()
    console.print(_access_text("first", walk.first))
    console.print(levels_table(walk))
    console.print(
        f"physical address: pfn {_fmt(walk.levels[-1].pfn)} << {PAGE_SHIFT} | offset "
        f"{_fmt(walk.offset)} = [bold]{_fmt(walk.paddr)}[/bold]"
    )
    console.print(_access_text("second", walk.second))
    if not walk.matches_linux:
        console.print(
            f"[bold yellow]model disagrees with the hardware:[/bold yellow] {walk.expected}"
        )


def register(subparsers: Any) -> None:
    """Add ``walk`` to the ``vmsim demo`` subcommands."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "walk",
        help="a page-table walk, level by level",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "address",
        nargs="?",
        metavar="ADDRESS",
        help="user address to translate, hex (0x...) or decimal; its page is mapped with "
        "MAP_FIXED (default: the first of a few freshly mapped pages)",
    )
    parser.add_argument(
        "--access", choices=ACCESSES, default="read", help="the kind of access (default read)"
    )
    parser.add_argument(
        "--five-level", action="store_true", help="5-level paging (57-bit addresses)"
    )
    add_story_modes(parser, "machine-readable result")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, console: Console) -> int:
    """Walk and tell it in the requested form; ModelDeviation if the model strays."""
    address = None if args.address is None else parse_address(args.address)
    walk = story(address, args.access, args.five_level)
    if args.json:
        write_json({"demo": "walk", **asdict(walk)})
    elif args.explain:
        for number, step in enumerate(walk.steps, 1):
            console.print(f"{number}. {step.explain}", markup=False, soft_wrap=True)
    else:
        render(console, walk)
    if not walk.matches_linux:
        raise ModelDeviation(f"the model's walk disagrees with the hardware: {walk.expected}")
    return 0


__all__ = ["Access", "Level", "Step", "Walk", "parse_address", "register", "run", "story"]
