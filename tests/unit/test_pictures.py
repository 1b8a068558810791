"""The pictures (``--plot``): what is drawn is the model's data, and the PNG is written.

Expected values come from the snapshot text itself (hand-written maps lines and their kinds as
``vmsim maps`` classifies them, asserted in tests/unit/test_cli_maps.py) or from the
scenarios' own ``--json`` output, never from the plotting code.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from vmsim.analysis import analyze, read_snapshot
from vmsim.cli import cow_plot, maps_plot, walk_plot
from vmsim.cli.main import EXIT_OK, main
from vmsim.scenarios.cow import story as cow_story
from vmsim.scenarios.walk import story as walk_story

SMALL = """\
55e31b43e000-55e31b43f000 r-xp 00000000 fe:00 27525354   /usr/local/bin/server
55e353568000-55e353589000 rw-p 00000000 00:00 0          [heap]
7fa28ba68000-7fa28ba69000 ---p 00000000 00:00 0
7fa28ba69000-7fa28c269000 rw-p 00000000 00:00 0
7fa28c269000-7fa28c26a000 ---p 00000000 00:00 0
7fa28c26a000-7fa28ca6a000 rw-p 00000000 00:00 0
7ffe019ca000-7ffe019eb000 rw-p 00000000 00:00 0          [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0  [vsyscall]
"""
SMALL_KINDS = [
    "program",
    "heap",
    "thread_guard",
    "thread_stack",
    "thread_guard",
    "thread_stack",
    "main_stack",
    "special",
]


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def small_data(tmp_path: Path) -> dict[str, Any]:
    src = tmp_path / "small.maps"
    src.write_text(SMALL)
    return maps_plot.space_data(analyze(read_snapshot(str(src)), 65530).vmas)


def test_maps_plot_every_vma_once_with_its_kind(tmp_path: Path) -> None:
    data = small_data(tmp_path)
    lines = [ln.split()[0].split("-") for ln in SMALL.splitlines()]
    assert [(v["start"], v["end"]) for v in data["vmas"]] == [
        (int(a, 16), int(b, 16)) for a, b in lines
    ]
    assert [v["kind"] for v in data["vmas"]] == SMALL_KINDS


def test_maps_plot_gaps_and_landmarks(tmp_path: Path) -> None:
    data = small_data(tmp_path)
    # program..[heap], [heap]..first guard, last thread stack..[stack], [stack]..[vsyscall];
    # the four thread VMAs touch each other.
    assert [(g["start"], g["end"]) for g in data["gaps"]] == [
        (0x55E31B43F000, 0x55E353568000),
        (0x55E353589000, 0x7FA28BA68000),
        (0x7FA28CA6A000, 0x7FFE019CA000),
        (0x7FFE019EB000, 0xFFFFFFFFFF600000),
    ]
    assert data["landmarks"] == {
        "program": 0x55E31B43E000,
        "heap": 0x55E353568000,
        "stack": 0x7FFE019EB000,
        "mmap_base": 0x7FA28CA6A000,
    }
    # bytes mapped: the counted VMAs (not [vsyscall])
    assert data["mapped"] == 0x1000 + 0x21000 + 2 * (0x1000 + 0x800000) + 0x21000
    assert data["four_level"] == 256 << 40
    assert data["five_level"] == 128 << 50


def test_maps_plot_log_heights() -> None:
    assert maps_plot.log_height(4096) == 1
    assert maps_plot.log_height(8 << 20) == 12  # 2048 pages
    assert maps_plot.size_text(0x1000) == "4 KiB"
    assert maps_plot.size_text(42 << 40) == "42 TiB"


def test_maps_plot_cli_writes_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "small.maps"
    src.write_text(SMALL)
    out = tmp_path / "space.png"
    assert main(["maps", str(src), "--plot", str(out), "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["map_count"] == 7
    assert out.stat().st_size > 10_000
    assert png_size(out) == (1300, 900)


def test_maps_plot_unwritable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "small.maps"
    src.write_text(SMALL)
    code = main(["maps", str(src), "--plot", str(tmp_path / "no" / "x.png")])
    err = capsys.readouterr().err
    assert code != EXIT_OK
    assert "cannot write the plot" in err
    assert "Traceback" not in err


def walk_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["demo", "walk", *argv, "--json"]) == EXIT_OK
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


@pytest.mark.parametrize("five", [False, True])
def test_walk_plot_levels_are_the_scenarios(five: bool, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--five-level"] if five else []
    reported = walk_json(capsys, *argv)
    tree = walk_plot.walk_tree(walk_story(None, "read", five))
    levels = reported["levels"]
    assert len(tree["levels"]) == (5 if five else 4) == len(levels)
    assert [n["table"] for n in tree["levels"]] == (
        ["PML5", "PML4", "PDPT", "PD", "PT"] if five else ["PML4", "PDPT", "PD", "PT"]
    )
    for node, lv in zip(tree["levels"], levels, strict=True):
        assert node["index"] == lv["index"]
        assert node["entry"] == lv["entry_hex"]
        assert node["next_pfn"] == lv["pfn"]
        assert node["va_bits"] == lv["bits"]
        # the entry's bits, straight from the raw x86 PTE (SDM table 4-19): P=0, RW=1, US=2,
        # A=5, D=6, PS=7, G=8, NX=63
        entry = int(lv["entry_hex"], 16)
        for name, bit in (("P", 0), ("RW", 1), ("US", 2), ("A", 5), ("D", 6), ("NX", 63)):
            assert node["bits"][name] == bool(entry >> bit & 1), name
    # the chain: CR3 names the top table, each entry the next table
    assert tree["cr3_pfn"] == reported["cr3_pfn"]
    table_pfns = [reported["cr3_pfn"]] + [lv["pfn"] for lv in levels[:-1]]
    assert [n["table_pfn"] for n in tree["levels"]] == table_pfns
    assert tree["frame"]["pfn"] == levels[-1]["pfn"]
    assert tree["frame"]["paddr"] == reported["paddr"]


def test_walk_plot_cli_writes_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "walk.png"
    assert main(["demo", "walk", "--plot", str(out), "--json"]) == EXIT_OK
    capsys.readouterr()
    assert out.stat().st_size > 10_000
    assert png_size(out) == (1100, 900)  # 6 rows of 150 pixels: CR3, 4 tables, the frame
    out5 = tmp_path / "walk5.png"
    assert main(["demo", "walk", "--five-level", "--plot", str(out5), "--json"]) == EXIT_OK
    assert png_size(out5) == (1100, 1050)


def cow_json(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["demo", "cow", "--json"]) == EXIT_OK
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


def test_cow_plot_frames_are_the_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    reported = {s["id"]: s for s in cow_json(capsys)["steps"]}
    panels = cow_plot.cow_panels(list(cow_story(4)))
    assert [p["step"] for p in panels] == ["parent-writes", "fork", "read-back"]
    for panel in panels:
        step = reported[panel["step"]]
        want = sorted(
            (who, row["label"], row[who]["pfn"], row[who]["writable"])
            for row in step["pages"]
            for who in ("parent", "child")
            if row[who] is not None
        )
        got = sorted((p["process"], p["page"], p["pfn"], p["writable"]) for p in panel["ptes"])
        assert got == want
        counts = {
            row[who]["pfn"]: (row[who]["refcount"], row[who]["mapcount"])
            for row in step["pages"]
            for who in ("parent", "child")
            if row[who] is not None
        }
        assert {f["pfn"]: (f["refcount"], f["mapcount"]) for f in panel["frames"]} == counts
    before, fork, after = panels
    # Linux's rules (copy_present_pte, do_wp_page): no child before the fork; after it both
    # map every private frame read-only; at the end two frames are new: the child's copy of
    # page 0 and the parent's copy of page 1 (the parent reused page 0's frame).
    assert not [p for p in before["ptes"] if p["process"] == "child"]
    assert before["new"] == []
    private = [p for p in fork["ptes"] if p["mapping"] == "private"]
    assert len(private) == 8 and not any(p["writable"] for p in private)
    assert fork["new"] == []
    pfn = {(p["process"], p["page"]): p["pfn"] for p in after["ptes"]}
    assert sorted(after["new"]) == sorted([pfn["child", "0"], pfn["parent", "1"]])


def test_cow_plot_cli_writes_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cow.png"
    assert main(["demo", "cow", "--plot", str(out), "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["matches_linux"] is True
    assert out.stat().st_size > 10_000
    # 7 rows (5 pages, 7 frames at the end): 15 x (1 + 0.6 * 7) inches at 100 dpi
    assert png_size(out) == (1500, 520)
