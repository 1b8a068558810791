"""Chapters 1-3 of the tour: address spaces and isolation, the page walk, demand paging.

Chapter 1 probes the model for the top of the user address space (a binary search for the
lowest page that ``mmap(MAP_FIXED)`` refuses) with 4- and 5-level paging, and maps one virtual
address in two processes. Chapter 2 is the walk demo's engine (:func:`vmsim.scenarios.walk.
story`). Chapter 3 maps memory and touches it, reading RSS from smaps_rollup and the faults
from the process's counters.
"""

from __future__ import annotations

import vmsim
from vmsim.constants import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    PAGE_SHIFT,
    PAGE_SIZE,
    PROT_READ,
    PROT_WRITE,
)
from vmsim.scenarios import walk as walk_story
from vmsim.scenarios.proctext import fields
from vmsim.scenarios.tour.chapter import Chapter, Figures, size

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
ADDRESS_SPACES = "Address spaces and isolation"
PAGE_TABLES = "Page tables and the MMU"
DEMAND_PAGING = "Page faults and demand paging"
HIGH_HINT = 1 << 52  # an mmap hint above 47 bits: 5-level paging's opt-in to high addresses
DEMAND_MAPPED = 16 << 20  # chapter 3's mapping
DEMAND_WRITTEN = 256  # pages chapter 3 writes


def first_refused(p: vmsim.Process) -> int:
    """The lowest page address at which ``mmap(addr, 4096, MAP_FIXED)`` fails: the top of
    the user address space (TASK_SIZE_MAX; do_mmap() -> get_unmapped_area() refuses
    ``addr + len > TASK_SIZE``). A binary search over page numbers from 4 GiB up. Give it an
    empty process: each probe that succeeds maps with MAP_FIXED (replacing whatever was
    there) and unmaps again."""
    lo, hi = 1 << (32 - PAGE_SHIFT), 1 << (64 - PAGE_SHIFT)  # lo maps, hi is refused
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            p.mmap(mid << PAGE_SHIFT, PAGE_SIZE, RW, ANON | MAP_FIXED)
        except OSError:
            hi = mid
            continue
        p.munmap(mid << PAGE_SHIFT, PAGE_SIZE)
        lo = mid
    return hi << PAGE_SHIFT


def _space(five_level: bool) -> Figures:
    m = vmsim.Machine(five_level=five_level)
    p = m.spawn()
    levels = p.paging_levels
    bits = walk_story.va_bits(levels)
    top = first_refused(p)
    return {
        "paging_levels": levels,
        "va_bits": bits,
        "address_space_bytes": 1 << bits,
        "task_size": top,
        # the last page below the half is never mapped (TASK_SIZE_MAX = half - PAGE_SIZE)
        "user_space_bytes": top + PAGE_SIZE,
        "mmap_null": p.mmap(0, PAGE_SIZE, RW, ANON),
        "mmap_high_hint": p.mmap(HIGH_HINT, PAGE_SIZE, RW, ANON),
    }


