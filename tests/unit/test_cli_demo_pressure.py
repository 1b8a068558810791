"""``vmsim demo pressure`` through its own parser (register() on a parser built here).

Expected behaviour, from the kernel's rules rather than from the code under test:
- a machine whose RAM is smaller than what its processes write must swap (pswpout > 0, swap in
  use); one whose RAM holds the whole workload never does;
- with zswap on, pages swapped out are first stored in the compressed pool (stored_pages > 0);
  with zswap off the pool stays empty;
- Linux 6.18: a zero page swapped out is a bit in the swap zeromap (vmstat swpout_zero), with
  zswap on or off; random pages do not compress below a page and are stored as is
  (stored_incompressible_pages), never rejected (reject_compress_poor stays 0); the zswap
  counters are the 6.18 debugfs files, without same_filled_pages;
- with ksmd running, pages of identical contents in MADV_MERGEABLE regions get merged
  (pages_sharing > 0); without ksmd nothing is;
- MemFree is never negative; the workload is seeded, so a seed gives one series;
- every page reads back as it was written.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from vmsim.cli import demo_pressure
from vmsim.cli.errors import CliError
from vmsim.cli.main import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, exit_code
from vmsim.scenarios import pressure as pressure_scenario

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STEPS = 6
# 4 MiB of RAM, 6 MiB written: a third of the workload has to go somewhere.
SMALL = ["--ram", "4M", "--swap", "8M", "--workload", "6M", "--steps", str(STEPS)]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vmsim demo")
    demo_pressure.register(p.add_subparsers(dest="demo", metavar="DEMO", required=True))
    return p


def run(argv: list[str]) -> tuple[int, str, str]:
    """Run the demo like main() does: (exit status, console output, error message)."""
    args = parser().parse_args(["pressure", *argv])
    out = io.StringIO()
    console = Console(file=out, no_color=True, highlight=False, width=200)
    try:
        code: int = args.handler(args, console)
    except CliError as exc:
        return exit_code(exc), out.getvalue(), str(exc)
    return code, out.getvalue(), ""


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    """The --json document. Whether the run lost data is checked by the tests about that,
    not here: the series is printed either way."""
    run([*SMALL, "--no-plot", "--json", *argv])
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


def column(data: dict[str, Any], name: str) -> list[int]:
    return [row[name] for row in data["series"]]


def test_one_row_per_step_and_free_memory_never_negative(
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = run_json(capsys)
    assert data["demo"] == "pressure"
    assert [row["step"] for row in data["series"]] == list(range(1, STEPS + 1))
    assert all(free >= 0 for free in column(data, "mem_free_kb"))
    assert all(free <= 4096 for free in column(data, "mem_free_kb"))  # MemTotal 4 MiB
    assert data["settings"]["ram"] == 4 << 20
    assert data["totals"]["steps"] == STEPS
    assert data["totals"]["pages_written"] >= (6 << 20) // 4096  # each page written once
    events = " ".join(row["event"] for row in data["series"])
    assert "fork db" in events and "batch exits" in events
    # the counters are cumulative, like /proc/vmstat
    for name in ("pgfault", "pgmajfault", "pswpin", "pswpout", "oom_kill"):
        values = column(data, name)
        assert values == sorted(values), name
    assert data["totals"]["pgfault"] == data["series"][-1]["pgfault"]


def test_swaps_when_ram_is_smaller_than_the_workload(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "--zswap", "none")
    assert any(used > 0 for used in column(data, "swap_used_kb"))
    assert data["totals"]["pswpout"] > 0
    assert data["totals"]["max_swap_used_kb"] == max(column(data, "swap_used_kb"))


def test_no_swap_when_the_workload_fits(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "--ram", "16M", "--workload", "2M")
    assert column(data, "swap_used_kb") == [0] * STEPS
    assert data["totals"]["pswpout"] == data["totals"]["pgmajfault"] == 0


def test_zswap_stores_pages(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "--zswap", "zstd")
    assert any(n > 0 for n in column(data, "zswap_stored_pages"))
    assert any(kb > 0 for kb in column(data, "zswap_pool_kb"))
    assert data["totals"]["zswpout"] > 0


def test_no_zswap_no_pool(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "--zswap", "none")
    assert column(data, "zswap_stored_pages") == [0] * STEPS
    assert column(data, "zswap_pool_kb") == [0] * STEPS


ZSWAP_6_18 = {
    "pool_limit_hit",
    "reject_reclaim_fail",
    "reject_alloc_fail",
    "reject_kmemcache_fail",
    "reject_compress_fail",
    "reject_compress_poor",
    "decompress_fail",
    "written_back_pages",
    "pool_total_size",
    "stored_pages",
    "stored_incompressible_pages",
}


def test_zero_pages_go_to_the_swap_zeromap(capsys: pytest.CaptureFixture[str]) -> None:
    for zswap in ("zstd", "none"):
        data = run_json(capsys, "--zswap", zswap)
        assert data["totals"]["written_by_kind"]["zero"] > 0
        zeros = column(data, "swpout_zero")
        assert zeros == sorted(zeros), zswap  # cumulative, like /proc/vmstat
        assert zeros[-1] > 0, zswap  # some of the zero pages were swapped out
        assert data["totals"]["swpout_zero"] == zeros[-1]
        assert column(data, "swpin_zero") == sorted(column(data, "swpin_zero"))


def test_zswap_stores_incompressible_pages_as_is(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "--zswap", "zstd")
    assert set(data["totals"]["zswap"]) == ZSWAP_6_18  # no same_filled_pages
    assert data["totals"]["zswap"]["reject_compress_poor"] == 0
    assert any(n > 0 for n in column(data, "zswap_incompressible_pages"))  # the random pages
    for row in data["series"]:
        assert row["zswap_incompressible_pages"] <= row["zswap_stored_pages"]
    off = run_json(capsys, "--zswap", "none")
    assert column(off, "zswap_incompressible_pages") == [0] * STEPS
    assert set(off["totals"]["zswap"]) == ZSWAP_6_18


def test_summary_names_the_zeromap_and_pages_stored_as_is() -> None:
    _code, out, _err = run([*SMALL, "--no-plot", "--explain"])
    assert "swpout_zero" in out and "swap zeromap" in out
    assert "stored as is" in out
    assert "same-filled" not in out and "rejected" not in out


def test_ksm_merges_duplicated_pages(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "--ksm")
    assert any(n > 0 for n in column(data, "ksm_pages_sharing"))
    assert any(n > 0 for n in column(data, "ksm_pages_shared"))
    assert all(
        row["ksm_saved_kb"] == row["ksm_pages_sharing"] * 4 for row in data["series"]
    )  # each mapping merged into another page spares one 4 KiB frame


def test_no_ksm_no_merging(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "--no-ksm")
    assert column(data, "ksm_pages_sharing") == [0] * STEPS
    assert column(data, "ksm_pages_shared") == [0] * STEPS


def test_same_seed_same_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    first = run_json(capsys, "--seed", "7")
    second = run_json(capsys, "--seed", "7")
    assert first["series"] == second["series"]
    assert first["totals"] == second["totals"]


def test_another_seed_another_series(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_json(capsys, "--seed", "1")["series"] != run_json(capsys, "--seed", "2")["series"]


def test_plot_is_a_png(tmp_path: Path) -> None:
    path = tmp_path / "pressure.png"
    code, out, err = run([*SMALL, "--plot", str(path)])
    assert code in (EXIT_OK, EXIT_FAILURE), err
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert f"plot: {path}" in out
    # off a terminal: one plain line per step, then the summary
    assert sum(line.startswith("step ") for line in out.splitlines()) == STEPS


def test_plot_goes_to_the_current_directory_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run([*SMALL, "--explain"])
    assert (tmp_path / demo_pressure.DEFAULT_PLOT).read_bytes()[:8] == PNG_SIGNATURE


def test_no_plot_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _code, out, _err = run([*SMALL, "--no-plot"])
    assert not list(tmp_path.iterdir())
    assert "plot:" not in out


def test_bad_ram_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(["pressure", "--ram", "lots"])
    assert exc.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--ram" in err and "not a size" in err
    for argv in (["--ram", "0"], ["--ram", "64K"], ["--steps", "0"], ["--workload", "1K"]):
        code, _out, message = run([*argv, "--no-plot", "--json"])
        assert code == EXIT_USAGE, argv
        assert argv[0] in message, message


def test_no_byte_lost_under_swap_zswap_and_ksm(monkeypatch: pytest.MonkeyPatch) -> None:
    """Swap out and in, zswap, zero pages, KSM merging and unmerging, an exit and an OOM-free
    run: every page reads back as written. (No fork here: see the next test.)"""
    monkeypatch.setattr(pressure_scenario, "FORKER", None)
    for zswap in ("zstd", "none"):
        code, out, err = run([*SMALL, "--no-plot", "--zswap", zswap, "--steps", "9"])
        assert code == EXIT_OK, err
        assert "no byte lost" in out
        assert "fork" not in out


def test_no_byte_lost_with_a_fork() -> None:
    code, out, err = run([*SMALL, "--no-plot", "--steps", "9"])
    assert code == EXIT_OK, err
    assert "no byte lost" in out


def test_a_lost_page_is_named_and_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The check itself: a page changed behind the workload's back is reported, exit 1."""
    verify = demo_pressure.Pressure.verify
    changed: list[tuple[int, int]] = []

    def change_one_then_verify(self: demo_pressure.Pressure) -> demo_pressure.Verification:
        pr = next(p for p in self.procs if p.alive and p.order)
        addr = pr.order[-1]
        pr.proc.write(addr, b"not what was written")
        changed.append((pr.proc.pid, addr))
        return verify(self)

    monkeypatch.setattr(pressure_scenario, "FORKER", None)
    monkeypatch.setattr(demo_pressure.Pressure, "verify", change_one_then_verify)
    code, _out, err = run([*SMALL, "--no-plot", "--json"])
    assert code == EXIT_FAILURE
    lost = json.loads(capsys.readouterr().out)["totals"]["verification"]["lost"]
    pid, addr = changed[0]
    mine = [x for x in lost if (x["pid"], x["addr"]) == (pid, addr)]
    assert len(mine) == 1 and mine[0]["step"] is None  # found by the final read-back
    assert mine[0]["got"].startswith(b"not what was written".hex()[:32])
    first = lost[0]
    assert err.startswith(f"data lost: {first['process']} (pid {first['pid']}) page ")
    assert f"at {first['addr']:#x}: read back " in err

    code, out, err = run([*SMALL, "--no-plot"])
    assert code == EXIT_FAILURE
    assert "no byte lost" not in out and "DATA LOST" in out


def test_no_byte_lost_on_an_ssd_and_on_zram_at_any_swappiness() -> None:
    for argv in (["--swap-device", "ssd", "--swappiness", "200"], ["--swap-device", "zram"]):
        code, out, err = run([*SMALL, "--no-plot", "--steps", "9", *argv])
        assert code == EXIT_OK, (argv, err)
        assert "no byte lost" in out


def test_bad_swappiness_is_a_usage_error() -> None:
    code, _out, message = run(["--swappiness", "201", "--no-plot", "--json"])
    assert code == EXIT_USAGE
    assert "--swappiness" in message and "0..200" in message
