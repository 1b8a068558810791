"""The hardware page walk: what the CPU does on a TLB miss (Intel SDM vol. 3, ch. 4).

:func:`walk` reads one entry per level from the top, exactly as the page-miss handler does:

1. Not-present at any level: #PF with error code P=0 (and W, U, I as for the access), at the
   first level whose P bit is clear.
2. A reserved bit set in a present entry (PS in a PML4E/PML5E, the bits below a large page's
   frame, physical-address bits at or above MAXPHYADDR): #PF with RSVD and P.
3. Access rights, combined over all levels (SDM 4.6): R/W and U/S are ANDed, XD is ORed. A user
   access needs U/S everywhere; a write needs R/W everywhere (for a supervisor write only if
   CR0.WP); an instruction fetch faults if any level has XD, or (SMEP) if a supervisor fetches
   from a user page; SMAP forbids supervisor data accesses to user pages; protection keys
   (PKRU) forbid data accesses to user pages by key. Violations fault with P=1.
4. On the way the CPU sets A in every entry it uses (upper levels as they are read, the leaf
   once the access is allowed) and D in the leaf of a write, in place, in memory.

Paging-structure caches (SDM 4.10.3) hold upper-level entries: a PDE-cache hit gives the
page-table frame at once and the walk reads only the PTE (one memory reference instead of
four). Their entries cache the combined rights of the levels above. INVLPG invalidates every
paging-structure-cache entry of the current PCID, whatever the address (SDM 4.10.4.1), so
:meth:`PagingStructureCache.invalidate` empties them all.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import IntFlag
from typing import Literal

from vmsim.hw.pagetable import PageTables, WalkStep
from vmsim.hw.pte import (
    PAGE_ACCESSED,
    PAGE_BIT_PKEY_BIT0,
    PAGE_DIRTY,
    PAGE_NX,
    PAGE_PRESENT,
    PAGE_PSE,
    PAGE_RW,
    PAGE_USER,
    PTE_PFN_MASK,
)

__all__ = [
    "INIT_PKRU",
    "NonCanonicalAddress",
    "PageFault",
    "PagingStructureCache",
    "PfError",
    "StalePagingStructure",
    "Translation",
    "walk",
]

Access = Literal["read", "write", "exec"]

# Linux's default PKRU (init_pkru_value, arch/x86/mm/pkeys.c): access disabled for keys
# 1..15, everything allowed for key 0.
INIT_PKRU = 0x55555554


class PfError(IntFlag):
    """The page-fault error code (enum x86_pf_error_code, arch/x86/include/asm/trap_pf.h)."""

    PROT = 1 << 0  # 0: no page found, 1: protection fault
    WRITE = 1 << 1  # 0: read access, 1: write access
    USER = 1 << 2  # 0: kernel-mode access, 1: user-mode access
    RSVD = 1 << 3  # 1: use of a reserved bit detected
    INSTR = 1 << 4  # 1: fault was an instruction fetch
    PK = 1 << 5  # 1: protection-keys violation


class PageFault(Exception):
    """#PF: CR2 = ``addr``; ``level`` is the page-table level where the walk stopped."""

    def __init__(self, addr: int, error_code: PfError, level: int) -> None:
        super().__init__(f"page fault at {addr:#x}: error code {int(error_code):#x} level {level}")
        self.addr = addr
        self.error_code = error_code
        self.level = level


class StalePagingStructure(Exception):
    """A paging-structure-cache hit names a table the page tables no longer link there.

    The CPU would walk the old (possibly freed) table: the kernel must flush (INVLPG or a
    CR3 write) before it frees or relinks a table, and this model refuses to guess what the
    stale walk would read. Raised only by a cache built with ``strict=True`` (the default).
    """

    def __init__(self, addr: int, level: int) -> None:
        super().__init__(f"stale level-{level} paging-structure cache entry for {addr:#x}")
        self.addr = addr
        self.level = level


class NonCanonicalAddress(Exception):
    """#GP: the address is not canonical, so no walk happens at all."""

    def __init__(self, addr: int) -> None:
        super().__init__(f"non-canonical address {addr:#x}")
        self.addr = addr


@dataclass(frozen=True, slots=True)
class Translation:
    """The outcome of one successful walk.

    ``entries`` lists the entries the walk read from memory, top first, with their values
    after the CPU's A/D update; levels served by a paging-structure cache are not in it, so
    ``len(entries) == memory_refs``.
    """

    vaddr: int
    paddr: int
    page_size: int
    level: int  # level of the leaf: 1 (4 KiB), 2 (2 MiB), 3 (1 GiB)
    entries: tuple[WalkStep, ...]
    memory_refs: int
    pwc_hit: bool


