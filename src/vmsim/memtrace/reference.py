"""The reference engine: every record of a trace through the Python model itself.

Each record is one ``vmsim.mm.access.user_access(..., detail=True)`` call on the run's process:
the model's TLBs (``vmsim.hw.tlb.TlbHierarchy``), its page walk with paging-structure caches
(``vmsim.hw.mmu.walk``) and its fault path (``do_user_addr_fault()``). The counters come from
what the model reports per access (where the translation came from, the walk's memory
references, the faults it handled) and from the model's own statistics (PWC hits, TLB
invalidations); the cache levels from :class:`vmsim.memtrace.cache.CacheModel`, fed with the
physical address of every entry the walk read (the table frame comes from the entry above,
or the root for the top level) and of every data line. It is slow (tens of thousands of
records a second) and exists to be the fast engine's judge: both must return identical
counters on every trace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from vmsim.errors import Segfault
from vmsim.hw.pte import PTE_PFN_MASK
from vmsim.memtrace.cache import CacheModel
from vmsim.memtrace.layout import Layout
from vmsim.memtrace.model import EngineConfig, Model, RunResult
from vmsim.memtrace.records import Counters, TraceChunk
from vmsim.mm.access import Translation, user_access

__all__ = ["run_reference"]

_ACCESS = ("exec", "read", "write", "write")  # KIND_INSTR, LOAD, STORE, MODIFY
_LEVEL_OF_SIZE = {1 << 12: 1, 1 << 21: 2, 1 << 30: 3}
_SIZE_NAME = {1 << 12: "4K", 1 << 21: "2M", 1 << 30: "1G"}
_U64 = (1 << 64) - 1


def run_reference(
    chunks: Iterable[TraceChunk],
    layout: Layout,
    cfg: EngineConfig,
    progress: Callable[[int], None] | None = None,
) -> RunResult:
    """The reference engine's pass (module docstring); same result shape as the fast one."""
    model = Model(layout, cfg, journal=False)
    mm = model.mm
    pt = mm.pt
    tlb = model.tlb
    pwc = model.pwc
    cache = CacheModel(cfg.caches)
    c = Counters()
    walk_lv = [0, 0, 0, 0]
    data_lv = [0, 0, 0, 0]
    by_size: dict[str, int] = {}
    touched: set[int] = set()
    limit = cfg.user_limit
    done = 0
    for chunk in chunks:
        addrs = chunk.addr.tolist()
        kinds = chunk.kind.tolist()
        if len(kinds) != len(addrs):
            raise ValueError(
                f"record {chunk.first_line}: a chunk of {len(addrs)} addresses has "
                f"{len(kinds)} kinds"
            )
        for i, (addr, kind) in enumerate(zip(addrs, kinds, strict=True)):
            if not 0 <= kind <= 3:
                raise ValueError(f"record {chunk.first_line + i}: kind {kind} is not I/L/S/M")
            access = _ACCESS[kind]
            if addr > pt.va_mask >> 1:
                raise ValueError(
                    f"record {chunk.first_line + i}: address {addr & _U64:#x} is outside "
                    "the user address space"
                )
            flushes_before = tlb.invlpg_count + tlb.flush_pcid_count + tlb.flush_all_count
            pwc_before = mm.stats.pwc_hits
            while True:
                try:
                    t = user_access(mm, addr, access, model.stack_limit, detail=True)  # type: ignore[arg-type]
                    break
                except Segfault:
                    layout.cover(model.proc, addr, access, limit)
                    pwc.flush()
            assert isinstance(t, Translation)
            c.records += 1
            c.accesses += 1
            if kind == 0:
                c.instructions += 1
            c.faults += len(t.faults)
            c.tlb_flushes += (
                tlb.invlpg_count + tlb.flush_pcid_count + tlb.flush_all_count - flushes_before
            )
            name = _SIZE_NAME[t.page_size]
            by_size[name] = by_size.get(name, 0) + 1
            touched.add(addr >> 12)
            if t.tlb == "L1":
                c.l1_hits += 1
            elif t.tlb == "STLB":
                c.stlb_hits += 1
            else:
                c.walks += 1
                c.walk_refs += t.memory_refs
                c.pwc_hits += mm.stats.pwc_hits - pwc_before
                leaf_level = _LEVEL_OF_SIZE[t.page_size]
                steps = t.entries  # top first, ending at the leaf
                by_level = {s.level: s for s in steps}
                for lv in range(leaf_level + t.memory_refs - 1, leaf_level - 1, -1):
                    if lv == pt.levels:
                        table = pt.root_pfn
                    else:
                        table = (by_level[lv + 1].entry & PTE_PFN_MASK) >> 12
                    walk_lv[cache.access((table << 12) | (by_level[lv].idx << 3))] += 1
            if kind != 0:
                data_lv[cache.access(t.paddr)] += 1
        done += len(addrs)
        if progress is not None:
            progress(done)
    c.walk_refs_by_level = walk_lv
    c.data_refs_by_level = data_lv
    c.touched_pages = len(touched)
    c.by_page_size = {k: by_size[k] for k in ("4K", "2M", "1G") if k in by_size}
    return RunResult(c, model.proc, 0)
