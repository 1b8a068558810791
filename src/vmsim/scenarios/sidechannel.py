"""A TLB timing side channel (TLBleed-style prime + probe on the STLB) and its mitigations.

The model, stated plainly (``docs/sidechannel.md`` has the discussion):

* **Victim**: a documented model of a table lookup indexed by key bits: for secret bit ``i``
  it touches page ``A_i`` of its table if the bit is 0, page ``B_i`` if it is 1. ``A_i`` and
  ``B_i`` are chosen to fall in STLB sets ``2i`` and ``2i + 1`` (a 4 KiB page with page
  number ``pn`` lives in set ``pn % 128`` on Skylake). It also touches ``noise`` random pages
  of its own (stack, code, other data), drawn from the trial's random generator.
* **Attacker**: owns ``ways`` pages in each of the ``2 * bits`` probed STLB sets. It *primes*
  (touches them all), the victim runs, then it *probes* (touches them again in the same
  order) and times each access with the cycle model: an L1 dTLB hit costs 0 extra cycles, an
  STLB hit ``cpu.stlb_hit_latency``, a miss a page walk (``cpu.walk_overhead`` plus one L1D
  hit per level of a four-level walk: the page-table lines are taken to be cached, the
  paging-structure caches are not consulted). The attacker's decision (:func:`guess_bits`)
  receives only its own probe latencies, one list per probed set: it never sees the victim.
* **Hardware**: the one TLB model of the project, ``vmsim.hw.tlb.TlbHierarchy``, inside the
  ``vmsim.hw.cpu.Cpu`` whose ``switch_to()`` hands out PCIDs as arch/x86/mm/tlb.c does.

Mitigations, each run over the same secrets:

``none``   attacker and victim are threads of one address space (one PCID, no flush at a
           switch): the closest a one-core model gets to TLBleed's hyperthreads sharing a TLB.
``pcid``   two processes, switched by ``Cpu.switch_to()`` (PCIDs, no flush): entries are
           tagged, but both processes' entries compete for the same sets, so the attack works.
``flush``  two processes, every switch flushes every non-global entry (a CR3 write without
           PCID): the probe finds nothing of its own, every set looks the same.
``kpti``   ``pcid`` plus page-table isolation: every switch enters the kernel on the kernel
           PCID (user PCID | 0x800, as arch/x86/mm/tlb.c kern_pcid()/user_pcid()) and
           touches ``KERNEL_PAGES`` kernel pages (non-global under KPTI), then returns on the
           user PCID. KPTI separates kernel from user, not one user process from another: the
           attack still works, and the kernel's entries are extra walks.
``partition`` ``pcid`` on an STLB whose sets are split between PCIDs of odd and even parity
           (``vmsim.hw.tlb.partition_by_pcid(2)``): the victim never evicts the attacker;
           each has half the STLB.
``random`` ``pcid`` on an STLB whose set index is a keyed hash of page number and PCID
           (``vmsim.hw.tlb.keyed_set_hash``, key drawn from the seed): the attacker cannot
           choose pages that share the victim's sets.

The cost of a mitigation is measured apart from the attack, on a benign schedule with the
same switches: two processes take turns ``trials`` times, each touching its own working set of
``WORKING_SET`` 4 KiB pages (together they fit the STLB). ``extra_walks`` is the page walks
(both processes and the kernel) of that schedule minus those of ``none``: what the mitigation
costs programs that are not attacking anyone. ``attack_walks`` counts the walks of the attack
runs themselves (mostly the attacker's own probe refilling its sets).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from vmsim.hw.cpu import Cpu
from vmsim.hw.tlb import (
    PAGE_SIZE_4K,
    SetIndex,
    TlbHierarchy,
    keyed_set_hash,
    partition_by_pcid,
)
from vmsim.memtrace.cost import level_latencies
from vmsim.memtrace.cpus import DEFAULT_CPU, cpu_model
from vmsim.memtrace.records import CpuModel

__all__ = [
    "KERNEL_PAGES",
    "MAX_BITS",
    "MITIGATIONS",
    "MitigationResult",
    "Result",
    "guess_bits",
    "run",
]

MITIGATIONS = ("none", "pcid", "flush", "kpti", "partition", "random")
MAX_BITS = 64  # two STLB sets a bit: the default CPU's 128 sets
KERNEL_PAGES = 8  # kernel pages the switch path touches under KPTI (entry, stacks, mm, task)
WALK_LEVELS = 4  # a four-level walk: PML4E, PDPTE, PDE, PTE
WORKING_SET = 512  # pages each process of the cost schedule touches per turn (2 MiB)
NOISE_PAGES = 2  # other pages of the victim touched per run
ATTACKER_BASE = 0x5555_0000_0000  # 128 * 4 KiB aligned: page number % 128 == 0
VICTIM_TABLE = 0x7F00_0000_0000
VICTIM_OTHER = 0x7E00_0000_0000  # the victim's other pages (noise): 1 GiB of them
KERNEL_BASE = 0xFFFF_8880_0000_0000
KPTI_USER_BIT = 1 << 11  # X86_CR3_PTI_PCID_USER_BIT


@dataclass
class _Mm:
    """An address space as ``vmsim.hw.cpu.MmContext`` sees it."""

    name: str
    pcid: int = -1
    fast: Any = None


@dataclass
class MitigationResult:
    name: str
    correct: int = 0
    bits: int = 0
    attack_walks: int = 0
    walks: int = 0  # the cost schedule's walks
    extra_walks: int = 0
    probe_cycles: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.bits if self.bits else 0.0


@dataclass
class Result:
    cpu: str
    trials: int
    bits: int
    seed: int
    hit_cycles: tuple[int, int, int]  # L1 hit, STLB hit, walk
    mitigations: dict[str, MitigationResult] = field(default_factory=dict)


def _latencies(cpu: CpuModel) -> tuple[int, int, int]:
    l1d = level_latencies(cpu)[0]
    return 0, cpu.stlb_hit_latency, cpu.walk_overhead + WALK_LEVELS * l1d


class _Core:
    """One core running the attacker and the victim in turn under one mitigation."""

    def __init__(self, cpu: CpuModel, mitigation: str, seed: int) -> None:
        index: SetIndex | None = None
        if mitigation == "partition":
            index = partition_by_pcid(2)
        elif mitigation == "random":
            index = keyed_set_hash(random.Random(seed).randbytes(16))
        self.cpu = Cpu(cpu.tlb, index)  # type: ignore[arg-type]
        self.tlb: TlbHierarchy = self.cpu.tlb
        self.mitigation = mitigation
        self.lat = _latencies(cpu)
        self.walks = 0
        self.attacker = _Mm("attacker")
        self.victim = _Mm("victim")
        self.pcid = 0
        self.switch(self.attacker)

    def switch(self, mm: _Mm) -> None:
        """The context switch of the mitigation."""
        m = self.mitigation
        if m == "none":
            self.pcid = 1  # one address space: one PCID, nothing flushed
            return
        if m == "flush":
            self.tlb.flush_all()  # mov to CR3 without PCIDs: every non-global entry goes
            self.pcid = 0
            return
        pcid = self.cpu.switch_to(mm)
        if m == "kpti":
            kern = pcid  # kernel half of the pair; the user half has bit 11 set
            self.pcid = kern
            for k in range(KERNEL_PAGES):
                self.access(KERNEL_BASE + k * PAGE_SIZE_4K)
            self.pcid = pcid | KPTI_USER_BIT
        else:
            self.pcid = pcid

    def access(self, vaddr: int) -> int:
        """One load at ``vaddr`` by whatever runs now: its translation cycles."""
        entry, level = self.tlb.lookup(vaddr, self.pcid)
        if entry is None:
            self.walks += 1
            self.tlb.insert(vaddr, PAGE_SIZE_4K, vaddr >> 12, 0, self.pcid)
            return self.lat[2]
        return self.lat[0] if level == "L1" else self.lat[1]


def _attacker_pages(sets: int, nsets: int, ways: int) -> list[list[int]]:
    """``ways`` attacker pages for each of STLB sets ``0 .. sets-1``."""
    return [
        [ATTACKER_BASE + (s + k * nsets) * PAGE_SIZE_4K for k in range(ways)] for s in range(sets)
    ]


def _victim(core: _Core, secret: list[int], rng: random.Random) -> None:
    """The victim's run: table[2i + bit] for every key bit (each table page is in its own
    STLB set), then a few other pages of its own."""
    for i, bit in enumerate(secret):
        core.access(VICTIM_TABLE + (2 * i + bit) * PAGE_SIZE_4K)
    for _ in range(NOISE_PAGES):
        core.access(VICTIM_OTHER + rng.randrange(1 << 18) * PAGE_SIZE_4K)


def guess_bits(probe: list[list[int]], rng: random.Random) -> list[int]:
    """The attacker's decision from its own probe latencies alone: ``probe[s]`` is the cycles of
    each of its accesses to STLB set ``s``. Bit ``i`` is 1 if set ``2i + 1`` was slower than set
    ``2i``, 0 if faster, a coin toss on a tie."""
    out = []
    for i in range(len(probe) // 2):
        a, b = sum(probe[2 * i]), sum(probe[2 * i + 1])
        out.append(1 if b > a else 0 if a > b else rng.randrange(2))
    return out


def _trial(
    core: _Core,
    pages: list[list[int]],
    secret: list[int],
    nsets: int,
    victim_rng: random.Random,
    attacker_rng: random.Random,
) -> tuple[list[int], int]:
    for row in pages:  # prime
        for va in row:
            core.access(va)
    core.switch(core.victim)
    _victim(core, secret, victim_rng)
    core.switch(core.attacker)
    probe = [[core.access(va) for va in row] for row in pages]
    return guess_bits(probe, attacker_rng), sum(map(sum, probe))


def cost_walks(cpu: CpuModel, mitigation: str, trials: int, seed: int) -> int:
    """The page walks of the benign schedule (see the module text) under ``mitigation``."""
    core = _Core(cpu, mitigation, seed)
    a = [0x5555_0000_0000 + p * PAGE_SIZE_4K for p in range(WORKING_SET)]
    b = [0x7F00_0000_0000 + p * PAGE_SIZE_4K for p in range(WORKING_SET)]
    for _ in range(trials):
        for va in a:
            core.access(va)
        core.switch(core.victim)
        for va in b:
            core.access(va)
        core.switch(core.attacker)
    return core.walks


def run(
    trials: int = 100,
    bits: int = 16,
    seed: int = 1,
    cpu_name: str = DEFAULT_CPU,
    mitigations: tuple[str, ...] = MITIGATIONS,
) -> Result:
    """Run ``trials`` trials of a random ``bits``-bit secret under every mitigation."""
    cpu = cpu_model(cpu_name)
    stlb = cpu.tlb.stlb[0]  # type: ignore[attr-defined]
    nsets, ways = stlb.sets, stlb.ways
    if trials < 1:
        raise ValueError(f"--trials {trials}: need at least one trial")
    if not 1 <= bits <= min(MAX_BITS, nsets // 2):
        raise ValueError(f"--bits {bits}: between 1 and {nsets // 2} (two STLB sets a bit)")
    for m in mitigations:
        if m not in MITIGATIONS:
            raise ValueError(f"mitigation {m!r} is not one of {', '.join(MITIGATIONS)}")
    secrets_rng = random.Random(seed)
    secrets = [[secrets_rng.randrange(2) for _ in range(bits)] for _ in range(trials)]
    result = Result(cpu.name, trials, bits, seed, _latencies(cpu))
    pages = _attacker_pages(2 * bits, nsets, ways)
    for m in mitigations:
        core = _Core(cpu, m, seed)
        victim_rng = random.Random(seed * 1_000_003 + 1)
        attacker_rng = random.Random(seed * 1_000_003 + 2)
        r = MitigationResult(m)
        for secret in secrets:
            guess, cycles = _trial(core, pages, secret, nsets, victim_rng, attacker_rng)
            r.correct += sum(g == s for g, s in zip(guess, secret, strict=True))
            r.bits += bits
            r.probe_cycles += cycles
        r.attack_walks = core.walks
        r.walks = cost_walks(cpu, m, trials, seed)
        result.mitigations[m] = r
    if "none" in result.mitigations:
        base = result.mitigations["none"].walks
        for r in result.mitigations.values():
            r.extra_walks = r.walks - base
    return result
