"""``vmsim demo sidechannel``: the STLB prime + probe attack and its mitigations, over fixed
seeds. Expected values come from the hardware model's rules, not from the scenario:

- without a mitigation (and with PCIDs, which tag entries but share sets) the victim's table
  page evicts one attacker page from exactly the set its secret bit selects, so the attacker
  reads nearly every bit (only the victim's two random other pages can blur a set);
- a full flush at every switch leaves every probed set equally empty: each bit is a coin toss,
  about half right over 16 * 100 bits (binomial standard deviation 0.0125);
- partitioned or hashed STLB sets stop the victim's page from landing in the attacker's set;
- the flush costs walks: the benign schedule re-walks both 512-page working sets after every
  switch (2 * 512 per turn, less the 2 * 512 cold walks ``none`` also pays).
"""

from __future__ import annotations

import json
import random

import pytest

from vmsim.cli.main import EXIT_OK, EXIT_USAGE, main
from vmsim.hw.tlb import TlbHierarchy, keyed_set_hash, partition_by_pcid
from vmsim.scenarios import sidechannel

TRIALS = 100
BITS = 16


@pytest.fixture(scope="module")
def report() -> sidechannel.Result:
    return sidechannel.run(trials=TRIALS, bits=BITS, seed=7)


def test_no_mitigation_recovers_the_secret(report: sidechannel.Result) -> None:
    assert report.mitigations["none"].accuracy >= 0.9


def test_pcids_still_leak(report: sidechannel.Result) -> None:
    assert report.mitigations["pcid"].accuracy >= 0.9


def test_kpti_does_not_separate_user_processes(report: sidechannel.Result) -> None:
    assert report.mitigations["kpti"].accuracy >= 0.75


@pytest.mark.parametrize("mitigation", ["flush", "partition", "random"])
def test_mitigations_bring_accuracy_to_chance(report: sidechannel.Result, mitigation: str) -> None:
    assert 0.4 <= report.mitigations[mitigation].accuracy <= 0.6


def test_flush_costs_walks(report: sidechannel.Result) -> None:
    flush = report.mitigations["flush"]
    assert flush.extra_walks == 2 * sidechannel.WORKING_SET * (TRIALS - 1)
    assert report.mitigations["pcid"].extra_walks == 0
    assert report.mitigations["partition"].extra_walks == 0


def test_attacker_sees_only_latencies() -> None:
    """The decision is a function of the probe latencies: slower B set -> 1, slower A -> 0."""
    rng = random.Random(0)
    probe = [[0] * 12, [30] * 12, [30] * 12, [0] * 12]
    assert sidechannel.guess_bits(probe, rng) == [1, 0]


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
    assert out["trials"] == 20 and out["bits"] == 8
    assert set(out["accuracy"]) >= {"none", "flush", "pcid", "kpti", "partition", "random"}
    assert set(out["extra_walks"]) == set(out["accuracy"])
    assert out["accuracy"]["none"] >= 0.9
    assert out["extra_walks"]["flush"] > 0


def test_text_explain(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "sidechannel", "--trials", "5", "--bits", "4", "--explain"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "full TLB flush" in out and "partition" in out


@pytest.mark.parametrize("args", [["--bits", "65"], ["--bits", "0"], ["--trials", "0"]])
def test_bad_options(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "sidechannel", *args]) == EXIT_USAGE
    assert args[0] in capsys.readouterr().err
