"""Hostile arguments, kernel against vmsim: huge lengths and breaks, bogus huge page sizes,
moves that span the end of a VMA, and every msync() outcome.

Each case runs a fixed call list on a fresh live child (after the usual floor mapping) and on
vmsim rebuilt from that child's smaps; every result and the /proc state after every call must be
the same.  Unlike ``test_findings.py`` these lists are not filtered through the fuzzer's
``unsafe()`` guard: several pass lengths that reach the interpreter's own mappings, which the
kernel refuses before it touches anything (if it ever did not, the child would die and the test
would fail with ``ChildDied``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from .harness import Call, apply, compare_state, normalize_outcome
from .live import LiveChild

pytestmark = pytest.mark.kernel

P = 4096
W = 0x100000000000
W2 = 0x200000000000
TASK_SIZE = (1 << 47) - P
U64 = (1 << 64) - 1
RO, RW = 1, 3
PRIV, SHARED, FIXED, ANON = 0x02, 0x01, 0x10, 0x20
MAP_HUGETLB, MAP_HUGE_SHIFT = 0x40000, 26
MAYMOVE, MFIXED, DONTUNMAP = 1, 2, 4
MS_ASYNC, MS_INVALIDATE, MS_SYNC = 1, 2, 4


def mm(addr: int, pages: int, prot: int, flags: int, fd: int = -1, off: int = 0) -> Call:
    return Call("mmap", (addr, pages * P, prot, flags, fd, off))


def huge(bits: int) -> Call:
    return Call("mmap", (0, 2 << 20, RW, PRIV | ANON | MAP_HUGETLB | bits << MAP_HUGE_SHIFT))


TWO = [mm(W, 4, RW, PRIV | ANON | FIXED), mm(W + 8 * P, 4, RO, PRIV | ANON | FIXED)]

CASES: dict[str, list[Call]] = {
    # PAGE_ALIGN(2**64 - 1) wraps to 0; check_brk_limits() refuses: the old break comes back.
    "brk_top_of_address_space": [Call("brk", (U64,))],
    "brk_past_task_size": [Call("brk", (1 << 47,))],
    # shrink_vma() -> do_vmi_munmap(): an end past TASK_SIZE (or wrapping) is EINVAL.
    "mremap_shrink_old_len_2p47": [TWO[0], Call("mremap", (W, 1 << 47, P, 0, 0))],
    "mremap_shrink_old_len_wraps": [TWO[0], Call("mremap", (W, U64 - P + 1, P, MAYMOVE, 0))],
    "mremap_shrink_old_len_to_2p64": [TWO[0], Call("mremap", (W, (1 << 64) - W, P, 0, 0))],
    "mremap_shrink_old_len_past_task_size": [
        TWO[0],
        Call("mremap", (W, (1 << 47) - W, P, 0, 0)),
    ],
    "mremap_fixed_shrink_old_len_2p47": [
        TWO[0],
        Call("mremap", (W, 1 << 47, P, MAYMOVE | MFIXED, W2)),
    ],
    # hstate_sizelog(): only 2 MiB (21) and 1 GiB (30) exist; no pool here, so those ENOMEM.
    "hugetlb_size_log_1": [huge(1)],
    "hugetlb_size_log_20": [huge(20)],
    "hugetlb_size_log_21": [huge(21)],
    "hugetlb_size_log_29": [huge(29)],
    "hugetlb_size_log_30": [huge(30)],
    "hugetlb_size_log_31": [huge(31)],
    "hugetlb_size_log_63": [huge(63)],
    "hugetlb_default_size": [huge(0)],
    # Moves of a range that runs past the end of its first VMA (6.17+ multi-VMA move).
    "mremap_fixed_span_vma_end_into_hole": [
        *TWO,
        Call("mremap", (W + 2 * P, 4 * P, 4 * P, MAYMOVE | MFIXED, W2)),
    ],
    "mremap_fixed_span_hole_then_vma": [
        *TWO,
        Call("mremap", (W + 2 * P, 8 * P, 8 * P, MAYMOVE | MFIXED, W2)),
    ],
    "mremap_fixed_span_adjacent_vmas": [
        mm(W, 4, RW, PRIV | ANON | FIXED),
        mm(W + 4 * P, 4, RO, PRIV | ANON | FIXED),
        Call("mremap", (W + 2 * P, 4 * P, 4 * P, MAYMOVE | MFIXED, W2)),
    ],
    "mremap_fixed_span_past_last_vma": [
        *TWO,
        Call("mremap", (W + 10 * P, 4 * P, 4 * P, MAYMOVE | MFIXED, W2 + 0x100 * P)),
    ],
    "mremap_fixed_span_written": [
        *TWO,
        Call("write", (W + 2 * P, b"x")),
        Call("mremap", (W + 2 * P, 4 * P, 4 * P, MAYMOVE | MFIXED, W2)),
    ],
    "mremap_fixed_span_shared_memfd": [
        mm(W, 4, RW, SHARED | FIXED, fd=0),
        mm(W + 4 * P, 4, RW, PRIV | ANON | FIXED),
        Call("mremap", (W + 2 * P, 4 * P, 4 * P, MAYMOVE | MFIXED, W2)),
    ],
    "mremap_fixed_span_dontunmap": [
        *TWO,
        Call("mremap", (W + 2 * P, 4 * P, 4 * P, MAYMOVE | MFIXED | DONTUNMAP, W2)),
    ],
    "mremap_fixed_span_shrink": [
        *TWO,
        Call("mremap", (W + 2 * P, 4 * P, 2 * P, MAYMOVE | MFIXED, W2)),
    ],
    "mremap_fixed_span_grow": [
        *TWO,
        Call("mremap", (W + 2 * P, 4 * P, 8 * P, MAYMOVE | MFIXED, W2)),
    ],
    "mremap_maymove_span": [
        *TWO,
        Call("mremap", (W + 2 * P, 4 * P, 4 * P, MAYMOVE, 0)),
    ],
    "mremap_fixed_span_onto_neighbour": [
        *TWO,
        Call("mremap", (W + 2 * P, 4 * P, 4 * P, MAYMOVE | MFIXED, W + 16 * P)),
    ],
}

_MSYNC: dict[str, tuple[int, int, int]] = {
    "sync": (W, P, MS_SYNC),
    "async": (W, P, MS_ASYNC),
    "no_flags": (W, P, 0),
    "invalidate": (W, P, MS_INVALIDATE),
    "async_and_sync": (W, P, MS_ASYNC | MS_SYNC),
    "unknown_flag": (W, P, 8),
    "negative_flags": (W, P, -1),
    "flag_above_int": (W, P, 1 << 32),
    "unaligned_start": (W + 1, P, MS_SYNC),
    "unaligned_start_and_bad_flags": (W + 1, P, 8),
    "unmapped": (W + 4 * P, P, MS_SYNC),
    "unmapped_bad_flags": (W + 4 * P, P, 8),
    "partly_unmapped": (W + 3 * P, 2 * P, MS_SYNC),
    "hole_before_async": (W - P, 2 * P, MS_ASYNC),
    "hole_before_sync": (W - P, 2 * P, MS_SYNC),
    "hole_between": (W, 12 * P, MS_SYNC),
    "hole_between_async": (W, 12 * P, MS_ASYNC),
    "zero_length": (W, 0, MS_SYNC),
    "zero_length_unmapped": (W + 4 * P, 0, MS_SYNC),
    "unaligned_length": (W, 1, MS_SYNC),
    "length_rounds_to_zero": (W, U64, MS_SYNC),
    "length_wraps": (W, U64 - P + 1, MS_SYNC),
    "top_of_address_space": (U64 - P + 1, P, MS_SYNC),
    "at_task_size": (1 << 47, P, MS_SYNC),
}
for _name, _args in _MSYNC.items():
    CASES[f"msync_{_name}"] = [*TWO, Call("msync", _args)]

_LOCKED = [*TWO, Call("mlock", (W, 2 * P))]
CASES |= {
    "msync_invalidate_locked": [*_LOCKED, Call("msync", (W, P, MS_INVALIDATE))],
    "msync_invalidate_sync_locked": [*_LOCKED, Call("msync", (W, P, MS_INVALIDATE | MS_SYNC))],
    "msync_sync_locked": [*_LOCKED, Call("msync", (W, P, MS_SYNC))],
    "msync_invalidate_locked_after_hole": [
        *_LOCKED,
        Call("mlock", (W + 8 * P, P)),
        Call("msync", (W + 3 * P, 6 * P, MS_INVALIDATE)),
    ],
    "msync_invalidate_unlocked_then_hole": [
        *_LOCKED,
        Call("msync", (W + 3 * P, 2 * P, MS_INVALIDATE)),
    ],
    "msync_invalidate_locked_range_partly_unmapped": [
        *_LOCKED,
        Call("msync", (W, 8 * P, MS_INVALIDATE)),
    ],
    "msync_shared_file_sync": [
        mm(W, 4, RW, SHARED | FIXED, fd=0),
        Call("write", (W, b"dirty")),
        Call("msync", (W, 4 * P, MS_SYNC)),
        Call("msync", (W, 4 * P, MS_ASYNC | MS_INVALIDATE)),
    ],
}

SETUP = [
    Call("memfd_create", ("hz0",)),
    Call("ftruncate", (0, 16 * P)),
]


def run_case(calls: list[Call], make_sim: Callable[[LiveChild, str], Any]) -> list[str]:
    """Run ``calls`` on both sides; the differences (empty: none)."""
    kernel = LiveChild()
    try:
        kernel.map_floor()
        sim = make_sim(kernel, kernel.smaps())
        problems = compare_state(kernel.maps(), kernel.smaps(), sim.maps(), sim.smaps())
        if problems:
            return ["state differs right after spawn", *problems]
        for i, call in enumerate([*SETUP, *calls], 1):
            k = normalize_outcome(apply(kernel, call))
            s = normalize_outcome(apply(sim, call))
            if k != s:
                return [f"call #{i} {call}: kernel {k!r}, vmsim {s!r}"]
            problems = compare_state(kernel.maps(), kernel.smaps(), sim.maps(), sim.smaps())
            if problems:
                return [f"after call #{i} {call}:", *problems]
        return []
    finally:
        kernel.close()


@pytest.mark.parametrize("name", list(CASES))
def test_hostile(name: str, make_sim: Callable[[LiveChild, str], Any]) -> None:
    problems = run_case(CASES[name], make_sim)
    assert not problems, "\n".join(problems)
