"""The fast lane end to end: replay() of a trace read with its LaneRuns (lane_events) against
replay() of the same file read by the Python reader. Every report field must be identical
(to_json, the series, the per-call deltas), at the default limit and at low ones (the
snapshot before the limit, the crossing, the replay without a limit, the written replay),
on the recorded fixtures (their timestamps removed: the lane takes no stamped line yet) and
on random traces (mprotect and munmap runs between mmap, mremap, madvise, brk, fork and
thread calls, several processes). The lane must have replayed rows in each, or the test
says nothing: it runs with the thresholds that keep short runs in Python set to zero.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Any

import pytest

from vmsim.fastlane import lane
from vmsim.fastlane.stream import lane_events
from vmsim.trace import sniff_and_read
from vmsim.trace.replay import replay

TRACES = Path(__file__).parent.parent / "fixtures" / "traces"
PROGRAMS = Path(__file__).parent.parent / "fixtures" / "programs"
STACK_ONLY = "7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0                          [stack]\n"
_STAMP = re.compile(r"^([0-9]+ +)(?:[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]+|[0-9]{10}\.[0-9]+) ", re.M)


@pytest.fixture(autouse=True)
def _lane_takes_every_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lane, "_MIN_ROWS", 0)
    monkeypatch.setattr(lane, "_ROW_GAIN", 1 << 40)


def _without_stamps(name: str, tmp_path: Path) -> Path:
    src = TRACES / name
    opener: Any = gzip.open if src.suffix == ".gz" else open
    with opener(src, "rt") as fh:
        text = fh.read()
    out = tmp_path / src.name.removesuffix(".gz")
    out.write_text(_STAMP.sub(r"\1", text))
    return out


def _twins(path: Path, **options: Any) -> int:
    """Compare the two replays; how many rows the lane replayed."""
    before = lane.ROWS_TAKEN[0]
    fast = replay(lambda: lane_events(path), **options)
    taken = lane.ROWS_TAKEN[0] - before
    ref = replay(lambda: sniff_and_read(path), **options)
    assert fast.to_json() == ref.to_json()
    assert fast.series == ref.series
    assert fast.deltas == ref.deltas
    return taken


FIXTURES = [
    "fill_map_count.exec.strace.gz",
    "fill_map_count.strace.gz",
    "corpus/gcc.strace.gz",
    "corpus/initdb.strace.gz",
    "corpus/java-g1.strace.gz",
    "corpus/java-zgc.strace.gz",
    "corpus/node-workers.strace.gz",
    "corpus/attach2.strace.gz",
]


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_traces_replay_the_same_through_the_lane(name: str, tmp_path: Path) -> None:
    assert _twins(_without_stamps(name, tmp_path), cwd=PROGRAMS) > 0, "no row in the lane"


@pytest.mark.parametrize("limit", [40, 300, 5000])
@pytest.mark.parametrize("name", ["fill_map_count.strace.gz", "corpus/java-zgc.strace.gz"])
def test_low_limits_replay_the_same_through_the_lane(name: str, limit: int, tmp_path: Path) -> None:
    path = _without_stamps(name, tmp_path)
    assert _twins(path, cwd=PROGRAMS, max_map_count=limit) > 0, "no row in the lane"


def _random(seed: int, tmp_path: Path) -> int:
    from test_replay_twin import random_trace

    path = tmp_path / f"random{seed}.strace"
    path.write_text("\n".join(random_trace(seed, n=300)) + "\n")
    return _twins(path, from_maps=STACK_ONLY, max_map_count=12 if seed % 2 else 65530)


@pytest.mark.parametrize("seed", range(80))
def test_random_traces_replay_the_same_through_the_lane(seed: int, tmp_path: Path) -> None:
    # an mlock populates pages: from there on the engine declines the process (BAIL), so
    # some of these traces go through the lane only in part, or not at all
    _random(seed, tmp_path)


def test_random_traces_go_through_the_lane(tmp_path: Path) -> None:
    """The random traces above are not all declined: most have rows in the lane."""
    assert sum(_random(seed, tmp_path) > 0 for seed in range(0, 80, 4)) >= 12


@pytest.mark.parametrize("seed", range(60, 140))
def test_sparse_random_traces_replay_the_same_through_the_lane(seed: int, tmp_path: Path) -> None:
    """Traces without fork or mremap, where the written watch's judgement of each call
    decides whether the written replay runs: the lane's rows are judged as the Python's."""
    from test_replay_twin import sparse_trace

    path = tmp_path / f"sparse{seed}.strace"
    path.write_text("\n".join(sparse_trace(seed)) + "\n")
    _twins(path, from_maps=STACK_ONLY)


def test_results_the_model_does_not_give_are_divergences_in_the_lane_too(tmp_path: Path) -> None:
    """Recorded results the model cannot give (a call that never returned, = ?, or an odd
    value) are compared in the lane as in the Python replay."""
    base = 0x100000000000
    lines = [
        f"1 mmap({base:#x}, 1048576, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED, -1, 0) = {base:#x}"
    ]
    for i in range(0, 200, 2):
        ret = "?" if i % 10 == 0 else ("7" if i % 10 == 4 else "0")
        lines.append(f"1 mprotect({base + i * 4096:#x}, 4096, PROT_READ|PROT_WRITE) = {ret}")
    lines.append(f"1 munmap({base + 4096:#x}, 4096) = 3")
    lines.append(f"1 munmap({base + 3 * 4096:#x}, 4096) = 0")
    path = tmp_path / "odd.strace"
    path.write_text("\n".join(lines) + "\n")
    assert _twins(path, from_maps=STACK_ONLY) > 0
    rep = replay(lambda: lane_events(path), from_maps=STACK_ONLY)
    # the 7's and the munmap's 3 (a call that never returned has nothing to compare)
    assert len(rep.divergences) == 20 + 1


def test_the_written_watch_taint_is_kept_as_in_the_python_replay(tmp_path: Path) -> None:
    """A range that lost PROT_WRITE joins the watch's taint (WrittenWatch.after); a later
    call is judged with it. Here the taint is [A+4K, A+8K) only: the mprotect of R1 then has
    one participant that may hold an anon_vma (W1), so the written replay is skipped. A
    taint reaching below A would make R1 a second one. (W2 is MAP_NORESERVE: without
    VM_ACCOUNT, its losing PROT_WRITE is no question of accounting.)"""
    a = 0x100000010000
    b = 0x100000000000
    fixed = "MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED, -1, 0"
    lines = [
        f"1 mmap({b:#x}, 4096, PROT_READ|PROT_WRITE, {fixed}) = {b:#x}",
        f"1 mmap({b + 4096:#x}, 4096, PROT_READ, {fixed}) = {b + 4096:#x}",
        f"1 mmap({a:#x}, 8192, PROT_READ|PROT_WRITE, MAP_NORESERVE|{fixed}) = {a:#x}",
        f"1 mprotect({a + 4096:#x}, 4096, PROT_READ) = 0",
        f"1 mmap({b + 0x8000:#x}, 4096, PROT_READ, {fixed}) = {b + 0x8000:#x}",
        f"1 mprotect({b + 4096:#x}, 4096, PROT_READ|PROT_EXEC) = 0",
    ]
    path = tmp_path / "taint.strace"
    path.write_text("\n".join(lines) + "\n")
    assert _twins(path, from_maps=STACK_ONLY) > 0
    rep = replay(lambda: lane_events(path), from_maps=STACK_ONLY)
    assert rep.passes == ["limited"]


@pytest.mark.parametrize("limit", ["65530", "1000"])
def test_vmsim_replay_engine_lane_prints_what_engine_python_prints(
    limit: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from vmsim.cli.main import main

    out = {}
    for engine in ("python", "lane"):
        code = main(
            ["replay", str(TRACES / "fill_map_count.exec.strace.gz"), "--engine", engine,
             "--json", "--no-plot", "--cwd", str(PROGRAMS), "--max-map-count", limit]
        )  # fmt: skip
        out[engine] = (code, capsys.readouterr().out)
    assert out["lane"] == out["python"]
    assert out["lane"][0] == 3  # the limit was hit (EXIT_LIMIT)


def test_engine_auto_takes_the_lane_only_for_a_long_trace_it_can_take(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vmsim.cli import replay as cli
    from vmsim.cli.main import main

    def rows(trace: Path) -> int:
        before = lane.ROWS_TAKEN[0]
        main(["replay", str(trace), "--json", "--no-plot", "--cwd", str(PROGRAMS)])
        capsys.readouterr()
        return lane.ROWS_TAKEN[0] - before

    fill = TRACES / "fill_map_count.exec.strace.gz"  # 1.5 MB once decompressed
    assert rows(fill) == 0
    monkeypatch.setattr(cli, "LANE_AUTO_BYTES", 1 << 20)
    assert rows(fill) > 30000
    # with -ttt stamps the lane would take nothing: auto leaves such a trace to Python
    stamped = tmp_path / "stamped.strace"
    stamped.write_text(
        "".join(f"1 1795709776.{i:06d} mprotect({0x1000 * (i + 1):#x}, 4096, PROT_READ) = 0\n"
                for i in range(40000))
    )  # fmt: skip

    def no_lane(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("--engine auto took the lane for a trace it cannot take")

    monkeypatch.setattr(cli, "lane_events", no_lane)
    rows(stamped)


def test_the_lane_may_take_a_trace_without_float_timestamps_or_frames() -> None:
    from vmsim.fastlane.stream import lane_may_take

    assert lane_may_take(["1 mprotect(0x1000, 4096, PROT_READ) = 0", "1 brk(NULL) = 0x5000"])
    assert lane_may_take(["mprotect(0x1000, 4096, PROT_READ) = 0"])
    assert lane_may_take(["1 12:00:01.000001 mprotect(0x1000, 4096, PROT_READ) = 0"])
    assert lane_may_take(["12:00:01 brk(NULL) = 0x5000"])
    assert not lane_may_take(["[pid  7] 1795709776.755996 brk(NULL) = 0x5000"])
    assert not lane_may_take(["1      0.000302 brk(NULL) = 0x5000"])
    assert not lane_may_take(["1 brk(NULL) = 0x5000", " > /lib/libc.so.6(brk+0xb) [0xf00b]"])


@pytest.mark.parametrize("name", FIXTURES)
def test_stamped_fixture_traces_replay_the_same_through_the_lane(name: str) -> None:
    """The fixtures as recorded (-tt stamps, -T times): the lane takes lines with clock
    stamps, and the Python reader's clock goes on from each run's last one."""
    taken = _twins(TRACES / name, cwd=PROGRAMS)
    if "fill" not in name:
        assert taken > 0, "no row in the lane"


def test_a_trace_across_midnight_keeps_its_times_through_the_lane(tmp_path: Path) -> None:
    """-tt times past midnight: the reader adds a day when the clock runs back; across the
    lane's runs it must still (the series carries each point's time)."""
    base = 0x100000000000
    fixed = "MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED, -1, 0"
    lines = [f"1 23:59:58.000001 mmap({base:#x}, 1048576, PROT_READ, {fixed}) = {base:#x}"]
    for i in range(120):
        sec = 58 + i // 20
        frac = f"{i + 10:06d}"
        stamp = f"23:59:{sec:02d}.{frac}" if sec < 60 else f"00:00:{sec - 60:02d}.{frac}"
        if i == 29:  # a call the lane does not take, between runs (before midnight)
            lines.append(f"1 {stamp} madvise({base:#x}, 4096, MADV_DONTNEED) = 0")
        else:
            lines.append(f"1 {stamp} mprotect({base + 2 * i * 4096:#x}, 4096, PROT_NONE) = 0")
    # 13 hours on: not a clock that ran back, so the day must come from the runs before
    lines.append(
        f"1 13:00:00.000001 mmap({base + 0x200000:#x}, 4096, PROT_READ, {fixed}) = {base + 0x200000:#x}"
    )
    path = tmp_path / "midnight.strace"
    path.write_text("\n".join(lines) + "\n")
    assert _twins(path, from_maps=STACK_ONLY) > 0
    rep = replay(lambda: lane_events(path), from_maps=STACK_ONLY)
    times = [t for _, t, _ in rep.series if t is not None]
    assert times == sorted(times) and times[-1] == 86400 + 13 * 3600 + 0.000001
