"""A TLB timing side channel (TLBleed-style prime + probe on the STLB) and its mitigations.

The model, stated plainly (``docs/sidechannel.md`` has the discussion):

* **One machine, two processes.** The attacker and the victim are processes of one
  ``vmsim.machine.Machine`` on its one ``vmsim.hw.cpu.Cpu``: their memory is mapped by
  ``mmap``, faulted in through the model's fault path (``do_user_addr_fault()``), and every
  access of either goes through the model's MMU (``vmsim.mm.access.user_access``: the
  ``TlbHierarchy`` tagged with the PCID ``Cpu.switch_to()`` handed out, the page walk with the
  paging-structure caches). TLB fills and evictions are the model's own.
* **Victim**: a table lookup indexed by key bits: for secret bit ``i`` it reads page
  ``2i + bit`` of its table. Two forms (``victim=``): ``"model"``, a documented model of such
  a program (the table at a 512 KiB-aligned address, so pages ``2i`` and ``2i + 1`` fall in
  STLB sets ``2i`` and ``2i + 1``, plus ``NOISE_PAGES`` random other pages of its own a run);
  ``"lackey"``, the C program ``data/sidechannel_victim.c`` compiled and traced by Valgrind
  lackey (``vmsim.scenarios.sidechannel_victim``): its lookup loop replayed access by access
  (instruction fetches, stack, key string, table) at the addresses the trace has.
* **Attacker**: owns ``ways`` pages in the STLB set of each of the victim's two candidate
  table pages per bit (the table's address is public: it is in the victim's binary; the
  secret is not). It *primes* (loads them all), the core switches to the victim, the victim
  runs, the core switches back, and it *probes* (loads them again in the same order), timing
  each load with the cycle model of the access-trace engine
  (:func:`vmsim.memtrace.cost.access_cycles` with the CPU preset of ``vmsim.memtrace.cpus``):
  an L1 dTLB hit costs nothing, an STLB hit ``stlb_hit_latency``, a walk ``walk_overhead``
  plus the latency of each paging-structure entry it read, at the level of the data-cache
  model (:class:`vmsim.memtrace.cache.CacheModel`, shared by walk and data lines of both
  processes) that held it; plus the data line's latency if it missed the L1D. The attacker's
  decision (:func:`guess_bits`) receives only its own probe latencies: lists of ints.

Mitigations, each run over the same secrets (what a switch between the two does):

``none``   attacker and victim are threads of one address space (one process, one PCID, no
           flush): the closest a one-core model gets to TLBleed's hyperthreads sharing a TLB.
``pcid``   two processes, switched by ``Cpu.switch_to()`` (PCIDs, no flush): entries are
           tagged, but both processes' entries compete for the same sets.
``flush``  two processes, every switch also flushes every non-global entry (a CR3 write
           without PCID).
``kpti``   ``pcid`` plus page-table isolation: every switch enters the kernel, whose
           ``KERNEL_PAGES`` pages (non-global under KPTI) are translated with a PCID of their
           own, then returns to user space. KPTI separates kernel from user, not one user
           process from another.
``partition`` ``pcid`` on an STLB whose sets are split between PCIDs of odd and even parity
           (``vmsim.hw.tlb.partition_by_pcid(2)``).
``random`` ``pcid`` on an STLB whose set index is a keyed hash of page number and PCID
           (``vmsim.hw.tlb.keyed_set_hash``, key drawn from the seed).

The cost of a mitigation is measured apart from the attack, on a benign schedule with the
same switches: two processes take turns ``trials`` times, each touching its own working set of
``WORKING_SET`` 4 KiB pages (together they fit the STLB). ``extra_walks`` is the page walks
(both processes and the kernel) of that schedule minus those of ``none``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from statistics import median_low
from typing import Any

from vmsim.constants import (
    MAP_ANONYMOUS,
    MAP_FIXED_NOREPLACE,
    MAP_NORESERVE,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
)
from vmsim.hw.mmu import PagingStructureCache
from vmsim.hw.pte import PTE_PFN_MASK
from vmsim.hw.tlb import PAGE_SIZE_4K, SetIndex, TlbHierarchy, keyed_set_hash, partition_by_pcid
from vmsim.machine import Machine
from vmsim.memtrace.cache import CacheModel
from vmsim.memtrace.cost import access_cycles, level_latencies
from vmsim.memtrace.cpus import DEFAULT_CPU, cpu_model
from vmsim.memtrace.records import CpuModel
from vmsim.mm.access import Access, Translation, user_access
from vmsim.process import Process
from vmsim.scenarios.sidechannel_victim import (
    MAX_BITS,
    VICTIM_OTHER,
    VICTIM_TABLE,
    VictimProgram,
    VictimUnavailable,
    lackey_victim,
    model_victim,
)

__all__ = [
    "KERNEL_PAGES",
    "MAX_BITS",
    "MITIGATIONS",
    "VICTIMS",
    "VICTIM_OTHER",
    "VICTIM_TABLE",
    "MitigationResult",
    "ProbeRecord",
    "Result",
    "VictimProgram",
    "VictimUnavailable",
    "guess_bits",
    "model_victim",
    "run",
]

MITIGATIONS = ("none", "pcid", "flush", "kpti", "partition", "random")
VICTIMS = ("model", "lackey")
KERNEL_PAGES = 8  # kernel pages the switch path touches under KPTI (entry, stacks, mm, task)
WORKING_SET = 512  # pages each process of the cost schedule touches per turn (2 MiB)
ATTACKER_BASE = 0x5555_0000_0000  # 128 * 4 KiB aligned: page number % 128 == 0
KERNEL_BASE = 0xFFFF_8880_0000_0000
KPTI_KERNEL_BIT = 1 << 11  # X86_CR3_PTI_PCID_USER_BIT: the other half of the PCID pair
_LEVEL_OF_SIZE = {1 << 12: 1, 1 << 21: 2, 1 << 30: 3}
_ANON = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | MAP_NORESERVE


@dataclass
class MitigationResult:
    name: str
    correct: int = 0
    bits: int = 0
    attack_walks: int = 0
    walks: int = 0  # the cost schedule's walks
    extra_walks: int = 0
    probe_cycles: int = 0
    probes: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.bits if self.bits else 0.0

    @property
    def cycles(self) -> float:
        """Mean cycles of one probe access."""
        return self.probe_cycles / self.probes if self.probes else 0.0


@dataclass
class Result:
    cpu: str
    trials: int
    bits: int
    seed: int
    hit_cycles: tuple[int, int, int]  # L1 TLB hit, STLB hit, walk overhead (refs on top)
    mitigations: dict[str, MitigationResult] = field(default_factory=dict)
    victim: str = "model"
    latencies: tuple[int, ...] = ()  # L1D, L2, LLC, DRAM: each walk reference's price


@dataclass(frozen=True)
class ProbeRecord:
    """One priced access (kept when a core is asked to log): where the translation came from,
    the physical address and cache level of each paging-structure entry the walk read, the
    data line's, and the cycles charged."""

    who: str
    vaddr: int
    tlb: str | None
    walk_refs: tuple[tuple[int, int], ...]  # (paddr, level)
    data: tuple[int, int] | None  # (paddr, level); None for an instruction fetch
    cycles: int


