"""/proc/<pid>/maps and /proc/<pid>/smaps text, byte for byte as fs/proc/task_mmu.c prints it.

Page counters of smaps (Rss, Pss, ...) are 0 until page tables are modelled; Size,
KernelPageSize, MMUPageSize, THPeligible, ProtectionKey and VmFlags are exact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmsim.constants import PAGE_SHIFT, PMD_SIZE
from vmsim.mm.flags import (
    VM_EXEC,
    VM_HUGEPAGE,
    VM_MAYSHARE,
    VM_NOHUGEPAGE,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    vmflags_text,
)
from vmsim.mm.vma import Vma

if TYPE_CHECKING:
    from vmsim.mm.core import AddressSpace

GATE_START = 0xFFFFFFFFFF600000
GATE_END = 0xFFFFFFFFFF601000
GATE_LINE = "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]\n"

SMAPS_KB_FIELDS = (
    "Rss",
    "Pss",
    "Pss_Dirty",
    "Shared_Clean",
    "Shared_Dirty",
    "Private_Clean",
    "Private_Dirty",
    "Referenced",
    "Anonymous",
    "KSM",
    "LazyFree",
    "AnonHugePages",
    "ShmemPmdMapped",
    "FilePmdMapped",
    "Shared_Hugetlb",
    "Private_Hugetlb",
    "Swap",
    "SwapPss",
    "Locked",
)


def vma_name(mm: AddressSpace, vma: Vma) -> str | None:
    """get_vma_name(): file path, special name, [heap], [stack], or nothing."""
    if vma.file is not None:
        return vma.file.name
    if vma.name is not None:
        return vma.name
    if vma.start < mm.brk and vma.end > mm.start_brk:
        return "[heap]"
    # (an empty model process has no initial stack: start_stack 0 names nothing)
    if mm.start_stack and vma.start <= mm.start_stack <= vma.end:
        return "[stack]"
    return None


def header(
    vma_start: int,
    vma_end: int,
    flags: int,
    offset: int,
    dev: tuple[int, int],
    ino: int,
    name: str | None,
) -> str:
    """show_vma_header_prefix() + the name padded to column 73."""
    perms = (
        ("r" if flags & VM_READ else "-")
        + ("w" if flags & VM_WRITE else "-")
        + ("x" if flags & VM_EXEC else "-")
        + ("s" if flags & VM_MAYSHARE else "p")
    )
    line = f"{vma_start:08x}-{vma_end:08x} {perms} {offset:08x} {dev[0]:02x}:{dev[1]:02x} {ino} "
    if name is None:
        return line
    if len(line) < 72:
        line += " " * (72 - len(line))
    return line + " " + name


def _vma_header(mm: AddressSpace, vma: Vma) -> str:
    f = vma.file
    if f is not None:
        return header(
            vma.start,
            vma.end,
            vma.flags,
            vma.pgoff << PAGE_SHIFT,
            f.inode.dev,
            f.inode.ino,
            vma_name(mm, vma),
        )
    return header(vma.start, vma.end, vma.flags, 0, (0, 0), 0, vma_name(mm, vma))


def maps_text(mm: AddressSpace, gate: bool = True) -> str:
    out = [_vma_header(mm, v) + "\n" for v in mm.tree]
    if gate:
        out.append(GATE_LINE)
    return "".join(out)


def _kb(label: str, value: int) -> str:
    return f"{label + ':':<16}{value:>8} kB\n"


def thp_eligible(mm: AddressSpace, vma: Vma) -> int:
    """thp_vma_allowable_order(..., TVA_SMAPS, PMD_ORDER) for anonymous memory."""
    thp = mm.cfg.thp
    if thp == "never" or vma.flags & VM_NOHUGEPAGE:
        return 0
    if thp == "madvise" and not vma.flags & VM_HUGEPAGE:
        return 0
    if not vma.is_anonymous or vma.flags & VM_SHARED:
        return 0
    haddr = (vma.end - PMD_SIZE) & ~(PMD_SIZE - 1)
    return 1 if haddr >= vma.start and haddr + PMD_SIZE <= vma.end else 0


def _smaps_block(head: str, size_kb: int, thp: int, flags_text: str, pkeys: bool) -> str:
    parts = [head, "\n", _kb("Size", size_kb), _kb("KernelPageSize", 4), _kb("MMUPageSize", 4)]
    parts.extend(_kb(label, 0) for label in SMAPS_KB_FIELDS)
    parts.append(f"{'THPeligible:':<16}{thp:>8}\n")
    if pkeys:
        parts.append(f"{'ProtectionKey:':<16}{0:>8}\n")
    parts.append(f"VmFlags: {flags_text}\n")
    return "".join(parts)


def smaps_text(mm: AddressSpace, pkeys: bool = False, gate: bool = True) -> str:
    out = []
    for v in mm.tree:
        out.append(
            _smaps_block(
                _vma_header(mm, v),
                (v.end - v.start) >> 10,
                thp_eligible(mm, v),
                vmflags_text(v.flags),
                pkeys,
            )
        )
    if gate:
        out.append(_smaps_block(GATE_LINE[:-1], 4, 0, "ex ", pkeys))
    return "".join(out)
