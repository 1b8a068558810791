"""Random call sequences, run on the live kernel and on vmsim, compared after every call.

Each sequence has a seed (test id ``seed_N``) and runs in a fresh child without ASLR, so a
failure reproduces exactly:

    pytest tests/differential/test_fuzz.py -k "seed_123 and not long"   # a default seed
    VMSIM_FUZZ_SEED=123456 pytest tests/differential/test_fuzz.py -k vmsim   # any seed

Knobs: VMSIM_FUZZ_SEQS (number of sequences, default 320), VMSIM_FUZZ_CALLS (calls per
sequence, default 40), VMSIM_FUZZ_START (first seed, default 0), VMSIM_FUZZ_ASLR=1 (randomised
child layouts: broader, but a failure then only reproduces in that layout), VMSIM_MMAP_BASE=auto
(let vmsim infer mmap_base from the smaps text instead of passing it).  After every call the test
compares the return value or errno, the full /proc/<pid>/maps text (byte for byte, after
normalising memfd/shmem device and inode numbers) and each VMA's smaps ``VmFlags``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from .fuzz import run_calls
from .live import LiveChild

pytestmark = pytest.mark.kernel

SEQS = int(os.environ.get("VMSIM_FUZZ_SEQS", "320"))
CALLS = int(os.environ.get("VMSIM_FUZZ_CALLS", "40"))
START = int(os.environ.get("VMSIM_FUZZ_START", "0"))
ONE_SEED = os.environ.get("VMSIM_FUZZ_SEED")
ASLR = os.environ.get("VMSIM_FUZZ_ASLR", "") not in ("", "0")
SEEDS = [int(ONE_SEED)] if ONE_SEED else list(range(START, START + SEQS))

Factory = Callable[[LiveChild, str], Any]


@pytest.mark.parametrize("seed", [7, 99, 1234, 31337, 424242], ids=lambda s: f"twin{s}")
def test_harness_kernel_vs_kernel(seed: int, make_twin: Factory) -> None:
    """Sanity check of the harness itself: two identical children must never disagree."""
    res = run_calls(None, make_twin, seed=seed, ncalls=CALLS)
    assert res.invalid is None, res.invalid
    assert res.ok, res.report("kernel#2")
    assert res.compared >= CALLS


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"seed_{s}")
def test_vmsim_matches_kernel(seed: int, make_sim: Factory) -> None:
    res = run_calls(None, make_sim, seed=seed, ncalls=CALLS, aslr=ASLR)
    assert res.invalid is None, res.invalid
    assert res.ok, res.report(
        "vmsim", f"VMSIM_FUZZ_SEED={seed} pytest tests/differential/test_fuzz.py -k vmsim"
    )


LONG_SEEDS = list(range(900_000, 900_000 + int(os.environ.get("VMSIM_FUZZ_LONG_SEQS", "24"))))
# 200-call seeds that once found bugs (explore.py runs): sticky VM_MAYBE_GUARD lost in a
# merge with the previous VMA; anon_vma_compatible() ignoring the sticky flag
LONG_SEEDS += [5125, 5141, 5164, 5367, 5395, 5425, 5592, 5601, 5614, 5751]
# mseal revisits the VMA it merged into (mseal_apply() iterator), seeds 20022 20743 21182
LONG_SEEDS += [20022, 20743, 21182]


@pytest.mark.slow
@pytest.mark.parametrize("seed", LONG_SEEDS, ids=lambda s: f"long_seed_{s}")
def test_vmsim_matches_kernel_long(seed: int, make_sim: Factory) -> None:
    """Fewer, longer sequences (200 calls): state piles up, so merges meet older VMAs."""
    res = run_calls(None, make_sim, seed=seed, ncalls=200)
    assert res.invalid is None, res.invalid
    assert res.ok, res.report(
        "vmsim", f"pytest tests/differential/test_fuzz.py -k long_seed_{seed}"
    )
