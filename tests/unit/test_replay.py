"""vmsim replay on real recorded traces: the model must agree with every recorded result.

The traced programs are compiled from tests/fixtures/programs with the command record.sh used
(gcc is deterministic on one machine), so the replay loads the same ELF layout the kernel did.
Expected values come from the trace text (the recorded return values) and from spec §1.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vmsim.cli.main import EXIT_LIMIT, main
from vmsim.trace import read_strace, sniff_and_read
from vmsim.trace.replay import call_site, replay

FIXTURES = Path(__file__).parent.parent / "fixtures"
TRACES = FIXTURES / "traces"
PROGRAMS = FIXTURES / "programs"

needs_linux = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the traced binaries are Linux ELF files"
)


@pytest.fixture(scope="module")
def bindir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: cannot rebuild the traced programs")
    if not Path("/lib64/ld-linux-x86-64.so.2").exists():
        pytest.skip("no x86-64 dynamic loader on this machine")
    out = tmp_path_factory.mktemp("bin")
    for prog in ("threads", "arenas", "fill_map_count", "tiny"):
        subprocess.run(
            ["gcc", "-O1", "-g", "-pthread", "-o", str(out / prog), str(PROGRAMS / f"{prog}.c")],
            check=True,
        )
    return out


def run_replay(name: str, bindir: Path, **kw: object):  # type: ignore[no-untyped-def]
    path = TRACES / name
    return replay(lambda: sniff_and_read(path), cwd=bindir, **kw)  # type: ignore[arg-type]


@needs_linux
def test_fill_to_limit_agrees_with_every_recorded_result(bindir: Path) -> None:
    rep = run_replay("fill_map_count.exec.strace.gz", bindir)
    assert rep.problems == []
    assert rep.divergences == [], [d.to_json() for d in rep.divergences[:5]]
    # the recorded trace: line 32769 is the mprotect that fails with ENOMEM (partial split),
    # line 32770 the munmap strictly inside a VMA that fails, 32771 a whole-VMA munmap: ok
    with gzip.open(TRACES / "fill_map_count.exec.strace.gz", "rt") as fh:
        lines = fh.read().splitlines()
    assert "mprotect(" in lines[32768] and "= -1 ENOMEM" in lines[32768]
    assert "munmap(" in lines[32769] and "= -1 ENOMEM" in lines[32769]
    assert "munmap(" in lines[32770] and lines[32770].split("= ")[1].startswith("0")
    f = rep.first_failure
    assert f is not None
    assert (f.lineno, f.errno, f.cause) == (32769, "ENOMEM", "map_count")
    assert f.map_count == 65529  # M - 1: the middle mprotect splits once, then fails (spec §1)
    assert rep.peak_map_count == 65530
    # every call succeeds once the limit leaves room for the two splits of that mprotect,
    # the later ones it enables, and the munmap inside a VMA
    assert rep.min_max_map_count > 65530
    assert rep.placements == rep.placements_agreed > 0


@needs_linux
def test_fill_at_the_smallest_limit_has_no_failure(bindir: Path) -> None:
    first = run_replay("fill_map_count.exec.strace.gz", bindir)
    ok = run_replay("fill_map_count.exec.strace.gz", bindir, max_map_count=first.min_max_map_count)
    assert ok.first_failure is None
    # now the two calls the kernel refused succeed: exactly those lines diverge
    assert [d.lineno for d in ok.divergences] == [32769, 32770]
    one_less = run_replay(
        "fill_map_count.exec.strace.gz", bindir, max_map_count=first.min_max_map_count - 1
    )
    assert one_less.first_failure is not None


@needs_linux
@pytest.mark.parametrize(
    "name",
    [
        "threads.strace",
        "arenas.strace.gz",
        "python.strace.gz",
        "threads.raw.strace",
        "arenas.ttt.strace",
        "arenas.r.strace",
        "threads-ff",
        "threads.stderr.strace",
    ],
)
def test_real_traces_replay_without_divergence(name: str, bindir: Path) -> None:
    rep = run_replay(name, bindir)
    assert rep.problems == []
    assert rep.divergences == [], [d.to_json() for d in rep.divergences[:5]]
    assert rep.first_failure is None
    assert rep.calls > 50


@needs_linux
def test_threads_create_stack_and_guard_vmas(bindir: Path) -> None:
    rep = run_replay("threads.strace", bindir)
    # threads.c starts 20 pthreads: each stack is mmap'd (MAP_STACK) and split by the guard
    # mprotect, 2 VMAs per thread (field notes §0)
    assert rep.vmas_by_cause["thread stack"] == 40


@needs_linux
def test_arenas_are_attributed(bindir: Path) -> None:
    rep = run_replay("arenas.strace.gz", bindir)
    assert rep.vmas_by_cause["malloc arena"] >= 8


def test_estimated_layout_is_flagged() -> None:
    rep = replay(lambda: sniff_and_read(TRACES / "threads.ltrace"))
    assert any("estimated" in note for note in rep.estimates)


def test_malformed_lines_are_counted_with_line_numbers() -> None:
    lines = [
        '100 execve("/nonexistent/prog", ["prog"], 0x7ffc /* 1 var */) = 0',
        "100 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f00",
        "100 munmap(0x7f00000000, 4096",  # truncated
        "100 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000100000",
    ]
    rep = replay(lambda: read_strace(lines))
    assert [p.lineno for p in rep.problems] == [3]
    assert rep.calls == 2
    assert any("/nonexistent/prog" in note for note in rep.estimates)


def test_call_site_skips_libc_frames() -> None:
    frames = (
        "/usr/lib/x86_64-linux-gnu/libc.so.6(__mmap+0x13) [0x1019b3]",
        "/usr/lib/x86_64-linux-gnu/libc.so.6(pthread_create+0x9a) [0x8a1ea]",
        "/tmp/threads(main+0x3c) [0x11bc]",
    )
    assert call_site(frames) == "/tmp/threads(main+0x3c) [0x11bc]"


@needs_linux
def test_cli_json_and_plot(
    bindir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "mc.png"
    code = main(
        [
            "replay",
            str(TRACES / "fill_map_count.exec.strace.gz"),
            "--cwd",
            str(bindir),
            "--json",
            "--plot",
            str(png),
        ]
    )
    assert code == EXIT_LIMIT  # the fill reaches the limit: a call fails
    data = json.loads(capsys.readouterr().out)
    for key in ("calls", "divergences", "peak_map_count", "first_failure", "min_max_map_count"):
        assert key in data
    assert data["first_failure"]["line"] == 32769
    assert data["first_failure"]["cause"] == "map_count"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_strict_fails_on_a_malformed_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "bad.strace"
    trace.write_text(
        "mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f00001000\nmunmap(0x7f00\n"
    )
    assert main(["replay", str(trace), "--strict", "--no-plot", "--json"]) == 1
    assert "line 2" in capsys.readouterr().err


def test_cli_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "/nonexistent.strace", "--no-plot"]) == 1
    assert "no such file" in capsys.readouterr().err


@needs_linux
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_live_recording_replays_exactly(bindir: Path, tmp_path: Path) -> None:
    out = tmp_path / "live.strace"
    subprocess.run(
        [
            "strace",
            "-f",
            "-tt",
            "-T",
            "-y",
            "-e",
            "trace=%memory,%process",
            "-o",
            str(out),
            "./threads",
        ],
        cwd=bindir,
        check=True,
        capture_output=True,
    )
    rep = replay(lambda: sniff_and_read(out), cwd=bindir)
    assert rep.problems == []
    assert rep.divergences == []
    assert rep.vmas_by_cause["thread stack"] == 40


@needs_linux
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_snapshot_then_attach_replays_from_maps(tmp_path: Path) -> None:
    """`strace -p` on a running process + its smaps taken just before: --from-maps."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    exe = tmp_path / "wait_then_map"
    subprocess.run(
        ["gcc", "-O1", "-pthread", "-o", str(exe), str(PROGRAMS / "wait_then_map.c")], check=True
    )
    out = tmp_path / "attach.strace"
    with subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            assert proc.stdout.readline() == b"ready\n"
            smaps = Path(f"/proc/{proc.pid}/smaps").read_text()
            with subprocess.Popen(
                [
                    "strace",
                    "-f",
                    "-tt",
                    "-T",
                    "-y",
                    "-e",
                    "trace=%memory,%process",
                    "-o",
                    str(out),
                    "-p",
                    str(proc.pid),
                ],
                stderr=subprocess.PIPE,
            ) as tracer:
                assert tracer.stderr is not None
                assert b"attached" in tracer.stderr.readline()
                proc.stdin.write(b"x")
                proc.stdin.flush()
                assert proc.wait(timeout=30) == 0
                tracer.wait(timeout=30)
        finally:
            proc.kill()
    rep = replay(lambda: sniff_and_read(out), from_maps=smaps)
    assert rep.problems == []
    assert rep.divergences == [], [d.to_json() for d in rep.divergences[:5]]
    # mmap_base is inferred from the snapshot; only mmaps racing between threads (whose kernel
    # order strace cannot show) may be placed elsewhere by the model
    assert rep.placements == 9
    assert rep.placements_agreed >= 5
    # 4 threads: stack + guard each; each worker splits its 64-page area 16 times (+32) and
    # punches one hole inside a VMA (+1)
    assert rep.vmas_by_cause["thread stack"] == 8


