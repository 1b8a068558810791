"""The max_map_count threshold table of spec §1, measured on the live kernel and on vmsim.

One child process is filled to the limit (spec §8: no sysctl is touched) and every operation row
is measured at map_count M-6 .. M+1; vmsim, rebuilt from the same child's smaps before the fill,
runs the identical procedure.  Every cell (result or errno, map_count after) must agree.  The
tables are printed with ``-s`` and attached to the test report (``-rA`` shows them for passes).
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from . import thresholds as T
from .harness import infer_mmap_base, spawn_sim
from .live import LiveChild

pytestmark = pytest.mark.kernel

ROW_NAMES = [row.name for row in T.rows()]
Table = dict[str, dict[int, T.Cell]]


def _shared(request: pytest.FixtureRequest, name: str, compute: Callable[[], Table]) -> Table:
    """Compute once per session, also across pytest-xdist workers (file + flock in the
    session's shared temp dir), so the ~30 s kernel fill is not repeated per worker."""
    if not hasattr(request.config, "workerinput"):
        return compute()
    root = Path(str(request.getfixturevalue("tmp_path_factory").getbasetemp().parent))
    path = root / f"vmsim-thresholds-{name}.json"
    with open(root / f"vmsim-thresholds-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            raw = json.loads(path.read_text())
            return {r: {int(d): T.Cell(*c) for d, c in cells.items()} for r, cells in raw.items()}
        table = compute()
        raw = {
            r: {d: [c.result, c.after, c.c] for d, c in cells.items()} for r, cells in table.items()
        }
        path.write_text(json.dumps(raw))
        return table


@pytest.fixture(scope="module")
def kernel_table(request: pytest.FixtureRequest, live_max_map_count: int) -> Table:
    def compute() -> Table:
        with LiveChild() as child:
            return T.measure(child, live_max_map_count)

    return _shared(request, "kernel", compute)


@pytest.fixture(scope="module")
def vmsim_table(
    request: pytest.FixtureRequest, require_vmsim: None, live_max_map_count: int
) -> Table:
    def compute() -> Table:
        with LiveChild() as child:  # same layout as the kernel run (no ASLR)
            smaps = child.smaps()
        sim = spawn_sim(smaps, live_max_map_count, infer_mmap_base(smaps))
        return T.measure(sim, live_max_map_count)

    return _shared(request, "vmsim", compute)


def _attach(request: pytest.FixtureRequest, title: str, text: str) -> None:
    print(f"\n{text}")
    request.node.add_report_section("call", title, text)


def test_kernel_table_matches_spec(
    request: pytest.FixtureRequest, kernel_table: Table, live_max_map_count: int
) -> None:
    """The harness measures what spec §1 documents (checks the procedure, not vmsim)."""
    M = live_max_map_count
    _attach(request, "kernel threshold table", T.render(kernel_table, M, f"kernel, M={M}"))
    wrong = []
    for name, cells in kernel_table.items():
        for d, cell in cells.items():
            want = T.expected_from_spec(name, d)
            if (cell.result, cell.after - cell.c) != want:
                wrong.append(f"{name} at {T.col_name(d)}: kernel {cell}, spec {want}")
    assert not wrong, "\n".join(wrong)


def test_vmsim_threshold_table(
    request: pytest.FixtureRequest, kernel_table: Table, vmsim_table: Table, live_max_map_count: int
) -> None:
    """Every cell (result or errno, map_count after) of vmsim's table equals the kernel's."""
    M = live_max_map_count
    both: Table = {}
    diffs = []
    for row in ROW_NAMES:
        k, v = kernel_table[row], vmsim_table[row]
        both[f"kernel {row}"] = k
        both[f"vmsim  {row}"] = v
        for d in T.COLUMNS:
            if (k[d].result, k[d].after) != (v[d].result, v[d].after):
                diffs.append(
                    f"{row} at c={T.col_name(d)}: kernel {k[d].show(M)!r} (count {k[d].after}), "
                    f"vmsim {v[d].show(M)!r} (count {v[d].after})"
                )
    _attach(request, "threshold tables", T.render(both, M, f"kernel vs vmsim, M={M}"))
    assert not diffs, f"{len(diffs)} cells differ:\n" + "\n".join(diffs)
