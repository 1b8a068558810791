"""``vmsim demo sidechannel``: the STLB prime + probe attack and its mitigations, over fixed
seeds. Expected values come from the hardware model's rules and from statistics, not from the
scenario:

- accuracy bounds are binomial: if the attacker's guesses carried no information about the
  secret, the number of bits right out of ``n`` would be Binomial(n, 1/2), mean ``n/2``,
  standard deviation ``sqrt(n)/2``. "Well above chance" is more than ``Z`` standard deviations
  above ``n/2``; "at chance" is within ``Z`` of it (``Z = 4``: a two-sided p of 6e-5);
- without a mitigation, and with PCIDs (which tag entries but share sets), the victim's table
  page lands in the set its secret bit selects: the attacker reads the key well above chance;
  KPTI separates the kernel from user space, not one user process from another;
- a flush at every switch, partitioned or hashed STLB sets leave nothing of the victim in the
  attacker's sets: at chance;
- the flush costs walks: the benign schedule re-walks both 512-page working sets after every
  switch (2 * 512 per turn, less the 2 * 512 cold walks ``none`` also pays);
- a probe's price is the engine's cycle model applied to the walk's own references: walk
  overhead + the latency of the cache level that held each page-table entry (Skylake's
  published figures, read from the CPU preset here, not through the scenario).
"""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest

from vmsim.cli.main import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main
from vmsim.hw.pte import PTE_PFN_MASK
from vmsim.hw.tlb import TlbHierarchy, keyed_set_hash, partition_by_pcid
from vmsim.memtrace.cache import CacheModel
from vmsim.memtrace.cpus import skylake
from vmsim.scenarios import sidechannel, sidechannel_victim

TRIALS = 100
BITS = 16
Z = 4.0


def _above_chance(correct: int, n: int) -> bool:
    return correct > n / 2 + Z * math.sqrt(n) / 2


def _at_chance(correct: int, n: int) -> bool:
    return abs(correct - n / 2) <= Z * math.sqrt(n) / 2


@pytest.fixture(scope="module")
def report() -> sidechannel.Result:
    return sidechannel.run(trials=TRIALS, bits=BITS, seed=7)


@pytest.mark.parametrize("mitigation", ["none", "pcid", "kpti"])
def test_attack_reads_the_key_well_above_chance(
    report: sidechannel.Result, mitigation: str
) -> None:
    r = report.mitigations[mitigation]
    assert r.bits == TRIALS * BITS
    assert _above_chance(r.correct, r.bits)


@pytest.mark.parametrize("mitigation", ["flush", "partition", "random"])
def test_mitigations_bring_accuracy_to_chance(report: sidechannel.Result, mitigation: str) -> None:
    r = report.mitigations[mitigation]
    assert _at_chance(r.correct, r.bits)


def test_flush_costs_walks(report: sidechannel.Result) -> None:
    flush = report.mitigations["flush"]
    assert flush.extra_walks == 2 * sidechannel.WORKING_SET * (TRIALS - 1)
    assert report.mitigations["pcid"].extra_walks == 0
    assert report.mitigations["partition"].extra_walks == 0
    assert report.mitigations["kpti"].extra_walks == 2 * sidechannel.KERNEL_PAGES


def test_probe_cycles_are_a_mean_over_the_probes(report: sidechannel.Result) -> None:
    """Each probe costs at least nothing (L1 TLB hit) and a victim-touched set's walks cost
    more than STLB hits: the attacked configurations pay more per probe than partition."""
    cpu = skylake()
    for r in report.mitigations.values():
        assert r.probes == TRIALS * 2 * BITS * 12
    assert report.mitigations["partition"].cycles >= 0
    assert report.mitigations["pcid"].cycles > report.mitigations["partition"].cycles
    # partition: the attacker's own 384 entries stay in its half: STLB hits, never more than
    # a hit plus the occasional data-cache miss
    assert cpu.stlb_hit_latency <= report.mitigations["partition"].cycles < 2 * 9


def test_decision_sees_only_the_attackers_latencies(monkeypatch: pytest.MonkeyPatch) -> None:
    """guess_bits() is called with lists of ints (its own probe latencies), one per probed
    set, 12 (the STLB's ways) each, and a random generator: nothing of the victim."""
    seen: list[tuple[object, object]] = []
    real = sidechannel.guess_bits

    def spy(probe: list[list[int]], rng: random.Random) -> list[int]:
        seen.append((probe, rng))
        return real(probe, rng)

    monkeypatch.setattr(sidechannel, "guess_bits", spy)
    sidechannel.run(trials=3, bits=4, seed=2, mitigations=("pcid",))
    assert len(seen) == 3
    for probe, rng in seen:
        assert type(rng) is random.Random
        assert type(probe) is list and len(probe) == 8
        for row in probe:
            assert type(row) is list and len(row) == 12
            assert all(type(x) is int for x in row)