class PagingStructureCache:
    """Intel's paging-structure caches: one small LRU per upper level.

    ``sizes`` maps a level to its entry count: 2 = PDE cache, 3 = PDPTE cache, 4 = PML4E
    cache, 5 = PML5E cache; 0 disables one. The defaults (32 / 4 / 2) are the figures
    measured on recent Intel cores in the literature; Intel documents none.

    An entry is keyed by the virtual-address bits that select the cached upper entry
    (``va >> shift(level)``) and holds the frame of the next table plus the rights ANDed/ORed
    over that entry and those above it. Only present, non-leaf entries are cached. The model
    finds the next table by address, so with ``strict`` a hit is checked against the live
    upper entry and :class:`StalePagingStructure` is raised if it changed without a flush.
    """

    def __init__(self, sizes: dict[int, int] | None = None, *, strict: bool = True) -> None:
        self.strict = strict
        self.sizes = {2: 32, 3: 4, 4: 2, 5: 0} if sizes is None else dict(sizes)
        for lv, n in self.sizes.items():
            if lv not in (2, 3, 4, 5) or n < 0:
                raise ValueError(f"bad paging-structure cache size {lv}: {n}")
        # level -> OrderedDict[key, (next_table_pfn, rw, us, nx)], least recent first.
        self._caches: dict[int, OrderedDict[int, tuple[int, int, int, int]]] = {
            lv: OrderedDict() for lv, n in sorted(self.sizes.items()) if n
        }
        self._order = sorted(self._caches)  # deepest level first: PDE cache is tried first
        self.hits = 0
        self.misses = 0

    def lookup(self, masked_va: int, shifts: tuple[int, ...]) -> tuple[int, int, int, int, int]:
        """(level, pfn, rw, us, nx) of the deepest cached entry for ``masked_va``, or level 0."""
        for lv in self._order:
            c = self._caches[lv]
            key = masked_va >> shifts[lv]
            hit = c.get(key)
            if hit is not None:
                c.move_to_end(key)
                self.hits += 1
                return (lv, *hit)
        self.misses += 1
        return (0, 0, 0, 0, 0)

    def fill(self, level: int, key: int, pfn: int, rw: int, us: int, nx: int) -> None:
        c = self._caches.get(level)
        if c is None:
            return
        c[key] = (pfn, rw, us, nx)
        c.move_to_end(key)
        if len(c) > self.sizes[level]:
            c.popitem(last=False)

    def invalidate(self, vaddr: int) -> None:
        """INVLPG: drops every paging-structure-cache entry, not only those for ``vaddr``."""
        del vaddr  # the SDM makes INVLPG address-independent for these caches
        self.flush()

    def flush(self) -> None:
        """MOV to CR3 / INVPCID: everything goes."""
        for c in self._caches.values():
            c.clear()

    def __len__(self) -> int:
        return sum(len(c) for c in self._caches.values())


# Error-code bits as plain ints for the hot path (IntFlag arithmetic costs a microsecond).
_PF_PROT, _PF_WRITE, _PF_USER, _PF_RSVD, _PF_INSTR, _PF_PK = 1, 2, 4, 8, 16, 32
# Per access: (write, fetch, error-code bits the access itself contributes).
_ACCESS_BITS = {
    "read": (False, False, 0),
    "write": (True, False, _PF_WRITE),
    "exec": (False, True, _PF_INSTR),
}
# Bits 13 up to the page size of a large leaf are reserved (bit 12 is PAT there).
_LARGE_RSVD = (0, 0, ((1 << 21) - 1) & ~0x1FFF, ((1 << 30) - 1) & ~0x1FFF)
_U64 = (1 << 64) - 1