def test_clone_flags_decide_thread_or_fork() -> None:
    """clone() as strace prints it (child_stack first, then flags): CLONE_VM shares the
    address space (a thread), no CLONE_VM copies it (fork)."""
    lines = [
        "100 mmap(0x200000000000, 16384, PROT_READ|PROT_WRITE, "
        "MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED, -1, 0) = 0x200000000000",
        "100 clone(child_stack=0x7f0000001000, flags=CLONE_VM|CLONE_FS|CLONE_FILES|"
        "CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM|CLONE_SETTLS|CLONE_PARENT_SETTID|"
        "CLONE_CHILD_CLEARTID, parent_tid=[101], tls=0x7f0000002000, "
        "child_tidptr=0x7f0000003000) = 101",
        "100 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, "
        "child_tidptr=0x7f0000004000) = 102",
        # the thread unmaps the shared mapping: gone for the parent too, not for the fork child
        "101 munmap(0x200000000000, 16384) = 0",
        "100 mprotect(0x200000000000, 4096, PROT_READ) = -1 ENOMEM (Cannot allocate memory)",
        "102 mprotect(0x200000000000, 4096, PROT_READ) = 0",
    ]
    rep = replay(lambda: read_strace(lines))
    assert rep.divergences == [], [d.to_json() for d in rep.divergences]
    assert rep.processes == 2


def test_unmodelled_calls_are_reported() -> None:
    """mbind is not modelled: each successful one is a dropped call with its line, never
    silent; a failed one changed nothing and is not dropped."""
    lines = [
        "mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000",
        "mbind(0x7f0000000000, 8192, MPOL_BIND, [0x1], 2, 0) = 0",
        "mbind(0x7f0000000000, 8192, MPOL_BIND, [0x1], 2, 0) = -1 EINVAL (Invalid argument)",
    ]
    rep = replay(lambda: read_strace(lines))
    assert [(d.lineno, d.reason) for d in rep.dropped] == [(2, "memory policies are not modelled")]
    assert rep.dropped_count == 1
    assert rep.to_json()["dropped"][0]["line"] == 2
