"""The model side of an access-trace engine run (shared by both engines): the configuration,
the vmsim Machine and process a run translates in, and the recording hooks through which the
fast engine learns what the model did (TLB/PWC invalidations, page-table entries written).
See ``vmsim.memtrace.engine`` for the API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from vmsim.errors import Segfault
from vmsim.hw.mmu import PagingStructureCache
from vmsim.hw.tlb import (
    DEFAULT_TLB_CONFIG,
    PAGE_SIZE_1G,
    PAGE_SIZE_2M,
    PAGE_SIZE_4K,
    TlbConfig,
    TlbHierarchy,
)
from vmsim.machine import Machine
from vmsim.memtrace.huge import thp_mode
from vmsim.memtrace.layout import USER_LIMIT_4LEVEL, USER_LIMIT_5LEVEL, Layout
from vmsim.memtrace.records import CacheGeometry, Counters, CpuModel
from vmsim.mm.access import do_user_addr_fault

__all__ = [
    "PAGE_SIZES",
    "SKYLAKE_CACHES",
    "SKYLAKE_PWC",
    "EngineConfig",
    "Model",
    "RunResult",
]

PageSizeName = Literal["4K", "2M", "1G", "thp"]
PAGE_SIZES: dict[str, int] = {"4K": PAGE_SIZE_4K, "2M": PAGE_SIZE_2M, "1G": PAGE_SIZE_1G}
SIZE_NAMES = ("4K", "2M", "1G")
ACCESS_OF_KIND = ("exec", "read", "write", "write")  # KIND_INSTR, LOAD, STORE, MODIFY

# Used when no CpuModel is given: vmsim.hw.mmu.PagingStructureCache's defaults and a Skylake
# client's caches (32 KiB 8-way L1D 4 cycles, 256 KiB 4-way L2 12, 8 MiB 16-way LLC 42).
SKYLAKE_PWC: tuple[tuple[int, int], ...] = ((2, 32), (3, 4), (4, 2))
SKYLAKE_CACHES: tuple[CacheGeometry, ...] = (
    CacheGeometry(32 << 10, 8, 4),
    CacheGeometry(256 << 10, 4, 12),
    CacheGeometry(8 << 20, 16, 42),
)


@dataclass(frozen=True)
class EngineConfig:
    """What one engine pass models: TLB geometry, PWC sizes (level -> entries), caches, and
    the what-ifs. ``EngineConfig.of(cpu, ...)`` builds one from a ``CpuModel``."""

    tlb: TlbConfig = DEFAULT_TLB_CONFIG
    pwc_sizes: tuple[tuple[int, int], ...] = SKYLAKE_PWC
    caches: tuple[CacheGeometry, ...] = SKYLAKE_CACHES
    page_size: str = "4K"
    five_level: bool = False
    pwc: bool = True

    def __post_init__(self) -> None:
        if self.page_size not in ("4K", "2M", "1G", "thp"):
            raise ValueError(f"page size {self.page_size!r} is not 4K, 2M, 1G or thp")
        for lv, n in self.pwc_sizes:
            if lv not in (2, 3, 4, 5) or n < 0:
                raise ValueError(f"bad paging-structure cache size {lv}: {n}")

    @classmethod
    def of(
        cls,
        cpu: CpuModel | EngineConfig | None,
        *,
        page_size: str = "4K",
        five_level: bool = False,
        pwc: bool = True,
    ) -> EngineConfig:
        if cpu is None:
            return cls(page_size=page_size, five_level=five_level, pwc=pwc)
        if isinstance(cpu, EngineConfig):
            return cpu
        assert isinstance(cpu.tlb, TlbConfig), "CpuModel.tlb must be a vmsim.hw.tlb.TlbConfig"
        return cls(
            tlb=cpu.tlb,
            pwc_sizes=tuple(cpu.pwc_sizes),
            caches=tuple(cpu.caches),
            page_size=page_size,
            five_level=five_level,
            pwc=pwc,
        )

    def pwc_dict(self) -> dict[int, int]:
        """The ``PagingStructureCache`` sizes: every level 2..5, 0 where absent or PWC off."""
        sizes = dict.fromkeys((2, 3, 4, 5), 0)
        if self.pwc:
            sizes.update(dict(self.pwc_sizes))
        return sizes

    @property
    def huge_size(self) -> int:
        """The huge page size of the what-if (0 for 4K)."""
        return {"4K": 0, "2M": PAGE_SIZE_2M, "1G": PAGE_SIZE_1G, "thp": PAGE_SIZE_2M}[
            self.page_size
        ]

    @property
    def user_limit(self) -> int:
        return USER_LIMIT_5LEVEL if self.five_level else USER_LIMIT_4LEVEL


@dataclass
class RunResult:
    """``counters`` plus the model state after the run (``process``: the vmsim Process)."""

    counters: Counters
    process: Any
    engine_bytes: int = 0  # the fast engine's state (arrays), bytes; 0 for the reference


class _RecordingTlb(TlbHierarchy):
    """The model CPU's TLBs, recording every invalidation the kernel code issues so that the
    fast engine can apply it to its own arrays (``ops``: ("invlpg", va, pcid) | ("pcid",
    pcid) | ("all", include_global))."""

    def __init__(self, config: TlbConfig) -> None:
        super().__init__(config)
        self.ops: list[tuple[str, int, int]] = []

    def invlpg(self, vaddr: int, pcid: int) -> None:
        super().invlpg(vaddr, pcid)
        self.ops.append(("invlpg", vaddr, pcid))

    def flush_pcid(self, pcid: int) -> None:
        super().flush_pcid(pcid)
        self.ops.append(("pcid", pcid, 0))

    def flush_all(self, include_global: bool = False) -> None:
        super().flush_all(include_global)
        self.ops.append(("all", int(include_global), 0))


class _RecordingPwc(PagingStructureCache):
    """The model CPU's paging-structure caches, counting the flushes the kernel issues."""

    def __init__(self, sizes: dict[int, int]) -> None:
        super().__init__(sizes, strict=True)
        self.flushes = 0

    def flush(self) -> None:
        super().flush()
        self.flushes += 1


