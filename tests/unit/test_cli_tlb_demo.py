"""``vmsim demo tlb``: the regimes, measured by the engine on generated traces, against what the
Skylake geometry predicts (``DEFAULT_TLB_CONFIG``, PWC 32 PDE entries), for uniformly random
loads over a working set of N 4 KiB pages:

- regime 1, N <= 64 (the L1 dTLB, 16 sets x 4 ways, consecutive pages spread evenly): every
  access after the first touch of each page hits the L1;
- regime 2, 64 < N <= 1536: the L1 holds 4 of the N / 16 pages of each set, so the L1 hit rate
  is about 64 / N; the STLB holds every page, so the TLB hit rate stays near 100%;
- regime 3, N > 1536: the STLB holds 12 of the N / 128 pages of each set: hit rate about
  1536 / N (plus at most 64 / N the L1 holds beyond it); a walk reads the PTE only while the
  PDE cache's 32 entries cover the working set (<= 64 MiB), past that the PDE cache holds 32
  of N / 512 PDEs and a walk reads 2 - 32 * 512 / N entries on average;
- with 2 MiB pages, up to 64 MiB fits the L1 dTLB's 32 2 MiB entries: nearly every access hits.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from vmsim.cli import demo_tlb
from vmsim.cli.main import EXIT_OK, main
from vmsim.memtrace.cpus import reach, skylake

KIB = 1 << 10
MIB = 1 << 20


@pytest.fixture(scope="module")
def points() -> dict[int, demo_tlb.Point]:
    cpu = skylake()
    sizes = (128 * KIB, 2 * MIB, 16 * MIB, 128 * MIB)
    return {size: demo_tlb.measure(size, cpu, accesses=200_000) for size in sizes}


def test_regime_1_everything_hits_the_l1(points: dict[int, demo_tlb.Point]) -> None:
    p = points[128 * KIB]
    assert p.small.l1_hit_rate > 0.99
    assert p.small.hit_rate > 0.99


def test_regime_2_the_stlb_catches_l1_misses(points: dict[int, demo_tlb.Point]) -> None:
    p = points[2 * MIB]  # 512 pages
    assert p.small.l1_hit_rate == pytest.approx(64 / 512, abs=0.02)
    assert p.small.hit_rate > 0.99


def test_regime_3_walks(points: dict[int, demo_tlb.Point]) -> None:
    p = points[16 * MIB]  # 4096 pages: the STLB holds 12 of 32 per set
    assert 0.375 - 0.05 < p.small.hit_rate < 0.375 + 64 / 4096 + 0.01
    assert p.small.refs_per_walk == pytest.approx(1.0, abs=0.05)  # the PDE cache covers 16 MiB


def test_past_the_pde_cache_walks_read_more(points: dict[int, demo_tlb.Point]) -> None:
    p = points[128 * MIB]  # 32768 pages, 64 PDEs, 32 cached
    assert p.small.hit_rate < 1536 / 32768 + 64 / 32768 + 0.01
    assert p.small.refs_per_walk == pytest.approx(2 - 32 * 512 / 32768, abs=0.1)


def test_2m_pages_restore_the_hit_rate(points: dict[int, demo_tlb.Point]) -> None:
    for size in (2 * MIB, 16 * MIB, 128 * MIB):
        assert points[size].huge.hit_rate > 0.99, size
    assert (
        points[16 * MIB].huge.cost.translation_share < points[16 * MIB].small.cost.translation_share
    )


def test_hit_rate_falls_past_each_reach(points: dict[int, demo_tlb.Point]) -> None:
    l1 = [points[s].small.l1_hit_rate for s in sorted(points)]
    hit = [points[s].small.hit_rate for s in sorted(points)]
    assert l1 == sorted(l1, reverse=True)
    assert hit == sorted(hit, reverse=True)


def test_reach_from_the_geometry() -> None:
    r = reach(skylake())
    assert (r.l1_4k, r.stlb_4k, r.pwc) == (256 * KIB, 6 * MIB, 64 * MIB)
    assert (r.l1_2m, r.stlb_2m) == (64 * MIB, 3072 * MIB)


def test_cli_json(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(demo_tlb, "SIZES", (64 * KIB, 1 * MIB))
    monkeypatch.setattr(demo_tlb, "ACCESSES", 20_000)
    assert main(["demo", "tlb", "--json"]) == EXIT_OK
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert data["demo"] == "tlb"
    assert [p["working_set"] for p in data["points"]] == [64 * KIB, 1 * MIB]
    assert data["points"][0]["regime"].startswith("1")
    assert data["points"][1]["regime"].startswith("2")
    assert data["points"][1]["4K"]["records"] == 20_000


def test_cli_explain_and_plot(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    monkeypatch.setattr(demo_tlb, "SIZES", (64 * KIB, 8 * MIB))
    monkeypatch.setattr(demo_tlb, "ACCESSES", 20_000)
    png = tmp_path / "demo.png"
    assert main(["demo", "tlb", "--explain", "--plot", str(png)]) == EXIT_OK
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("1. 64 KiB")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
