"""What Linux 6.18's ksmd, with its default settings, would reach on a set of pages that do
not change, and after how many passes: the "with defaults" column of ``vmsim estimate``,
beside the ideal figure of :class:`vmsim.analysis.savings.KsmEstimate`.

The defaults (mm/ksm.c): pages_to_scan 100, sleep_millisecs 20, max_page_sharing 256,
use_zero_pages 0, smart_scan 1, advisor_mode none. Worked from the source, for pages whose
contents hold still:

* pass 1 gives every page an rmap_item and a checksum (cmp_and_merge_page(): oldchecksum
  starts at 0), merging nothing;
* pass 2 merges, in address order: the first copy of a contents goes into the unstable
  tree, the second makes a KSM page with it (try_to_merge_two_pages()), the next ones join
  it through the stable tree until it holds ``max_page_sharing`` rmap_items
  (is_page_sharing_candidate()); the next copy finds it full, waits in the unstable tree,
  and the one after makes a second KSM page (a stable-node chain of dups). A contents seen
  ``n`` times thus takes ``n // 256`` full KSM pages, plus one more for a remainder of 2 or
  more; a remainder of 1 stays alone in the unstable tree (pages_unshared);
* zero pages are ordinary contents with use_zero_pages 0 (so 10,000 zero pages make 40 KSM
  pages, not 1);
* later passes change nothing but smart scan's skipping: from pass 5 the pages that did not
  merge are skipped 1, 2, 4, 8 passes at a time (should_skip_rmap_item()).

So the figures are reached after 2 full scans. A pass takes ``pages // 100 + 1`` wake-ups
(ksm_do_scan() ends a wake-up at the end of a pass), each followed by a 20 ms sleep: the
time given is that sleeping only (ksmd's own CPU time comes on top). The arithmetic has a
twin: ``tests/unit/test_ksm_estimate.py`` runs the model's ksmd (:mod:`vmsim.mm.ksm`) on
the same pages and compares.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from vmsim.mm.ksm import DEFAULT_MAX_PAGE_SHARING, DEFAULT_PAGES_TO_SCAN, RMAP_ITEM_SIZE

PAGE_SIZE = 4096
SLEEP_MILLISECS = 20
PASSES = 2  # checksum pass, merging pass


@dataclass(frozen=True)
class KsmdEstimate:
    """/sys/kernel/mm/ksm after ksmd with the 6.18 defaults has merged all it can (within
    one process)."""

    pages: int  # pages scanned (each gets an rmap_item)
    pages_shared: int
    pages_sharing: int
    pages_unshared: int
    stable_node_chains: int
    stable_node_dups: int
    passes: int  # full scans until the figures are reached
    wakeups: int  # ksmd wake-ups those passes take

    @property
    def seconds(self) -> float:
        """The sleeps between those wake-ups (sleep_millisecs 20): a lower bound."""
        return self.wakeups * SLEEP_MILLISECS / 1000

    @property
    def saved_bytes(self) -> int:
        return self.pages_sharing * PAGE_SIZE

    @property
    def general_profit(self) -> int:
        """general_profit: pages_sharing pages, less the rmap_items' memory."""
        return self.pages_sharing * PAGE_SIZE - self.pages * RMAP_ITEM_SIZE

    def as_dict(self) -> dict[str, Any]:
        return {
            "pages": self.pages,
            "pages_shared": self.pages_shared,
            "pages_sharing": self.pages_sharing,
            "pages_unshared": self.pages_unshared,
            "stable_node_chains": self.stable_node_chains,
            "stable_node_dups": self.stable_node_dups,
            "saved_bytes": self.saved_bytes,
            "general_profit": self.general_profit,
            "passes": self.passes,
            "wakeups": self.wakeups,
            "seconds": self.seconds,
        }


def wakeups_per_pass(pages: int, pages_to_scan: int = DEFAULT_PAGES_TO_SCAN) -> int:
    """ksm_do_scan() wake-ups for one pass over ``pages`` pages, none skipped."""
    return pages // pages_to_scan + 1


def ksmd_defaults(
    copies: Iterable[int], max_page_sharing: int = DEFAULT_MAX_PAGE_SHARING
) -> KsmdEstimate:
    """The figures for pages whose contents occur ``copies`` times each (one count per
    distinct contents, zero pages included)."""
    pages = shared = sharing = unshared = chains = dups = 0
    for n in copies:
        if n <= 0:
            continue
        pages += n
        full, rest = divmod(n, max_page_sharing)
        ksm_pages = full + (1 if rest >= 2 else 0)
        alone = 1 if rest == 1 else 0
        shared += ksm_pages
        sharing += n - ksm_pages - alone
        unshared += alone
        if ksm_pages >= 2:
            chains += 1
            dups += ksm_pages
    return KsmdEstimate(
        pages=pages,
        pages_shared=shared,
        pages_sharing=sharing,
        pages_unshared=unshared,
        stable_node_chains=chains,
        stable_node_dups=dups,
        passes=PASSES if pages else 0,
        wakeups=PASSES * wakeups_per_pass(pages) if pages else 0,
    )


__all__ = ["KsmdEstimate", "ksmd_defaults", "wakeups_per_pass"]
