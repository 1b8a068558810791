"""The x86-64 page-table entry format, as plain ints with the kernel's bit names.

Every entry is a 64-bit ``int``; the constants below carry the names of
arch/x86/include/asm/pgtable_types.h without the leading underscore (``_PAGE_RW`` ->
``PAGE_RW``). Values are those of Linux 6.18 on x86-64 with the usual distribution config
(CONFIG_HAVE_ARCH_USERFAULTFD_WP, CONFIG_X86_USER_SHADOW_STACK,
CONFIG_X86_INTEL_MEMORY_PROTECTION_KEYS, NX supported). The reference kernel has no
CONFIG_MEM_SOFT_DIRTY: the soft-dirty bit is named here but the model never sets it.

Entry kinds, as the kernel tells them apart:

- none: ``entry == 0`` (``pte_none()``).
- present: ``P`` set; or PROT_NONE: ``P`` clear and ``PROTNONE`` (the GLOBAL bit) set, which the
  kernel still counts as ``pte_present()`` though the CPU faults on it.
- swap (``is_swap_pte()``): not none, not present: a swap entry, a migration entry or a PTE
  marker, in the inverted-offset layout of arch/x86/include/asm/pgtable_64.h.

Since the L1TF mitigation (arch/x86/include/asm/pgtable-invert.h) the kernel stores the PFN
bits of a non-present, non-zero entry inverted, so that a speculative walk of a PROT_NONE or
swap entry points at no real memory; :func:`pfn_pte` and :func:`pfn_of` do the same.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MAX_SWAPFILES_SHIFT",
    "PAGE_ACCESSED",
    "PAGE_COPY",
    "PAGE_COPY_EXEC",
    "PAGE_DIRTY",
    "PAGE_GLOBAL",
    "PAGE_NONE",
    "PAGE_NX",
    "PAGE_PAT",
    "PAGE_PAT_LARGE",
    "PAGE_PCD",
    "PAGE_PKEY_MASK",
    "PAGE_PRESENT",
    "PAGE_PROTNONE",
    "PAGE_PSE",
    "PAGE_PWT",
    "PAGE_READONLY",
    "PAGE_READONLY_EXEC",
    "PAGE_RW",
    "PAGE_SAVED_DIRTY",
    "PAGE_SHARED",
    "PAGE_SHARED_EXEC",
    "PAGE_SOFT_DIRTY",
    "PAGE_SPECIAL",
    "PAGE_SWP_EXCLUSIVE",
    "PAGE_SWP_SOFT_DIRTY",
    "PAGE_SWP_UFFD_WP",
    "PAGE_TABLE",
    "PAGE_UFFD_WP",
    "PAGE_USER",
    "PMD_PFN_MASK",
    "PTE_MARKER_GUARD",
    "PTE_MARKER_POISONED",
    "PTE_MARKER_UFFD_WP",
    "PTE_PFN_MASK",
    "PUD_PFN_MASK",
    "SWP_PTE_MARKER",
    "PteFields",
    "decode",
    "is_pte_marker",
    "is_swap_entry",
    "make_pte",
    "make_pte_marker",
    "pfn_of",
    "pfn_pte",
    "protection_map",
    "pte_marker_get",
    "pte_present",
    "swp_entry",
    "swp_offset",
    "swp_type",
    "vm_get_page_prot",
]

# --- bit numbers (arch/x86/include/asm/pgtable_types.h) ------------------------------------
PAGE_BIT_PRESENT = 0  # is present
PAGE_BIT_RW = 1  # writeable
PAGE_BIT_USER = 2  # userspace addressable
PAGE_BIT_PWT = 3  # page write through
PAGE_BIT_PCD = 4  # page cache disabled
PAGE_BIT_ACCESSED = 5  # was accessed (raised by CPU)
PAGE_BIT_DIRTY = 6  # was written to (raised by CPU)
PAGE_BIT_PSE = 7  # 2 MiB or 1 GiB page, in PMD and PUD entries
PAGE_BIT_PAT = 7  # on 4 KiB pages
PAGE_BIT_GLOBAL = 8  # global TLB entry
PAGE_BIT_SOFTW1 = 9  # available for programmer
PAGE_BIT_SOFTW2 = 10
PAGE_BIT_SOFTW3 = 11
PAGE_BIT_PAT_LARGE = 12  # on 2 MiB or 1 GiB pages
# Since 6.6 (user shadow stacks) SOFTW4 is bit 57 and SOFTW5 bit 58: the older
# "SOFTW4 = 58" layout no longer holds.
PAGE_BIT_SOFTW4 = 57
PAGE_BIT_SOFTW5 = 58
PAGE_BIT_PKEY_BIT0 = 59  # protection keys, bit 1/4
PAGE_BIT_PKEY_BIT1 = 60
PAGE_BIT_PKEY_BIT2 = 61
PAGE_BIT_PKEY_BIT3 = 62
PAGE_BIT_NX = 63  # no execute

PAGE_BIT_SPECIAL = PAGE_BIT_SOFTW1  # pte_special(): no struct page behind it
PAGE_BIT_UFFD_WP = PAGE_BIT_SOFTW2  # userfaultfd write-protected
PAGE_BIT_SOFT_DIRTY = PAGE_BIT_SOFTW3  # software dirty tracking (/proc/pid/clear_refs)
PAGE_BIT_SAVED_DIRTY = PAGE_BIT_SOFTW5  # dirty but read-only (not a shadow-stack page)
# If PAGE_BIT_PRESENT is clear: a PROT_NONE mapping, still pte_present().
PAGE_BIT_PROTNONE = PAGE_BIT_GLOBAL

# --- masks ----------------------------------------------------------------------------------
PAGE_PRESENT = 1 << PAGE_BIT_PRESENT
PAGE_RW = 1 << PAGE_BIT_RW
PAGE_USER = 1 << PAGE_BIT_USER
PAGE_PWT = 1 << PAGE_BIT_PWT
PAGE_PCD = 1 << PAGE_BIT_PCD
PAGE_ACCESSED = 1 << PAGE_BIT_ACCESSED
PAGE_DIRTY = 1 << PAGE_BIT_DIRTY
PAGE_PSE = 1 << PAGE_BIT_PSE
PAGE_PAT = 1 << PAGE_BIT_PAT
PAGE_GLOBAL = 1 << PAGE_BIT_GLOBAL
PAGE_SOFTW1 = 1 << PAGE_BIT_SOFTW1
PAGE_SOFTW2 = 1 << PAGE_BIT_SOFTW2
PAGE_SOFTW3 = 1 << PAGE_BIT_SOFTW3
PAGE_PAT_LARGE = 1 << PAGE_BIT_PAT_LARGE
PAGE_SOFTW4 = 1 << PAGE_BIT_SOFTW4
PAGE_SOFTW5 = 1 << PAGE_BIT_SOFTW5
PAGE_SPECIAL = 1 << PAGE_BIT_SPECIAL
PAGE_UFFD_WP = 1 << PAGE_BIT_UFFD_WP
PAGE_SOFT_DIRTY = 1 << PAGE_BIT_SOFT_DIRTY
PAGE_SAVED_DIRTY = 1 << PAGE_BIT_SAVED_DIRTY
PAGE_PKEY_MASK = 0xF << PAGE_BIT_PKEY_BIT0
PAGE_NX = 1 << PAGE_BIT_NX
PAGE_PROTNONE = 1 << PAGE_BIT_PROTNONE

# A table page pointed to by a user upper-level entry (pgd_populate() and friends).
PAGE_TABLE = PAGE_PRESENT | PAGE_RW | PAGE_USER | PAGE_ACCESSED | PAGE_DIRTY

PAGE_SHIFT = 12
PHYSICAL_MASK_SHIFT = 52  # __PHYSICAL_MASK_SHIFT
_PHYSICAL_MASK = (1 << PHYSICAL_MASK_SHIFT) - 1
PTE_PFN_MASK = _PHYSICAL_MASK & ~((1 << 12) - 1)  # bits 12..51: PHYSICAL_PAGE_MASK
PMD_PFN_MASK = _PHYSICAL_MASK & ~((1 << 21) - 1)  # bits 21..51: PHYSICAL_PMD_PAGE_MASK
PUD_PFN_MASK = _PHYSICAL_MASK & ~((1 << 30) - 1)  # bits 30..51: PHYSICAL_PUD_PAGE_MASK
_U64 = (1 << 64) - 1

# --- user protections (arch/x86/include/asm/pgtable_types.h, arch/x86/mm/pgprot.c) --------
PAGE_NONE = PAGE_PROTNONE | PAGE_ACCESSED
PAGE_SHARED = PAGE_PRESENT | PAGE_RW | PAGE_USER | PAGE_ACCESSED | PAGE_NX
PAGE_SHARED_EXEC = PAGE_PRESENT | PAGE_RW | PAGE_USER | PAGE_ACCESSED
PAGE_COPY = PAGE_PRESENT | PAGE_USER | PAGE_ACCESSED | PAGE_NX  # PAGE_COPY_NOEXEC
PAGE_COPY_EXEC = PAGE_PRESENT | PAGE_USER | PAGE_ACCESSED
PAGE_READONLY = PAGE_PRESENT | PAGE_USER | PAGE_ACCESSED | PAGE_NX
PAGE_READONLY_EXEC = PAGE_PRESENT | PAGE_USER | PAGE_ACCESSED

# vm_flags bits (include/linux/mm.h); repeated here so that hw/ does not import mm/.
VM_READ = 1 << 0
VM_WRITE = 1 << 1
VM_EXEC = 1 << 2
VM_SHARED = 1 << 3
VM_PKEY_SHIFT = 32  # VM_HIGH_ARCH_BIT_0: VM_PKEY_BIT0..3 are vm_flags bits 32..35

# Indexed by vm_flags & (VM_READ|VM_WRITE|VM_EXEC|VM_SHARED). A private writable mapping
# gets PAGE_COPY (read-only): the first write faults and do_wp_page() copies (COW); write
# permission is added per page by the fault handler, never by the protection itself.
protection_map: tuple[int, ...] = (
    PAGE_NONE,  # VM_NONE
    PAGE_READONLY,  # VM_READ
    PAGE_COPY,  # VM_WRITE
    PAGE_COPY,  # VM_WRITE | VM_READ
    PAGE_READONLY_EXEC,  # VM_EXEC
    PAGE_READONLY_EXEC,  # VM_EXEC | VM_READ
    PAGE_COPY_EXEC,  # VM_EXEC | VM_WRITE
    PAGE_COPY_EXEC,  # VM_EXEC | VM_WRITE | VM_READ
    PAGE_NONE,  # VM_SHARED
    PAGE_READONLY,  # VM_SHARED | VM_READ
    PAGE_SHARED,  # VM_SHARED | VM_WRITE
    PAGE_SHARED,  # VM_SHARED | VM_WRITE | VM_READ
    PAGE_READONLY_EXEC,  # VM_SHARED | VM_EXEC
    PAGE_READONLY_EXEC,  # VM_SHARED | VM_EXEC | VM_READ
    PAGE_SHARED_EXEC,  # VM_SHARED | VM_EXEC | VM_WRITE
    PAGE_SHARED_EXEC,  # VM_SHARED | VM_EXEC | VM_WRITE | VM_READ
)


def vm_get_page_prot(vm_flags: int) -> int:
    """The pgprot bits of a VMA: mirrors vm_get_page_prot() in arch/x86/mm/pgprot.c.

    The four protection-key bits of vm_flags (VM_PKEY_BIT0..3) go to PTE bits 59..62.
    """
    val = protection_map[vm_flags & (VM_READ | VM_WRITE | VM_EXEC | VM_SHARED)]
    val |= ((vm_flags >> VM_PKEY_SHIFT) & 0xF) << PAGE_BIT_PKEY_BIT0
    return val


# --- PFN <-> entry, with the L1TF inversion (arch/x86/include/asm/pgtable-invert.h) --------
def _needs_invert(val: int) -> bool:
    """__pte_needs_invert(): a non-zero entry without P has its PFN bits stored inverted."""
    return val != 0 and not val & PAGE_PRESENT


def pfn_pte(pfn: int, prot: int) -> int:
    """A 4 KiB entry for frame ``pfn`` with protection ``prot``: mirrors pfn_pte()."""
    phys = pfn << PAGE_SHIFT
    if _needs_invert(prot):
        phys = ~phys & _U64
    return (phys & PTE_PFN_MASK) | prot


def _pfn_mask(entry: int, level: int) -> int:
    if level == 2 and entry & PAGE_PSE:
        return PMD_PFN_MASK
    if level == 3 and entry & PAGE_PSE:
        return PUD_PFN_MASK
    return PTE_PFN_MASK


def pfn_of(entry: int, level: int = 1) -> int:
    """The frame number in ``entry`` at ``level`` (1 PTE, 2 PMD, 3 PUD, 4 P4D, 5 PGD).

    Mirrors pte_pfn() / pmd_pfn() / pud_pfn(): PFN bits of a non-present entry are inverted
    back first; a large leaf (PS set in a PMD or PUD) masks the low bits below its size, so
    the result is the first frame of the 2 MiB or 1 GiB page.
    """
    if _needs_invert(entry):
        entry = ~entry & _U64
    return (entry & _pfn_mask(entry, level)) >> PAGE_SHIFT


def make_pte(
    pfn: int,
    *,
    present: bool,
    writable: bool,
    user: bool,
    nx: bool,
    accessed: bool,
    dirty: bool,
    global_: bool,
    pkey: int = 0,
    huge: bool = False,
) -> int:
    """An entry built from named fields; ``huge`` makes a PMD/PUD leaf (PS set).

    The PFN of a large leaf must be aligned to its size by the caller (the bits below are
    reserved or PAT_LARGE); it is stored as given, like pfn_pmd() does. A non-present entry
    with other bits set has its PFN inverted, as pfn_pte() does for PROT_NONE.
    """
    if not 0 <= pkey < 16:
        raise ValueError(f"pkey {pkey} out of range 0..15")
    prot = (
        (PAGE_PRESENT if present else 0)
        | (PAGE_RW if writable else 0)
        | (PAGE_USER if user else 0)
        | (PAGE_ACCESSED if accessed else 0)
        | (PAGE_DIRTY if dirty else 0)
        | (PAGE_PSE if huge else 0)
        | (PAGE_GLOBAL if global_ else 0)
        | (pkey << PAGE_BIT_PKEY_BIT0)
        | (PAGE_NX if nx else 0)
    )
    if not 0 <= pfn <= PTE_PFN_MASK >> PAGE_SHIFT:
        raise ValueError(f"pfn {pfn:#x} does not fit in 40 bits")
    return pfn_pte(pfn, prot)


def pte_present(entry: int, level: int = 1) -> bool:
    """pte_present() / pmd_present(): P, or PROT_NONE; a PMD also counts PSE (THP split)."""
    mask = PAGE_PRESENT | PAGE_PROTNONE
    if level > 1:
        mask |= PAGE_PSE
    return bool(entry & mask)


# --- swap entries (arch/x86/include/asm/pgtable_64.h) ---------------------------------------
#
#  |     ...            | 11| 10|  9|8|7|6|5| 4| 3|2| 1|0| <- bit number
#  |     ...            |SW3|SW2|SW1|G|L|D|A|CD|WT|U| W|P| <- bit names
#  | TYPE (59-63) | ~OFFSET (9-58)  |0|0|X|X| X| E|F|SD|0| <- swp entry
#
# G (bit 8) would make the entry look PROT_NONE, so the offset starts above it; bit 7 must be
# clear because pmd_present() tests PSE. Bits 1..3 carry per-PTE flags across swap-out.
MAX_SWAPFILES_SHIFT = 5
SWP_TYPE_BITS = 5
SWP_OFFSET_FIRST_BIT = PAGE_BIT_PROTNONE + 1  # 9
SWP_OFFSET_SHIFT = SWP_OFFSET_FIRST_BIT + SWP_TYPE_BITS  # 14
SWP_OFFSET_BITS = 64 - SWP_OFFSET_SHIFT  # 50 bits of offset fit in the PTE
PAGE_SWP_SOFT_DIRTY = PAGE_RW  # bit 1 (x86-64)
PAGE_SWP_UFFD_WP = PAGE_USER  # bit 2
PAGE_SWP_EXCLUSIVE = PAGE_PWT  # bit 3: PG_anon_exclusive remembered across swap

# Non-swap uses of the 32 types, allocated from the top (include/linux/swap.h): the PTE
# marker type is always the last one, whatever the device/migration/hwpoison counts.
SWP_PTE_MARKER_NUM = 1
SWP_PTE_MARKER = (1 << MAX_SWAPFILES_SHIFT) - SWP_PTE_MARKER_NUM  # 31
PTE_MARKER_UFFD_WP = 1 << 0
PTE_MARKER_POISONED = 1 << 1
PTE_MARKER_GUARD = 1 << 2  # MADV_GUARD_INSTALL: fault with SIGSEGV
PTE_MARKER_MASK = (1 << 3) - 1


def swp_entry(type_: int, offset: int) -> int:
    """The non-present PTE for swap ``type_`` and page ``offset``.

    Mirrors __swp_entry() + __swp_entry_to_pte(): the offset is stored inverted in bits 9..58
    (so that the unused high physical-address bits read as ones: L1TF), the type in 59..63.
    The C shifts work on 64-bit unsigned values, hence the masks.
    """
    if not 0 <= type_ < 1 << SWP_TYPE_BITS:
        raise ValueError(f"swap type {type_} out of range")
    if not 0 <= offset < 1 << SWP_OFFSET_BITS:
        raise ValueError(f"swap offset {offset:#x} does not fit in {SWP_OFFSET_BITS} bits")
    inverted = ~offset & _U64
    return ((inverted << SWP_OFFSET_SHIFT) & _U64) >> SWP_TYPE_BITS | type_ << (64 - SWP_TYPE_BITS)


def swp_type(entry: int) -> int:
    """__swp_type(): the high five bits."""
    return (entry & _U64) >> (64 - SWP_TYPE_BITS)


def swp_offset(entry: int) -> int:
    """__swp_offset(): shift the type out at the top, invert, shift down to bit 0."""
    return ((~entry << SWP_TYPE_BITS) & _U64) >> SWP_OFFSET_SHIFT


def is_swap_entry(entry: int) -> bool:
    """is_swap_pte(): neither none nor present (swap, migration, marker...)."""
    return entry != 0 and not entry & (PAGE_PRESENT | PAGE_PROTNONE)


def make_pte_marker(marker: int) -> int:
    """make_pte_marker(): a swap entry of type SWP_PTE_MARKER whose offset holds the bits."""
    if marker & ~PTE_MARKER_MASK or not marker:
        raise ValueError(f"bad PTE marker {marker:#x}")
    return swp_entry(SWP_PTE_MARKER, marker)


def is_pte_marker(entry: int) -> bool:
    return is_swap_entry(entry) and swp_type(entry) == SWP_PTE_MARKER


def pte_marker_get(entry: int) -> int:
    return swp_offset(entry) & PTE_MARKER_MASK


# --- decoding --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PteFields:
    """Every field of one entry, named. Bits that mean nothing for the entry's kind (PAT of a
    table pointer, swap fields of a present entry) are still decoded, as raw bits, except
    where noted."""

    raw: int
    level: int
    kind: str  # "none" | "table" | "leaf" | "protnone" | "swap"
    present: bool  # the hardware P bit
    writable: bool
    user: bool
    pwt: bool
    pcd: bool
    accessed: bool
    dirty: bool
    huge: bool  # PS, PMD and PUD entries only (bit 7 is PAT in a PTE)
    pat: bool  # bit 7 in a PTE, bit 12 in a large leaf, False elsewhere
    global_: bool  # bit 8; for a non-present entry this is PROTNONE
    special: bool
    uffd_wp: bool
    soft_dirty: bool
    softw4: bool
    saved_dirty: bool
    pkey: int
    nx: bool
    pfn: int  # as pte_pfn()/pmd_pfn()/pud_pfn() compute it (inversion undone)
    swp_type: int  # swap fields: 0 unless kind == "swap"
    swp_offset: int
    swp_soft_dirty: bool
    swp_uffd_wp: bool
    swp_exclusive: bool


def _bit(entry: int, mask: int) -> bool:
    return bool(entry & mask)


def decode(entry: int, level: int = 1) -> PteFields:
    """Every field of ``entry`` read at page-table ``level`` (1 PTE .. 5 PGD)."""
    if not 1 <= level <= 5:
        raise ValueError(f"level {level} not in 1..5")
    if not 0 <= entry <= _U64:
        raise ValueError(f"entry {entry:#x} is not a 64-bit value")
    large = level in (2, 3) and _bit(entry, PAGE_PSE)
    if entry == 0:
        kind = "none"
    elif entry & PAGE_PRESENT:
        kind = "leaf" if level == 1 or large else "table"
    elif entry & PAGE_PROTNONE:
        kind = "protnone"
    else:
        kind = "swap"
    swap = kind == "swap"
    pat = _bit(entry, PAGE_PAT) if level == 1 else large and _bit(entry, PAGE_PAT_LARGE)
    return PteFields(
        raw=entry,
        level=level,
        kind=kind,
        present=_bit(entry, PAGE_PRESENT),
        writable=_bit(entry, PAGE_RW),
        user=_bit(entry, PAGE_USER),
        pwt=_bit(entry, PAGE_PWT),
        pcd=_bit(entry, PAGE_PCD),
        accessed=_bit(entry, PAGE_ACCESSED),
        dirty=_bit(entry, PAGE_DIRTY),
        huge=large,
        pat=pat,
        global_=_bit(entry, PAGE_GLOBAL),
        special=_bit(entry, PAGE_SPECIAL),
        uffd_wp=_bit(entry, PAGE_UFFD_WP),
        soft_dirty=_bit(entry, PAGE_SOFT_DIRTY),
        softw4=_bit(entry, PAGE_SOFTW4),
        saved_dirty=_bit(entry, PAGE_SAVED_DIRTY),
        pkey=(entry & PAGE_PKEY_MASK) >> PAGE_BIT_PKEY_BIT0,
        nx=_bit(entry, PAGE_NX),
        pfn=pfn_of(entry, level),
        swp_type=swp_type(entry) if swap else 0,
        swp_offset=swp_offset(entry) if swap else 0,
        swp_soft_dirty=swap and _bit(entry, PAGE_SWP_SOFT_DIRTY),
        swp_uffd_wp=swap and _bit(entry, PAGE_SWP_UFFD_WP),
        swp_exclusive=swap and _bit(entry, PAGE_SWP_EXCLUSIVE),
    )