def test_decision_rule() -> None:
    """Slower B set -> 1, slower A set -> 0; the median ignores one slow load."""
    rng = random.Random(0)
    probe = [[9] * 12, [13] * 12, [13] * 12, [9] * 11 + [60], [9] * 11 + [300], [13] * 12]
    assert sidechannel.guess_bits(probe, rng) == [1, 0, 1]


def test_walk_price_is_the_cost_model_of_its_references() -> None:
    """Every priced access of an attack: cycles = (walk_overhead + each page-table entry's
    level latency, for a walk; stlb_hit_latency for an STLB hit) + the data line's latency if
    it missed the L1D, with Skylake's figures from the preset; the levels are what a fresh
    cache model says for the same address stream; each walk's last reference is the address
    of the PTE in the process's own page tables; and walks differ in price."""
    cpu = skylake()
    lat = [c.latency for c in cpu.caches] + [cpu.dram_latency]
    assert lat == [4, 12, 42, 250] and cpu.walk_overhead == 9 and cpu.stlb_hit_latency == 9
    secrets = [[1, 0, 0, 1], [0, 1, 1, 0], [1, 1, 0, 0]]
    _, core = sidechannel.attack(cpu, "pcid", secrets, sidechannel.model_victim(4), 5, log=True)
    assert core.log
    fresh = CacheModel(cpu.caches)
    walk_prices = set()
    ref_counts = set()
    for rec in core.log:
        for paddr, level in rec.walk_refs:
            assert fresh.access(paddr) == level
        if rec.data is not None:
            assert fresh.access(rec.data[0]) == rec.data[1]
        expected = {"L1": 0, "STLB": 9}.get(rec.tlb or "", 0)
        if rec.tlb is None:
            expected = 9 + sum(lat[lv] for _, lv in rec.walk_refs)
            walk_prices.add(expected)
            ref_counts.add(len(rec.walk_refs))
            proc = core.procs[0 if rec.who == "attacker" else 1]
            pmd = next(s for s in proc.page_walk(rec.vaddr) if s.level == 2)
            pte_idx = (rec.vaddr >> 12) & 511
            assert rec.walk_refs[-1][0] == ((pmd.entry & PTE_PFN_MASK) | pte_idx << 3)
        if rec.data is not None and rec.data[1] > 0:
            expected += lat[rec.data[1]]
        assert rec.cycles == expected
    assert len(walk_prices) > 1  # walks are not a constant
    assert {1, 4} <= ref_counts  # PDE-cache hits read one entry; a cold walk reads four


def test_attacker_and_victim_are_processes_of_one_machine() -> None:
    """pcid: two processes with different PCIDs, their memory in VMAs and page tables; none:
    one process (threads)."""
    cpu = skylake()
    _, core = sidechannel.attack(cpu, "pcid", [[1, 0]], sidechannel.model_victim(2), 1)
    attacker, victim = core.procs
    assert attacker is not victim and attacker.machine is victim.machine
    assert attacker.mm.pcid != victim.mm.pcid and min(attacker.mm.pcid, victim.mm.pcid) > 0
    assert f"{sidechannel.ATTACKER_BASE:x}-" in attacker.maps()
    assert f"{sidechannel.VICTIM_TABLE:x}-" in victim.maps()
    assert f"{sidechannel.VICTIM_TABLE:x}-" not in attacker.maps()
    assert victim.pte(sidechannel.VICTIM_TABLE + 4096) & 1  # the table page 1 was faulted in
    _, core = sidechannel.attack(cpu, "none", [[1, 0]], sidechannel.model_victim(2), 1)
    assert core.procs[0] is core.procs[1]


def test_partitioned_sets_separate_parities() -> None:
    """Twelve pages of PCID 1 fill a 12-way set; a page of PCID 2 with the same set bits must
    not evict any of them under the partition, and must under the plain index."""
    for index, evicts in ((None, True), (partition_by_pcid(2), False)):
        tlb = TlbHierarchy(stlb_set_index=index)
        pages = [(5 + 128 * k) << 12 for k in range(12)]
        for va in pages:
            tlb.insert(va, 4096, va >> 12, 0, 1)
        tlb.insert(5 << 12 | 1 << 40, 4096, 1, 0, 2)
        tlb.check()
        stlb = {e.vbase for _, e in tlb.entries() if e.pcid == 1}
        assert (pages[0] not in stlb) is evicts
        assert tlb.lookup(pages[-1], 1)[0] is not None


