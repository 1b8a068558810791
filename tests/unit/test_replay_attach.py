"""strace -f -p A -p B: the tasks that predate the trace go to their own process
(vmsim.trace.attach), given one snapshot per attached process (``from_maps={pid: text}``,
``--from-maps PID=FILE``). The real recording is in the corpus (attach2, attach2.k:
tests/unit/test_corpus.py checks every task against /proc/PID/task taken at the attach)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vmsim.cli.main import main
from vmsim.trace import read_strace
from vmsim.trace.replay import Replayer, replay

RW, ANON = "PROT_READ|PROT_WRITE", "MAP_PRIVATE|MAP_ANONYMOUS"
# two processes far apart, as ASLR places them
A_MAPS = (
    "7f1000000000-7f1000100000 rw-p 00000000 00:00 0 \n"
    "7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]\n"
)
B_MAPS = (
    "7f5000000000-7f5000100000 rw-p 00000000 00:00 0 \n"
    "7ffe00000000-7ffe00021000 rw-p 00000000 00:00 0                          [stack]\n"
)
TRACE = [
    # a thread of B maps just below B's area, a thread of A changes A's mapping
    f"21 mmap(NULL, 65536, {RW}, {ANON}, -1, 0) = 0x7f4ffff00000",
    "11 mprotect(0x7f1000010000, 4096, PROT_READ) = 0",
    # B's own mapping, then A's: every call succeeds only in its own process
    "22 madvise(0x7f5000000000, 8192, MADV_DONTNEED) = 0",
    "10 munmap(0x7f1000020000, 4096) = 0",
    "20 mprotect(0x7f5000002000, 4096, PROT_NONE) = 0",
]


def _replayer() -> Replayer:
    return Replayer(from_maps={10: A_MAPS, 20: B_MAPS}, known_children=set())


def test_each_older_task_goes_to_the_process_its_address_belongs_to() -> None:
    r = _replayer()
    rep = r.feed(read_strace(TRACE))
    assert rep.divergences == [] and rep.dropped_count == 0
    assert rep.processes == 2
    a, b = r.tasks[10], r.tasks[20]
    assert a is not b
    assert r.tasks[11] is a and r.tasks[21] is b and r.tasks[22] is b
    # A: its mapping in 3 pieces by the mprotect, the last in 2 by the munmap hole; the stack
    assert a.map_count == 5
    # B: the thread's new mapping (not adjacent), its mapping in 3 pieces, the stack
    assert b.map_count == 5
    assert any("task 21" in e and "pid 20" in e for e in rep.estimates)


def test_a_range_that_is_busy_rules_a_process_out() -> None:
    # the kernel chose a range that A has mapped: however near A it is, the caller is B
    lines = [f"21 mmap(NULL, 65536, {RW}, {ANON}, -1, 0) = 0x7f1000000000"]
    r = _replayer()
    rep = r.feed(read_strace(lines))
    assert rep.divergences == []
    assert r.tasks[21] is r.tasks[20]
    assert r.tasks[20].map_count == 3


def test_an_address_that_is_not_mapped_rules_a_process_out() -> None:
    # an mprotect that succeeded right where A's mapping ends (as near A as B, and A comes
    # first): only B maps the page
    a_maps = "7f1000100000-7f1000200000 rw-p 00000000 00:00 0 \n" + A_MAPS.split("\n", 1)[1]
    b_maps = "7f1000200000-7f1000201000 rw-p 00000000 00:00 0 \n" + B_MAPS
    r = Replayer(from_maps={10: a_maps, 20: b_maps}, known_children=set())
    rep = r.feed(read_strace(["21 mprotect(0x7f1000200000, 4096, PROT_READ) = 0"]))
    assert rep.divergences == []
    assert r.tasks[21] is r.tasks[20]


def test_a_task_whose_first_call_names_no_address_goes_to_the_first_and_says_so() -> None:
    r = _replayer()
    rep = r.feed(read_strace(["31 brk(NULL) = 0", "31 exit(0) = ?"]))
    assert r.tasks.get(31) in (None, r.tasks[10])
    assert any("task 31" in e and "no address in its first call fits" in e for e in rep.estimates)


def test_one_snapshot_still_means_the_first_process() -> None:
    rep = replay(lambda: read_strace(TRACE[1:2]), from_maps=A_MAPS)
    assert rep.divergences == [] and rep.processes == 1


def test_cli_from_maps_pid_equals_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.strace"
    trace.write_text("\n".join(TRACE) + "\n")
    (tmp_path / "a.maps").write_text(A_MAPS)
    (tmp_path / "b.maps").write_text(B_MAPS)
    argv = ["replay", str(trace), "--json", "--no-plot"]
    code = main(
        [
            *argv,
            "--from-maps",
            f"10={tmp_path / 'a.maps'}",
            "--from-maps",
            f"20={tmp_path / 'b.maps'}",
        ]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert data["divergences"] == [] and data["processes"] == 2


@pytest.mark.parametrize("bad", ["x=a.maps", "10=", "a.maps"])
def test_cli_from_maps_several_need_pids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    trace = tmp_path / "t.strace"
    trace.write_text(TRACE[0] + "\n")
    (tmp_path / "a.maps").write_text(A_MAPS)
    argv = ["replay", str(trace), "--no-plot", "--from-maps", f"10={tmp_path / 'a.maps'}"]
    assert main([*argv, "--from-maps", bad]) != 0
    err = capsys.readouterr().err
    assert "--from-maps" in err and "PID=FILE" in err


def test_without_a_snapshot_each_older_tasks_join_the_first_and_the_report_says_how_to_fix() -> (
    None
):
    rep = replay(lambda: read_strace(TRACE[:2]), from_maps=A_MAPS)
    # task 21 is the first traced process (the snapshot's), task 11 joins it
    notes = [e for e in rep.estimates if "existed before the trace began" in e]
    assert len(notes) == 1 and notes[0].startswith("task 11:")
    assert "--from-maps PID=SNAPSHOT" in notes[0]
