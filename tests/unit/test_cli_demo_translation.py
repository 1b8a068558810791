"""``vmsim demo cow`` and ``vmsim demo walk`` end to end through main([...]).

Expected values follow from Linux's rules and the x86-64 page-table format, never from the
code under test:
- fork() (copy_present_pte) maps every private anonymous page in both processes: one frame,
  refcount 2, mapcount 2, R/W clear in both PTEs; it copies no PTE of a shared mapping without
  anonymous pages;
- a write to such a page by one process (do_wp_page) gives the writer a new frame and drops
  the old one to refcount 1; a write by the other then keeps its frame (no one else holds it);
- MAP_SHARED|MAP_ANONYMOUS pages are one frame in every process that maps them;
- every first write to a page and every write to a write-protected page faults once;
- a walk reads one entry per level (4, or 5 with LA57), the index at level L being bits
  12+9(L-1) .. 20+9(L-1) of the address; the leaf's frame plus the page offset is the
  physical address; the first access to a fresh page misses the TLB and walks (one memory
  reference per level), the same access again hits the L1 TLB;
- a read of a never-written private anonymous page maps the zero page read-only.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from vmsim.cli.main import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main

COW_STEPS = [
    "map",
    "parent-writes",
    "fork",
    "child-write-0",
    "parent-write-0",
    "parent-write-1",
    "shared-child-write",
    "shared-parent-write",
    "read-back",
    "counters",
]


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    """The JSON a demo printed. A model that strays from Linux still prints it, then exits 1:
    the tests below then fail on the fact that is wrong; test_*_matches_linux on the status."""
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    assert code in (EXIT_OK, EXIT_FAILURE), captured.err
    data: dict[str, Any] = json.loads(captured.out)
    assert data["matches_linux"] is (code == EXIT_OK), captured.err
    return data


# --- demo cow ---------------------------------------------------------------------------


def cow_steps(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, dict[str, Any]]:
    data = run_json(capsys, "demo", "cow", *argv)
    return {step["id"]: step for step in data["steps"]}


def private(step: dict[str, Any]) -> list[dict[str, Any]]:
    return [row for row in step["pages"] if row["mapping"] == "private"]


def shared(step: dict[str, Any]) -> dict[str, Any]:
    (row,) = [row for row in step["pages"] if row["mapping"] == "shared"]
    return row


def test_cow_steps_in_order_and_matches_linux(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "cow", "--json"])
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err
    data = json.loads(captured.out)
    assert [step["id"] for step in data["steps"]] == COW_STEPS
    assert data["matches_linux"] is True
    assert data["pages"] == 4


def test_before_the_fork_each_page_is_the_parents_alone(
    capsys: pytest.CaptureFixture[str],
) -> None:
    steps = cow_steps(capsys)
    assert all(row["parent"] is None for row in steps["map"]["pages"])  # nothing before a touch
    rows = private(steps["parent-writes"])
    assert len({row["parent"]["pfn"] for row in rows}) == len(rows)
    for row in rows:
        assert row["child"] is None
        assert (row["parent"]["refcount"], row["parent"]["mapcount"]) == (1, 1)
        assert row["parent"]["writable"] is True


def test_after_fork_both_map_the_same_frames_read_only(capsys: pytest.CaptureFixture[str]) -> None:
    fork = cow_steps(capsys)["fork"]
    rows = private(fork)
    assert len(rows) == 4
    for row in rows:
        parent, child = row["parent"], row["child"]
        assert parent["pfn"] == child["pfn"]
        assert parent["refcount"] == child["refcount"] == 2
        assert parent["mapcount"] == child["mapcount"] == 2
        assert parent["writable"] is False and child["writable"] is False
        assert parent["data"] == child["data"]
    # No anon_vma behind the shared mapping: fork copies none of its PTEs.
    assert shared(fork)["parent"] is not None
    assert shared(fork)["child"] is None


def test_child_write_copies_and_leaves_the_parent_sole_owner(
    capsys: pytest.CaptureFixture[str],
) -> None:
    steps = cow_steps(capsys)
    before = private(steps["fork"])[0]
    after = private(steps["child-write-0"])[0]
    assert after["child"]["pfn"] != before["child"]["pfn"]
    assert after["child"]["writable"] is True
    assert (after["child"]["refcount"], after["child"]["mapcount"]) == (1, 1)
    assert after["parent"]["pfn"] == before["parent"]["pfn"]
    assert after["parent"]["refcount"] == 1
    assert after["parent"]["mapcount"] == 1
    assert after["parent"]["writable"] is False  # the child's fault does not touch the parent
    # the other pages are still shared
    for row in private(steps["child-write-0"])[1:]:
        assert row["parent"]["pfn"] == row["child"]["pfn"]
        assert row["parent"]["refcount"] == 2


def test_parent_write_after_the_copy_reuses_its_frame(capsys: pytest.CaptureFixture[str]) -> None:
    steps = cow_steps(capsys)
    before = private(steps["child-write-0"])[0]["parent"]
    after = private(steps["parent-write-0"])[0]["parent"]
    assert after["pfn"] == before["pfn"]
    assert after["writable"] is True
    assert after["refcount"] == 1
    assert len(steps["parent-write-0"]["faults"]["parent"]) == 1  # read-only PTE: one fault


def test_parent_write_to_a_shared_page_copies(capsys: pytest.CaptureFixture[str]) -> None:
    steps = cow_steps(capsys)
    before = private(steps["parent-write-0"])[1]
    after = private(steps["parent-write-1"])[1]
    assert before["parent"]["pfn"] == before["child"]["pfn"]
    assert after["parent"]["pfn"] != before["parent"]["pfn"]
    assert after["parent"]["writable"] is True
    assert after["child"]["pfn"] == before["child"]["pfn"]
    assert after["child"]["refcount"] == 1


def test_shared_anonymous_page_is_one_frame_in_both(capsys: pytest.CaptureFixture[str]) -> None:
    steps = cow_steps(capsys)
    first = shared(steps["parent-writes"])["parent"]["pfn"]
    for step in ("shared-child-write", "shared-parent-write", "read-back"):
        row = shared(steps[step])
        assert row["parent"]["pfn"] == row["child"]["pfn"] == first
        assert row["parent"]["mapcount"] == 2
        assert row["parent"]["writable"] is True and row["child"]["writable"] is True
    assert steps["shared-parent-write"]["faults"]["parent"] == []  # already writable


def test_read_back_shows_isolation_and_sharing(capsys: pytest.CaptureFixture[str]) -> None:
    reads = cow_steps(capsys)["read-back"]["reads"]
    assert reads["0"]["child"].startswith("child")
    assert reads["0"]["parent"].startswith("parent")
    assert reads["1"]["parent"] != reads["1"]["child"]
    for page in ("2", "3"):
        assert reads[page]["parent"] == reads[page]["child"]
    both = reads["shared"]
    assert both["parent"] == both["child"]
    assert "child" in both["parent"] and "parent" in both["parent"]


def test_fault_counters(capsys: pytest.CaptureFixture[str]) -> None:
    counters = cow_steps(capsys, "--pages", "3")["counters"]["counters"]
    # parent: 3 first writes + 1 shared first write + 2 writes to write-protected pages
    assert counters["parent"]["pgfault"] == 3 + 1 + 2
    # child: 1 write to a write-protected page + 1 first touch of the shared page
    assert counters["child"]["pgfault"] == 2


@pytest.mark.parametrize("pages", ["2", "7"])
def test_pages_option(capsys: pytest.CaptureFixture[str], pages: str) -> None:
    steps = cow_steps(capsys, "--pages", pages)
    rows = private(steps["fork"])
    assert len(rows) == int(pages)
    assert all(row["parent"]["pfn"] == row["child"]["pfn"] for row in rows)


@pytest.mark.parametrize("pages", ["1", "0", "-3"])
def test_too_few_pages_is_a_usage_error(capsys: pytest.CaptureFixture[str], pages: str) -> None:
    assert main(["demo", "cow", "--pages", pages]) == EXIT_USAGE
    assert "--pages" in capsys.readouterr().err


def test_cow_explain_prints_one_line_per_step(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "cow", "--explain"])
    lines = capsys.readouterr().out.splitlines()
    assert code == EXIT_OK
    assert len(lines) == len(COW_STEPS)
    child_write = lines[COW_STEPS.index("child-write-0")]
    assert "child writes 0x" in child_write and "copies" in child_write
    assert "reuses" in lines[COW_STEPS.index("parent-write-0")]


def test_cow_rich_output_without_colour(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "cow", "--no-color"])
    out = capsys.readouterr().out
    assert code == EXIT_OK
    assert "\x1b[" not in out
    assert "read-only" in out and "writable" in out
    assert "refs" in out and "pgfault" in out


# --- demo walk --------------------------------------------------------------------------


def walk(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    return run_json(capsys, "demo", "walk", *argv)


def test_walk_matches_the_hardware(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "walk", "--json"])
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err
    assert json.loads(captured.out)["matches_linux"] is True


def va_index(addr: int, level: int) -> int:
    return (addr >> (12 + 9 * (level - 1))) & 511


def check_levels(data: dict[str, Any], levels: int) -> None:
    addr = data["address"]
    assert [lv["level"] for lv in data["levels"]] == list(range(levels, 0, -1))
    for lv in data["levels"]:
        assert lv["index"] == va_index(addr, lv["level"]), lv
        assert lv["entry"] & 1  # P
        assert lv["entry"] & 4  # U/S: a user page needs it at every level
        assert lv["pfn"] == (lv["entry"] & ((1 << 52) - 1)) >> 12
        assert lv["entry_hex"] == f"{lv['entry']:#018x}"
    for upper in data["levels"][:-1]:
        assert upper["kind"] == "table"
    leaf = data["levels"][-1]
    assert leaf["kind"] == "leaf"
    assert data["paddr"] == (leaf["pfn"] << 12) | (addr & 0xFFF)


@pytest.mark.parametrize("access", ["read", "write", "exec"])
def test_default_walk_has_four_levels(capsys: pytest.CaptureFixture[str], access: str) -> None:
    data = walk(capsys, "--access", access)
    assert data["paging_levels"] == 4
    assert data["access"] == access
    check_levels(data, 4)
    first, second = data["first"], data["second"]
    assert first["page_walk"] is True and first["tlb"] is None
    assert first["memory_refs"] == 4
    assert first["faults"]  # a fresh page: the first access faults
    assert second["page_walk"] is False
    assert second["tlb"] == "L1"
    assert second["memory_refs"] == 0
    assert second["faults"] == []
    assert second["paddr"] == first["paddr"] == data["paddr"]


def test_read_maps_the_zero_page_read_only_and_write_a_dirty_page(
    capsys: pytest.CaptureFixture[str],
) -> None:
    read_leaf = walk(capsys)["levels"][-1]
    assert read_leaf["writable"] is False
    assert read_leaf["nx"] is True  # PROT_READ|PROT_WRITE: no exec
    write_leaf = walk(capsys, "--access", "write")["levels"][-1]
    assert write_leaf["writable"] is True
    assert write_leaf["dirty"] is True and write_leaf["accessed"] is True
    assert write_leaf["pfn"] != read_leaf["pfn"]  # a page of its own, not the zero page
    exec_leaf = walk(capsys, "--access", "exec")["levels"][-1]
    assert exec_leaf["nx"] is False


def test_walk_of_a_given_address(capsys: pytest.CaptureFixture[str]) -> None:
    addr = 0x7F12_3456_7ABC
    data = walk(capsys, hex(addr), "--access", "write")
    assert data["address"] == addr
    assert data["offset"] == 0xABC
    assert "MAP_FIXED" in data["mapping"]
    check_levels(data, 4)
    assert [lv["index"] for lv in data["levels"]] == [254, 72, 418, 359]


def test_walk_accepts_decimal(capsys: pytest.CaptureFixture[str]) -> None:
    addr = 0x5555_5555_8123
    assert walk(capsys, str(addr))["address"] == addr


@pytest.mark.parametrize("addr", [None, 0x00AB_CDEF_1234_5678, 0x0000_8000_0000_0000])
def test_five_level_walk(capsys: pytest.CaptureFixture[str], addr: int | None) -> None:
    argv = ["--five-level"] + ([] if addr is None else [hex(addr)])
    data = walk(capsys, *argv)
    assert data["paging_levels"] == 5
    check_levels(data, 5)
    assert data["first"]["memory_refs"] == 5
    assert data["second"]["tlb"] == "L1"


@pytest.mark.parametrize(
    ("addr", "words"),
    [
        ("nope", "not a number"),
        ("0x800000000000", "canonical"),  # bit 47 set, bits 63-48 clear: 4-level non-canonical
        ("0x123456789abcdef", "canonical"),
        ("0xffff888000000000", "kernel"),  # the direct map
        ("0xffffffffff600000", "kernel"),  # [vsyscall]
        ("0x10000000000000000", "64 bits"),
    ],
)
def test_bad_address_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], addr: str, words: str
) -> None:
    code = main(["demo", "walk", addr, "--json"])
    captured = capsys.readouterr()
    assert code == EXIT_USAGE
    assert captured.out == ""
    assert addr in captured.err
    assert words in captured.err
    assert "Traceback" not in captured.err


def test_kernel_half_with_five_levels(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "walk", "0xff11000000000000", "--five-level"])
    assert code == EXIT_USAGE
    assert "0xff11000000000000" in capsys.readouterr().err


def test_walk_explain_prints_one_line_per_step(capsys: pytest.CaptureFixture[str]) -> None:
    steps = walk(capsys, "--access", "write")["steps"]
    code = main(["demo", "walk", "--access", "write", "--explain"])
    lines = capsys.readouterr().out.splitlines()
    assert code == EXIT_OK
    assert len(lines) == len(steps) == 4 + 4  # map, first access, 4 levels, paddr, second
    addr = int(lines[0].split(" = ")[1].split(":")[0], 16)
    for line, (level, bits) in zip(
        lines[2:6], [(4, "47-39"), (3, "38-30"), (2, "29-21"), (1, "20-12")], strict=True
    ):
        assert f"index {va_index(addr, level)} (bits {bits})" in line
    assert "L1" in lines[-1]


def test_walk_rich_output_without_colour(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "walk", "--no-color"])
    out = capsys.readouterr().out
    assert code == EXIT_OK
    assert "\x1b[" not in out
    for name in ("PML4", "PDPT", "PD", "PT", "TLB miss", "L1 dTLB hit"):
        assert name in out


# --- a model that strays is flagged ----------------------------------------------------


def test_a_fork_that_does_not_write_protect_is_flagged(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """If fork left private PTEs writable, the demo must say so and fail."""
    from vmsim.mm import memory

    monkeypatch.setattr(memory, "is_cow_mapping", lambda flags: False)
    code = main(["demo", "cow", "--explain"])
    captured = capsys.readouterr()
    assert code == EXIT_FAILURE
    assert "MODEL DISAGREES" in captured.out
    assert "fork" in captured.err


def test_a_tlb_that_caches_nothing_is_flagged(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the walk's result never reached the TLB, the second access would walk again."""
    from vmsim.hw.tlb import TlbHierarchy

    monkeypatch.setattr(TlbHierarchy, "insert", lambda self, *args, **kwargs: None)
    code = main(["demo", "walk", "--json"])
    captured = capsys.readouterr()
    assert code == EXIT_FAILURE
    data = json.loads(captured.out)
    assert data["matches_linux"] is False
    assert data["second"]["tlb"] is None
    assert "disagrees" in captured.err
