"""Minimal reproductions of every discrepancy the fuzzer found (see FINDINGS.md).

Each case is a short fixed call list, run on a fresh live child and on vmsim exactly like a fuzz
sequence (after the same four setup calls: memfd fd0 of 16 pages, memfd fd1 of 8 pages), with
results and /proc state compared after every call.  They stay as regression tests once fixed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from .fuzz import run_calls
from .harness import Call
from .live import LiveChild

pytestmark = pytest.mark.kernel

P = 4096
W = 0x100000000000  # private window
W2 = 0x200000000000
RO, RW, RX, X = 1, 3, 5, 4
PRIV, SHARED, FIXED, ANON = 0x02, 0x01, 0x10, 0x20
POPULATE, GROWSDOWN = 0x8000, 0x100
MAYMOVE, MFIXED, DONTUNMAP = 1, 2, 4
MADV_COLLAPSE, MADV_GUARD_INSTALL = 25, 102


def mm(addr: int, pages: int, prot: int, flags: int, fd: int = -1, off: int = 0) -> Call:
    return Call("mmap", (addr, pages * P, prot, flags, fd, off))


CASES: dict[str, list[Call]] = {
    # mprotect_fixup(): adding VM_WRITE to a VM_LOCKED private VMA populates it with write
    # faults, so it gets an anon_vma; removing write later keeps VM_ACCOUNT, and the piece no
    # longer merges with its unfaulted twin.
    "mprotect_write_on_locked_populates": [
        mm(W, 2, RO, PRIV | ANON | FIXED),
        Call("mlock", (W, 2 * P)),
        Call("mprotect", (W, P, RW)),
        Call("mprotect", (W, P, RO)),
    ],
    # Same rule, seen through VM_ACCOUNT: mlock failing on PROT_NONE still sets VM_LOCKED.
    "mprotect_write_on_locked_keeps_account": [
        mm(W + 0x5E * P, 1, 0, PRIV | ANON | FIXED | GROWSDOWN | POPULATE),
        Call("mlock", (W + 0x5E * P + 0x265, P)),
        Call("mprotect", (W + 0x5E * P, P, RW)),
        Call("mprotect", (W + 0x5E * P, P, RO)),
    ],
    # Truncation zaps private COW copies beyond the new EOF too (unmap_mapping_range even_cows);
    # the next access is SIGBUS (the child sees EFAULT).
    "ftruncate_discards_private_cow_pages": [
        mm(W, 4, RW, PRIV | FIXED, fd=0),
        Call("write", (W + 3 * P, b"x")),
        Call("ftruncate", (0, 2 * P)),
        Call("read", (W + 3 * P, 1)),
    ],
    # MAP_POPULATE on a private writable file mapping write-faults every page (COW copies made
    # at mmap time), so later writes through a shared mapping of the file are not seen.
    "populate_private_file_mapping_copies": [
        mm(W, 2, RW, PRIV | FIXED | POPULATE, fd=0),
        mm(W + 16 * P, 2, RW, SHARED | FIXED, fd=0),
        Call("write", (W + 16 * P, b"shared")),
        Call("read", (W, 6)),
    ],
    # MADV_COLLAPSE on a VMA that cannot hold an aligned PMD: EINVAL.
    "madvise_collapse_small_vma": [
        mm(W + 0x24 * P, 7, RW | X, PRIV | ANON | FIXED),
        Call("madvise", (W + 0x27 * P, 4 * P, MADV_COLLAPSE)),
    ],
    # MREMAP_DONTUNMAP of part of a write-only private anon VMA is fine.
    "mremap_dontunmap_part_of_vma": [
        mm(W, 14, 2, PRIV | ANON | FIXED),
        Call("mremap", (W, 8 * P, 8 * P, MAYMOVE | MFIXED | DONTUNMAP, W2)),
    ],
    # mremap(old_size=0) duplicates a shared mapping (vmsim crashed with IndexError).
    "mremap_old_size_zero_duplicates_shared": [
        mm(W, 4, RW, SHARED | ANON | FIXED),
        Call("mremap", (W, 0, 4 * P, MAYMOVE, 0)),
    ],
    # Guard markers are page-table entries: mremap moves them with the pages.
    "guard_markers_move_with_mremap": [
        mm(W, 1, RW, PRIV | ANON | FIXED | POPULATE),
        Call("madvise", (W, P, MADV_GUARD_INSTALL)),
        Call("mremap", (W, P, P, MAYMOVE | MFIXED, W2)),
        Call("write", (W2, b"x")),
    ],
    # ...and MREMAP_DONTUNMAP leaves the source without them.
    "guard_markers_leave_dontunmap_source": [
        mm(W, 5, RW, SHARED | FIXED, fd=1, off=5 * P),
        Call("madvise", (W, 5 * P, MADV_GUARD_INSTALL)),
        Call("mremap", (W, 3 * P, 3 * P, MAYMOVE | MFIXED | DONTUNMAP, W2 + 0xE * P)),
        Call("read", (W, 1)),
    ],
    # mlock populates; a guard marker makes the populate fail: ENOMEM (VM_LOCKED stays set).
    "mlock_over_guard_marker_enomem": [
        mm(W, 2, RW, PRIV | ANON | FIXED),
        Call("madvise", (W, P, MADV_GUARD_INSTALL)),
        Call("mlock", (W, P)),
    ],
    # DONTUNMAP of part of a shared memfd VMA next to another one (vmsim printed empty VMAs).
    "mremap_dontunmap_shared_memfd": [
        Call("mmap", (W + 0x19 * P, 0x6AF3, RO, SHARED | FIXED, 0, 5 * P)),
        mm(W + 0x1C * P, 3, RW, SHARED | FIXED, fd=0, off=6 * P),
        Call("mremap", (W + 0x19 * P, 2 * P, 2 * P, MAYMOVE | MFIXED | DONTUNMAP, W + 0x29 * P)),
    ],
}


@pytest.mark.parametrize("name", list(CASES))
def test_finding(name: str, make_sim: Callable[[LiveChild, str], Any]) -> None:
    res = run_calls(CASES[name], make_sim)
    assert res.invalid is None, res.invalid
    assert res.ok, res.report("vmsim", f"pytest tests/differential/test_findings.py -k {name}")
