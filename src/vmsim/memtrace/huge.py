"""The layouts of the hugetlb what-ifs of the access-trace engine (``page_size`` "2M", "1G").

Nothing here decides a fault. A what-if only changes how the trace's address space is built;
every fault then goes through the model's own fault path (``do_user_addr_fault()`` ->
``handle_mm_fault()``), in both engines alike:

* ``"thp"``: the layout as it is, on a Machine with transparent huge pages ``enabled=always``
  (``vmsim.mm.huge_memory``: do_huge_pmd_anonymous_page(), the huge zero page on a read,
  do_huge_pmd_wp_page() on a write to it, the 4 KiB fallback where no aligned 2 MiB block
  fits in the VMA). ``always`` rather than ``madvise`` + MADV_HUGEPAGE on every anonymous
  VMA: it gives the same PMD faults without changing the program's VMAs (VM_HUGEPAGE, which
  the program never asked for, would show in smaps and change khugepaged's choices), and it
  keeps a VMA the program marked MADV_NOHUGEPAGE (smaps ``nh``) at 4 KiB, as Linux does.
* ``"2M"`` / ``"1G"``: the anonymous private mappings become MAP_HUGETLB mappings of that size
  (``vmsim.mm.hugetlb``: hugetlb_fault(), PMD or PUD leaves), taken from a pool
  (nr_hugepages) sized to the pages the mappings reserve. ``plan`` decides which part of each
  mapping: hugetlb needs the start and the length aligned to the huge page size, and a trace's
  addresses cannot move, so a mapping is rounded out to the huge page size where the space
  around it is free, and otherwise rounded in (the part left over stays 4 KiB anonymous
  memory, as it would be if the program had mapped only the aligned part with MAP_HUGETLB).
  What is converted: private anonymous mappings with some permission, ``[heap]`` included
  (as libhugetlbfs' HUGETLB_MORECORE backs malloc with hugetlbfs); not the stack (a hugetlb
  VMA cannot grow down), not PROT_NONE reservations (they are never touched; their pool pages
  would only be reserved), not file-backed mappings (program text, libraries, the page cache:
  4 KiB, as on Linux), not shared memory.

With 4 KiB pages (``"4K"``) THP is ``never``: every fault maps 4 KiB pages.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from vmsim.constants import (
    MAP_ANONYMOUS,
    MAP_FIXED_NOREPLACE,
    MAP_HUGE_SHIFT,
    MAP_HUGETLB,
    MAP_PRIVATE,
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
)
from vmsim.hw.tlb import PAGE_SIZE_1G, PAGE_SIZE_2M
from vmsim.machine import Machine
from vmsim.process import Process
from vmsim.snapshot import MapsEntry

__all__ = ["HUGE_SIZES", "HugeRegion", "map_hugetlb", "plan", "thp_mode"]

HUGE_SIZES = {"2M": PAGE_SIZE_2M, "1G": PAGE_SIZE_1G}


def thp_mode(page_size: str) -> str:
    """The THP ``enabled`` setting of a what-if's Machine (module docstring)."""
    return "always" if page_size == "thp" else "never"


@dataclass(frozen=True)
class HugeRegion:
    """``[start, end)``, both aligned to the huge page size, to map with MAP_HUGETLB."""

    start: int
    end: int
    prot: int


def prot_of(perms: str) -> int:
    return (
        (PROT_READ if perms[0] == "r" else 0)
        | (PROT_WRITE if perms[1] == "w" else 0)
        | (PROT_EXEC if perms[2] == "x" else 0)
    )


def convertible(e: MapsEntry) -> bool:
    """A private anonymous mapping with some permission, not the stack (module docstring)."""
    if e.perms[3] != "p" or e.perms[:3] == "---" or e.ino:
        return False
    name = e.name
    return name is None or name == "[heap]" or name.startswith("[anon:")


def _round_out(spans: list[tuple[int, int, int, bool]], size: int) -> list[tuple[int, int, int]]:
    """The hugetlb part ``(hs, he, i)`` of each convertible span ``i`` of ``spans`` (sorted,
    ``(start, end, prot, convertible)``): rounded out where the space is free (no other span
    and no other span's rounded-out part), else rounded in; spans too small are left out."""
    out: list[tuple[int, int, int]] = []
    floor = 0  # the end of what lies below (a span, or the hugetlb part of one)
    for i, (s, e, _prot, conv) in enumerate(spans):
        if not conv:
            floor = max(floor, e)
            continue
        hs = s & -size
        if hs < floor:
            hs = (s + size - 1) & -size
        ceiling = spans[i + 1][0] if i + 1 < len(spans) else 1 << 64
        he = (e + size - 1) & -size
        if he > ceiling:
            he = e & -size
        if hs < he:
            out.append((hs, he, i))
            floor = max(e, he)
        else:
            floor = e
    return out


def plan(entries: list[MapsEntry], size: int) -> tuple[list[MapsEntry], list[HugeRegion]]:
    """Split a maps snapshot for a hugetlb what-if: the entries to build as they are (with the
    4 KiB remainders of converted mappings) and the hugetlb regions (module docstring).
    Adjacent convertible mappings with the same permissions are taken as one."""
    groups: list[list[MapsEntry]] = []
    for e in entries:
        last = groups[-1][-1] if groups else None
        if (
            last is not None
            and convertible(e)
            and convertible(last)
            and last.end == e.start
            and last.perms == e.perms
        ):
            groups[-1].append(e)
        else:
            groups.append([e])
    spans = [(g[0].start, g[-1].end, prot_of(g[0].perms), convertible(g[0])) for g in groups]
    huge = _round_out(spans, size)
    converted = {i: (hs, he) for hs, he, i in huge}
    kept: list[MapsEntry] = []
    regions: list[HugeRegion] = []
    for i, g in enumerate(groups):
        if i not in converted:
            kept.extend(g)
            continue
        hs, he = converted[i]
        regions.append(HugeRegion(hs, he, spans[i][2]))
        for e in g:  # the 4 KiB remainders below and above the hugetlb part
            if e.start < hs:
                kept.append(replace(e, end=min(e.end, hs)))
            if e.end > he:
                kept.append(replace(e, start=max(e.start, he)))
    kept.sort(key=lambda e: e.start)
    return kept, regions


def map_hugetlb(machine: Machine, proc: Process, regions: list[HugeRegion], size: int) -> None:
    """Size the pool of ``size`` pages to the regions (nr_hugepages) and map each one
    MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_2MB / MAP_HUGE_1GB at its address
    (the mapping reserves its pages from the pool: hugetlb_reserve_pages())."""
    if not regions:
        return
    name = "2M" if size == PAGE_SIZE_2M else "1G"
    need = sum((r.end - r.start) // size for r in regions)
    have = machine.hugepage_stats(name)["nr_hugepages"]
    machine.set_nr_hugepages(name, have + need)
    got = machine.hugepage_stats(name)["nr_hugepages"] - have
    if got < need:
        raise ValueError(
            f"--page-size {name}: the layout needs {need} huge pages of {name} and the "
            f"modelled machine could give only {got}"
        )
    flags = (
        MAP_PRIVATE
        | MAP_ANONYMOUS
        | MAP_HUGETLB
        | ((size.bit_length() - 1) << MAP_HUGE_SHIFT)
        | MAP_FIXED_NOREPLACE
    )
    for r in regions:
        proc.mmap(r.start, r.end - r.start, r.prot, flags)
