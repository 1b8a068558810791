"""Swap entries (include/linux/swapops.h): the (type, offset) a non-present PTE names.

A slot of a swap device is named by ``SwpEntry(type, offset)``; the entry is what the swap
cache, the swap map and the zeromap are keyed by, and what a swapped-out PTE encodes
(``vmsim.hw.pte.swp_entry``). ``SwpEntry`` is a NamedTuple, so it compares and hashes like
the ``(type, offset)`` pair it replaces.
"""

from __future__ import annotations

from typing import NamedTuple

from vmsim.hw.pte import PAGE_SWP_EXCLUSIVE, swp_entry, swp_offset, swp_type

__all__ = ["SwpEntry", "pte_to_swp_entry", "swp_entry_to_pte"]


class SwpEntry(NamedTuple):
    """swp_entry_t: a swap slot."""

    type: int  # swp_type(): the swap device (its index in ``SwapSpace.devices``)
    offset: int  # swp_offset(): the slot on that device (0 is the header, never used)


def pte_to_swp_entry(entry: int) -> SwpEntry:
    """pte_to_swp_entry(): the slot a swap PTE names."""
    return SwpEntry(swp_type(entry), swp_offset(entry))


def swp_entry_to_pte(key: SwpEntry, exclusive: bool) -> int:
    """swp_entry_to_pte() (+ pte_swp_mkexclusive()): the swap PTE naming ``key``."""
    e = swp_entry(key.type, key.offset)
    return e | PAGE_SWP_EXCLUSIVE if exclusive else e