def test_keyed_hash_lookup_finds_what_insert_placed() -> None:
    tlb = TlbHierarchy(stlb_set_index=keyed_set_hash(b"k" * 16))
    for p in range(2000):
        tlb.insert(p << 12, 4096, p, 0, 3)
    tlb.check()
    hits = sum(tlb.lookup(p << 12, 3)[1] is not None for p in range(2000))
    assert 1000 < hits < 2000  # the STLB keeps at most 1536 (+ the L1's 64), conflicts lose more
    tlb.invlpg(1999 << 12, 3)
    assert tlb.lookup(1999 << 12, 3) == (None, None)


def test_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "sidechannel", "--trials", "20", "--bits", "8", "--json"]) == EXIT_OK
    out = json.loads(capsys.readouterr().out)
    assert out["trials"] == 20 and out["bits"] == 8 and out["victim"] == "model"
    assert set(out["accuracy"]) >= {"none", "flush", "pcid", "kpti", "partition", "random"}
    assert set(out["extra_walks"]) == set(out["accuracy"]) == set(out["cycles"])
    assert _above_chance(round(out["accuracy"]["none"] * 160), 160)
    assert out["extra_walks"]["flush"] > 0
    assert out["latencies"] == {
        "l1_tlb_hit": 0,
        "stlb_hit": 9,
        "walk_overhead": 9,
        "l1d": 4,
        "l2": 12,
        "llc": 42,
        "dram": 250,
    }


def test_text_explain(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "sidechannel", "--trials", "5", "--bits", "4", "--explain"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "full TLB flush" in out and "partition" in out and "cycles/probe" in out


@pytest.mark.parametrize(
    "args", [["--bits", "65"], ["--bits", "0"], ["--trials", "0"], ["--victim", "java"]]
)
def test_bad_options(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "sidechannel", *args]) == EXIT_USAGE
    assert args[0] in capsys.readouterr().err


def test_lackey_victim_without_valgrind_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda n: None if n == "valgrind" else real(n))
    assert main(["demo", "sidechannel", "--victim", "lackey", "--trials", "1"]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert "needs valgrind" in err and err.count("\n") == 1


# ------------------------------------------------------------------ the C victim under lackey
needs_tools = pytest.mark.skipif(
    shutil.which("gcc") is None or shutil.which("valgrind") is None,
    reason="the lackey victim needs gcc and valgrind on PATH",
)


@pytest.fixture(scope="module")
def victim_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sidechannel_victim.compile_victim(tmp_path_factory.mktemp("victim"))


@needs_tools
def test_lackey_trace_touches_the_pages_the_source_says(victim_binary: Path) -> None:
    """sidechannel_victim.c: key bit i reads the first byte of table page 2 * i + bit."""
    key = "1101000111010010011"
    run = sidechannel_victim.record_run(victim_binary, key, victim_binary.parent)
    assert run.table % 4096 == 0
    assert run.table_pages() == [2 * i + int(c) for i, c in enumerate(key)]
    assert all(run.records[i][0] % 4096 == 0 for i in run.table_loads)


@needs_tools
def test_lackey_victim_replays_the_loop_and_leaks() -> None:
    """The recorded loop, replayed for a secret, reads exactly its table pages (plus the
    loop's own code and stack); the attack reads it well above chance without a mitigation
    and at chance with the flush."""
    program = sidechannel_victim.lackey_victim(8)
    table = program.table[0][0]
    secret = [1, 0, 0, 1, 1, 1, 0, 1]
    acc = program.accesses(secret, random.Random(0))
    pages = [(a - table) >> 12 for a, _ in acc if table <= a < table + 128 * 4096]
    assert pages == [2 * i + b for i, b in enumerate(secret)]
    assert {k for _, k in acc} == {"exec", "read"}
    r = sidechannel.run(trials=40, bits=8, seed=3, mitigations=("none", "flush"), victim=program)
    assert r.victim == "lackey"
    assert _above_chance(r.mitigations["none"].correct, 320)
    assert _at_chance(r.mitigations["flush"].correct, 320)


@needs_tools
def test_lackey_victim_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["demo", "sidechannel", "--victim", "lackey", "--trials", "3", "--bits", "4"]
    assert main([*args, "--json"]) == EXIT_OK
    out = json.loads(capsys.readouterr().out)
    assert out["victim"] == "lackey" and out["bits"] == 4
    assert set(out["cycles"]) == set(out["accuracy"])
