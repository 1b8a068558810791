"""One virtual address translated by the page walker, level by level: the engine of
``vmsim demo walk``.

The story, on a model machine: a process maps a few anonymous pages (or, given an address,
the page holding it, with MAP_FIXED) and accesses the address twice. The first access misses
the TLB: the walk faults, the kernel maps a page, and the retried walk reads one entry per
level, each selected by 9 bits of the virtual address (4 levels: PML4/PGD, PDPT/PUD, PD/PMD,
PT/PTE; 5 with ``five_level``, PML5 on top). The second access hits the TLB and reads no entry.

:func:`story` drives the model and returns a :class:`Walk` holding what the model reported:
the entries are those the walk read, decoded with ``vmsim.hw.pte.decode``; the physical
address, the TLB level and the memory references come from ``Process.translate``. Hardware
rules (each index is the VA's bits, the leaf gives the frame) only set ``matches_linux``.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

import vmsim
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
from vmsim.scenarios import ScenarioParameterError

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
    cr3_pfn: int  # the frame of the top table (what CR3 holds), where every walk starts


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


def va_bits(levels: int) -> int:
    """Virtual-address bits with ``levels`` levels of paging: 48 or 57 (9 per level + 12)."""
    return PAGE_SHIFT + 9 * levels


def canonical(addr: int, levels: int) -> bool:
    """Bits 63..va_bits-1 all equal: else the CPU raises #GP before any walk (SDM 3.3.7.1)."""
    bits = va_bits(levels)
    top = (addr & _U64) >> (bits - 1)
    return top == 0 or top == (1 << (65 - bits)) - 1


def check_user_address(proc: vmsim.Process, addr: int) -> None:
    """ScenarioParameterError (parameter ``address``) unless ``addr`` is a canonical user
    address below TASK_SIZE."""
    levels = proc.paging_levels
    bits = va_bits(levels)
    five = levels == 5
    if not canonical(addr, levels):
        hint = "" if five else "; --five-level allows 57-bit addresses"
        raise ScenarioParameterError(
            "address",
            f"{_fmt(addr)} is not canonical: with {levels}-level paging bits "
            f"63-{bits - 1} must all equal bit {bits - 1} ({bits}-bit virtual addresses), "
            f"else the CPU raises #GP before any page walk{hint}",
        )
    if addr >> 63:
        raise ScenarioParameterError(
            "address",
            f"{_fmt(addr)} is in the kernel half of the address space (user "
            f"addresses end below {_fmt(1 << (bits - 1))}): a process can neither map nor "
            "access it, the kernel's pages there are supervisor-only",
        )
    task_size = TASK_SIZE_5LEVEL if five else TASK_SIZE_4LEVEL
    if addr >= task_size:
        raise ScenarioParameterError(
            "address",
            f"{_fmt(addr)} is at or above TASK_SIZE ({_fmt(task_size)}): Linux keeps "
            "the last page of the user half unmapped",
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


def tlb_name(access: str, level: str) -> str:
    return f"L1 {'iTLB' if access == 'exec' else 'dTLB'}" if level == "L1" else level


def _access_line(n: str, a: Access, addr: int, zero_pfn: int) -> str:
    what = "; ".join(FAULT_WHAT.get(f, f) for f in a.faults)
    if a.tlb is not None:
        head = f"{n} {a.access} of {_fmt(addr)}: {tlb_name(a.access, a.tlb)} hit, no page walk "
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


def _map(proc: vmsim.Process, address: int | None, access: str) -> tuple[int, str]:
    """mmap the page(s) for the walk: (the address to access, the call as C)."""
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
        raise ScenarioParameterError(
            "address",
            f"{_fmt(hint)}: mmap(MAP_FIXED) of its page fails with {name} ({exc.strerror})",
        ) from None
    addr = start if address is None else address
    mapping = (
        f"mmap({_fmt(hint) if hint else 'NULL'}, {length}, {prot_text}, "
        f"MAP_PRIVATE|MAP_ANONYMOUS{flag_text}, -1, 0) = {_fmt(start)}"
    )
    return addr, mapping


def _reach(proc: vmsim.Process, addr: int) -> str:
    """How far the page tables reach for ``addr`` before any access."""
    last = proc.page_walk(addr)[-1]
    l_name, l_linux = level_names(last.level, proc.paging_levels)
    return (
        f"before any access the walk would stop at {l_name} ({l_linux}) index {last.idx}: "
        f"entry {_fmt(last.entry)} ({decode(last.entry, last.level).kind})"
    )


def _follows_hardware(
    addr: int, levels_n: int, levels: tuple[Level, ...], first: Access, second: Access
) -> bool:
    """The rules the walk must follow (SDM ch. 4): one entry per level down to a leaf, each
    index the VA's 9 bits, the frame from the leaf, a TLB hit for the same access again."""
    leaf = levels[-1]
    offset = addr & (first.page_size - 1)
    indices_ok = all(lv.index == (addr >> level_shift(lv.level)) & 511 for lv in levels)
    return (
        [lv.level for lv in levels] == list(range(levels_n, leaf.level - 1, -1))
        and all(lv.kind == "table" for lv in levels[:-1])
        and leaf.kind == "leaf"
        and indices_ok
        and first.paddr == (leaf.pfn << PAGE_SHIFT) + offset
        and first.page_walk
        and second.tlb is not None
        and second.pfn == first.pfn
    )


def story(address: int | None = None, access: str = "read", five_level: bool = False) -> Walk:
    """Map, access twice, read back the walk. ScenarioParameterError for an ``access`` that
    is not read/write/exec, or an ``address`` that cannot be mapped (non-canonical, kernel
    half, above TASK_SIZE, refused by mmap)."""
    if access not in ACCESSES:
        raise ScenarioParameterError(
            "access", f"must be one of {', '.join(ACCESSES)}, not {access!r}"
        )
    machine = vmsim.Machine(five_level=five_level)
    proc = machine.spawn()
    zero_pfn = machine.zero_pfn
    addr, mapping = _map(proc, address, access)
    levels_n = proc.paging_levels
    before = _reach(proc, addr)

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
    return Walk(
        address=addr,
        access=access,
        five_level=five_level,
        paging_levels=levels_n,
        va_bits=va_bits(levels_n),
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
        matches_linux=_follows_hardware(addr, levels_n, levels, first, second),
        cr3_pfn=proc.mm.pt.root_pfn,
    )


__all__ = [
    "ACCESSES",
    "DEFAULT_PAGES",
    "FAULT_WHAT",
    "Access",
    "Level",
    "Step",
    "Walk",
    "canonical",
    "check_user_address",
    "level_names",
    "story",
    "tlb_name",
    "va_bits",
]