def address_spaces(number: int) -> Chapter:
    """Chapter 1: the size of an address space with 4 and 5 levels, and isolation."""
    four, five = _space(False), _space(True)
    m = vmsim.Machine()
    a, b = m.spawn(), m.spawn()
    va, vb = a.mmap(0, PAGE_SIZE, RW, ANON), b.mmap(0, PAGE_SIZE, RW, ANON)
    a.write(va, b"process A")
    b.write(vb, b"process B")
    iso: Figures = {
        "vaddr_a": va,
        "vaddr_b": vb,
        "paddr_a": a.translate(va).paddr,
        "paddr_b": b.translate(vb).paddr,
        "read_a": a.read(va, 9).decode(),
        "read_b": b.read(vb, 9).decode(),
    }
    lines = [
        f"{f['paging_levels']}-level paging: {f['va_bits']}-bit virtual addresses, "
        f"{size(f['address_space_bytes'])} of address space; the lower half is the process's: "
        f"mmap(MAP_FIXED) works up to {f['task_size']:#x}, so "
        f"{size(f['user_space_bytes'])} per process"
        for f in (four, five)
    ]
    lines.append(
        f"with 5 levels mmap(NULL) still returns {five['mmap_null']:#x} (below 47 bits); a hint "
        f"above 47 bits returns {five['mmap_high_hint']:#x}"
    )
    lines.append(
        f"isolation: process A maps {iso['vaddr_a']:#x} and process B maps {iso['vaddr_b']:#x}; "
        f"A's page is at physical {iso['paddr_a']:#x}, B's at {iso['paddr_b']:#x}: "
        f"A reads {iso['read_a']!r}, B reads {iso['read_b']!r}"
    )
    explain = (
        "Each process has its own page tables (mm_struct.pgd, loaded into CR3 at a switch by "
        "switch_mm_irqs_off()): the same virtual address translates to a different frame.",
        "TASK_SIZE_MAX is (1 << 47) - PAGE_SIZE with 4 levels and (1 << 56) - PAGE_SIZE with "
        "5 (arch/x86/include/asm/page_64_types.h): the top page of the user half stays unmapped "
        "so that a SYSCALL at the highest canonical address cannot have SYSRET return to a "
        "non-canonical one.",
        "With 5 levels the kernel still places mappings below 47 bits unless the hint asks "
        "for more (arch_get_unmapped_area_topdown(), mmap_address_hint_valid()): programs that "
        "keep tags in the high pointer bits keep working.",
    )
    return Chapter(
        number,
        "address-spaces",
        ADDRESS_SPACES,
        "Every process sees a private address space of its own, far larger than RAM; the page "
        "tables decide what each address means, and for whom.",
        tuple(lines),
        explain,
        {"4-level": four, "5-level": five, "isolation": iso},
        "vmsim maps PID --plot FILE",
    )


def page_tables(number: int) -> Chapter:
    """Chapter 2: the walk demo's engine, 4 levels, and the 5-level walk's references."""
    walk = walk_story.story()
    walk5 = walk_story.story(five_level=True)
    levels = [
        {
            "name": lv.name,
            "linux_name": lv.linux_name,
            "bits": list(lv.bits),
            "index": lv.index,
            "entry": lv.entry_hex,
            "kind": lv.kind,
        }
        for lv in walk.levels
    ]
    figures: Figures = {
        "address": walk.address,
        "paging_levels": walk.paging_levels,
        "levels": levels,
        "paddr": walk.paddr,
        "first_tlb": walk.first.tlb,
        "first_memory_refs": walk.first.memory_refs,
        "first_faults": list(walk.first.faults),
        "second_tlb": walk.second.tlb,
        "second_memory_refs": walk.second.memory_refs,
        "five_level_memory_refs": walk5.first.memory_refs,
    }
    path = " -> ".join(f"{lv.name}[{lv.index}]" for lv in walk.levels)
    faults = ", ".join(walk.first.faults) or "no fault"
    lines = (
        f"{walk.address:#x} ({walk.paging_levels} levels): {path} -> physical {walk.paddr:#x}",
        f"first access: TLB miss, {faults}, then a walk of {walk.first.memory_refs} memory "
        f"references; second access: {walk_story.tlb_name(walk.access, walk.second.tlb or '')} "
        f"hit, {walk.second.memory_refs} references"
        if walk.second.tlb
        else f"first access: {walk.first.memory_refs} references; second: no TLB hit",
        f"with 5-level paging the same walk reads {walk5.first.memory_refs} entries",
    )
    return Chapter(
        number,
        "page-tables",
        PAGE_TABLES,
        "The MMU translates every access: a TLB lookup, and on a miss a walk of the page "
        "tables, one entry per level, each level indexed by 9 bits of the virtual address.",
        lines,
        tuple(step.explain for step in walk.steps),
        figures,
        "vmsim demo walk [ADDRESS] [--five-level] [--plot FILE]",
        matches_linux=walk.matches_linux,
        expected="" if walk.matches_linux else walk.expected,
    )


