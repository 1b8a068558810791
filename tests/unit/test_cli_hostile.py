"""Hostile input to the command line: every case ends in a clear one-line error (or the
documented exit status), never a traceback and never silent loss."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vmsim.cli.errors import clip
from vmsim.cli.main import (
    EXIT_FAILURE,
    EXIT_LIMIT,
    EXIT_NO_INPUT,
    EXIT_OK,
    EXIT_USAGE,
    main,
)

TRACES = Path(__file__).parent.parent / "fixtures" / "traces"
ONE_MMAP = "mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000\n"
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}


def vmsim(*argv: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "vmsim", *argv],
        input=stdin,
        capture_output=True,
        env=ENV,
        timeout=300,
    )


def one_line_error(err: str, *words: str) -> None:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0], err


# --- entry points -------------------------------------------------------------------------------


def test_python_m_vmsim_and_version() -> None:
    from importlib.metadata import version

    res = vmsim("--version")
    assert res.returncode == EXIT_OK
    assert res.stdout.decode().strip() == f"vmsim {version('vmsim')}"
    res = vmsim("--help")
    assert res.returncode == EXIT_OK
    assert "exit status" in res.stdout.decode()


# --- standard input and pipes -------------------------------------------------------------------


def test_replay_of_a_pipe_loses_no_line(tmp_path: Path) -> None:
    text = (TRACES / "threads.strace").read_bytes()
    trace = tmp_path / "t.strace"
    trace.write_bytes(text)
    direct = vmsim("replay", str(trace), "--json", "--no-plot")
    piped = vmsim("replay", "/dev/stdin", "--json", stdin=text)
    dash = vmsim("replay", "-", "--json", stdin=text)
    want = json.loads(direct.stdout)
    assert want["lines"] > 800
    for res in (piped, dash):
        got = json.loads(res.stdout)
        assert res.returncode == direct.returncode, res.stderr
        assert (got["lines"], got["calls"]) == (want["lines"], want["calls"])
        assert got["peak_map_count"] == want["peak_map_count"]
        assert got["plot"] is None  # nothing written next to /dev/stdin
    assert not list(Path("/dev").glob("stdin.map_count.png"))


def test_replay_of_a_gzipped_pipe(tmp_path: Path) -> None:
    data = gzip.compress(ONE_MMAP.encode())
    res = vmsim("replay", "-", "--json", stdin=data)
    assert res.returncode == EXIT_OK, res.stderr
    assert json.loads(res.stdout)["calls"] == 1


# --- corrupt input ------------------------------------------------------------------------------


def test_truncated_gzip_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = gzip.compress((ONE_MMAP * 5000).encode())
    bad = tmp_path / "cut.strace.gz"
    bad.write_bytes(whole[: len(whole) // 2])
    assert main(["replay", str(bad), "--no-plot"]) == EXIT_FAILURE
    one_line_error(capsys.readouterr().err, str(bad), "corrupt or truncated gzip")


def test_corrupt_gzip_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 4)
    assert main(["replay", str(bad), "--no-plot"]) == EXIT_FAILURE
    one_line_error(capsys.readouterr().err, str(bad), "gzip")


def test_from_maps_of_binary_garbage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.strace"
    trace.write_text(ONE_MMAP)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\xc0\xff\xfe" + bytes(range(256)))
    assert main(["replay", str(trace), "--from-maps", str(garbage), "--no-plot"]) == EXIT_FAILURE
    one_line_error(capsys.readouterr().err, "--from-maps", "not UTF-8")


# --- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--plot", "x.txt"], ["--plot", ".png"]),
        (["--plot", "noext"], ["--plot", ".png"]),
        (["--ram", "0"], ["--ram", "8K..4P"]),
        (["--ram", "4K"], ["--ram", "8K..4P"]),
        (["--swap", "10P"], ["--swap", "16T"]),
        (["--swap", "4K"], ["--swap", "16T"]),
        (["--max-map-count", str(2**31)], ["--max-map-count", "2147483647"]),
        (["--max-map-count", str(2**70)], ["--max-map-count", "2147483647"]),
        (["--max-map-count", "-1"], ["--max-map-count", "0..2147483647"]),
        (["--rlimit-as", "lots"], ["--rlimit-as", "not a size"]),
    ],
)
def test_replay_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], words: list[str]
) -> None:
    trace = tmp_path / "t.strace"
    trace.write_text(ONE_MMAP)
    assert main(["replay", str(trace), *argv]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for w in words:
        assert w in err


def test_replay_argparse_errors_exit_2(tmp_path: Path) -> None:
    trace = tmp_path / "t.strace"
    trace.write_text(ONE_MMAP)
    for argv in (["--ram", "0"], ["--swap", "10P"], ["--max-map-count", str(2**31)]):
        res = vmsim("replay", str(trace), *argv)
        assert res.returncode == EXIT_USAGE
        assert b"Traceback" not in res.stderr


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-1", "x"])
def test_top_interval_must_be_finite_and_positive(value: str) -> None:
    res = vmsim("top", "--interval", value, "--once")
    assert res.returncode == EXIT_USAGE
    assert b"--interval" in res.stderr and b"Traceback" not in res.stderr


@pytest.mark.parametrize("value", [str(2**31), "-1", "0"])
def test_maps_and_top_max_map_count_range(value: str) -> None:
    for cmd in (["maps", "1"], ["top", "--once"]):
        res = vmsim(*cmd, "--max-map-count", value)
        assert res.returncode == EXIT_USAGE, res.stderr
        assert b"1..2147483647" in res.stderr


@pytest.mark.parametrize(
    ("option", "kind", "words"),
    [
        ("--exe", "missing", ["--exe", "no such file"]),
        ("--exe", "dir", ["--exe", "not a regular file"]),
        ("--cwd", "missing", ["--cwd", "no such directory"]),
        ("--cwd", "file", ["--cwd", "not a directory"]),
    ],
)
def test_exe_and_cwd_must_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, kind: str, words: list[str]
) -> None:
    trace = tmp_path / "t.strace"
    trace.write_text(ONE_MMAP)
    target = {"missing": tmp_path / "nope", "dir": tmp_path, "file": trace}[kind]
    assert main(["replay", str(trace), option, str(target), "--no-plot"]) == EXIT_FAILURE
    one_line_error(capsys.readouterr().err, *words)


# --- user text is printed as is ----------------------------------------------------------------


def test_markup_and_emoji_codes_in_a_trace_print_literally(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "t.strace"
    trace.write_text(
        ONE_MMAP + "mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0"
        ") = 0x7f0000010000\n > :x: [bold]frame[/bold] [heap]\n"
    )
    assert main(["replay", str(trace), "--no-plot", "--no-color"]) == EXIT_OK
    out = capsys.readouterr().out
    assert ":x: [bold]frame[/bold] [heap]" in " ".join(out.split())
    assert "\N{CROSS MARK}" not in out


def test_a_huge_bad_line_is_not_echoed_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.maps"
    bad.write_text("garbage " * 25_000 + "\n")
    assert main(["maps", str(bad)]) == EXIT_FAILURE
    err = capsys.readouterr().err
    one_line_error(err, "more characters)")
    assert len(err) < 1000


def test_clip_says_how_much_was_cut() -> None:
    assert clip("abc", 5) == "abc"
    assert clip("x" * 205, 200) == "x" * 200 + "... (5 more characters)"


# --- exit statuses ------------------------------------------------------------------------------


def test_replay_exit_statuses(tmp_path: Path) -> None:
    ok = tmp_path / "ok.strace"
    ok.write_text(ONE_MMAP)
    assert main(["replay", str(ok), "--no-plot", "--json"]) == EXIT_OK
    # the estimated fresh-process layout holds more VMAs than this limit: the mmap fails
    assert main(["replay", str(ok), "--no-plot", "--json", "--max-map-count", "5"]) == EXIT_LIMIT
    noise = tmp_path / "noise.strace"
    noise.write_bytes(bytes((i * 7919 + 13) % 256 for i in range(20_000)))
    assert main(["replay", str(noise), "--no-plot", "--json"]) == EXIT_NO_INPUT
    empty = tmp_path / "empty.strace"
    empty.write_text("")
    assert main(["replay", str(empty), "--no-plot", "--json"]) == EXIT_NO_INPUT


def test_maps_over_its_limit_exits_3(tmp_path: Path) -> None:
    maps = tmp_path / "m.maps"
    maps.write_text(
        "".join(
            f"{0x10000 + 0x2000 * i:x}-{0x11000 + 0x2000 * i:x} rw-p 00000000 00:00 0\n"
            for i in range(10)
        )
    )
    assert main(["maps", str(maps), "--json", "--max-map-count", "20"]) == EXIT_OK
    assert main(["maps", str(maps), "--json", "--max-map-count", "10"]) == EXIT_LIMIT
    assert main(["maps", str(maps), "--json", "--max-map-count", "5"]) == EXIT_LIMIT
