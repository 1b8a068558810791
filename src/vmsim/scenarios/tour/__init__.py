"""The tour: one walk through every mechanism of the essay behind vmsim, in the essay's order
(``vmsim tour``). Each chapter runs the model (a small machine of its own, or the scenario
engine of the demo that tells that mechanism at length) and returns a :class:`Chapter`:
lines of text built from figures read from the model, never written in.

The chapters, in the essay's order:

1. address spaces and isolation (4- and 5-level paging)  :mod:`.basics`
2. page tables and the MMU: one walk                       :mod:`.basics` (the walk demo's engine)
3. page faults and demand paging                           :mod:`.basics`
4. swap                                                    :mod:`.reclaim`
5. compression (zswap)                                     :mod:`.reclaim`
6. de-duplication (KSM)                                    :mod:`.reclaim`
7. copy-on-write after fork                                :mod:`.stories` (the cow demo's engine)
8. VMAs and the ENOMEM postmortem                          :mod:`.stories` (the enomem demo's)
9. teaser: what a process does with 256 TiB                :mod:`.teasers`
10. teaser: what translation costs                         :mod:`.teasers` (the tlb demo's)
11. teaser: TLB hit rates and the timing side channel      :mod:`.teasers` (tlb, sidechannel)
12. teaser: huge pages, "a mess"                           :mod:`.teasers` (the hugepages demo's)

Nothing here prints or parses options: :mod:`vmsim.cli.tour` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vmsim.scenarios import ScenarioParameterError
from vmsim.scenarios.tour import basics, reclaim, stories, teasers
from vmsim.scenarios.tour.chapter import Chapter, Figures


@dataclass(frozen=True)
class ChapterSpec:
    """One chapter of the tour before it runs: its name, title and the function that runs
    it (it takes the chapter's number)."""

    key: str
    title: str
    summary: str  # one line, for --list
    run: Callable[[int], Chapter]


CHAPTERS: tuple[ChapterSpec, ...] = (
    ChapterSpec(
        "address-spaces",
        basics.ADDRESS_SPACES,
        "256 TiB per process (4 levels), 128 PiB with 5; two processes, one address, two frames",
        basics.address_spaces,
    ),
    ChapterSpec(
        "page-tables",
        basics.PAGE_TABLES,
        "the MMU's walk: one entry per level, 9 bits of the address each, then the TLB",
        basics.page_tables,
    ),
    ChapterSpec(
        "demand-paging",
        basics.DEMAND_PAGING,
        "mmap gives addresses, not memory: frames come at the first touch (page faults)",
        basics.demand_paging,
    ),
    ChapterSpec(
        "swap", reclaim.SWAP, "more memory written than RAM: out to swap and back", reclaim.swap
    ),
    ChapterSpec(
        "zswap",
        reclaim.ZSWAP,
        "the same workload with zswap: compressed in RAM instead of written to disk",
        reclaim.zswap,
    ),
    ChapterSpec(
        "ksm",
        reclaim.KSM,
        "ksmd merges identical pages into one frame; a write breaks the sharing",
        reclaim.ksm,
    ),
    ChapterSpec(
        "cow",
        stories.COW,
        "fork shares every frame read-only; the first write copies, unless nobody else holds it",
        stories.cow,
    ),
    ChapterSpec(
        "enomem",
        stories.ENOMEM,
        "munmap fails with ENOMEM at vm.max_map_count: VMAs are counted, not bytes",
        stories.enomem,
    ),
    ChapterSpec(
        "256tib",
        teasers.SPARSE,
        "teaser: a process uses a few MiB of 256 TiB; a sparse space costs page tables",
        teasers.sparse,
    ),
    ChapterSpec(
        "translation-cost",
        teasers.TRANSLATION,
        "teaser: the share of cycles spent translating, 4 KiB against 2 MiB pages",
        teasers.translation,
    ),
    ChapterSpec(
        "tlb-sidechannel",
        teasers.TLB,
        "teaser: TLB hit rates inside and past the STLB's reach, and a timing side channel",
        teasers.tlb_sidechannel,
    ),
    ChapterSpec(
        "hugepages",
        teasers.HUGEPAGES,
        'teaser: huge pages, "a mess": reach, bloat, splits, fragmentation, pools',
        teasers.hugepages,
    ),
)


def find(step: str) -> int:
    """The chapter number (1-based) that ``step`` names: a number or a chapter's key.
    ScenarioParameterError (parameter ``step``) if it names none."""
    text = step.strip()
    if text.lstrip("+-").isdigit():
        number = int(text)
        if 1 <= number <= len(CHAPTERS):
            return number
        raise ScenarioParameterError(
            "step", f"{text} is out of range: the tour has chapters 1..{len(CHAPTERS)}"
        )
    for number, spec in enumerate(CHAPTERS, 1):
        if spec.key == text.lower():
            return number
    names = ", ".join(spec.key for spec in CHAPTERS)
    raise ScenarioParameterError(
        "step", f"{text!r} names no chapter: give 1..{len(CHAPTERS)} or one of {names}"
    )


def run_chapter(number: int) -> Chapter:
    """Run chapter ``number`` (1-based) on the model."""
    return CHAPTERS[number - 1].run(number)


__all__ = ["CHAPTERS", "Chapter", "ChapterSpec", "Figures", "find", "run_chapter"]
