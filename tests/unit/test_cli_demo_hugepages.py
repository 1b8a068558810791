"""``vmsim demo hugepages`` through its own parser (register() on a parser built here).

Expected figures, derived by hand from the kernel's rules and the CPU preset, not read back
from the code under test:
- Skylake: L1 dTLB 64 x 4 KiB = 256 KiB, STLB 1536 x 4 KiB = 6 MiB. Random loads over 16 MiB
  with 4 KiB pages hit the TLB about 6/16 = 37.5% of the time; with 2 MiB pages the 8 pages
  fit in the L1 dTLB's 32 2 MiB entries: every load hits, no walk;
- one written page of anonymous memory is 4 kB of RSS; khugepaged collapsing its 2 MiB range
  (max_ptes_none 511 >= 511 empty PTEs) makes it 2048 kB (AnonHugePages 2048 kB);
- a write in a MADV_HUGEPAGE range maps a 2048 kB THP; MADV_DONTNEED of 511 of its pages
  splits the PMD and clears 511 PTEs (smaps Rss 4 kB) but frees nothing: the folio is only
  split, and its 511 pages freed, by the deferred split shrinker under memory pressure;
- with every other page of memory in use and less than 2 MiB never touched, no free block
  of order 9 or 10 exists; a hugetlb page then needs direct compaction (compact_stall,
  compact_success) and gets its block;
- hugetlb_reserve_pages(): mmap(MAP_HUGETLB) of 2 pages of a pool of 4 reserves 2 (Rsvd 2,
  Free 4); a fault consumes a reservation (Rsvd 1, Free 3); MAP_NORESERVE reserves nothing,
  its faults may use Free - Rsvd = 2 pages, the third gets SIGBUS; at the end Free 1, Rsvd 1.
Steps 2-4 need the THP model for part of their story; where this build lacks it the step
must say so (shown False, "cannot show yet") and must not claim the THP figures.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from vmsim.cli import demo_hugepages
from vmsim.cli.errors import CliError
from vmsim.cli.main import EXIT_OK, exit_code

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
KEYS = ["tlb", "khugepaged", "dontneed", "fragmentation", "hugetlb"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vmsim demo")
    demo_hugepages.register(p.add_subparsers(dest="demo", metavar="DEMO", required=True))
    return p


def run(argv: list[str]) -> tuple[int, str, str]:
    """Run the demo like main() does: (exit status, console output, stdout)."""
    args = parser().parse_args(["hugepages", *argv])
    out = io.StringIO()
    console = Console(file=out, no_color=True, highlight=False, width=200)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        try:
            code: int = args.handler(args, console)
        except CliError as exc:
            return exit_code(exc), out.getvalue(), str(exc)
    return code, out.getvalue(), stdout.getvalue()


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    code, _, stdout = run(["--json"])
    assert code == EXIT_OK
    data: dict[str, Any] = json.loads(stdout)
    return data


def step(doc: dict[str, Any], key: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in doc["steps"] if s["key"] == key)
    return found


def test_five_steps_in_order(doc: dict[str, Any]) -> None:
    assert doc["demo"] == "hugepages"
    assert [s["key"] for s in doc["steps"]] == KEYS
    assert doc["all_shown"] == all(s["shown"] for s in doc["steps"])


def test_tlb_reach(doc: dict[str, Any]) -> None:
    f = step(doc, "tlb")["figures"]
    assert f["l1_dtlb_reach_4k"] == 64 * 4096
    assert f["stlb_reach_4k"] == 1536 * 4096
    assert f["working_set"] == 16 << 20
    assert 0.30 < f["hit_rate_4k"] < 0.45
    assert f["walks_4k"] > 0.5 * f["loads"]
    assert f["hit_rate_2m"] == 1.0
    assert f["walks_2m"] == 0


def test_khugepaged_bloat(doc: dict[str, Any]) -> None:
    s = step(doc, "khugepaged")
    f = s["figures"]
    assert f["rss_kb_after_touch"] == 4
    if s["shown"]:
        assert f["rss_kb_after_khugepaged"] == 2048
        assert f["anon_huge_kb_after_khugepaged"] == 2048
        assert f["thp_collapse_alloc"] == 1
    else:
        assert "khugepaged" in s["missing"]
        assert f["anon_huge_kb_after_khugepaged"] == 0
        assert "cannot show yet" in s["explain"]


def test_dontneed_frees_nothing_until_the_split(doc: dict[str, Any]) -> None:
    s = step(doc, "dontneed")
    f = s["figures"]
    assert f["dontneed_pages"] == 511
    if s["shown"]:
        assert f["rss_kb_after_write"] == 2048
        assert f["anon_huge_kb_after_write"] == 2048
        assert f["rss_kb_after_dontneed"] == 4  # smaps Rss counts the one PTE left
        assert f["freed_kb_by_dontneed"] == 0
        assert f["thp_split_pmd"] == 1
        assert f["thp_deferred_split_page"] == 1
        # split, or (6.18 THP swap) swapped out whole: either way it left memory
        assert f["thp_split_page_after_pressure"] + f["thp_swpout_after_pressure"] == 1
        assert f["free_kb_after_pressure_exit_minus_before"] >= 511 * 4
    else:
        assert f["anon_huge_kb_after_write"] == 0
        assert f["rss_kb_after_write"] == 4
        assert "THP fault path" in s["missing"]


def test_fragmentation_and_compaction(doc: dict[str, Any]) -> None:
    s = step(doc, "fragmentation")
    f = s["figures"]
    assert f["order9_blocks_fragmented"] == 0
    assert f["buddy_fragmented"][9:] == [0, 0]
    assert f["free_kb_fragmented"] >= f["freed_every_other_kb"]
    assert f["pool_pages_got"] == 1
    assert f["compact_stall"] >= 1
    assert f["compact_success"] >= 1
    assert f["compact_fail"] == 0
    if s["shown"]:
        # one THP fault: a THP (after direct compaction) or a fallback, never both or none
        assert f["thp_fault_alloc"] + f["thp_fault_fallback"] == 1
        assert f["thp_fault_anon_huge_kb"] == 2048 * f["thp_fault_alloc"]
    else:
        assert "thp_fault_fallback" in s["missing"]


def test_hugetlb_pool_reservations_and_sigbus(doc: dict[str, Any]) -> None:
    f = step(doc, "hugetlb")["figures"]
    assert f["pool"] == 4
    assert (f["rsvd_after_mmap"], f["free_after_mmap"]) == (2, 4)
    assert (f["rsvd_after_touch"], f["free_after_touch"]) == (1, 3)
    assert f["rsvd_after_noreserve_mmap"] == 1
    assert f["noreserve_faults_ok"] == 2
    assert f["sigbus"].startswith("SIGBUS")
    assert (f["free_at_end"], f["rsvd_at_end"]) == (1, 1)
    assert (f["meminfo_hugepages_free"], f["meminfo_hugepages_rsvd"]) == (1, 1)


def test_explain_is_one_line_per_step_and_plot_is_a_png(tmp_path: Path) -> None:
    png = tmp_path / "hp.png"
    code, out, _ = run(["--explain", "--plot", str(png)])
    assert code == EXIT_OK
    lines = out.splitlines()
    assert [line[:3] for line in lines] == ["1. ", "2. ", "3. ", "4. ", "5. "]
    assert "TLB reach" in lines[0]
    assert "HugePages_Rsvd 2" in lines[4]
    assert "SIGBUS" in lines[4]
    assert png.read_bytes()[:8] == PNG_SIGNATURE


def test_explain_says_what_it_cannot_show(doc: dict[str, Any]) -> None:
    for s in doc["steps"]:
        assert ("cannot show yet" in s["explain"]) == (not s["shown"])
        assert bool(s["missing"]) == (not s["shown"])
