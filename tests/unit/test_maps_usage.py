"""``vmsim maps`` reporting (issue 11): POSIX shm is not a device, glibc's cached thread
stacks are named as a caveat, and smaps input gives RSS/PSS/swap per kind (as pmap -x and
smem show them: the sums of each VMA's Rss, Pss and Swap lines)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vmsim.analysis import analyze, classify, parse_text
from vmsim.cli.main import main
from vmsim.snapshot import parse

SMAPS = """\
55e31b43e000-55e31b43f000 r-xp 00000000 fe:00 27525354   /usr/local/bin/server
Rss:                   4 kB
Pss:                   2 kB
Swap:                  0 kB
55e353568000-55e353589000 rw-p 00000000 00:00 0          [heap]
Rss:                 132 kB
Pss:                 132 kB
Swap:                  0 kB
7fa28ba68000-7fa28ba69000 ---p 00000000 00:00 0
Rss:                   0 kB
Pss:                   0 kB
Swap:                  0 kB
7fa28ba69000-7fa28c269000 rw-p 00000000 00:00 0
Rss:                  16 kB
Pss:                  16 kB
Swap:                  8 kB
7fa28c269000-7fa28c26a000 ---p 00000000 00:00 0
Rss:                   0 kB
Pss:                   0 kB
Swap:                  0 kB
7fa28c26a000-7fa28ca6a000 rw-p 00000000 00:00 0
Rss:                  20 kB
Pss:                  20 kB
Swap:                 12 kB
7fa28cb00000-7fa28cb07000 rw-s 00000000 00:1a 3      /dev/shm/PostgreSQL.3238230160
Rss:                  28 kB
Pss:                  14 kB
Swap:                  0 kB
7ffe019ca000-7ffe019eb000 rw-p 00000000 00:00 0          [stack]
Rss:                  12 kB
Pss:                  12 kB
Swap:                  0 kB
"""


def test_dev_shm_is_posix_shared_memory() -> None:
    (shm,) = [v for v in classify(parse(SMAPS)) if v.name and v.name.startswith("/dev/shm/")]
    assert "POSIX shared memory" in shm.reason
    assert "device" not in shm.reason


def test_cached_thread_stacks_are_named() -> None:
    report = analyze(parse_text(SMAPS, "server.smaps"), max_map_count=1000)
    assert report.thread_stacks == 2
    assert any("glibc keeps cached" in n or "cached after their threads exited" in n
               for n in report.notes)  # fmt: skip


def test_usage_per_kind_from_smaps() -> None:
    report = analyze(parse_text(SMAPS, "server.smaps"), max_map_count=1000)
    usage = {str(k.kind): (k.rss_kb, k.pss_kb, k.swap_kb) for k in report.kinds}
    assert usage["thread_stack"] == (16 + 20, 16 + 20, 8 + 12)
    assert usage["thread_guard"] == (0, 0, 0)
    assert usage["file"] == (28, 14, 0)
    assert usage["heap"] == (132, 132, 0)


def test_maps_without_smaps_has_no_usage() -> None:
    plain = "\n".join(ln for ln in SMAPS.splitlines() if ":" not in ln.split()[0][:-1] and
                      not ln.startswith(("Rss", "Pss", "Swap"))) + "\n"  # fmt: skip
    report = analyze(parse_text(plain, "server.maps"), max_map_count=1000)
    assert all(k.rss_kb is None for k in report.kinds)


def test_cli_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "server.smaps"
    path.write_text(SMAPS)
    assert main(["maps", str(path), "--max-map-count", "1000", "--no-color"]) == 0
    out = capsys.readouterr().out
    assert "RSS" in out and "PSS" in out and "swap" in out
    assert main(["maps", str(path), "--max-map-count", "1000", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    kinds = {k["kind"]: k for k in data["kinds"]}
    assert kinds["thread_stack"]["swap_kb"] == 20
