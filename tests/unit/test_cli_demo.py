"""``vmsim demo enomem`` end to end through main([...]), with a small vm.max_map_count.

Expected values come from the spec (§0, §1, §7), never from the code under test:
- a new mapping that does not merge adds 1 VMA; mprotect of one page in the middle of a VMA
  adds 2 (split_vma() twice), of a page at its edge adds 1;
- munmap strictly inside one VMA with map_count >= max_map_count fails with ENOMEM and changes
  nothing; munmap of a whole VMA never fails on the count and removes 1; once below the limit the
  same middle munmap succeeds and adds 1;
- map_count = lines of /proc/pid/maps - 1 ([vsyscall] is printed last but not counted).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

import vmsim
from vmsim.cli.main import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main

LIMIT = 200
STEP_IDS = [
    "spawn",
    "mmap",
    "first-split",
    "split",
    "munmap-middle",
    "munmap-whole",
    "munmap-retry",
]


def run_json(capsys: pytest.CaptureFixture[str], limit: int = LIMIT) -> dict[str, Any]:
    code = main(["demo", "enomem", "--max-map-count", str(limit), "--json"])
    out = capsys.readouterr().out
    assert code == EXIT_OK, out
    data: dict[str, Any] = json.loads(out)
    return data


def by_id(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["id"]: step for step in data["steps"]}


def test_steps_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys)
    assert [step["id"] for step in data["steps"]] == STEP_IDS
    assert data["max_map_count"] == LIMIT
    assert data["matches_linux"] is True
    assert all(step["max_map_count"] == LIMIT for step in data["steps"])


def test_fresh_process_counts_every_line_but_vsyscall(capsys: pytest.CaptureFixture[str]) -> None:
    spawn = by_id(run_json(capsys))["spawn"]
    assert spawn["maps"][-1].endswith("[vsyscall]")
    assert spawn["map_count"] == len(spawn["maps"]) - 1
    assert spawn["map_count"] > 5  # a usual layout: program, libc, ld.so, heap, stack, vdso...


@pytest.mark.parametrize("limit", [LIMIT, LIMIT + 1])
def test_splitting_reaches_the_limit(capsys: pytest.CaptureFixture[str], limit: int) -> None:
    steps = by_id(run_json(capsys, limit))
    spawned, mapped = steps["spawn"]["map_count"], steps["mmap"]["map_count"]
    assert mapped == spawned + 1
    assert steps["first-split"]["map_count"] == mapped + 2
    split = steps["split"]
    assert split["ok"] is True
    assert split["map_count"] == limit
    facts = split["facts"]
    # +2 per middle split, +1 per edge split; an edge split only when one slot is left.
    assert mapped + 2 * facts["middle_splits"] + facts["edge_splits"] == limit
    assert facts["edge_splits"] == (limit - mapped) % 2
    assert facts["calls"] == facts["middle_splits"] + facts["edge_splits"]


def test_munmap_inside_a_vma_fails_at_the_limit(capsys: pytest.CaptureFixture[str]) -> None:
    step = by_id(run_json(capsys))["munmap-middle"]
    assert step["ok"] is False
    assert step["errno"] == "ENOMEM"
    assert step["map_count_before"] == LIMIT
    assert step["map_count"] == LIMIT
    # The page is strictly inside the VMA shown: the call would have to split it.
    hole = int(re.fullmatch(r"munmap\((0x[0-9a-f]+), 4096\)", step["call"])[1], 16)  # type: ignore[index]
    start, end = (int(x, 16) for x in step["maps"][0].split()[0].split("-"))
    assert start < hole and hole + 4096 < end


def test_whole_vma_munmap_still_works_then_the_retry_succeeds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    steps = by_id(run_json(capsys))
    whole, retry = steps["munmap-whole"], steps["munmap-retry"]
    assert whole["ok"] is True and whole["errno"] is None
    assert whole["map_count"] == LIMIT - 1
    assert retry["call"] == steps["munmap-middle"]["call"]
    assert retry["ok"] is True and retry["errno"] is None
    assert retry["map_count"] == LIMIT


def test_explain_prints_one_line_per_step(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "enomem", "--max-map-count", str(LIMIT), "--explain"])
    lines = capsys.readouterr().out.splitlines()
    assert code == EXIT_OK
    assert len(lines) == len(STEP_IDS)
    assert "ENOMEM" in lines[STEP_IDS.index("munmap-middle")]
    assert f"-> {LIMIT}" in lines[STEP_IDS.index("split")]


def test_rich_output_without_colour(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "enomem", "--max-map-count", str(LIMIT), "--no-color"])
    out = capsys.readouterr().out
    assert code == EXIT_OK
    assert "\x1b[" not in out
    assert "ENOMEM" in out
    assert "/proc/pid/maps" in out


@pytest.mark.parametrize("limit", ["0", "5"])
def test_too_small_a_limit_is_a_usage_error(capsys: pytest.CaptureFixture[str], limit: str) -> None:
    code = main(["demo", "enomem", "--max-map-count", limit, "--json"])
    assert code == EXIT_USAGE
    assert "max-map-count" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "nope"]) == EXIT_USAGE
    assert "invalid choice" in capsys.readouterr().err


def test_a_model_that_frees_inside_a_vma_at_the_limit_is_flagged(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """If munmap strictly inside a VMA succeeded at the limit, the demo must say so and fail."""
    real_munmap = vmsim.Process.munmap

    def lenient_munmap(self: vmsim.Process, addr: int, length: int) -> None:
        try:
            real_munmap(self, addr, length)
        except OSError:
            pass  # a broken model: swallows the ENOMEM and unmaps nothing

    monkeypatch.setattr(vmsim.Process, "munmap", lenient_munmap)
    code = main(["demo", "enomem", "--max-map-count", str(LIMIT), "--explain"])
    captured = capsys.readouterr()
    assert code == EXIT_FAILURE
    assert "MODEL DISAGREES" in captured.out
    assert "munmap-middle" in captured.err