class _JournalDict(dict[int, int]):
    """One level of the model's page tables (``PageTables.entries[level]``), noting the key
    of every entry the model writes or removes in ``journal`` (shared by all levels)."""

    def __init__(self, level: int, data: dict[int, int], journal: list[tuple[int, int]]) -> None:
        super().__init__(data)
        self.level = level
        self.journal = journal

    def __setitem__(self, key: int, value: int) -> None:
        super().__setitem__(key, value)
        self.journal.append((self.level, key))

    def __delitem__(self, key: int) -> None:
        super().__delitem__(key)
        self.journal.append((self.level, key))

    def pop(self, key: int, *default: Any) -> Any:
        self.journal.append((self.level, key))
        return super().pop(key, *default)

    def setdefault(self, key: int, default: int = 0) -> int:
        self.journal.append((self.level, key))
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        other = dict(*args, **kwargs)
        for k, v in other.items():
            self[k] = v

    def popitem(self) -> tuple[int, int]:
        k, v = super().popitem()
        self.journal.append((self.level, k))
        return k, v

    def clear(self) -> None:
        for k in list(self):
            self.journal.append((self.level, k))
        super().clear()


class Model:
    """The vmsim side of a run: a Machine with the configured TLB geometry and PWC, one
    process with the layout, its PCID loaded (so no first-access context switch is counted).
    The huge-page what-ifs are the Machine's THP setting and the layout's hugetlb mappings
    (:mod:`vmsim.memtrace.huge`); every fault is the model's own. Shared by both engines."""

    def __init__(self, layout: Layout, cfg: EngineConfig, *, journal: bool = True) -> None:
        self.layout = layout
        self.cfg = cfg
        self.machine = Machine(
            five_level=cfg.five_level,
            tlb=cfg.tlb,
            ram="1T",
            overcommit_memory=1,
            thp=thp_mode(cfg.page_size),
        )
        cpu = self.machine.memory.cpu
        self.tlb = cpu.tlb = _RecordingTlb(cfg.tlb)
        self.pwc = cpu.pwc = _RecordingPwc(cfg.pwc_dict())
        self.proc = proc = layout.build(self.machine, cfg.page_size)
        self.mm = proc.mm
        self.stack_limit = self.machine.stack_limit
        self.pcid = cpu.switch_to(self.mm)
        self.tlb.ops.clear()
        self.journal: list[tuple[int, int]] = []
        if journal:
            ents = self.mm.pt.entries
            for lv in range(1, len(ents)):
                ents[lv] = _JournalDict(lv, ents[lv], self.journal)

    def fault(self, addr: int, access: str) -> bool:
        """The kernel side of a faulting user access (do_user_addr_fault(): the model's fault
        path, THP and hugetlb included); an access outside the layout is covered (Layout.cover).
        True if a fault was handled, False if the layout had to be extended instead."""
        try:
            do_user_addr_fault(self.mm, addr, access, self.stack_limit)
            return True
        except Segfault:
            self.layout.cover(self.proc, addr, access, self.cfg.user_limit)
            return False
