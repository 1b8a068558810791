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
from vmsim.cli import maps_plot
from vmsim.cli.main import EXIT_OK, main

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