def walk(
    pt: PageTables,
    vaddr: int,
    access: Access,
    user: bool = True,
    cr4_smep: bool = True,
    wp: bool = True,
    *,
    smap: bool = False,
    pkru: int = 0,
    maxphyaddr: int = 52,
    pwc: PagingStructureCache | None = None,
) -> Translation:
    """Translate ``vaddr`` for one ``access`` like the CPU's page walker; raise
    :class:`PageFault` or :class:`NonCanonicalAddress` as the CPU would.

    ``user`` is CPL 3; ``cr4_smep``/``smap`` are CR4.SMEP/SMAP (SMAP with EFLAGS.AC clear);
    ``wp`` is CR0.WP; ``pkru`` the PKRU register (0: every key allowed); ``maxphyaddr`` the
    CPU's physical-address width (bits at and above it are reserved in a present entry).
    EFER.NXE is taken as set (Linux always sets it on CPUs with NX).
    """
    try:
        write, fetch, base_err = _ACCESS_BITS[access]
    except KeyError:
        raise ValueError(f"access must be read, write or exec, not {access!r}") from None
    if user:
        base_err |= _PF_USER
    va_bits = pt.va_bits
    top_bits = (vaddr & _U64) >> (va_bits - 1)
    if vaddr < 0 or not (top_bits == 0 or top_bits == (1 << (65 - va_bits)) - 1):
        raise NonCanonicalAddress(vaddr)
    m = vaddr & pt.va_mask
    shifts = pt.shifts
    ents = pt.entries
    rsvd_phys = ((1 << 52) - 1) & ~((1 << maxphyaddr) - 1)

    rw = PAGE_RW
    us = PAGE_USER
    nx = 0
    level = pt.levels
    pwc_hit = False
    if pwc is not None:
        hit_level, c_pfn, c_rw, c_us, c_nx = pwc.lookup(m, shifts)
        if hit_level:
            if pwc.strict:
                cur = ents[hit_level].get(m >> shifts[hit_level], 0)
                if not cur & PAGE_PRESENT or (cur & PTE_PFN_MASK) >> 12 != c_pfn:
                    raise StalePagingStructure(vaddr, hit_level)
            pwc_hit = True
            rw, us, nx = c_rw, c_us, c_nx
            level = hit_level - 1
    steps: list[WalkStep] = []
    while True:
        d = ents[level]
        key = m >> shifts[level]
        e = d.get(key, 0)
        if not e & PAGE_PRESENT:
            raise PageFault(vaddr, PfError(base_err), level)
        # Reserved bits: physical bits >= MAXPHYADDR; PS in a PML4E/PML5E; the bits of a
        # large page's frame below its alignment.
        if rsvd_phys and e & rsvd_phys:
            raise PageFault(vaddr, PfError(base_err | _PF_PROT | _PF_RSVD), level)
        if level == 1:
            leaf = True
        elif e & PAGE_PSE:
            if level >= 4 or e & _LARGE_RSVD[level]:
                raise PageFault(vaddr, PfError(base_err | _PF_PROT | _PF_RSVD), level)
            leaf = True
        else:
            leaf = False
        rw &= e
        us &= e
        nx |= e & PAGE_NX
        if leaf:
            break
        # An upper entry in use gets A at once, whatever becomes of the access.
        if not e & PAGE_ACCESSED:
            e |= PAGE_ACCESSED
            d[key] = e
        steps.append(WalkStep(level, key & 511, e))
        if pwc is not None:
            pwc.fill(level, key, (e & PTE_PFN_MASK) >> 12, rw, us, nx)
        level -= 1

    user_page = us & PAGE_USER
    err = 0
    if user and not user_page:
        err = _PF_PROT
    elif fetch:
        if nx or (not user and cr4_smep and user_page):
            err = _PF_PROT
    else:
        if write and not rw & PAGE_RW and (user or wp):
            err = _PF_PROT
        if not user and smap and user_page:
            err = _PF_PROT
    # Protection keys govern data accesses to user pages; the PK bit reports the key
    # condition even when another right failed too (SDM 4.7, error code bit 5).
    if pkru and user_page and not fetch:
        bits = pkru >> (2 * ((e >> PAGE_BIT_PKEY_BIT0) & 0xF))
        if bits & 1 or (write and bits & 2 and (user or wp)):
            err = _PF_PROT | _PF_PK
    if err:
        raise PageFault(vaddr, PfError(base_err | err), level)

    new = e | PAGE_ACCESSED
    if write:
        new |= PAGE_DIRTY
    if new != e:
        d[key] = new
        e = new
    steps.append(WalkStep(level, key & 511, e))
    size_shift = shifts[level]
    offset_mask = (1 << size_shift) - 1
    paddr = (e & PTE_PFN_MASK & ~offset_mask) | (m & offset_mask)
    return Translation(vaddr, paddr, 1 << size_shift, level, tuple(steps), len(steps), pwc_hit)