def walk_ref_addrs(pt: Any, t: Translation) -> list[int]:
    """The physical addresses of the paging-structure entries a walk read from memory, top
    first (the tables below the PWC hit's level: the same rule as the reference engine)."""
    leaf = _LEVEL_OF_SIZE[t.page_size]
    by_level = {s.level: s for s in t.entries}
    out = []
    for lv in range(leaf + t.memory_refs - 1, leaf - 1, -1):
        table = pt.root_pfn if lv == pt.levels else (by_level[lv + 1].entry & PTE_PFN_MASK) >> 12
        out.append((table << 12) | (by_level[lv].idx << 3))
    return out


class _Core:
    """One machine running two processes in turn on its one core under a mitigation (one
    process, two threads, for ``none``)."""

    def __init__(self, cpu: CpuModel, mitigation: str, seed: int, log: bool = False) -> None:
        self.machine = Machine(tlb=cpu.tlb, overcommit_memory=1)  # type: ignore[arg-type]
        kcpu = self.machine.memory.cpu
        index: SetIndex | None = None
        if mitigation == "partition":
            index = partition_by_pcid(2)
        elif mitigation == "random":
            index = keyed_set_hash(random.Random(seed).randbytes(16))
        kcpu.tlb = TlbHierarchy(cpu.tlb, index)  # type: ignore[arg-type]
        kcpu.pwc = PagingStructureCache(dict(cpu.pwc_sizes), strict=True)
        self.kcpu = kcpu
        self.tlb: TlbHierarchy = kcpu.tlb
        self.cpu = cpu
        self.cache = CacheModel(cpu.caches)
        self.mitigation = mitigation
        self.limit = self.machine.stack_limit
        self.kernel_walks = 0
        self.log: list[ProbeRecord] | None = [] if log else None
        first = self.machine.spawn()
        second = first if mitigation == "none" else self.machine.spawn()
        self.procs = (first, second)
        self.names = ("attacker", "victim")
        self.current = 0
        self.switch(0)

    @property
    def walks(self) -> int:
        return self.machine.memory.stats.walks + self.kernel_walks

    def switch(self, who: int) -> None:
        """The context switch to process ``who`` (0 or 1) under the mitigation."""
        self.current = who
        mm = self.procs[who].mm
        self.kcpu.switch_to(mm)  # the same mm for ``none``: nothing happens
        if self.mitigation == "flush":
            self.tlb.flush_all()  # mov to CR3 without PCIDs: every non-global entry goes
        elif self.mitigation == "kpti":
            kern = mm.pcid | KPTI_KERNEL_BIT
            for k in range(KERNEL_PAGES):
                va = KERNEL_BASE + k * PAGE_SIZE_4K
                if self.tlb.lookup(va, kern)[0] is None:
                    self.kernel_walks += 1
                    self.tlb.insert(va, PAGE_SIZE_4K, va >> 12, 0, kern)

    def mmap(self, addr: int, length: int, prot: int) -> None:
        got = self.procs[self.current].mmap(addr, length, prot, _ANON)
        assert got == addr, f"{self.names[self.current]}: mmap at {addr:#x} gave {got:#x}"

    def touch(self, vaddr: int, access: Access = "read") -> None:
        """An access whose price nobody looks at (the cost schedule, set-up)."""
        mm = self.procs[self.current].mm
        assert self.kcpu.current is mm, "an access without its context switch"
        user_access(mm, vaddr, access, self.limit)

    def access(self, vaddr: int, access: Access = "read") -> int:
        """One access by the process that runs now, through the model's MMU, priced by the
        engine's cycle model (walk and data lines through the shared cache model)."""
        proc: Process = self.procs[self.current]
        mm = proc.mm
        assert self.kcpu.current is mm, "an access without its context switch"
        t = user_access(mm, vaddr, access, self.limit, detail=True)
        assert isinstance(t, Translation)
        refs: list[tuple[int, int]] = []
        if t.tlb is None:
            refs = [(a, self.cache.access(a)) for a in walk_ref_addrs(mm.pt, t)]
        data = None if access == "exec" else (t.paddr, self.cache.access(t.paddr))
        cycles = access_cycles(
            self.cpu, t.tlb, [lv for _, lv in refs], None if data is None else data[1]
        )
        if self.log is not None:
            self.log.append(
                ProbeRecord(self.names[self.current], vaddr, t.tlb, tuple(refs), data, cycles)
            )
        return cycles


