"""``vmsim tour`` end to end: the whole tour once through the real CLI (``python -m vmsim
tour --no-pause --json``), its chapters checked against figures computed here from the rules,
never read back from the code under test:

- address spaces: 4-level paging has 48-bit addresses (12 offset bits + 4 x 9 index bits) and
  gives a process the lower half, 2**47 bytes, less the top page (TASK_SIZE_MAX =
  (1 << 47) - PAGE_SIZE); 5-level: 57 bits, 2**56;
- the walk: one entry read per level, each level's index the VA's bits 12 + 9k .. 20 + 9k;
- demand paging: mmap allocates nothing; a read maps the zero page (no RSS); each first write
  to a page is one fault and 4 kB of RSS; a second write to a writable PTE is no fault;
- swap: what does not fit in RAM must have been written out, and every slot written is in use;
- KSM: N pages of k distinct contents merge into k KSM pages shared by N - k more mappings;
- copy-on-write (Linux's rules): fork shares every frame (refcount 2, both PTEs read-only);
  a write to a frame someone else holds copies it, a write to one nobody else holds reuses it;
- ENOMEM (spec §1): mprotect of one page inside a VMA splits twice and needs map_count <=
  M - 2; munmap strictly inside one VMA fails with ENOMEM once map_count >= M;
- the TLB: uniform random loads over N pages with an STLB of C entries hit about C / N of the
  time once N > C, and always when the pages fit.

Then the options: --step N (and a name) runs only chapter N, an out-of-range step is a
one-line error with status 2, --list, --explain, and the pause: none on a pipe, one on a
terminal (a pty).
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import vmsim
from vmsim.cli.main import EXIT_OK, EXIT_USAGE, main

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src"), "COLUMNS": "100"}
PAGE = 4096
KIB = 1 << 10
MIB = 1 << 20
# The essay's order.
KEYS = [
    "address-spaces",
    "page-tables",
    "demand-paging",
    "swap",
    "zswap",
    "ksm",
    "cow",
    "enomem",
    "256tib",
    "translation-cost",
    "tlb-sidechannel",
    "hugepages",
]
STLB_ENTRIES = 1536  # Skylake's STLB, 4 KiB pages (the default CPU model)


def run_cli(*argv: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "vmsim", *argv],
        input=stdin,
        capture_output=True,
        env=ENV,
        timeout=600,
    )


@pytest.fixture(scope="module")
def tour() -> dict[str, Any]:
    done = run_cli("tour", "--no-pause", "--json")
    assert done.returncode == EXIT_OK, done.stderr.decode()
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def chapter(tour: dict[str, Any], key: str) -> dict[str, Any]:
    (found,) = [c for c in tour["chapters"] if c["key"] == key]
    return found


# --- the whole tour -------------------------------------------------------------------------


def test_every_chapter_in_the_essays_order(tour: dict[str, Any]) -> None:
    assert [c["key"] for c in tour["chapters"]] == KEYS
    assert [c["number"] for c in tour["chapters"]] == list(range(1, len(KEYS) + 1))
    assert tour["chapters_total"] == len(KEYS)
    assert tour["matches_linux"] is True
    for c in tour["chapters"]:
        assert c["lines"] and c["explain"] and c["figures"], c["key"]


def test_address_space_sizes_from_the_levels(tour: dict[str, Any]) -> None:
    figures = chapter(tour, "address-spaces")["figures"]
    for name, levels in (("4-level", 4), ("5-level", 5)):
        f = figures[name]
        bits = 12 + 9 * levels
        assert f["paging_levels"] == levels
        assert f["va_bits"] == bits
        assert f["address_space_bytes"] == 2**bits
        assert f["user_space_bytes"] == 2 ** (bits - 1)
        assert f["task_size"] == 2 ** (bits - 1) - PAGE
    assert figures["4-level"]["address_space_bytes"] == 256 * 2**40  # 256 TiB
    assert figures["5-level"]["address_space_bytes"] == 128 * 2**50  # 128 PiB
    # 5-level: below 47 bits unless the hint asks for more
    assert figures["5-level"]["mmap_null"] < 2**47 <= figures["5-level"]["mmap_high_hint"]
    iso = figures["isolation"]
    assert iso["vaddr_a"] == iso["vaddr_b"]
    assert iso["paddr_a"] != iso["paddr_b"]
    assert (iso["read_a"], iso["read_b"]) == ("process A", "process B")


def test_the_walk_reads_one_entry_per_level(tour: dict[str, Any]) -> None:
    f = chapter(tour, "page-tables")["figures"]
    assert f["paging_levels"] == 4
    addr = f["address"]
    assert [lv["bits"] for lv in f["levels"]] == [[47, 39], [38, 30], [29, 21], [20, 12]]
    for lv in f["levels"]:
        assert lv["index"] == (addr >> lv["bits"][1]) & 511
    assert f["first_tlb"] is None
    assert f["first_memory_refs"] == 4
    assert f["second_tlb"] is not None
    assert f["second_memory_refs"] == 0
    assert f["five_level_memory_refs"] == 5


def test_demand_paging(tour: dict[str, Any]) -> None:
    f = chapter(tour, "demand-paging")["figures"]
    assert f["map_count"] == 1
    assert f["rss_kb_after_mmap"] == 0
    assert (f["read_faults"], f["zero_page_maps"], f["rss_kb_after_read"]) == (1, 1, 0)
    assert f["write_faults"] == f["pages_written"]
    assert f["rss_kb_after_writes"] == f["pages_written"] * PAGE // KIB
    assert f["rewrite_faults"] == 0
    assert f["majfaults"] == 0


def test_swap(tour: dict[str, Any]) -> None:
    f = chapter(tour, "swap")["figures"]
    w, r = f["after_writes"], f["after_reads"]
    assert f["workload"] > f["ram"]
    assert w["pswpout"] >= (f["workload"] - f["ram"]) // PAGE  # what RAM cannot hold
    assert f["swap_used_kb"] == w["pswpout"] * PAGE // KIB  # no slot freed before the reads
    assert r["pgmajfault"] > 0
    assert 0 < r["pswpin"] <= r["pswpout"]
    assert f["pages_read_back"] == f["pages_written"]
    assert f["pages_wrong"] == 0


def test_zswap_compresses_instead_of_writing(tour: dict[str, Any]) -> None:
    f = chapter(tour, "zswap")["figures"]
    disk = chapter(tour, "swap")["figures"]
    assert f["zswap"] == "zstd"
    assert f["after_writes"]["zswpout"] > 0
    assert f["after_writes"]["pswpout"] < disk["after_writes"]["pswpout"]
    # each page is 1 KiB of random bytes and 3 KiB of repeated text: between 2x and 4x
    assert 2 < f["compression_ratio"] < 4
    assert f["after_reads"]["zswpin"] > 0
    assert f["pages_wrong"] == 0


def test_ksm_merges_identical_pages(tour: dict[str, Any]) -> None:
    f = chapter(tour, "ksm")["figures"]
    n, k = f["pages"], f["distinct_contents"]
    assert (f["pages_shared"], f["pages_sharing"]) == (k, n - k)
    assert f["saved_kb"] == (n - k) * PAGE // KIB
    assert f["write_cow_faults"] == 1
    assert f["pages_sharing_after_write"] == n - k - 1
    assert f["read_back"] == "changed"


def test_cow_frames_follow_linuxs_rules(tour: dict[str, Any]) -> None:
    f = chapter(tour, "cow")["figures"]
    n = f["private_pages"]
    steps = {s["step"]: s for s in f["steps"]}
    assert list(steps) == [
        "parent-writes",
        "fork",
        "child-write-0",
        "parent-write-0",
        "parent-write-1",
    ]
    # frames for the n private pages after each step, and pages the two still share
    assert [s["frames"] for s in f["steps"]] == [n, n, n + 1, n + 1, n + 2]
    assert [s["shared_pages"] for s in f["steps"]] == [0, n, n - 1, n - 1, n - 2]
    fork = steps["fork"]
    assert fork["parent_pfns"] == fork["child_pfns"] == steps["parent-writes"]["parent_pfns"]
    assert fork["refcounts"] == [2] * n
    assert not any(fork["parent_writable"]) and not any(fork["child_writable"])
    child0 = steps["child-write-0"]
    assert child0["child_pfns"][0] not in fork["parent_pfns"]  # copied
    assert child0["parent_pfns"] == fork["parent_pfns"]
    parent0 = steps["parent-write-0"]
    assert parent0["parent_pfns"][0] == fork["parent_pfns"][0]  # nobody else holds it: reused
    assert parent0["parent_writable"][0]
    parent1 = steps["parent-write-1"]
    assert parent1["parent_pfns"][1] != fork["parent_pfns"][1]  # the child holds it: copied
    assert parent1["child_pfns"][1] == fork["child_pfns"][1]
    assert f["counters"]["parent"]["cow_faults"] == 1
    assert f["counters"]["parent"]["cow_reuse"] == 1
    assert f["counters"]["child"]["cow_faults"] == 1


def test_enomem_at_the_specs_thresholds(tour: dict[str, Any]) -> None:
    f = chapter(tour, "enomem")["figures"]
    limit = f["max_map_count"]
    assert limit == 65530  # the default vm.max_map_count
    start = f["map_count_after_mmap"]
    assert start == f["map_count_at_start"] + 1
    assert (limit - start) % 2 == 0  # two splits a call: the calls end exactly at the limit
    # a middle split of one page adds 2 and is allowed while map_count <= M - 2
    assert f["split_calls"] == (limit - start) // 2
    assert f["map_count_after_splits"] == limit
    assert f["failing_errno"] == "ENOMEM"
    assert f["failing_call"].startswith("munmap(")
    assert f["map_count_at_failure"] == limit
    assert f["whole_munmap_errno"] is None
    assert f["map_count_after_whole_munmap"] == limit - 1
    assert f["retry_errno"] is None
    assert f["map_count_after_retry"] == limit


def test_sparse_address_space_costs_page_tables(tour: dict[str, Any]) -> None:
    f = chapter(tour, "256tib")["figures"]
    assert f["user_space_bytes"] == 2**47
    # the layout the loader gives a new process, read here from a machine of our own
    fresh = vmsim.Machine().spawn(layout="linux")
    ranges = [line.split()[0].split("-") for line in fresh.maps().splitlines()]
    user = [(int(a, 16), int(b, 16)) for a, b in ranges if int(b, 16) <= 2**47]
    assert f["vmas"] == len(user) == fresh.map_count
    assert f["mapped_bytes"] == sum(b - a for a, b in user)
    assert f["mapped_fraction"] == pytest.approx(f["mapped_bytes"] / 2**47)
    # pages 512 GiB apart sit under different PML4 entries: a PDPT, a PD and a PT each
    assert f["far_spacing"] == 2**39
    assert f["page_tables_kb_far"] == f["far_pages"] * 3 * PAGE // KIB
    # pages side by side in a fresh 512 GiB slot share one PDPT, PD and PT
    assert f["page_tables_kb_near"] == 3 * PAGE // KIB


def test_translation_cost(tour: dict[str, Any]) -> None:
    f = chapter(tour, "translation-cost")["figures"]
    for p in f["points"]:
        pages = p["working_set"] // PAGE
        assert pages > STLB_ENTRIES
        assert p["hit_rate_4k"] == pytest.approx(STLB_ENTRIES / pages, abs=0.03)
        assert p["hit_rate_2m"] == 1.0  # 2 MiB pages: the STLB reaches 3 GiB
        assert p["translation_share_2m"] < p["translation_share_4k"]
    shares = [p["translation_share_4k"] for p in f["points"]]
    assert shares == sorted(shares)  # bigger working set, bigger share


def test_tlb_hit_rates_and_the_side_channel(tour: dict[str, Any]) -> None:
    c = chapter(tour, "tlb-sidechannel")
    f = c["figures"]
    for p in f["points"]:
        pages = p["working_set"] // PAGE
        expected = 1.0 if pages <= STLB_ENTRIES else STLB_ENTRIES / pages
        assert p["hit_rate_4k"] == pytest.approx(expected, abs=0.03)
    side = f["sidechannel"]
    assert (side["trials"], side["bits"]) == (50, 16)
    assert side["accuracy"]["none"] >= 0.9
    assert side["accuracy"]["flush"] == pytest.approx(0.5, abs=0.08)  # 800 bits: sd 0.018
    assert side["extra_walks"]["none"] == 0
    assert side["extra_walks"]["flush"] > 0
    assert "hyperthread" in c["missing"]


def test_hugepages_chapter_is_the_demos_steps(tour: dict[str, Any]) -> None:
    c = chapter(tour, "hugepages")
    f = c["figures"]
    assert list(f) == ["tlb", "khugepaged", "dontneed", "fragmentation", "hugetlb"]
    tlb = f["tlb"]["figures"]
    assert tlb["hit_rate_2m"] > tlb["hit_rate_4k"]
    assert (c["missing"] == "") == all(step["shown"] for step in f.values())


# --- the options ----------------------------------------------------------------------------


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code = main(["tour", *argv, "--json"])
    out = capsys.readouterr().out
    assert code == EXIT_OK, out
    data: dict[str, Any] = json.loads(out)
    return data


@pytest.mark.parametrize(
    ("step", "key"), [("1", "address-spaces"), ("cow", "cow"), ("3", "demand-paging")]
)
def test_step_runs_only_that_chapter(
    capsys: pytest.CaptureFixture[str], step: str, key: str
) -> None:
    data = run_json(capsys, "--step", step)
    assert [c["key"] for c in data["chapters"]] == [key]
    assert data["chapters"][0]["number"] == KEYS.index(key) + 1


@pytest.mark.parametrize("step", ["0", "13", "-1", "99999", "nope"])
def test_bad_step_is_one_line_and_status_2(step: str) -> None:
    done = run_cli("tour", "--step", step, "--no-pause")
    assert done.returncode == EXIT_USAGE
    err = done.stderr.decode()
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"vmsim: --step {step}") or f"--step {step!r}" in lines[0]
    assert done.stdout == b""


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tour", "--list"]) == EXIT_OK
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(KEYS)
    for n, (line, key) in enumerate(zip(lines, KEYS, strict=True), 1):
        assert line.split()[:2] == [f"{n}.", key]
    data = run_json(capsys, "--list")
    assert [c["key"] for c in data["chapters"]] == KEYS


def test_explain_adds_the_kernel_functions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tour", "--step", "1", "--no-color"]) == EXIT_OK
    plain = capsys.readouterr().out
    assert main(["tour", "--step", "1", "--no-color", "--explain"]) == EXIT_OK
    explained = capsys.readouterr().out
    assert "switch_mm_irqs_off" not in plain
    assert "switch_mm_irqs_off" in explained
    assert "128 TiB per process" in plain


def test_no_pause_on_a_pipe() -> None:
    """stdin and stdout are pipes: no pause. Were there one, the "q" waiting on stdin would
    end the tour after chapter 1."""
    done = run_cli("tour", "--no-color", stdin=b"q\n")
    assert done.returncode == EXIT_OK, done.stderr.decode()
    out = done.stdout.decode()
    for n in range(1, len(KEYS) + 1):
        assert f"{n}/{len(KEYS)}." in out
    assert "Enter: chapter" not in out


def _read_until(fd: int, marker: bytes, timeout: float) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while marker not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    return out


def test_pause_on_a_terminal() -> None:
    """On a terminal (a pty for stdin and stdout) the tour waits after chapter 1; "q" ends it."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmsim", "tour", "--no-color"],
        stdin=follower,
        stdout=follower,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    os.close(follower)
    try:
        shown = _read_until(leader, b"Enter: chapter 2", 120)
        assert b"Enter: chapter 2" in shown, shown.decode(errors="replace")
        assert b"1/12." in shown
        assert b"2/12." not in shown
        os.write(leader, b"q\n")
        rest = _read_until(leader, b"\x00never", 30)
        assert proc.wait(timeout=60) == EXIT_OK
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        errors = proc.stderr.read() if proc.stderr else b""
        if proc.stderr:
            proc.stderr.close()
        os.close(leader)
    assert errors == b"", errors.decode(errors="replace")
    assert b"2/12." not in rest
