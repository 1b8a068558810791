"""``vmsim record`` (issue 12 item 2): real programs recorded under valgrind lackey, read back
by the readers, and checked against figures that do not come from vmsim: lackey's own
``guest instrs`` count, the address a C program prints of its own array, the kernel's
/proc/PID/maps and the guest's system calls as valgrind reports them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vmsim.cli.errors import CliError
from vmsim.cli.main import main
from vmsim.cli.record import record
from vmsim.memtrace.readers import open_memtrace
from vmsim.memtrace.records import KIND_INSTR, KIND_STORE
from vmsim.trace.events import Syscall
from vmsim.trace.strace import read_strace

needs_valgrind = pytest.mark.skipif(
    shutil.which("valgrind") is None, reason="valgrind is not installed"
)

STORES_C = r"""
#include <stdio.h>
#include <stdlib.h>
#define N %d
int main(void) {
    volatile int *a = malloc(N * sizeof(int));
    for (int i = 0; i < N; i++)
        a[i] = i;
    printf("%%p\n", (void *)a);
    return a[N - 1] == N - 1 ? 0 : 1;
}
"""
N_STORES = 5000

FORK_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>
#define N 5000
int main(void) {
    volatile int *a = malloc(N * sizeof(int));
    pid_t child = fork();
    for (int i = 0; i < N; i++)  /* parent and child both write the array */
        a[i] = i;
    if (child == 0)
        _exit(0);
    waitpid(child, 0, 0);
    printf("%p %d\n", (void *)a, (int)child);
    return 0;
}
"""


def guest_instrs(trace_path: Path) -> int:
    """Lackey's own count of the guest's instructions (its ``==PID==   guest instrs: N``)."""
    for event in open_memtrace(trace_path).events():
        m = re.search(r"guest instrs:\s+([\d,]+)$", event.text)
        if m:
            return int(m.group(1).replace(",", ""))
    raise AssertionError("no guest instrs line")


def kinds(trace_path: Path) -> np.ndarray:
    return np.concatenate([c.kind for c in open_memtrace(trace_path)])


def layout_ranges(out: Path) -> tuple[np.ndarray, np.ndarray]:
    """[start, end) of every mapping in OUT.maps, of every mmap/mremap result and of the
    brk area in OUT.strace."""
    ranges = []
    for line in Path(f"{out}.maps").read_text().splitlines():
        lo, hi = line.split()[0].split("-")
        ranges.append((int(lo, 16), int(hi, 16)))
    brk: list[int] = []
    with open(f"{out}.strace") as f:
        for ev in read_strace(f):
            if not isinstance(ev, Syscall) or ev.ret is None or ev.ret < 0:
                continue
            if ev.name == "mmap":
                length = ev.args[1]
                assert isinstance(length, int)
                ranges.append((ev.ret, ev.ret + length))
            elif ev.name == "mremap":
                length = ev.args[2]
                assert isinstance(length, int)
                ranges.append((ev.ret, ev.ret + length))
            elif ev.name == "brk":
                brk.append(ev.ret)
    if brk:
        ranges.append((min(brk), max(brk)))
    ranges.sort()
    return np.array([a for a, _ in ranges], np.uint64), np.array([b for _, b in ranges], np.uint64)


def outside_layout(out: Path) -> int:
    """Accesses of the trace that fall in no range of :func:`layout_ranges`."""
    starts, ends = layout_ranges(out)
    missing = 0
    for c in open_memtrace(out):
        i = np.searchsorted(starts, c.addr, side="right") - 1
        inside = np.zeros(len(c.addr), bool)
        # ranges may overlap (a snapshot and a later call): try the few that start below
        for back in range(8):
            j = i - back
            ok = j >= 0
            jj = np.where(ok, j, 0)
            inside |= ok & (c.addr >= starts[jj]) & (c.addr < ends[jj])
        missing += int((~inside).sum())
    return missing


