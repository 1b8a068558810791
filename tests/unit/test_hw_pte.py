"""The x86-64 entry format, bit by bit.

Every expected value here is written by hand from the Intel SDM (vol. 3, 4.5) and the kernel
headers of Linux 6.18: arch/x86/include/asm/pgtable_types.h (bit names), pgtable_64.h (swap
layout), pgtable-invert.h (L1TF inversion), arch/x86/mm/pgprot.c (protection_map). The
arithmetic for each constant is in the comment next to it.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmsim.hw import pte
from vmsim.hw.pte import (
    PAGE_NONE,
    PTE_MARKER_GUARD,
    PTE_MARKER_POISONED,
    PTE_MARKER_UFFD_WP,
    SWP_PTE_MARKER,
    decode,
    is_pte_marker,
    is_swap_entry,
    make_pte,
    make_pte_marker,
    pfn_of,
    pfn_pte,
    pte_marker_get,
    pte_present,
    swp_entry,
    swp_offset,
    swp_type,
    vm_get_page_prot,
)


def test_bit_positions_match_the_kernel_header() -> None:
    assert (pte.PAGE_PRESENT, pte.PAGE_RW, pte.PAGE_USER) == (0x1, 0x2, 0x4)
    assert (pte.PAGE_PWT, pte.PAGE_PCD, pte.PAGE_ACCESSED, pte.PAGE_DIRTY) == (8, 0x10, 0x20, 0x40)
    assert pte.PAGE_PSE == pte.PAGE_PAT == 0x80
    assert pte.PAGE_GLOBAL == pte.PAGE_PROTNONE == 0x100
    assert pte.PAGE_SPECIAL == 0x200  # SOFTW1
    assert pte.PAGE_UFFD_WP == 0x400  # SOFTW2
    assert pte.PAGE_SOFT_DIRTY == 0x800  # SOFTW3
    assert pte.PAGE_PAT_LARGE == 0x1000
    assert pte.PAGE_SOFTW4 == 1 << 57
    assert pte.PAGE_SAVED_DIRTY == 1 << 58  # SOFTW5
    assert pte.PAGE_PKEY_MASK == 0x7800_0000_0000_0000  # bits 59..62
    assert pte.PAGE_NX == 0x8000_0000_0000_0000
    assert pte.PAGE_TABLE == 0x67  # P RW US A D
    assert pte.PTE_PFN_MASK == 0x000F_FFFF_FFFF_F000  # bits 12..51
    assert pte.PMD_PFN_MASK == 0x000F_FFFF_FFE0_0000  # bits 21..51
    assert pte.PUD_PFN_MASK == 0x000F_FFFF_C000_0000  # bits 30..51
    assert (pte.PAGE_SWP_SOFT_DIRTY, pte.PAGE_SWP_UFFD_WP, pte.PAGE_SWP_EXCLUSIVE) == (2, 4, 8)


def test_vm_flags_values_agree_with_the_vma_layer() -> None:
    from vmsim.mm import flags

    assert (pte.VM_READ, pte.VM_WRITE, pte.VM_EXEC, pte.VM_SHARED) == (
        flags.VM_READ,
        flags.VM_WRITE,
        flags.VM_EXEC,
        flags.VM_SHARED,
    )


def test_decode_a_user_data_pte() -> None:
    # 0x8000000012345067: NX | pfn 0x12345 | 0x067 = D A . . US RW P
    f = decode(0x8000_0000_1234_5067, 1)
    assert f.kind == "leaf"
    assert (f.present, f.writable, f.user, f.pwt, f.pcd) == (True, True, True, False, False)
    assert (f.accessed, f.dirty, f.pat, f.huge, f.global_) == (True, True, False, False, False)
    assert (f.special, f.uffd_wp, f.soft_dirty, f.softw4, f.saved_dirty) == (False,) * 5
    assert f.nx is True
    assert f.pkey == 0
    assert f.pfn == 0x12345
    assert (f.swp_type, f.swp_offset) == (0, 0)


def test_decode_every_low_bit_one_at_a_time() -> None:
    names = ["present", "writable", "user", "pwt", "pcd", "accessed", "dirty", "pat", "global_"]
    for bit, name in enumerate(names):
        f = decode(0x5000 | 1 << bit | 1, 1)  # keep P so that the PFN is read as is
        got = {n for n in names if getattr(f, n)}
        assert got == {"present", name}, (bit, got)
        assert f.pfn == 5


def test_decode_software_bits_and_pkey() -> None:
    f = decode(0x200 | 0x400 | 0x800 | 1, 1)
    assert (f.special, f.uffd_wp, f.soft_dirty) == (True, True, True)
    f = decode(1 << 57 | 1 << 58 | 1, 1)
    assert (f.softw4, f.saved_dirty) == (True, True)
    # pkey 0b1010 = 10 in bits 59..62: 0x5000_0000_0000_0000
    assert decode(0x5000_0000_0000_0001, 1).pkey == 10
    assert decode(0x7800_0000_0000_0001, 1).pkey == 15


def test_bit7_is_pat_in_a_pte_and_ps_in_a_pmd() -> None:
    assert decode(0x81, 1).pat is True
    assert decode(0x81, 1).huge is False
    # 2 MiB leaf: P | PS, PAT_LARGE (bit 12) set
    f = decode(0x1081, 2)
    assert (f.kind, f.huge, f.pat) == ("leaf", True, True)
    # bit 12 of a table pointer is a frame-number bit, not PAT
    f = decode(0x1067, 2)
    assert (f.kind, f.huge, f.pat, f.pfn) == ("table", False, False, 1)


def test_pfn_of_masks_the_low_bits_of_large_pages() -> None:
    # 0xabcde0e5 at the PMD level: 0xe5 = PS D A US P; frame bits 21..51 of 0xabcde000 are
    # 0xabc00000 -> pfn 0xabc00 (bits 13..20 are reserved there, and dropped).
    f = decode(0xABCD_E0E5, 2)
    assert (f.present, f.writable, f.user, f.accessed, f.dirty, f.huge) == (
        True,
        False,
        True,
        True,
        True,
        True,
    )
    assert f.pfn == 0xABC00
    assert pfn_of(0xABCD_E0E5, 2) == 0xABC00
    # The same bits read as a PTE: all of 12..51 are frame.
    assert pfn_of(0xABCD_E0E5, 1) == 0xABCDE
    # 1 GiB leaf: bits 30..51 -> 0x1_4000_0000 + junk below -> pfn 0x140000
    assert pfn_of(0x1_7FFF_F081, 3) == 0x140000
    # without PS a PUD entry is a table pointer: full 4 KiB frame number
    assert pfn_of(0x1_7FFF_F001, 3) == 0x17FFFF


def test_make_pte_matches_hand_built_values() -> None:
    e = make_pte(
        0x12345,
        present=True,
        writable=True,
        user=True,
        nx=True,
        accessed=True,
        dirty=True,
        global_=False,
    )
    assert e == 0x8000_0000_1234_5067
    e = make_pte(
        0x200,
        present=True,
        writable=False,
        user=True,
        nx=False,
        accessed=False,
        dirty=False,
        global_=True,
        pkey=3,
        huge=True,
    )
    # pfn 0x200 -> 0x200000; 0x185 = G PS US P; pkey 3 -> 0x1800_0000_0000_0000
    assert e == 0x1800_0000_0020_0185
    with pytest.raises(ValueError):
        make_pte(
            0,
            present=True,
            writable=False,
            user=False,
            nx=False,
            accessed=False,
            dirty=False,
            global_=False,
            pkey=16,
        )


def test_prot_none_pte_has_its_pfn_inverted() -> None:
    # pfn_pte(0x12345, PAGE_NONE): PAGE_NONE = PROTNONE|A = 0x120 has no P, so the frame bits
    # are stored inverted: 0xFF_FFFF_FFFF ^ 0x12345 = 0xFF_FFFE_DCBA -> << 12.
    e = pfn_pte(0x12345, PAGE_NONE)
    assert e == 0x000F_FFFF_EDCB_A120
    assert pfn_of(e, 1) == 0x12345
    f = decode(e, 1)
    assert (f.kind, f.present, f.global_, f.pfn) == ("protnone", False, True, 0x12345)
    assert pte_present(e) is True  # the kernel still calls it present
    assert is_swap_entry(e) is False


def test_vm_get_page_prot_is_protection_map() -> None:
    r, w, x, s = 1, 2, 4, 8
    assert vm_get_page_prot(0) == 0x120  # PAGE_NONE: PROTNONE | A
    assert vm_get_page_prot(s) == 0x120
    assert vm_get_page_prot(r) == 0x8000_0000_0000_0025  # NX A US P
    # private writable: read-only until the COW fault makes the page writable
    assert vm_get_page_prot(r | w) == 0x8000_0000_0000_0025
    assert vm_get_page_prot(w) == 0x8000_0000_0000_0025
    assert vm_get_page_prot(r | x) == 0x25
    assert vm_get_page_prot(r | w | x) == 0x25
    assert vm_get_page_prot(s | r) == 0x8000_0000_0000_0025
    assert vm_get_page_prot(s | r | w) == 0x8000_0000_0000_0027  # NX A US RW P
    assert vm_get_page_prot(s | w) == 0x8000_0000_0000_0027
    assert vm_get_page_prot(s | r | x) == 0x25
    assert vm_get_page_prot(s | r | w | x) == 0x27
    # VM_PKEY_BIT0 and BIT2 (vm_flags bits 32, 34): pkey 5 -> 0x2800_0000_0000_0000
    assert vm_get_page_prot(r | 1 << 32 | 1 << 34) == 0xA800_0000_0000_0025


# --- swap entries: __swp_entry() in arch/x86/include/asm/pgtable_64.h ----------------------
# (~offset << 14 >> 5) | type << 59, on 64-bit unsigned values: ~offset fills bits 9..58.


def test_swap_entry_values_computed_by_hand() -> None:
    # type 0 offset 0: ~0 << 14 = 0xFFFF_FFFF_FFFF_C000, >> 5 = 0x07FF_FFFF_FFFF_FE00
    assert swp_entry(0, 0) == 0x07FF_FFFF_FFFF_FE00
    # type 1 offset 1: ~1 << 14 = 0xFFFF_FFFF_FFFF_8000, >> 5 = 0x07FF_FFFF_FFFF_FC00,
    # | 1 << 59 = 0x0800_0000_0000_0000
    assert swp_entry(1, 1) == 0x0FFF_FFFF_FFFF_FC00
    # type 3 offset 0x1234: field = (2^50 - 1) ^ 0x1234 = 0x3_FFFF_FFFF_EDCB, << 9 =
    # 0x07FF_FFFF_FFDB_9600; | 3 << 59 = 0x1800_0000_0000_0000
    assert swp_entry(3, 0x1234) == 0x1FFF_FFFF_FFDB_9600
    # largest offset: every offset bit inverted to 0; type 31 in bits 59..63
    assert swp_entry(31, (1 << 50) - 1) == 0xF800_0000_0000_0000


def test_swap_entry_fields_read_back() -> None:
    e = 0x1FFF_FFFF_FFDB_9600
    assert (swp_type(e), swp_offset(e)) == (3, 0x1234)
    f = decode(e, 1)
    assert (f.kind, f.present, f.global_, f.swp_type, f.swp_offset) == (
        "swap",
        False,
        False,
        3,
        0x1234,
    )
    # soft-dirty (bit 1), uffd-wp (bit 2), exclusive (bit 3) ride along without touching
    # type or offset, since the offset starts at bit 9
    f = decode(e | 0x2 | 0x4 | 0x8, 1)
    assert (f.swp_soft_dirty, f.swp_uffd_wp, f.swp_exclusive) == (True, True, True)
    assert (f.swp_type, f.swp_offset) == (3, 0x1234)
    assert (swp_type(e | 0xE), swp_offset(e | 0xE)) == (3, 0x1234)


def test_swap_entries_are_never_present_nor_protnone() -> None:
    for e in (swp_entry(0, 0), swp_entry(1, 1), swp_entry(31, (1 << 50) - 1)):
        assert e & 0x1FF == 0  # P, PSE and G (PROTNONE) clear, bits 1..7 free
        assert is_swap_entry(e)
        assert not pte_present(e)
        assert not pte_present(e, 2)


@given(st.integers(0, 31), st.integers(0, (1 << 50) - 1))
def test_swap_entry_round_trip(type_: int, offset: int) -> None:
    e = swp_entry(type_, offset)
    assert (swp_type(e), swp_offset(e)) == (type_, offset)
    assert 0 <= e < 1 << 64
    # Only (type 0, offset 2^50 - 1) encodes as 0 = pte_none(); x86 caps swap files far
    # below that (max_swapfile_size(), the L1TF limit), so a real swap PTE is never none.
    assert is_swap_entry(e) or (type_, offset) == (0, (1 << 50) - 1)


def test_swap_entry_ranges() -> None:
    with pytest.raises(ValueError):
        swp_entry(32, 0)
    with pytest.raises(ValueError):
        swp_entry(0, 1 << 50)


def test_pte_markers() -> None:
    assert SWP_PTE_MARKER == 31
    # guard marker: swp_entry(31, 4): field (2^50-1) ^ 4 << 9 = 0x07FF_FFFF_FFFF_F600
    g = make_pte_marker(PTE_MARKER_GUARD)
    assert g == 0xFFFF_FFFF_FFFF_F600
    assert is_pte_marker(g) and pte_marker_get(g) == PTE_MARKER_GUARD
    u = make_pte_marker(PTE_MARKER_UFFD_WP | PTE_MARKER_POISONED)
    assert pte_marker_get(u) == 3
    assert not is_pte_marker(swp_entry(0, 4))
    assert not is_pte_marker(0)
    with pytest.raises(ValueError):
        make_pte_marker(8)


def test_decode_none_and_bad_arguments() -> None:
    f = decode(0, 1)
    assert f.kind == "none" and not f.present and f.pfn == 0
    with pytest.raises(ValueError):
        decode(1 << 64, 1)
    with pytest.raises(ValueError):
        decode(1, 6)