def demand_paging(number: int) -> Chapter:
    """Chapter 3: mmap gives a VMA, not memory; frames come with the faults."""
    m = vmsim.Machine(ram="64M")
    p = m.spawn()
    addr = p.mmap(0, DEMAND_MAPPED, RW, ANON)
    rss_mapped = fields(p.smaps_rollup())["Rss"]
    before = p.stats
    p.read(addr, 8)
    after_read = p.stats
    rss_read = fields(p.smaps_rollup())["Rss"]
    for i in range(DEMAND_WRITTEN):
        p.write(addr + i * PAGE_SIZE, b"x")
    after_write = p.stats
    for i in range(DEMAND_WRITTEN):
        p.write(addr + i * PAGE_SIZE + 8, b"y")
    after_again = p.stats
    rss_written = fields(p.smaps_rollup())["Rss"]

    def delta(a: dict[str, int], b: dict[str, int], name: str) -> int:
        return b[name] - a[name]

    figures: Figures = {
        "mapped_bytes": DEMAND_MAPPED,
        "map_count": p.map_count,
        "rss_kb_after_mmap": rss_mapped,
        "read_faults": delta(before, after_read, "pgfault"),
        "zero_page_maps": delta(before, after_read, "zero_page_maps"),
        "rss_kb_after_read": rss_read,
        "pages_written": DEMAND_WRITTEN,
        "write_faults": delta(after_read, after_write, "pgfault"),
        "anon_faults": delta(after_read, after_write, "anon_faults"),
        "zero_page_replaced": delta(after_read, after_write, "cow_faults"),
        "rewrite_faults": delta(after_write, after_again, "pgfault"),
        "rss_kb_after_writes": rss_written,
        "majfaults": after_again["pgmajfault"],
    }
    f = figures
    lines = (
        f"mmap of {size(DEMAND_MAPPED)}: {f['map_count']} VMA, RSS {f['rss_kb_after_mmap']} kB",
        f"read of the first page: {f['read_faults']} fault, the shared zero page mapped "
        f"({f['zero_page_maps']}), RSS {f['rss_kb_after_read']} kB",
        f"first write to {DEMAND_WRITTEN} pages: {f['write_faults']} faults "
        f"({f['anon_faults']} new zeroed frames, {f['zero_page_replaced']} copy of the zero page), "
        f"RSS {f['rss_kb_after_writes']} kB; writing "
        f"them again: {f['rewrite_faults']} faults; major faults {f['majfaults']}",
    )
    explain = (
        "mmap() only records a VMA (do_mmap() -> mmap_region()): no frame, no page-table entry.",
        "The first access finds no PTE: the CPU raises #PF, handle_mm_fault() finds the VMA "
        "and do_anonymous_page() maps a frame; a read maps the shared zero page read-only, so "
        "reading untouched memory costs no memory.",
        "A write to the zero page faults again (do_wp_page() -> a new zeroed frame); once the "
        "PTE is writable, later writes run at full speed with no fault.",
        "These are minor faults: no I/O. A major fault waits for a page to be read (swap or "
        "file): the next chapter.",
    )
    return Chapter(
        number,
        "demand-paging",
        DEMAND_PAGING,
        "Memory is given lazily: mmap reserves addresses, and a page fault at the first touch "
        "brings a frame in.",
        lines,
        explain,
        figures,
        "vmsim demo cow (faults per step), vmsim demo walk",
    )


__all__ = [
    "ADDRESS_SPACES",
    "DEMAND_PAGING",
    "PAGE_TABLES",
    "address_spaces",
    "demand_paging",
    "first_refused",
    "page_tables",
]
