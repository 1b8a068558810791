"""The plain-Python twin of ``vmsim.hw.tlb``: the same TLB semantics, written the obvious way.

Each set is a list of ``TlbEntry`` in LRU order (index 0 = least recently used); matching is by
comparing entry fields (the page holding the address, the size, PCID or global), never by the
packed integer keys of the fast model. Tests drive both with the same random operations and
compare every result, counter and set; nothing else should use this module.
"""

from __future__ import annotations

from collections.abc import Callable

from vmsim.hw.tlb import (
    DEFAULT_TLB_CONFIG,
    TLB_FLUSH_ALL,
    TLB_SINGLE_PAGE_FLUSH_CEILING,
    TlbArrayConfig,
    TlbConfig,
    TlbEntry,
    TlbKind,
    TlbLevel,
    TlbStats,
)

__all__ = ["ReferenceTlb", "reference_flush_tlb_range"]


class _Array:
    def __init__(self, cfg: TlbArrayConfig) -> None:
        self.ways = cfg.ways
        self.page_sizes = cfg.page_sizes
        self.sets: list[list[TlbEntry]] = [[] for _ in range(cfg.entries // cfg.ways)]

    def set_of(self, vaddr: int, page_size: int) -> list[TlbEntry]:
        return self.sets[(vaddr // page_size) % len(self.sets)]


def _covers(e: TlbEntry, vaddr: int) -> bool:
    return e.vbase <= vaddr < e.vbase + e.page_size


def _same_slot(a: TlbEntry, b: TlbEntry) -> bool:
    """Two entries a fill would treat as the same (the second replaces the first)."""
    if a.vbase != b.vbase or a.page_size != b.page_size or a.global_ != b.global_:
        return False
    return a.global_ or a.pcid == b.pcid


class ReferenceTlb:
    """Same public behaviour as ``TlbHierarchy``, slowly."""

    def __init__(self, config: TlbConfig = DEFAULT_TLB_CONFIG) -> None:
        self.levels: dict[str, list[_Array]] = {
            "l1d": [_Array(c) for c in config.l1d],
            "l1i": [_Array(c) for c in config.l1i],
            "stlb": [_Array(c) for c in config.stlb],
        }
        self.counts = dict.fromkeys(TlbStats._fields, 0)

    @property
    def stats(self) -> TlbStats:
        return TlbStats(**self.counts)

    def _array_for(self, level: str, page_size: int) -> _Array | None:
        for a in self.levels[level]:
            if page_size in a.page_sizes:
                return a
        return None

    def _probe(self, level: str, vaddr: int, pcid: int) -> TlbEntry | None:
        sizes = sorted(s for a in self.levels[level] for s in a.page_sizes)
        for size in sizes:
            arr = self._array_for(level, size)
            assert arr is not None
            s = arr.set_of(vaddr, size)
            cands = [e for e in s if e.page_size == size and _covers(e, vaddr)]
            own = [e for e in cands if not e.global_ and e.pcid == pcid]
            glob = [e for e in cands if e.global_]
            for e in own + glob:
                s.remove(e)
                s.append(e)
                return e
        return None

    def _fill(self, level: str, entry: TlbEntry) -> None:
        arr = self._array_for(level, entry.page_size)
        if arr is None:
            return
        s = arr.set_of(entry.vbase, entry.page_size)
        old = [e for e in s if _same_slot(e, entry)]
        for e in old:
            s.remove(e)
        if not old and len(s) >= arr.ways:
            s.pop(0)
        s.append(entry)

    def lookup(
        self, vaddr: int, pcid: int, kind: TlbKind = "data"
    ) -> tuple[TlbEntry | None, TlbLevel | None]:
        l1 = "l1d" if kind == "data" else "l1i"
        prefix = "dtlb" if kind == "data" else "itlb"
        e = self._probe(l1, vaddr, pcid)
        if e is not None:
            self.counts[f"{prefix}_hits"] += 1
            return e, "L1"
        self.counts[f"{prefix}_misses"] += 1
        e = self._probe("stlb", vaddr, pcid)
        if e is not None:
            self.counts["stlb_hits"] += 1
            self._fill(l1, e)
            return e, "STLB"
        self.counts["stlb_misses"] += 1
        return None, None

    def insert(
        self,
        vaddr: int,
        page_size: int,
        pfn: int,
        perms: int,
        pcid: int,
        global_: bool = False,
        kind: TlbKind = "data",
    ) -> TlbEntry:
        entry = TlbEntry(vaddr - vaddr % page_size, page_size, pfn, perms, pcid, global_)
        self._fill("l1d" if kind == "data" else "l1i", entry)
        self._fill("stlb", entry)
        return entry

    def _drop(self, doomed: Callable[[TlbEntry], bool]) -> None:
        for arrays in self.levels.values():
            for arr in arrays:
                for s in arr.sets:
                    s[:] = [e for e in s if not doomed(e)]

    def invlpg(self, vaddr: int, pcid: int) -> None:
        self.counts["invlpg"] += 1
        self._drop(lambda e: _covers(e, vaddr) and (e.global_ or e.pcid == pcid))

    def flush_pcid(self, pcid: int) -> None:
        self.counts["flush_pcid"] += 1
        self._drop(lambda e: not e.global_ and e.pcid == pcid)

    def flush_all(self, include_global: bool = False) -> None:
        self.counts["flush_all"] += 1
        self._drop(lambda e: include_global or not e.global_)

    def contents(self) -> dict[str, list[list[list[TlbEntry]]]]:
        return {
            name: [[list(s) for s in arr.sets] for arr in arrays]
            for name, arrays in self.levels.items()
        }


def reference_flush_tlb_range(
    tlb: ReferenceTlb,
    start: int,
    end: int,
    pcid: int,
    stride: int = 4096,
    ceiling: int = TLB_SINGLE_PAGE_FLUSH_CEILING,
) -> int:
    """flush_tlb_mm_range() spelled out: count the pages, compare with the ceiling."""
    pages = None if end == TLB_FLUSH_ALL else (end - start) // stride
    if pages is None or pages > ceiling:
        tlb.flush_pcid(pcid)
        tlb.counts["nr_tlb_local_flush_all"] += 1
        return TLB_FLUSH_ALL
    for i in range(pages + (1 if (end - start) % stride else 0)):
        tlb.invlpg(start + i * stride, pcid)
    tlb.counts["nr_tlb_local_flush_one"] += pages
    return pages
