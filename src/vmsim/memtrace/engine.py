"""The access-trace engine (issue 12, item 3): one pass of a trace through vmsim's MMU model.

Public API::

    from vmsim.memtrace.engine import EngineConfig, run
    from vmsim.memtrace.layout import Layout

    counters = run(chunks, layout, cpu, page_size="4K", five_level=False, pwc=True,
                   engine="fast", progress=None)

* ``chunks``: an iterable of :class:`~vmsim.memtrace.records.TraceChunk` (read lazily, one at
  a time: a trace is never held whole);
* ``layout``: a :class:`~vmsim.memtrace.layout.Layout` (maps snapshot or inferred regions);
* ``cpu``: a :class:`~vmsim.memtrace.records.CpuModel` (its ``tlb`` geometry, ``pwc_sizes``
  and ``caches`` are used; latencies are the cost model's business) or an
  :class:`EngineConfig`;
* ``page_size``: ``"4K"`` (the model's fault path with THP off: 4 KiB pages), ``"thp"`` (the
  same layout on a Machine with THP enabled=always: the model's own THP fault path maps PMD
  leaves, the huge zero page on a read, and falls back to 4 KiB pages where no aligned 2 MiB
  block fits), ``"2M"`` / ``"1G"`` (the layout's anonymous mappings made MAP_HUGETLB mappings
  of that size from a pool sized to fit; file mappings stay 4 KiB):
  :mod:`vmsim.memtrace.huge` says which parts of which mappings;
* ``five_level``: 57-bit addresses, 5-level page tables (one more level per cold walk);
* ``pwc``: False disables the paging-structure caches (every walk starts at the root);
* ``engine``: ``"fast"`` (compiled, :mod:`vmsim.memtrace._core`) or ``"reference"``
  (:mod:`vmsim.memtrace.reference`: every access through ``vmsim.mm.access.user_access``);
  both return identical :class:`~vmsim.memtrace.records.Counters`;
* ``progress``: called as ``progress(records_done)`` after each chunk.

Returns a :class:`~vmsim.memtrace.records.Counters`. ``run_full`` returns a
:class:`RunResult` with the counters and the model process (for tests and reports).

Counter definitions (both engines): ``accesses`` = ``records`` (one translation per record: the
record's first byte); ``l1_hits + stlb_hits + walks == accesses`` (a walk that faults is not
counted; the access is retried after the fault, as ``user_access`` does, and counts once);
``walk_refs`` = entries read by the counted walks; ``faults`` = calls of the model's
``do_user_addr_fault()`` that succeeded; ``tlb_flushes`` = TLB invalidations executed (INVLPG,
PCID and full flushes: the CPU's own INVLPG on a faulting access and those the kernel's fault
path issues, e.g. breaking COW); ``walk_refs_by_level`` / ``data_refs_by_level``: the
:mod:`vmsim.memtrace.cache` level that answered each walk reference / each ``L``, ``S``, ``M``
record's line (instruction fetches are not cache-modelled); ``touched_pages``: distinct 4 KiB
pages referenced; ``by_page_size``: translations by page size (sizes never used are absent).

How the fast engine stays the model: it keeps arrays that mirror the model's page tables
(``pt.entries``: one hash table per level, keyed like the model's dicts, 16-byte slots).
Everything the hardware does (TLB, PWC, walk, A/D bits) runs compiled; a page fault returns to
Python, which first writes the A/D bits the engine set back into the model's page tables, then calls
the model's ``do_user_addr_fault()``, then copies every page-table entry the model changed (a
journal on the model's page-table dicts) into the mirror and applies every TLB/PWC
invalidation the model issued to the engine's arrays. At the end the A/D bits are written back,
so the model's page tables are exactly as the reference engine leaves them.

Errors: a record outside the user address space, a kind other than I/L/S/M, or a chunk whose
arrays differ in length is a ``ValueError`` naming the record (``first_line`` based); an
access no VMA of the layout allows extends the layout (``Layout.cover``) instead of failing.

Limits (both engines alike): one address space, so one PCID and no context switches; no global
entries (user accesses never fill one); a record is translated at its first byte (an access
straddling two pages or lines counts once); instruction fetches are not cache-modelled; a
trace cannot ask for fork/COW sharing (no trace format says so). Every fault of every
what-if is the model's own (``do_user_addr_fault()``): PMD leaves from THP, PMD or PUD leaves
from hugetlb, and a PMD the model splits mid-trace (an mprotect by ``Layout.cover`` inside a
THP) reach the mirror through the same journal as 4 KiB entries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from vmsim.hw.mmu import StalePagingStructure
from vmsim.hw.tlb import PAGE_SIZE_1G, PAGE_SIZE_2M, PAGE_SIZE_4K
from vmsim.memtrace import _core as core
from vmsim.memtrace.cache import aligned_full, cache_arrays
from vmsim.memtrace.layout import Layout
from vmsim.memtrace.model import (
    PAGE_SIZES,
    SKYLAKE_CACHES,
    SKYLAKE_PWC,
    EngineConfig,
    Model,
    RunResult,
)
from vmsim.memtrace.records import Counters, CpuModel, TraceChunk
from vmsim.memtrace.reference import run_reference

__all__ = [
    "PAGE_SIZES",
    "SKYLAKE_CACHES",
    "SKYLAKE_PWC",
    "EngineConfig",
    "FastEngine",
    "Model",
    "RunResult",
    "run",
    "run_full",
]

SIZE_NAMES = ("4K", "2M", "1G")


def run(
    chunks: Iterable[TraceChunk],
    layout: Layout,
    cpu: CpuModel | EngineConfig | None = None,
    *,
    page_size: str = "4K",
    five_level: bool = False,
    pwc: bool = True,
    engine: str = "fast",
    progress: Callable[[int], None] | None = None,
) -> Counters:
    """One pass of the trace through the model (module docstring). ``cpu`` None: the
    defaults of ``EngineConfig`` (today's ``DEFAULT_TLB_CONFIG``, Skylake caches). When
    ``cpu`` is an ``EngineConfig`` its own page size / five-level / PWC settings are used."""
    return run_full(
        chunks,
        layout,
        cpu,
        page_size=page_size,
        five_level=five_level,
        pwc=pwc,
        engine=engine,
        progress=progress,
    ).counters


def run_full(
    chunks: Iterable[TraceChunk],
    layout: Layout,
    cpu: CpuModel | EngineConfig | None = None,
    *,
    page_size: str = "4K",
    five_level: bool = False,
    pwc: bool = True,
    engine: str = "fast",
    progress: Callable[[int], None] | None = None,
) -> RunResult:
    """:func:`run`, returning the model process and the engine's state size too."""
    cfg = EngineConfig.of(cpu, page_size=page_size, five_level=five_level, pwc=pwc)
    if engine == "reference":
        return run_reference(chunks, layout, cfg, progress)
    if engine != "fast":
        raise ValueError(f"engine must be fast or reference, not {engine!r}")
    model = Model(layout, cfg)
    eng = FastEngine(model)
    done = 0
    for chunk in chunks:
        eng.run_chunk(chunk)
        done += len(chunk.addr)
        if progress is not None:
            progress(done)
    eng.finish()
    return RunResult(eng.counters(), model.proc, eng.state_bytes())


# --------------------------------------------------------------------------- the fast engine


def _i64(v: int) -> int:
    return v - (1 << 64) if v >> 63 else v


class FastEngine:
    """The compiled engine's arrays and the Python side of its events (module docstring)."""

    LOG_CAP = 1 << 14

    def __init__(self, model: Model) -> None:
        self.model = model
        cfg = model.cfg
        tc = cfg.tlb
        structs = (tc.l1d, tc.l1i, tc.stlb)
        n_arrays = sum(len(s) for s in structs)
        self.arr = np.zeros((n_arrays, 3), dtype=np.int64)  # (first slot, sets, ways)
        self.probe = np.full((3, 3), -1, dtype=np.int64)  # (structure, size code) -> array
        slots = 0
        a = 0
        for s, arrays in enumerate(structs):
            for ac in arrays:
                self.arr[a] = (slots, ac.sets, ac.ways)
                for size in ac.page_sizes:
                    self.probe[s, (PAGE_SIZE_4K, PAGE_SIZE_2M, PAGE_SIZE_1G).index(size)] = a
                slots += ac.entries
                a += 1
        self.tkey = aligned_full(slots, -1)  # a set of 8 keys: one host cache line
        self.tpfn = np.zeros(slots, dtype=np.int64)
        self.tperm = np.zeros(slots, dtype=np.int64)
        self.tstamp = np.zeros(slots, dtype=np.int64)
        # the STLB's recency lists (_core.stlb_order): way numbers, set by set
        ways = self.arr[:, 2]
        if int(ways.max(initial=1)) > np.iinfo(np.int16).max:
            raise ValueError(f"a TLB array of {int(ways.max())} ways (at most 32767)")
        self.tord = np.zeros(slots, dtype=np.int16)
        for first, sets, w in self.arr.tolist():
            self.tord[first : first + sets * w] = np.tile(np.arange(w), sets)
        sizes = cfg.pwc_dict()
        self.psize = np.zeros(6, dtype=np.int64)
        for lv, n in sizes.items():
            self.psize[lv] = n
        width = max(1, max(sizes.values()))
        self.pkey = np.full((6, width), -1, dtype=np.int64)
        self.pval = np.zeros((6, width, 4), dtype=np.int64)
        self.pstamp = core.pwc_links(self.psize, width)  # the PWC's LRU lists
        # every physical address the engine sees is below the model's RAM (the frame
        # allocator's pfns): the cache model's tags then fit int32 (cache_arrays)
        self.ram_bytes = model.machine.memory.frames.ram_bytes
        self.ctags, self.cdesc = cache_arrays(cfg.caches, self.ram_bytes)
        self.log = np.zeros(self.LOG_CAP, dtype=np.int64)
        self.cnt = np.zeros(core.C_LEN, dtype=np.int64)
        self.st = np.zeros(core.ST_LEN, dtype=np.int64)
        self.scr = np.zeros(core.SCRATCH_LEN, dtype=np.int64)
        pt = model.mm.pt
        self.st[core.ST_PCID] = model.pcid
        self.st[core.ST_ROOT] = pt.root_pfn
        self.st[core.ST_LEVELS] = pt.levels
        self.st[core.ST_VA_MASK] = pt.va_mask
        self.st[core.ST_LAST_VPN] = -1
        self.faults = 0
        self._alloc_pt([0] * 6)
        # Mirror what the layout already mapped (a snapshot maps nothing; be general).
        levels, vkeys, values = [], [], []
        for lv in range(1, pt.levels + 1):
            for k, v in pt.entries[lv].items():
                levels.append(lv)
                vkeys.append(k)
                values.append(_i64(v))
        self._mirror(levels, vkeys, values)
        model.journal.clear()

    # -- the page-table mirror ------------------------------------------------------------

    def _alloc_pt(self, used: list[int]) -> None:
        """An empty mirror (``_core``: one hash table per level) sized for ``used[lv]`` keys
        of level ``lv``: twice that plus SLACK slots, at least MIN_SLOTS, grown at 3/4."""
        self.meta = np.zeros((6, 4), dtype=np.int64)
        first = 0
        for lv in range(1, int(self.st[core.ST_LEVELS]) + 1):
            slots = max(core.MIN_SLOTS, 2 * (used[lv] + core.SLACK))
            limit = slots * 3 // 4 - core.SLACK
            self.meta[lv] = (first, slots, 0, limit)
            first += slots
        self.ent = np.full(2 * first, core.EMPTY, dtype=np.int64)
        self.st[core.ST_PT_FULL] = 0

    def _grow(self) -> None:
        """Rebuild the mirror with bigger tables where one reached its limit (after the
        write-back: slot numbers change)."""
        self._writeback()
        ent, meta = self.ent, self.meta
        used = [int(meta[lv, core.M_USED]) for lv in range(6)]
        keep = [
            used[lv]
            if used[lv] >= meta[lv, core.M_LIMIT]
            else (int(meta[lv, core.M_SLOTS]) // 2 - core.SLACK)
            for lv in range(6)
        ]
        self._alloc_pt(keep)
        core.rehash(ent, meta, self.ent, self.meta, self.st)

    def _mirror(self, levels: list[int], vkeys: list[int], values: list[int]) -> None:
        if not levels:
            return
        lv = np.asarray(levels, dtype=np.int64)
        keys = np.asarray(vkeys, dtype=np.int64)
        vals = np.asarray(values, dtype=np.int64)
        i = 0
        while True:
            i = core.pt_update(
                self.ent, self.meta, self.st, lv, keys, vals, i, self.ram_bytes >> 12
            )
            if i < 0:  # the cache model's tags are sized for the RAM: refuse, never wrap
                raise ValueError(
                    f"a page-table entry maps a frame past the model's {self.ram_bytes}-byte RAM"
                )
            if i == len(lv):
                return
            self._grow()

    def _writeback(self) -> None:
        """The A/D bits the engine set, into the model's page tables (not journalled)."""
        n = int(self.st[core.ST_LOG_N])
        if not n:
            return
        ents = self.model.mm.pt.entries
        top = int(self.st[core.ST_LEVELS])
        pos = np.asarray(list(dict.fromkeys(self.log[:n].tolist())), dtype=np.int64)
        # the level of a slot: the last table that starts at or before it
        levels = np.searchsorted(self.meta[1 : top + 1, core.M_FIRST], pos, side="right")
        keys = (self.ent[pos << 1] & core.KEY_MASK).tolist()
        values = self.ent[(pos << 1) | 1].view(np.uint64).tolist()
        for level, key, v in zip(levels.tolist(), keys, values, strict=True):
            d = ents[level]
            if v and key in d:
                dict.__setitem__(d, key, v)
        self.st[core.ST_LOG_N] = 0

    def _sync_from_model(self) -> None:
        """Entries the model changed -> mirror; the model's invalidations -> engine TLB/PWC."""
        model = self.model
        if model.journal:
            ents = model.mm.pt.entries
            seen = dict.fromkeys(model.journal)
            model.journal.clear()
            levels = [lv for lv, _ in seen]
            vkeys = [k for _, k in seen]
            values = [_i64(ents[lv].get(k, 0)) for lv, k in seen]
            self._mirror(levels, vkeys, values)
        for op, x, y in model.tlb.ops:
            if op == "invlpg":
                core.tlb_invlpg(self.tkey, self.tstamp, self.tord, self.arr, self.probe, x, y)
            elif op == "pcid":
                core.tlb_flush(self.tkey, self.tstamp, self.tord, self.arr, self.probe, x)
            else:
                core.tlb_flush(
                    self.tkey, self.tstamp, self.tord, self.arr, self.probe, -2 if x else -1
                )
            self.cnt[core.C_FLUSHES] += 1
        model.tlb.ops.clear()
        if model.pwc.flushes:
            core.pwc_flush(self.pkey)
            model.pwc.flushes = 0

    # -- running ----------------------------------------------------------------------------

    def run_chunk(self, chunk: TraceChunk) -> None:
        addr = np.ascontiguousarray(chunk.addr, dtype=np.uint64).view(np.int64)
        kind = np.ascontiguousarray(chunk.kind, dtype=np.uint8)
        if len(kind) != len(addr):
            raise ValueError(
                f"record {chunk.first_line}: a chunk of {len(addr)} addresses has {len(kind)} kinds"
            )
        if len(kind) and int(kind.max()) > 3:
            bad = int(np.argmax(kind > 3))
            raise ValueError(f"record {chunk.first_line + bad}: kind {kind[bad]} is not I/L/S/M")
        i = 0
        retries = 0
        last = -1
        while True:
            ev, i = core.run_chunk(
                addr,
                kind,
                i,
                self.tkey,
                self.tpfn,
                self.tperm,
                self.tstamp,
                self.tord,
                self.arr,
                self.probe,
                self.pkey,
                self.pval,
                self.pstamp,
                self.psize,
                self.ent,
                self.meta,
                self.log,
                self.ctags,
                self.cdesc,
                self.st,
                self.cnt,
                self.scr,
            )
            if ev == core.EV_DONE:
                return
            if ev == core.EV_GROW:
                self._grow()
            elif ev == core.EV_LOG:
                self._writeback()
            elif ev == core.EV_FAULT:
                retries = retries + 1 if i == last else 0
                last = i
                va = int(addr[i])
                if retries >= 4:
                    raise RuntimeError(f"{va:#x}: the fault handler made no progress")
                access = ("read", "write", "exec")[int(self.st[core.ST_FAULT_ACCESS])]
                self._writeback()
                if self.model.fault(va, access):
                    self.faults += 1
                else:
                    core.pwc_flush(self.pkey)
                self._sync_from_model()
            elif ev == core.EV_STALE:
                raise StalePagingStructure(int(addr[i]), 0)
            else:
                va = int(addr[i]) & ((1 << 64) - 1)
                raise ValueError(
                    f"record {chunk.first_line + i}: address {va:#x} is outside the user "
                    "address space"
                )

    def finish(self) -> None:
        self._writeback()

    def counters(self) -> Counters:
        c = self.cnt.tolist()
        return Counters(
            records=c[core.C_RECORDS],
            instructions=c[core.C_INSTR],
            accesses=c[core.C_ACCESSES],
            l1_hits=c[core.C_L1],
            stlb_hits=c[core.C_STLB],
            walks=c[core.C_WALKS],
            walk_refs=c[core.C_WALK_REFS],
            pwc_hits=c[core.C_PWC_HITS],
            faults=self.faults,
            tlb_flushes=c[core.C_FLUSHES],
            walk_refs_by_level=c[core.C_WALK_LV : core.C_WALK_LV + 4],
            data_refs_by_level=c[core.C_DATA_LV : core.C_DATA_LV + 4],
            touched_pages=c[core.C_TOUCHED],
            by_page_size={
                SIZE_NAMES[i]: c[core.C_BY_SIZE + i] for i in range(3) if c[core.C_BY_SIZE + i]
            },
        )

    def state_bytes(self) -> int:
        """Bytes of engine state that grow with the trace (the page-table mirror and the
        touched-page flags in it) plus the fixed arrays (TLBs, PWC, caches, log)."""
        arrays = (
            self.ent,
            self.meta,
            self.tkey,
            self.tpfn,
            self.tperm,
            self.tstamp,
            self.tord,
            self.pkey,
            self.pval,
            self.pstamp,
            self.ctags,
            self.log,
        )
        return sum(int(a.nbytes) for a in arrays)

    def mirror_bytes(self) -> int:
        """Bytes of the part that grows with the trace: the page-table mirror."""
        return int(self.ent.nbytes + self.meta.nbytes)
