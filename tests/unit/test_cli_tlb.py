"""``vmsim tlb`` end to end through main([...]) on small hand-written lackey traces.

Expected counts come from the TLB geometry of the default CPU (Skylake,
``vmsim.hw.tlb.DEFAULT_TLB_CONFIG``), never from the code under test:

- the L1 dTLB holds 4 KiB pages in 16 sets of 4 ways (set = page number % 16): 100
  consecutive pages put 6 or 7 pages in every set, so cycling through them in order misses the
  L1 on every access (LRU, more pages than ways); the STLB (128 sets of 12 ways) holds all 100,
  so after the first round every access hits there;
- with 2 MiB pages the same 400 KiB lie in one page: one walk, then L1 hits;
- a walk is counted once per access that missed both TLB levels (a walk that faults is
  retried after the fault and counted once).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vmsim.cli.main import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main

BASE = 0x7F0000000000  # 2 MiB aligned
CODE = 0x400000
PAGES = 100
ROUNDS = 5


def write_lackey(path: Path, records: list[str]) -> Path:
    header = [
        "==4242== Lackey, an example Valgrind tool",
        "==4242== Command: ./toy",
        "==4242== ",
    ]
    path.write_text("\n".join(header + records + ["==4242== ", "==4242== Counted 1 calls"]) + "\n")
    return path


def cyclic(tmp_path: Path, with_code: bool = False) -> Path:
    records = []
    for _ in range(ROUNDS):
        for page in range(PAGES):
            if with_code:
                records.append(f"I  {CODE + 4 * page:08x},4")
            records.append(f" L {BASE + page * 4096 + 8:08x},8")
    return write_lackey(tmp_path / "cyclic.lackey", records)


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code = main(["tlb", *args, "--json"])
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err
    data: dict[str, Any] = json.loads(captured.out)
    return data


def test_json_has_every_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, str(cyclic(tmp_path)))
    for key in (
        "records",
        "instructions",
        "accesses",
        "l1_hits",
        "stlb_hits",
        "walks",
        "walk_refs",
        "faults",
        "hit_rate",
        "mpki",
        "translation_cycles",
        "total_cycles",
        "translation_share",
    ):
        assert key in data, key
    assert data["cpu"] == "skylake"
    assert data["page_size"] == "4K"
    assert data["layout_estimated"] is True


def test_cyclic_pages_thrash_the_l1_and_hit_the_stlb(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = run_json(capsys, str(cyclic(tmp_path)))
    n = PAGES * ROUNDS
    assert data["records"] == data["accesses"] == n
    assert data["instructions"] == 0
    assert data["walks"] == PAGES  # each page once, cold
    assert data["l1_hits"] == 0
    assert data["stlb_hits"] == n - PAGES
    assert data["hit_rate"] == pytest.approx((n - PAGES) / n)
    assert data["mpki"] is None  # no instruction records
    assert data["faults"] >= PAGES  # each page's first touch faults
    assert data["translation_share"] == pytest.approx(
        data["translation_cycles"] / data["total_cycles"]
    )
    # the 2 MiB what-if: the 400 KiB lie in one 2 MiB page
    huge = data["huge_2M"]
    assert huge["page_size"] == "2M"
    assert huge["walks"] == 1
    assert huge["l1_hits"] == n - 1
    assert huge["hit_rate"] == pytest.approx((n - 1) / n)
    assert huge["translation_cycles"] < data["translation_cycles"]


def test_mpki_counts_walks_per_thousand_instructions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = run_json(capsys, str(cyclic(tmp_path, with_code=True)), "--no-huge")
    n = PAGES * ROUNDS
    assert data["instructions"] == n
    assert data["records"] == data["accesses"] == 2 * n
    # code: 400 bytes of one 4 KiB page: one iTLB walk; data: 100 cold walks
    assert data["walks"] == PAGES + 1
    assert data["mpki"] == pytest.approx(1000 * (PAGES + 1) / n)
    assert data["huge_2M"] is None


def test_engines_agree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = str(cyclic(tmp_path, with_code=True))
    fast = run_json(capsys, trace, "--no-huge")
    reference = run_json(capsys, trace, "--no-huge", "--engine", "reference")
    for key in ("records", "l1_hits", "stlb_hits", "walks", "walk_refs", "faults", "hit_rate"):
        assert fast[key] == reference[key], key


def test_sweep_compares_configurations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "sweep.png"
    data = run_json(capsys, str(cyclic(tmp_path)), "--sweep", "--plot", str(png))
    labels = {(s["cpu"], s["page_size"], s["five_level"], s["pwc"]) for s in data["sweep"]}
    for cpu in ("skylake", "icelake", "zen4"):
        assert (cpu, "4K", False, True) in labels
        assert (cpu, "2M", False, True) in labels
    assert ("skylake", "4K", True, True) in labels
    assert ("skylake", "4K", False, False) in labels
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    by = {(s["cpu"], s["page_size"], s["five_level"], s["pwc"]): s for s in data["sweep"]}
    # Zen 4's L1 dTLB is fully associative with 72 entries: 100 cyclic pages still miss it;
    # its 3072-entry L2 holds them all
    assert by[("zen4", "4K", False, True)]["walks"] == PAGES
    # without the PWC every walk reads all four levels
    nopwc = by[("skylake", "4K", False, False)]
    assert nopwc["walk_refs"] == 4 * nopwc["walks"]


def test_human_report_leads_with_the_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["tlb", str(cyclic(tmp_path)), "--no-color"])
    out = capsys.readouterr().out
    assert code == EXIT_OK
    first = " ".join(out.split())
    assert "TLB hit rate 80.00%" in first
    assert "with 2M pages" in first
    assert first.index("TLB hit rate") < first.index("page walks")


def test_plot_over_the_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "trace.png"
    run_json(capsys, str(cyclic(tmp_path)), "--plot", str(png), "--no-huge")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pinatrace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Pin's pinatrace: "IP: R|W ADDR", data accesses only; the same cyclic pages as above
    lines = [
        f"0x400000: {'R' if i % 2 else 'W'} {BASE + (i % PAGES) * 4096 + 8:#x}"
        for i in range(PAGES * ROUNDS)
    ]
    trace = tmp_path / "cyclic.pinatrace"
    trace.write_text("\n".join([*lines, "#eof"]) + "\n")
    data = run_json(capsys, str(trace), "--no-huge")
    assert data["records"] == PAGES * ROUNDS
    assert data["instructions"] == 0
    assert data["walks"] == PAGES
    assert data["stlb_hits"] == PAGES * (ROUNDS - 1)


def _fails(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(["tlb", *args])
    err = capsys.readouterr().err
    assert code == EXIT_FAILURE, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _fails(capsys, str(tmp_path / "nope.lackey"))
    assert "nope.lackey" in err


def test_bad_record_names_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = write_lackey(tmp_path / "bad.lackey", [" L 7f0000000008,8", " L zzzz,8"])
    err = _fails(capsys, str(trace), "--format", "lackey")
    assert "bad.lackey:5" in err  # three header lines, one good record, then the bad one


def test_binary_garbage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "garbage.lackey"
    trace.write_bytes(bytes(range(256)) * 64)
    err = _fails(capsys, str(trace), "--format", "lackey")
    assert "garbage.lackey" in err


def test_truncated_gzip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import gzip

    whole = gzip.compress(cyclic(tmp_path).read_bytes())
    trace = tmp_path / "cut.lackey.gz"
    trace.write_bytes(whole[: len(whole) // 2])
    err = _fails(capsys, str(trace))
    assert "cut.lackey.gz" in err


def test_wrong_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _fails(capsys, str(cyclic(tmp_path)), "--format", "npz")
    assert "cyclic.lackey" in err


def test_kernel_address_names_its_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 0xffffffff81000000 is the kernel's text: no user access reaches it
    trace = write_lackey(tmp_path / "kernel.lackey", [" L 7f0000000008,8", " L ffffffff81000000,8"])
    err = _fails(capsys, str(trace), "--no-huge")
    assert "kernel.lackey" in err
    assert "0xffffffff81000000" in err


def test_null_access_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    # the recorded fixture ends with a read of (nil): no user access reaches page 0
    fixture = Path(__file__).parents[1] / "fixtures" / "memtraces" / "hello.pinatrace"
    err = _fails(capsys, str(fixture), "--no-huge")
    assert "0x0" in err


def test_unwritable_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "no" / "such" / "dir.png"
    err = _fails(capsys, str(cyclic(tmp_path)), "--no-huge", "--plot", str(png))
    assert "dir.png" in err


def test_bad_option_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tlb", str(cyclic(tmp_path)), "--cpu", "pentium"]) == EXIT_USAGE
    assert "pentium" in capsys.readouterr().err