def _eviction_sets(
    targets: Sequence[int], nsets: int, ways: int, line_of: Callable[[int, int], int]
) -> list[list[int]]:
    """``ways`` attacker addresses in the STLB set (plain index: page number mod ``nsets``) of
    each target page; ``line_of(row, way)`` picks the cache line inside each page, so the
    attacker's own data lines spread over the L1D instead of crowding one set."""
    out = []
    for row, target in enumerate(targets):
        s = (target >> 12) % nsets
        out.append(
            [
                ATTACKER_BASE + (s + k * nsets) * PAGE_SIZE_4K + line_of(row, k) * 64
                for k in range(ways)
            ]
        )
    return out


def guess_bits(probe: list[list[int]], rng: random.Random) -> list[int]:
    """The attacker's decision from its own probe latencies alone: ``probe[2i]`` and
    ``probe[2i + 1]`` are the cycles of each of its loads in the STLB set of the victim's
    page for bit ``i`` = 0 and = 1. Bit ``i`` is 1 if the second set was slower, 0 if the
    first was, a coin toss on a tie. A set's time is the median of its loads, not their sum:
    a set the victim touched walks on every load (the LRU cascade), while a few loads whose
    data line missed the L1D (a cost the TLB did not cause) would tip a sum."""
    out = []
    for i in range(len(probe) // 2):
        a, b = median_low(probe[2 * i]), median_low(probe[2 * i + 1])
        out.append(1 if b > a else 0 if a > b else rng.randrange(2))
    return out


def _setup(core: _Core, victim: VictimProgram, evict: list[list[int]]) -> None:
    """Both processes map their memory and fault it in (attacker first, as in a trial)."""
    lo = min(va for row in evict for va in row) & ~(PAGE_SIZE_4K - 1)
    hi = (max(va for row in evict for va in row) | (PAGE_SIZE_4K - 1)) + 1
    core.mmap(lo, hi - lo, PROT_READ | PROT_WRITE)
    for row in evict:
        for va in row:
            core.touch(va, "write")
    core.switch(1)
    for addr, length, prot in victim.mappings:
        core.mmap(addr, length, prot)
    for va in victim.init:
        core.touch(va, "write")
    core.switch(0)


def _trial(
    core: _Core,
    evict: list[list[int]],
    victim: VictimProgram,
    secret: list[int],
    victim_rng: random.Random,
    attacker_rng: random.Random,
) -> tuple[list[int], int]:
    for row in evict:  # prime
        for va in row:
            core.access(va)
    core.switch(1)
    for va, acc in victim.accesses(secret, victim_rng):
        core.access(va, acc)
    core.switch(0)
    probe = [[core.access(va) for va in row] for row in evict]
    return guess_bits(probe, attacker_rng), sum(map(sum, probe))


def attack(
    cpu: CpuModel,
    mitigation: str,
    secrets: list[list[int]],
    victim: VictimProgram,
    seed: int,
    *,
    log: bool = False,
) -> tuple[MitigationResult, _Core]:
    """The attack under one mitigation, over ``secrets``: accuracy, probe cycles, walks."""
    stlb = cpu.tlb.stlb[0]  # type: ignore[attr-defined]
    nsets, ways = stlb.sets, stlb.ways
    targets = [page for pair in victim.table for page in pair]
    evict = _eviction_sets(targets, nsets, ways, lambda row, k: (row * ways + k) % 64)
    core = _Core(cpu, mitigation, seed, log)
    _setup(core, victim, evict)
    victim_rng = random.Random(seed * 1_000_003 + 1)
    attacker_rng = random.Random(seed * 1_000_003 + 2)
    r = MitigationResult(mitigation)
    walks0 = core.walks
    for secret in secrets:
        guess, cycles = _trial(core, evict, victim, secret, victim_rng, attacker_rng)
        r.correct += sum(g == s for g, s in zip(guess, secret, strict=True))
        r.bits += len(secret)
        r.probe_cycles += cycles
        r.probes += len(targets) * ways
    r.attack_walks = core.walks - walks0
    return r, core


def cost_walks(cpu: CpuModel, mitigation: str, trials: int, seed: int) -> int:
    """The page walks of the benign schedule (see the module text) under ``mitigation``."""
    core = _Core(cpu, mitigation, seed)
    rw = PROT_READ | PROT_WRITE
    bases = (0x5555_0000_0000, 0x7F00_0000_0000)
    for who in (0, 1):
        core.switch(who)
        core.mmap(bases[who], WORKING_SET * PAGE_SIZE_4K, rw)
        for p in range(WORKING_SET):
            core.touch(bases[who] + p * PAGE_SIZE_4K, "write")  # faulted in before the count
    core.switch(0)
    core.tlb.flush_all()  # the count starts from a cold TLB for every mitigation
    walks0 = core.walks
    for _ in range(trials):
        for who in (0, 1):
            for p in range(WORKING_SET):
                core.touch(bases[who] + p * PAGE_SIZE_4K)
            core.switch(1 - who)
    return core.walks - walks0


def run(
    trials: int = 100,
    bits: int = 16,
    seed: int = 1,
    cpu_name: str = DEFAULT_CPU,
    mitigations: tuple[str, ...] = MITIGATIONS,
    *,
    victim: str | VictimProgram = "model",
) -> Result:
    """Run ``trials`` trials of a random ``bits``-bit secret under every mitigation.
    ``victim`` is ``"model"`` (the documented model), ``"lackey"`` (the C program traced by
    Valgrind lackey: needs gcc and valgrind, raises ``VictimUnavailable`` naming what is
    missing) or a ready :class:`VictimProgram`."""
    cpu = cpu_model(cpu_name)
    stlb = cpu.tlb.stlb[0]  # type: ignore[attr-defined]
    nsets = stlb.sets
    if trials < 1:
        raise ValueError(f"--trials {trials}: need at least one trial")
    if not 1 <= bits <= min(MAX_BITS, nsets // 2):
        raise ValueError(f"--bits {bits}: between 1 and {nsets // 2} (two STLB sets a bit)")
    for m in mitigations:
        if m not in MITIGATIONS:
            raise ValueError(f"mitigation {m!r} is not one of {', '.join(MITIGATIONS)}")
    if isinstance(victim, str):
        if victim == "model":
            program = model_victim(bits)
        elif victim == "lackey":
            program = lackey_victim(bits)
        else:
            raise ValueError(f"victim {victim!r} is not one of {', '.join(VICTIMS)}")
    else:
        program = victim
    if len(program.table) != bits:
        raise ValueError(f"victim {program.name}: {len(program.table)} table bits, not {bits}")
    secrets_rng = random.Random(seed)
    secrets = [[secrets_rng.randrange(2) for _ in range(bits)] for _ in range(trials)]
    result = Result(
        cpu.name,
        trials,
        bits,
        seed,
        (0, cpu.stlb_hit_latency, cpu.walk_overhead),
        victim=program.name,
        latencies=level_latencies(cpu),
    )
    for m in mitigations:
        r, _ = attack(cpu, m, secrets, program, seed)
        r.walks = cost_walks(cpu, m, trials, seed)
        result.mitigations[m] = r
    if "none" in result.mitigations:
        base = result.mitigations["none"].walks
        for r in result.mitigations.values():
            r.extra_walks = r.walks - base
    return result