@pytest.mark.slow
@needs_valgrind
def test_record_bin_true(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "true.lackey.zst"
    assert main(["record", "-o", str(out), "--json", "--", "/bin/true"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["exit_status"] == 0
    trace = open_memtrace(out)
    assert (trace.format, trace.compression) == ("lackey", "zst")
    assert trace.header["command"] == "/bin/true"
    k = kinds(out)
    # every instruction lackey counted is an I record
    assert int((k == KIND_INSTR).sum()) == guest_instrs(out) == summary["records_by_kind"]["I"]
    assert len(k) == summary["records"]
    # ld.so alone runs tens of thousands of instructions before main
    assert (k == KIND_INSTR).sum() > 20_000
    assert (k == KIND_STORE).sum() > 1_000
    maps = Path(f"{out}.maps").read_text()
    assert "ld-linux-x86-64.so.2" in maps and "lackey-amd64-linux" in maps
    # ASLR off: the kernel put valgrind's own stack at the top of the user address space
    # (47-bit: 0x7ffffffff000), not at a random offset below it
    stack = [line for line in maps.splitlines() if line.endswith("[stack]")]
    assert len(stack) == 1 and stack[0].split()[0].endswith("-7ffffffff000")
    with open(f"{out}.strace") as f:
        calls = [ev for ev in read_strace(f) if isinstance(ev, Syscall)]
    names = {ev.name for ev in calls}
    assert {"mmap", "mprotect", "brk", "exit_group"} <= names
    assert outside_layout(out) == 0


@pytest.mark.slow
@needs_valgrind
def test_record_c_stores_land_in_the_array(tmp_path: Path) -> None:
    exe = compile_c(tmp_path, "stores", STORES_C % N_STORES)
    out = tmp_path / "stores.lackey.zst"
    printed = tmp_path / "stdout"
    # the program prints its array's address (in valgrind's layout) on its stdout
    with open(printed, "w") as f:
        proc = subprocess.run(
            [sys.executable, "-m", "vmsim", "record", "-o", str(out), "--", str(exe)],
            stdout=f,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr
    array = int(printed.read_text().split()[0], 16)
    stores = np.zeros(0, np.uint64)
    sizes = np.zeros(0, np.uint16)
    for c in open_memtrace(out):
        hit = (c.kind == KIND_STORE) & (c.addr >= array) & (c.addr < array + 4 * N_STORES)
        stores = np.concatenate([stores, c.addr[hit]])
        sizes = np.concatenate([sizes, c.size[hit]])
    assert len(stores) >= N_STORES
    assert set(sizes.tolist()) == {4}
    assert len(np.unique(stores)) == N_STORES  # a[0] .. a[N-1], every one written
    assert outside_layout(out) == 0


def compile_c(tmp_path: Path, name: str, source: str) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    exe = tmp_path / name
    subprocess.run(["gcc", "-O1", "-o", str(exe), str(src)], check=True)
    return exe


@pytest.mark.slow
@needs_valgrind
def test_record_a_program_that_forks(tmp_path: Path) -> None:
    """The child runs under valgrind too, on the same log: vmsim record silences it
    (--child-silent-after-fork), else its lines would cut the parent's in the middle."""
    exe = compile_c(tmp_path, "forks", FORK_C)
    out = tmp_path / "forks.lackey.zst"
    printed = tmp_path / "stdout"
    with open(printed, "w") as f:
        proc = subprocess.run(
            [sys.executable, "-m", "vmsim", "record", "-o", str(out), "--", str(exe)],
            stdout=f,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr
    array_text, child_text = printed.read_text().split()[:2]
    array, child = int(array_text, 16), int(child_text)
    stored = np.concatenate(
        [c.addr[(c.kind == KIND_STORE) & (c.addr >= array) & (c.addr < array + 4 * 5000)]
         for c in open_memtrace(out)]
    )  # fmt: skip
    assert len(np.unique(stored)) == 5000  # the parent's stores; the child's are not traced
    assert len(stored) == 5000
    with open(f"{out}.strace") as f:
        clones = [e for e in read_strace(f) if isinstance(e, Syscall) and e.name == "clone"]
    assert [e.ret for e in clones] == [child]


@pytest.mark.slow
@needs_valgrind
def test_record_sqlite(tmp_path: Path) -> None:
    sqlite = shutil.which("sqlite3")
    if sqlite is None:
        pytest.skip("sqlite3 is not installed")
    out = tmp_path / "sqlite.lackey.zst"
    summary = record([sqlite, ":memory:", "select 1"], out)
    assert summary["exit_status"] == 0
    k = kinds(out)
    assert int((k == KIND_INSTR).sum()) == guest_instrs(out)
    # sqlite3 loads more libraries and does more work than /bin/true
    true_out = tmp_path / "true.lackey.zst"
    record(["/bin/true"], true_out)
    assert len(k) > 2 * len(kinds(true_out))
    assert (
        "libsqlite3" in Path(f"{out}.maps").read_text()
        or "sqlite" in Path(f"{out}.strace").read_text()
    )
    assert outside_layout(out) == 0


def test_record_without_valgrind(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="not found"):
        record(["/bin/true"], tmp_path / "t.zst", valgrind="no-such-valgrind-here")


def test_record_needs_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["record"]) == 2
    assert "no command to record" in capsys.readouterr().err
    assert main(["record", "--interval", "0", "--", "/bin/true"]) == 2


@pytest.mark.slow
@needs_valgrind
def test_record_missing_program(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["record", "-o", str(tmp_path / "x.zst"), "--", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("vmsim: valgrind recorded no access of")
    assert err.count("\n") == 1


def test_maps_sampler_leaves_out_the_child_before_its_exec() -> None:
    """A child that is still this Python when sampled (the exec comes late on a busy
    machine) has more maps lines than the program it becomes: the sampler must keep only the
    program's (a flake of test_record_bin_true under load: .maps held Python's maps)."""
    import subprocess
    import sys

    from vmsim.cli.record import _MapsSampler

    sleep = "/bin/sleep"
    code = f"import os, time; time.sleep(0.3); os.execv({sleep!r}, ['sleep', '0.3'])"
    proc = subprocess.Popen([sys.executable, "-c", code])
    sampler = _MapsSampler(proc.pid, 0.005)
    sampler.start()
    proc.wait()
    sampler.stop.set()
    sampler.join(timeout=5)
    assert sampler.samples > 0
    assert "sleep" in sampler.best
    assert "python" not in sampler.best.lower()
