"""``vmsim maps`` and ``vmsim top`` end to end through main([...]).

Files: hand-written snapshots and the hs_err fixture. Live: a C program that starts exactly
``THREADS`` pthreads, each of which calls malloc once (glibc gives each new thread its own arena
until 8 x CPUs, and at least 8 arenas in all), then waits; Linux is the oracle for map_count
(``wc -l /proc/PID/maps`` minus the [vsyscall] line).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vmsim.cli.main import EXIT_FAILURE, EXIT_LIMIT, EXIT_OK, EXIT_USAGE, main

DATA = Path(__file__).parent / "data"
HS_ERR = DATA / "hs_err_pid31337.log"
THREADS = 7

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


def run_json(
    capsys: pytest.CaptureFixture[str], *argv: str, status: int = EXIT_OK
) -> dict[str, Any]:
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    assert code == status, captured.err
    data: dict[str, Any] = json.loads(captured.out)
    return data


def test_maps_file_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "server.maps"
    path.write_text(SMALL)
    data = run_json(capsys, "maps", str(path), "--max-map-count", "9", "--all")
    assert [v["kind"] for v in data["vmas"]] == SMALL_KINDS
    assert [v["counted"] for v in data["vmas"]] == [True] * 7 + [False]
    assert data["lines"] == 8
    assert data["map_count"] == 7
    assert data["max_map_count"] == 9
    assert data["headroom"] == 2
    assert data["thread_stacks"] == 2
    assert data["more_threads"] == 1  # 2 VMAs left, 2 per thread
    assert data["more_arena_heaps"] == 1
    assert data["verdict"]["level"] == "warning"  # 7 of 9: 78% used
    # [vsyscall] is the only special VMA and it is not counted: no "special" entry.
    assert data["counts"] == {
        "program": 1,
        "heap": 1,
        "main_stack": 1,
        "thread_stack": 2,
        "thread_guard": 2,
    }
    assert data["vmas"][2]["start"] == "0x7fa28ba68000"


def test_maps_json_without_all_has_no_vma_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "server.maps"
    path.write_text(SMALL)
    data = run_json(capsys, "maps", str(path), "--max-map-count", "65530")
    assert "vmas" not in data
    assert data["verdict"]["text"] == "OK: 65,523 VMAs left (0.0% of vm.max_map_count used)"


def test_maps_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(SMALL))
    data = run_json(capsys, "maps", "-", "--max-map-count", "100", "--all")
    assert data["source"] == "<stdin>"
    assert [v["kind"] for v in data["vmas"]] == SMALL_KINDS


def test_maps_default_limit_is_this_machines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "server.maps"
    path.write_text(SMALL)
    data = run_json(capsys, "maps", str(path))
    assert data["max_map_count"] == int(Path("/proc/sys/vm/max_map_count").read_text())
    assert data["max_map_count_source"] == "/proc/sys/vm/max_map_count"
    assert any("this machine" in note for note in data["notes"])


def test_maps_hs_err(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "maps", str(HS_ERR), status=EXIT_LIMIT)  # at its limit
    assert data["source_type"] == "hs_err"
    assert data["max_map_count"] == 74
    assert data["map_count"] == 74
    assert data["verdict"]["level"] == "at_limit"
    assert data["threads"] == 13
    assert data["thread_stacks"] == 13


def test_maps_rich_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "server.maps"
    path.write_text(SMALL)
    code = main(["maps", str(path), "--max-map-count", "8", "--all", "--no-color"])
    out = capsys.readouterr().out
    assert code == EXIT_OK
    assert "WARNING: 88% of vm.max_map_count used, 1 VMA left" in out
    assert "[vsyscall]" in out  # escaped, not eaten as markup
    assert "thread_guard" in out and "Every VMA" in out


def test_maps_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.maps"
    bad.write_text(SMALL + "garbage here\n")
    assert main(["maps", str(bad)]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert f"{bad}: line 9:" in err
    assert main(["maps", str(tmp_path / "missing.maps")]) == EXIT_FAILURE
    capsys.readouterr()
    assert main(["maps", "999999999"]) == EXIT_FAILURE  # above pid_max: no such process
    assert "no process with PID 999999999" in capsys.readouterr().err
    assert main(["maps", str(bad), "--max-map-count", "0"]) == EXIT_USAGE
    assert main(["top", "--once", "--interval", "0"]) == EXIT_USAGE


# --- live ---------------------------------------------------------------------------------

THREADS_C = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static pthread_barrier_t all_started;

static void *worker(void *arg) {
    void *volatile p = malloc(1000); /* the thread's first malloc: a new arena */
    (void)p;
    pthread_barrier_wait(&all_started);
    for (;;) pause();
    return arg;
}

int main(int argc, char **argv) {
    int n = atoi(argv[1]);
    pthread_t t;
    pthread_barrier_init(&all_started, NULL, n + 1);
    for (int i = 0; i < n; i++)
        if (pthread_create(&t, NULL, worker, NULL)) return 1;
    pthread_barrier_wait(&all_started);
    puts("ready");
    fflush(stdout);
    for (;;) pause();
}
"""


@pytest.fixture(scope="module")
def threaded_pid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    if not sys.platform.startswith("linux"):
        pytest.skip("needs Linux /proc")
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("needs gcc to build the threaded test program")
    work = tmp_path_factory.mktemp("threads")
    (work / "threads.c").write_text(THREADS_C)
    subprocess.run(
        [gcc, "-O2", "-pthread", "-o", str(work / "threads"), str(work / "threads.c")],
        check=True,
        capture_output=True,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    proc = subprocess.Popen(
        [str(work / "threads"), str(THREADS)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def linux_map_count(pid: int) -> int:
    """``wc -l /proc/PID/maps`` minus the [vsyscall] line (field notes §0)."""
    out = subprocess.run(
        ["wc", "-l", f"/proc/{pid}/maps"], check=True, capture_output=True, text=True
    ).stdout
    return int(out.split()[0]) - 1


@pytest.mark.kernel
def test_maps_live_process(threaded_pid: int, capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "maps", str(threaded_pid), "--all")
    assert data["source_type"] == "pid"
    assert data["map_count"] == linux_map_count(threaded_pid)
    assert data["threads"] == THREADS + 1
    assert data["thread_stacks"] == THREADS
    kinds = [v["kind"] for v in data["vmas"]]
    assert kinds.count("thread_guard") == THREADS
    assert kinds.count("thread_stack") == THREADS
    assert data["arena_heaps"] == THREADS
    assert data["vmas_per_thread"] == 2
    assert data["notes"] == []  # as many stacks as threads off the main stack
    assert data["program"].endswith("/threads")
    assert data["max_map_count"] == int(Path("/proc/sys/vm/max_map_count").read_text())
    assert data["more_threads"] == (data["max_map_count"] - data["map_count"]) // 2


@pytest.mark.kernel
def test_top_finds_the_live_process(threaded_pid: int, capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "top", "--once")
    rows = {row["pid"]: row for row in data["processes"]}
    assert threaded_pid in rows
    row = rows[threaded_pid]
    assert row["map_count"] == linux_map_count(threaded_pid)
    assert row["threads"] == THREADS + 1
    assert row["comm"] == "threads"
    assert row["headroom"] == data["max_map_count"] - row["map_count"]
    counts = [r["map_count"] for r in data["processes"]]
    assert counts == sorted(counts, reverse=True)


@pytest.mark.kernel
def test_top_rich_once(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["top", "--once", "-n", "3", "--no-color"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "map_count" in out and "headroom" in out
