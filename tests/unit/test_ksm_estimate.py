"""``vmsim estimate``'s "ksmd with defaults" figures (vmsim.analysis.ksmd) against their twin:
the model's ksmd (vmsim.mm.ksm) run on the same pages, and against hand-derived numbers."""

from __future__ import annotations

import random

import pytest
from layout import PAGE, anon, at

import vmsim
from vmsim.analysis.ksmd import ksmd_defaults, wakeups_per_pass
from vmsim.analysis.savings import estimate_pages
from vmsim.constants import MADV_MERGEABLE


def page(tag: int) -> bytes:
    return tag.to_bytes(4, "little") * (PAGE // 4)


def test_hand_derived_figures() -> None:
    # 1 copy: alone; 2: one KSM page; 257: a full page and one alone; 258: a chain of two;
    # 600 = 256 + 256 + 88: a chain of three
    d = ksmd_defaults([1, 2, 257, 258, 600])
    assert (d.pages, d.pages_shared, d.pages_sharing, d.pages_unshared) == (
        1118,
        1 + 1 + 2 + 3,
        1 + 255 + 256 + 597,
        1 + 1,
    )
    assert (d.stable_node_chains, d.stable_node_dups) == (2, 5)
    assert d.passes == 2 and d.wakeups == 2 * 12 and d.seconds == pytest.approx(0.48)
    assert wakeups_per_pass(2000) == 21 and wakeups_per_pass(150) == 2
    assert d.general_profit == d.pages_sharing * PAGE - 1118 * 64


@pytest.mark.parametrize(
    "copies", [[1, 2, 3], [256, 1, 1], [257, 5], [258], [600, 2, 1, 1], [513, 300, 7]]
)
def test_the_model_ksmd_reaches_the_same_figures(copies: list[int]) -> None:
    pages = [page(c) for c, n in enumerate(copies) for _ in range(n)]
    random.Random(len(pages)).shuffle(pages)  # address order must not matter
    m = vmsim.Machine(ram="256M", ksm=True)
    p = m.spawn()
    anon(p, 0, len(pages))
    for i, data in enumerate(pages):
        p.write(at(i), data)
    p.madvise(at(0), len(pages) * PAGE, MADV_MERGEABLE)
    d = ksmd_defaults(copies)
    ticks = 0
    while m.ksm_stats()["full_scans"] < d.passes:
        m.tick()
        ticks += 1
    s = m.ksm_stats()
    assert ticks == d.wakeups
    got = tuple(
        s[k]
        for k in (
            "pages_shared",
            "pages_sharing",
            "pages_unshared",
            "stable_node_chains",
            "stable_node_dups",
            "general_profit",
        )
    )
    assert got == (
        d.pages_shared,
        d.pages_sharing,
        d.pages_unshared,
        d.stable_node_chains,
        d.stable_node_dups,
        d.general_profit,
    )
    # and nothing more happens on later passes
    for _ in range(2 * d.wakeups):
        m.tick()
    assert (m.ksm_stats()["pages_shared"], m.ksm_stats()["pages_sharing"]) == got[:2]


def test_estimate_pages_carries_the_ksmd_figures() -> None:
    zero = bytes(PAGE)
    stats = estimate_pages([zero] * 300 + [page(1)] * 2 + [page(2)], compressors=["lz4"])
    d = stats.ksmd
    assert d is not None
    # ideal: the 300 zero pages are counted apart; ksmd with use_zero_pages 0 merges them
    # into two KSM pages (256 + 44)
    assert (d.pages_shared, d.pages_sharing, d.pages_unshared) == (3, 298 + 1, 1)
    assert stats.as_dict()["ksmd_defaults"]["pages_sharing"] == 299
