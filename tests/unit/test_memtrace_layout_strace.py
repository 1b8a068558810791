"""The layout of a trace from an strace log of the same run (issue 12 item 2): the log's
memory calls replayed by vmsim's strace replay, over a maps snapshot."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from memtrace_helpers import SKYLAKE, both, chunk, diff, page_tables

from vmsim.cli.main import main
from vmsim.memtrace.layout import GRANULE, Layout
from vmsim.memtrace.layout_strace import merge, replay_log
from vmsim.memtrace.records import KIND_STORE
from vmsim.mm.flags import VM_HUGETLB, VM_WRITE
from vmsim.snapshot import parse
from vmsim.trace import read_strace

MIB = 1 << 20
# A snapshot taken early in the run: the program, its heap start, ld.so and the stack.
MAPS = """\
00108000-0010a000 r--p 00000000 fe:00 260958 /usr/bin/prog
0010a000-0010e000 r-xp 00002000 fe:00 260958 /usr/bin/prog
00111000-00112000 rw-p 00008000 fe:00 260958 /usr/bin/prog
04000000-04027000 r-xp 00000000 fe:00 338944 /usr/lib/ld-linux-x86-64.so.2
1ffeffe000-1fff001000 rw-p 00000000 00:00 0
"""
# What the program mapped itself, after the snapshot: 8 MiB of anonymous memory (ASLR off
# under valgrind: 2 MiB aligned here), a file mapping, a 1 MiB region unmapped and another
# mapped at the same address with other permissions, and the heap grown by brk.
LOG = """\
4073 brk(NULL) = 0x4035000
4073 openat(0xffffff9c, "/usr/lib/libc.so.6", 0x80000) = 3
4073 mmap(NULL, 0x4000, PROT_READ, MAP_PRIVATE|MAP_DENYWRITE, 3, 0) = 0x4837000
4073 close(3) = 0
4073 mmap(NULL, 0x800000, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x10000000
4073 mmap(NULL, 0x100000, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x20000000
4073 munmap(0x20000000, 0x100000) = 0
4073 mmap(0x20000000, 0x80000, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED, -1, 0) = 0x20000000
4073 brk(0x4056000) = 0x4056000
4073 mprotect(0x4837000, 0x1000, PROT_NONE) = 0
4073 exit_group(0) = ?
"""


def log_layout(maps: str | None = MAPS) -> Layout:
    return Layout.from_strace(read_strace(LOG.splitlines()), maps)


def test_replay_keeps_the_final_vmas_and_the_removed_ones() -> None:
    log = replay_log(read_strace(LOG.splitlines()))
    final = {(e.start, e.end, e.perms, e.name) for e in log.final}
    assert (0x10000000, 0x10800000, "rw-p", None) in final
    assert (0x20000000, 0x20080000, "rw-p", None) in final
    assert (0x4035000, 0x4056000, "rw-p", "[heap]") in final
    # the file mapping is named by the openat that returned its descriptor
    assert (0x4837000, 0x4838000, "---p", "/usr/lib/libc.so.6") in final
    assert (0x4838000, 0x483B000, "r--p", "/usr/lib/libc.so.6") in final
    removed = {(e.start, e.end, e.perms) for e in log.removed}
    assert (0x20000000, 0x20100000, "r--p") in removed
    assert log.calls == 8
    assert log.mprotected == [(0x4837000, 0x4838000)]


def test_merge_order_final_then_snapshot_then_removed_newest_first() -> None:
    log = replay_log(read_strace(LOG.splitlines()))
    entries = merge(parse(MAPS), log)
    spans = [(e.start, e.end, e.perms) for e in entries]
    assert spans == sorted(spans)
    # no overlaps
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    # the region remapped at 0x20000000: the last mapping (rw-, 512 KiB), then the part of
    # the earlier one (r--, 1 MiB) it does not cover
    assert (0x20000000, 0x20080000, "rw-p") in spans
    assert (0x20080000, 0x20100000, "r--p") in spans
    assert (0x108000, 0x10A000, "r--p") in spans  # from the snapshot


def test_merge_clips_a_file_mapping_and_moves_its_offset() -> None:
    log = replay_log(read_strace([]))
    log.removed = parse("00200000-00204000 r--p 00010000 fe:00 7 /usr/lib/x.so")
    base = parse("00201000-00202000 rw-p 00000000 00:00 0")
    entries = merge(base, log)
    assert [(e.start, e.end, e.offset) for e in entries] == [
        (0x200000, 0x201000, 0x10000),
        (0x201000, 0x202000, 0),
        (0x202000, 0x204000, 0x12000),
    ]


def trace() -> list:  # type: ignore[type-arg]
    rng = np.random.default_rng(3)
    big = 0x10000000 + rng.integers(0, 8 * MIB, 20000)
    remapped = 0x20000000 + rng.integers(0, 512 << 10, 2000)
    heap = 0x4035000 + rng.integers(0, 0x21000, 2000)
    addrs = np.concatenate([big, remapped, heap, [0x10A010, 0x4837800]])
    kinds = np.concatenate([rng.integers(1, 4, len(addrs) - 2), [0, KIND_STORE]])
    return [chunk(addrs, kinds)]


def test_two_mib_what_if_covers_memory_the_program_mapped_itself() -> None:
    # the maps snapshot alone misses the 8 MiB region: 64 KiB granules of 4 KiB pages
    c_maps, r_maps, _, _ = both(trace(), lambda: Layout.from_maps(MAPS), SKYLAKE, page_size="2M")
    assert diff(c_maps, r_maps) == {}
    assert "2M" not in c_maps.by_page_size
    # with the log the region is its real 8 MiB VMA: MAP_HUGETLB, 2 MiB pages
    f, r, fp, rp = both(trace(), log_layout, SKYLAKE, page_size="2M")
    assert diff(f, r) == {} and page_tables(fp) == page_tables(rp)
    assert f.by_page_size["2M"] >= 20000
    assert fp.mm.tree.lookup(0x10000000).flags & VM_HUGETLB
    assert f.walks < c_maps.walks
    # ... and with 4 KiB pages the engines agree on it too
    g, h, _, _ = both(trace(), log_layout, SKYLAKE, page_size="4K")
    assert diff(g, h) == {}


def test_log_layout_is_not_estimated_where_the_log_explains_a_permission() -> None:
    # a store to the page the log made PROT_NONE: an access before that mprotect
    lay = log_layout()
    c, _, proc, _ = both([chunk([0x4837800], KIND_STORE)], lambda: lay, SKYLAKE)
    assert c.faults == 1
    assert lay.restored == {(0x4837000, 0x4838000)} and lay.added == set()
    assert not lay.estimated and lay.source == "maps+strace"
    assert proc.mm.tree.lookup(0x4837000).flags & VM_WRITE
    # without the snapshot the program itself is missing: covered, and estimated
    alone = log_layout(None)
    both([chunk([0x10A010], 0)], lambda: alone, SKYLAKE)
    assert alone.estimated and alone.added == {(0x100000, 0x100000 + GRANULE)}


def write_recording(tmp_path: Path) -> Path:
    """A lackey trace with OUT.maps and OUT.strace beside it, as vmsim record leaves them."""
    out = tmp_path / "prog.lackey"
    lines = ["==4073== Lackey, an example Valgrind tool", "==4073== Command: prog"]
    for a in range(0x10000000, 0x10800000, 4096):
        lines.append(f" S {a:08x},8")
    for a in range(0x10000000, 0x10800000, 4096 * 3):
        lines.append(f" L {a + 8:08x},8")
    out.write_text("\n".join(lines) + "\n")
    (tmp_path / "prog.lackey.maps").write_text(MAPS)
    (tmp_path / "prog.lackey.strace").write_text(LOG)
    return out


def test_cli_uses_the_strace_and_maps_next_to_the_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = write_recording(tmp_path)
    assert main(["tlb", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["layout"]["source"] == "maps+strace"
    assert data["layout"]["found_next_to_trace"] is True
    assert data["layout_estimated"] is False
    assert data["notes"][0].startswith("layout: ") and "found next to the trace" in data["notes"][0]
    assert data["huge_2M"]["by_page_size"] == {"2M": data["records"]}
    assert main(["tlb", str(out), "--json", "--no-strace"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["layout"]["source"] == "inferred" and plain["layout_estimated"] is True
    assert main(["tlb", str(out), "--json", "--no-strace", "--maps", f"{out}.maps"]) == 0
    snap = json.loads(capsys.readouterr().out)
    assert snap["layout"]["source"] == "maps"
    assert "2M" not in snap["huge_2M"]["by_page_size"]  # granules of 4 KiB pages


def test_cli_strace_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = write_recording(tmp_path)
    assert main(["tlb", str(out), "--strace", str(tmp_path / "missing.strace")]) == 1
    err = capsys.readouterr().err
    assert "missing.strace" in err and "Traceback" not in err
