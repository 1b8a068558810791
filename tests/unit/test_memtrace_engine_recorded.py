"""The two access-trace engines agree on real programs recorded here with ``vmsim record``
(valgrind lackey), in the layout ``vmsim tlb`` gives a recording by default (OUT.strace
replayed over OUT.maps), under the 4 KiB, THP and hugetlb what-ifs: every counter, every
page-table entry with its accessed and dirty bits, and the mappings added on the fly.

Three kinds of program beside test_memtrace_engine_lackey.py's /bin/true and ``ls``: sqlite3
running SQL, ``sort`` over a file, and a C program that reads then writes a 4 MiB buffer (so
that THP maps the huge zero page, then replaces it by a THP). Skipped where valgrind (or the
program, or gcc) is missing. A recording takes seconds; the reference engine translates
about 70,000 records a second, so each run is cut to its first ``LIMIT`` records.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from memtrace_helpers import SKYLAKE, diff, page_tables

from vmsim.cli.record import record
from vmsim.cli.tlb import strace_layout
from vmsim.memtrace.engine import RunResult, run_full
from vmsim.memtrace.readers import open_memtrace
from vmsim.memtrace.records import KIND_INSTR, TraceChunk

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed"),
]

LIMIT = 250_000
BUFFER_C = r"""
#include <stdio.h>
#include <stdlib.h>
int main(void) {
    size_t n = 4u << 20;
    char *a = malloc(n);  /* above the mmap threshold: an mmap of its own */
    volatile long s = 0;
    for (size_t i = 0; i < n; i += 4096)
        s += a[i];  /* reads first: the zero page, or THP's huge zero page */
    for (size_t i = 0; i < n; i += 4096)
        a[i] = 1;
    printf("%p %ld\n", (void *)a, (long)s);
    return 0;
}
"""


def prefix(out: Path, limit: int) -> list[TraceChunk]:
    chunks, n = [], 0
    for c in open_memtrace(out):
        take = min(len(c.addr), limit - n)
        chunks.append(TraceChunk(c.addr[:take], c.kind[:take], c.size[:take], c.first_line))
        n += take
        if n >= limit:
            break
    return chunks


def check_twins(out: Path, page_size: str, limit: int = LIMIT) -> tuple[RunResult, RunResult]:
    """Run both engines on ``out`` as vmsim tlb would lay it out; assert they agree."""
    chunks = prefix(out, limit)
    strace, maps = Path(f"{out}.strace"), Path(f"{out}.maps")
    lay_f, lay_r = strace_layout(strace, maps), strace_layout(strace, maps)
    assert lay_f.source == "maps+strace"
    f = run_full(chunks, lay_f, SKYLAKE, page_size=page_size, engine="fast")
    r = run_full(chunks, lay_r, SKYLAKE, page_size=page_size, engine="reference")
    assert diff(f.counters, r.counters) == {}
    assert page_tables(f.process) == page_tables(r.process)
    assert lay_f.added == lay_r.added and lay_f.restored == lay_r.restored
    kinds = np.concatenate([c.kind for c in chunks])
    c = f.counters
    assert c.records == len(kinds) and c.instructions == int((kinds == KIND_INSTR).sum())
    assert c.l1_hits + c.stlb_hits + c.walks == c.accesses
    addrs = np.concatenate([ch.addr for ch in chunks])
    assert c.touched_pages == len(np.unique(addrs >> np.uint64(12)))
    return f, r


def recorded(tmp_path: Path, name: str, cmd: list[str]) -> Path:
    if shutil.which(cmd[0]) is None and not Path(cmd[0]).exists():
        pytest.skip(f"{cmd[0]} is not installed")
    out = tmp_path / f"{name}.lackey.zst"
    summary = record(cmd, out)
    assert summary["exit_status"] == 0
    return out


def test_engines_agree_on_sqlite3(tmp_path: Path) -> None:
    sql = "create table t(x); insert into t values(1),(2),(3); select sum(x) from t;"
    out = recorded(tmp_path, "sqlite3", ["sqlite3", ":memory:", sql])
    for page_size in ("4K", "2M"):
        check_twins(out, page_size)


def test_engines_agree_on_sort(tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    lines = [f"{(i * 7919) % 1000:03d}" for i in range(600)]
    words.write_text("".join(f"{w}\n" for w in lines))
    out = recorded(tmp_path, "sort", ["sort", "-o", str(tmp_path / "sorted"), str(words)])
    assert (tmp_path / "sorted").read_text().splitlines() == sorted(lines)
    for page_size in ("4K", "2M"):
        check_twins(out, page_size)


def test_engines_agree_on_a_program_that_touches_a_4_mib_buffer(tmp_path: Path) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    src = tmp_path / "buffer.c"
    src.write_text(BUFFER_C)
    exe = tmp_path / "buffer"
    subprocess.run(["gcc", "-O1", "-o", str(exe), str(src)], check=True)
    out = recorded(tmp_path, "buffer", [str(exe)])
    records = sum(len(c.addr) for c in open_memtrace(out))
    limit = records + 1  # the whole run: the buffer is touched at its end
    f4, _ = check_twins(out, "4K", limit)
    ft, rt = check_twins(out, "thp", limit)
    # THP: the buffer's aligned 2 MiB block read through the huge zero page, then written
    # into a THP (do_huge_pmd_wp_page()): the model's own THP fault path, in both engines
    assert ft.counters.by_page_size.get("2M", 0) >= 2 * 512
    for run in (ft, rt):
        stat = dict(line.split() for line in run.process.machine.vmstat().splitlines())
        assert int(stat["thp_zero_page_alloc"]) == 1
        assert int(stat["thp_fault_alloc"]) >= 1
    assert ft.counters.faults < f4.counters.faults
    fh, _ = check_twins(out, "2M", limit)
    assert fh.counters.by_page_size.get("2M", 0) >= 2 * 1024
