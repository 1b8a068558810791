"""The two access-trace engines agree on real memory traces: programs run here under Valgrind
lackey (``--trace-mem=yes``), read by a minimal parser of lackey's record lines (the real
readers are vmsim.memtrace.readers'), in an inferred layout. Skipped where valgrind is missing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from memtrace_helpers import SKYLAKE, diff, page_tables

from vmsim.memtrace.engine import run_full
from vmsim.memtrace.layout import Layout
from vmsim.memtrace.records import TraceChunk

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed"),
]

KINDS = {"I": 0, "L": 1, "S": 2, "M": 3}


def record(tmp_path: Path, argv: list[str], limit: int) -> TraceChunk:
    log = tmp_path / "trace.lackey"
    subprocess.run(
        ["valgrind", "--tool=lackey", "--trace-mem=yes", f"--log-file={log}", *argv],
        check=True,
        capture_output=True,
        timeout=300,
    )
    addrs, kinds = [], []
    with log.open() as f:
        for line in f:
            if line.startswith("=="):
                continue
            kind, rest = line.split()
            addrs.append(int(rest.split(",")[0], 16))
            kinds.append(KINDS[kind])
            if len(addrs) >= limit:
                break
    a = np.asarray(addrs, dtype=np.uint64)
    return TraceChunk(a, np.asarray(kinds, dtype=np.uint8), np.zeros(len(a), np.uint16), 1)


@pytest.mark.parametrize(
    ("argv", "limit"), [(["/bin/true"], 400_000), (["/bin/ls", "-l", "/"], 150_000)]
)
def test_engines_agree_on_a_lackey_trace(tmp_path: Path, argv: list[str], limit: int) -> None:
    trace = record(tmp_path, argv, limit)
    assert len(trace.addr) > 50_000  # the dynamic loader alone makes that many
    chunks = [
        TraceChunk(trace.addr[i : i + 40_000], trace.kind[i : i + 40_000], trace.size, 1 + i)
        for i in range(0, len(trace.addr), 40_000)
    ]
    lay_f, lay_r = Layout.infer(chunks), Layout.infer(chunks)
    f = run_full(chunks, lay_f, SKYLAKE, engine="fast")
    r = run_full(chunks, lay_r, SKYLAKE, engine="reference")
    assert diff(f.counters, r.counters) == {}
    assert page_tables(f.process) == page_tables(r.process)
    c = f.counters
    assert c.instructions == int((trace.kind == 0).sum())
    assert c.touched_pages == len(np.unique(trace.addr >> np.uint64(12)))
    # a real program: most translations hit the TLB
    assert (c.l1_hits + c.stlb_hits) / c.accesses > 0.9
