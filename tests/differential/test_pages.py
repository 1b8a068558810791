"""Page-level differential tests: smaps page counters, pagemap bits, frame sharing and mincore
of random multi-process workloads, page by page, vmsim against the live kernel (see pages.py).

    pytest tests/differential/test_pages.py                      # the default seeds
    VMSIM_PAGES_SEED=123 pytest tests/differential/test_pages.py  # one seed, to reproduce

Knobs: VMSIM_PAGES_SEQS (sequences, default 120), VMSIM_PAGES_STEPS (steps per sequence,
default 40), VMSIM_PAGES_START (first seed, default 0).
"""

from __future__ import annotations

import os
import warnings

import pytest

from .pages import PageResult, run_pages

pytestmark = [pytest.mark.kernel, pytest.mark.filterwarnings("always::UserWarning")]

SEQS = int(os.environ.get("VMSIM_PAGES_SEQS", "120"))
STEPS = int(os.environ.get("VMSIM_PAGES_STEPS", "40"))
START = int(os.environ.get("VMSIM_PAGES_START", "0"))
ONE = os.environ.get("VMSIM_PAGES_SEED")
SEEDS = [int(ONE)] if ONE else list(range(START, START + SEQS))
# Seeds that once found a difference (kept as regressions): fork + MADV_FREE on shared
# anonymous pages (lazyfree skips only dirty shared folios), mprotect keeping the old
# accessed bit, MADV_POPULATE_WRITE dirtying a clean shared page (FOLL_TOUCH), ftruncate
# dirtying the partial page, mremap of VMAs inherited through fork (copied_from), guard
# markers of a WIPEONFORK VMA not copied, munlock of the old page of a COW break, fault-around
# before the EOF check, truncate to the same size, PG_referenced of a page populated by a
# MAP_LOCKED mapping while its mlock batch is pending (5011, 5054), MADV_PAGEOUT unmapping a
# dirty shmem page it then cannot swap (7065), FOLL_TOUCH on an active page whose mlock is
# pending (9620), ftruncate zapping private copies beyond the old end of file (14241).
REGRESSIONS = [(3, 40), (15, 40), (73, 40), (138, 40), (167, 40), (296, 40), (395, 40)]
REGRESSIONS += [(1046, 100), (2049, 100), (2084, 100), (2234, 100), (5011, 60), (5054, 60)]
REGRESSIONS += [(7065, 100), (9620, 100), (14241, 100)]


def run_twice(seed: int, steps: int) -> PageResult:
    """Run a sequence; a difference must show again in a second run (fresh child) to fail.

    vmsim is deterministic; the kernel is not quite: per-CPU LRU batches decide when a folio
    turns active, unevictable or lazy-free, which moves PG_referenced and LazyFree. A model
    bug reproduces on every run; a batch race does not. The first report is kept as a
    warning so such races stay visible."""
    res = run_pages(seed, steps)
    if res.ok:
        return res
    again = run_pages(seed, steps)
    if again.ok:
        warnings.warn(
            f"kernel nondeterminism, passed on a second run:\n{res.report()}", stacklevel=2
        )
    return again


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"pages_{s}")
def test_pages_match_kernel(seed: int) -> None:
    res = run_twice(seed, STEPS)
    assert res.ok, res.report()


@pytest.mark.parametrize(("seed", "steps"), REGRESSIONS, ids=lambda s: f"{s}")
def test_pages_regressions(seed: int, steps: int) -> None:
    res = run_twice(seed, steps)
    assert res.ok, res.report()
