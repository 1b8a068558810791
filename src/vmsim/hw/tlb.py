"""Translation lookaside buffers: set-associative, LRU per set, PCID-tagged, with global entries.

The default geometry is Intel Skylake's (the shape later cores keep):

=============  ============================  =================================
structure      4 KiB                         2 MiB / 1 GiB
=============  ============================  =================================
L1 dTLB        64 entries, 4-way (16 sets)   32, 4-way (8 sets) / 4, 4-way
L1 iTLB        128 entries, 8-way (16 sets)  8, 8-way (1 set) / none
STLB           1536 entries, 12-way (128 sets), shared by 4 KiB and 2 MiB
                                             / 1 GiB: 16, 4-way (4 sets)
=============  ============================  =================================

A page of size S is cached in set ``(vaddr >> log2(S)) % nsets`` of the array holding S. A
lookup probes the L1 of its kind (data or instruction) for every page size there, smallest
first; on a miss it probes the STLB and, on an STLB hit, refills the L1. An ``insert`` (after a
page walk) fills the L1 of its kind and the STLB: the model is neither strictly inclusive nor
exclusive; an L1 victim is dropped, and an STLB victim leaves any L1 copy in place, as on Intel.

Tags follow the SDM (vol. 3A §4.10.1): an entry holds the PCID current when it was filled; a
global entry (PTE.G=1, CR4.PGE=1) matches whatever the current PCID is. Invalidation follows
§4.10.4.1: INVLPG removes the current PCID's entries and every global entry for the page holding
the address (of any page size); INVPCID single-context (``flush_pcid``) removes one PCID's
non-global entries; ``flush_all`` removes every non-global entry, or everything.

Hot-path representation (why it is fast): each set is a plain ``dict`` whose insertion order is
the LRU order (first key = least recently used; a hit deletes and re-inserts its key). A key is
one int: ``page_number << 15 | size_code << 13 | tag`` where ``tag`` is the 12-bit PCID or
``GLOBAL_TAG`` (bit 12). An entry is a ``TlbEntry`` named tuple built once at fill time, so a hit
allocates nothing but the returned pair. The plain-Python twin is ``vmsim.hw.tlb_reference``.

Set-index hook (a mitigation model, off by default): ``TlbHierarchy(config, stlb_set_index=f)``
places an STLB entry of page number ``pn`` and tag ``tag`` (its PCID, or ``GLOBAL_TAG``) in set
``f(pn, tag) % sets`` instead of ``pn % sets``: the randomized or partitioned set mappings
proposed against TLB side channels (TLBleed, Gras et al., USENIX Security 2018, section 9).
``partition_by_pcid`` and ``keyed_set_hash`` build the two this project measures; the L1 TLBs
keep the plain index. No shipping x86 core does either; the hook exists so ``vmsim demo
sidechannel`` can measure them with this same TLB model.

Invariants (checked by ``check()``): every set holds at most ``ways`` entries; every key in a set
maps to the set it is in; every key agrees with its entry (page number, size, tag).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

__all__ = [
    "DEFAULT_TLB_CONFIG",
    "GLOBAL_TAG",
    "PAGE_SIZE_1G",
    "PAGE_SIZE_2M",
    "PAGE_SIZE_4K",
    "PCID_MAX",
    "TLB_FLUSH_ALL",
    "TLB_SINGLE_PAGE_FLUSH_CEILING",
    "SetIndex",
    "TlbArrayConfig",
    "TlbConfig",
    "TlbEntry",
    "TlbHierarchy",
    "TlbKind",
    "TlbLevel",
    "TlbStats",
    "flush_tlb_range",
    "keyed_set_hash",
    "partition_by_pcid",
]

PAGE_SIZE_4K = 1 << 12
PAGE_SIZE_2M = 1 << 21
PAGE_SIZE_1G = 1 << 30
PAGE_SIZES = (PAGE_SIZE_4K, PAGE_SIZE_2M, PAGE_SIZE_1G)
_SIZE_CODE = {PAGE_SIZE_4K: 0, PAGE_SIZE_2M: 1, PAGE_SIZE_1G: 2}

PCID_MAX = (1 << 12) - 1  # CR3 bits 11:0
GLOBAL_TAG = 1 << 12  # the tag of a global entry: never equal to a PCID
_TAG_MASK = (1 << 13) - 1  # PCID bits + the global bit
KEY_SHIFT = _KEY_SHIFT = 15  # page number above size code (bits 14:13) and tag (bits 12:0)
_VADDR_LIMIT = 1 << 64

# arch/x86/mm/tlb.c: "We choose 33 because it is large enough to cover the vast majority (at
# least 95%) of allocations, and is small enough that we are confident it will not cause too
# much overhead." Tunable at /sys/kernel/debug/x86/tlb_single_page_flush_ceiling.
TLB_SINGLE_PAGE_FLUSH_CEILING = 33
TLB_FLUSH_ALL = -1  # include/asm-generic/tlb.h TLB_FLUSH_ALL (-1UL), as the tracepoint reports it

TlbKind = Literal["data", "instr"]
TlbLevel = Literal["L1", "STLB"]


class TlbEntry(NamedTuple):
    """One cached translation: the page at ``vbase`` (aligned to ``page_size``) maps to
    physical frame ``pfn`` (the first 4 KiB frame of the page). ``perms`` is opaque to the TLB:
    the MMU stores the leaf entry's permission bits (RW, US, NX, D, protection key) there and
    checks them on every hit. ``pcid`` is the PCID current at fill time (ignored for matching
    when ``global_``)."""

    vbase: int
    page_size: int
    pfn: int
    perms: int
    pcid: int
    global_: bool


@dataclass(frozen=True)
class TlbArrayConfig:
    """One set-associative array: ``entries`` slots in ``entries // ways`` sets (a power of two),
    holding pages of the sizes in ``page_sizes`` (an array listing two sizes is unified, like
    the STLB's shared 4 KiB + 2 MiB array)."""

    entries: int
    ways: int
    page_sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.entries <= 0 or self.ways <= 0 or self.entries % self.ways:
            raise ValueError(f"{self.entries} entries do not divide into {self.ways} ways")
        nsets = self.entries // self.ways
        if nsets & (nsets - 1):
            raise ValueError(f"{nsets} sets: the set count must be a power of two")
        if not self.page_sizes or any(s not in _SIZE_CODE for s in self.page_sizes):
            raise ValueError(f"page sizes {self.page_sizes} not among 4 KiB, 2 MiB, 1 GiB")
        if len(set(self.page_sizes)) != len(self.page_sizes):
            raise ValueError(f"page size listed twice: {self.page_sizes}")

    @property
    def sets(self) -> int:
        return self.entries // self.ways


@dataclass(frozen=True)
class TlbConfig:
    """The geometry of a core's TLBs: the arrays of each level. A page size is held by at most
    one array per level; a size no array of a level holds is not cached at that level."""

    l1d: tuple[TlbArrayConfig, ...] = (
        TlbArrayConfig(64, 4, (PAGE_SIZE_4K,)),
        TlbArrayConfig(32, 4, (PAGE_SIZE_2M,)),
        TlbArrayConfig(4, 4, (PAGE_SIZE_1G,)),
    )
    l1i: tuple[TlbArrayConfig, ...] = (
        TlbArrayConfig(128, 8, (PAGE_SIZE_4K,)),
        TlbArrayConfig(8, 8, (PAGE_SIZE_2M,)),
    )
    stlb: tuple[TlbArrayConfig, ...] = (
        TlbArrayConfig(1536, 12, (PAGE_SIZE_4K, PAGE_SIZE_2M)),
        TlbArrayConfig(16, 4, (PAGE_SIZE_1G,)),
    )

    def __post_init__(self) -> None:
        for name in ("l1d", "l1i", "stlb"):
            sizes = [s for a in getattr(self, name) for s in a.page_sizes]
            if len(set(sizes)) != len(sizes):
                raise ValueError(f"{name}: a page size is held by two arrays")


DEFAULT_TLB_CONFIG = TlbConfig()


class TlbStats(NamedTuple):
    """Counters since construction (or ``reset_stats``). An L1 miss is an STLB lookup."""

    dtlb_hits: int
    dtlb_misses: int
    itlb_hits: int
    itlb_misses: int
    stlb_hits: int
    stlb_misses: int
    invlpg: int  # INVLPG instructions executed
    flush_pcid: int  # single-PCID flushes (INVPCID type 1 / CR3 write without NOFLUSH)
    flush_all: int  # all-PCID flushes (INVPCID type 2 or 3)
    nr_tlb_local_flush_one: int  # vmstat counters, as flush_tlb_func() counts them
    nr_tlb_local_flush_all: int


# A probe: (shift, size code << 13, the array's sets, set-index mask). One per page size held.
_Probe = tuple[int, int, list[dict[int, TlbEntry]], int]
# A fill target: (shift, size code << 13, sets, mask, ways).
_Fill = tuple[int, int, list[dict[int, TlbEntry]], int, int]


@dataclass
class _Level:
    """The arrays of one level, compiled into probes (smallest page first) and fill targets."""

    arrays: list[list[dict[int, TlbEntry]]] = field(default_factory=list)
    ways: list[int] = field(default_factory=list)
    probes: tuple[_Probe, ...] = ()
    fills: dict[int, _Fill] = field(default_factory=dict)


def _build_level(configs: tuple[TlbArrayConfig, ...]) -> _Level:
    level = _Level()
    probes: list[_Probe] = []
    for cfg in configs:
        sets: list[dict[int, TlbEntry]] = [{} for _ in range(cfg.sets)]
        level.arrays.append(sets)
        level.ways.append(cfg.ways)
        for size in cfg.page_sizes:
            shift = size.bit_length() - 1
            tag = _SIZE_CODE[size] << 13
            probes.append((shift, tag, sets, cfg.sets - 1))
            level.fills[size] = (shift, tag, sets, cfg.sets - 1, cfg.ways)
    probes.sort(key=lambda p: p[0])
    level.probes = tuple(probes)
    return level


SetIndex = Callable[[int, int], int]  # (page number, tag) -> set (taken modulo the set count)


def partition_by_pcid(domains: int) -> SetIndex:
    """Split the sets into ``domains`` equal slices (a power of two): PCID ``p`` gets the sets
    whose index is ``p % domains`` modulo ``domains`` (global entries: those of slice 0), and
    within its slice the set is the page number's low bits. With two domains, processes whose
    PCIDs differ in parity never share a set; each has half the STLB."""
    if domains < 1 or domains & (domains - 1):
        raise ValueError(f"{domains} domains: must be a power of two")
    shift = domains.bit_length() - 1

    def index(pn: int, tag: int) -> int:
        return (pn << shift) | ((tag & ~GLOBAL_TAG) % domains if tag != GLOBAL_TAG else 0)

    return index


def keyed_set_hash(key: bytes) -> SetIndex:
    """A set index hashed from the page number and the tag with a secret ``key`` (blake2b):
    an attacker who does not know the key cannot pick pages sharing a set with the victim's,
    and the same page of two PCIDs lands in unrelated sets."""

    def index(pn: int, tag: int) -> int:
        digest = hashlib.blake2b(
            pn.to_bytes(8, "little") + tag.to_bytes(2, "little"), key=key, digest_size=8
        ).digest()
        return int.from_bytes(digest, "little")

    return index


def _fill(
    target: _Fill, vaddr: int, tag: int, entry: TlbEntry, index: SetIndex | None = None
) -> None:
    """Install ``entry`` as the most recently used of its set, evicting the LRU entry if the
    set is full (a refill of a key already present only refreshes it)."""
    shift, code, sets, mask, ways = target
    pn = vaddr >> shift
    s = sets[(pn if index is None else index(pn, tag)) & mask]
    key = (pn << _KEY_SHIFT) | code | tag
    if key in s:
        del s[key]
    elif len(s) >= ways:
        del s[next(iter(s))]
    s[key] = entry


class TlbHierarchy:
    """The TLBs of one core: L1 dTLB, L1 iTLB and the unified STLB (see the module docstring).

    ``lookup`` is the hot path; ``insert`` is called after a page walk; ``invlpg``,
    ``flush_pcid`` and ``flush_all`` are the invalidation instructions; ``flush_tlb_range`` (a
    function) is the kernel's policy choosing between them.
    """

    def __init__(
        self, config: TlbConfig = DEFAULT_TLB_CONFIG, stlb_set_index: SetIndex | None = None
    ) -> None:
        self.config = config
        self.stlb_set_index = stlb_set_index  # None: set = page number % sets (the hardware)
        self._l1d = _build_level(config.l1d)
        self._l1i = _build_level(config.l1i)
        self._stlb = _build_level(config.stlb)
        self._levels = (self._l1d, self._l1i, self._stlb)
        # False while no global entry can be cached: lookups then skip the global probe.
        self._has_global = False
        # The 4 KiB array of the L1 dTLB, for callers that inline the most common hit
        # (vmsim.mm.access.user_access): its sets and set mask, None if there is none.
        p4k = next((p for p in self._l1d.probes if p[0] == 12), None)
        self.l1d_4k_sets: list[dict[int, TlbEntry]] | None = p4k[2] if p4k else None
        self.l1d_4k_mask = p4k[3] if p4k else 0
        self.reset_stats()

    def reset_stats(self) -> None:
        self.dtlb_hits = 0
        self.dtlb_misses = 0
        self.itlb_hits = 0
        self.itlb_misses = 0
        self.stlb_hits = 0
        self.stlb_misses = 0
        self.invlpg_count = 0
        self.flush_pcid_count = 0
        self.flush_all_count = 0
        self.nr_tlb_local_flush_one = 0
        self.nr_tlb_local_flush_all = 0

    @property
    def stats(self) -> TlbStats:
        return TlbStats(
            self.dtlb_hits,
            self.dtlb_misses,
            self.itlb_hits,
            self.itlb_misses,
            self.stlb_hits,
            self.stlb_misses,
            self.invlpg_count,
            self.flush_pcid_count,
            self.flush_all_count,
            self.nr_tlb_local_flush_one,
            self.nr_tlb_local_flush_all,
        )

    # -- the hot path ------------------------------------------------------------------------

    def lookup(
        self, vaddr: int, pcid: int, kind: TlbKind = "data"
    ) -> tuple[TlbEntry | None, TlbLevel | None]:
        """Look ``vaddr`` up as the current PCID ``pcid`` would: ``(entry, "L1")`` on an L1 hit,
        ``(entry, "STLB")`` on an STLB hit (the L1 is refilled), ``(None, None)`` on a miss
        (the caller walks the page tables and calls ``insert``). A PCID-tagged entry is
        preferred to a global one for the same page, and a smaller page to a larger one (the
        SDM leaves both overlaps undefined; the kernel never creates them without a flush).
        The caller checks ``entry.perms``: the TLB grants nothing by itself."""
        if pcid >> 12:
            raise ValueError(f"PCID {pcid} is not 12 bits")
        if kind == "data":
            probes = self._l1d.probes
        elif kind == "instr":
            probes = self._l1i.probes
        else:
            raise ValueError(f"kind {kind!r} is not 'data' or 'instr'")
        for shift, code, sets, mask in probes:
            pn = vaddr >> shift
            s = sets[pn & mask]
            key = (pn << _KEY_SHIFT) | code | pcid
            e = s.get(key)
            if e is None:
                if not self._has_global:
                    continue
                key = (pn << _KEY_SHIFT) | code | GLOBAL_TAG
                e = s.get(key)
                if e is None:
                    continue
            del s[key]  # the dict's order is the set's LRU order: move to most recent
            s[key] = e
            if kind == "data":
                self.dtlb_hits += 1
            else:
                self.itlb_hits += 1
            return e, "L1"
        if kind == "data":
            self.dtlb_misses += 1
        else:
            self.itlb_misses += 1
        index = self.stlb_set_index
        for shift, code, sets, mask in self._stlb.probes:
            pn = vaddr >> shift
            s = sets[(pn if index is None else index(pn, pcid)) & mask]
            key = (pn << _KEY_SHIFT) | code | pcid
            e = s.get(key)
            if e is None:
                if not self._has_global:
                    continue
                if index is not None:
                    s = sets[index(pn, GLOBAL_TAG) & mask]
                key = (pn << _KEY_SHIFT) | code | GLOBAL_TAG
                e = s.get(key)
                if e is None:
                    continue
            del s[key]
            s[key] = e
            self.stlb_hits += 1
            target = (self._l1d if kind == "data" else self._l1i).fills.get(e.page_size)
            if target is not None:
                _fill(target, vaddr, key & _TAG_MASK, e)
            return e, "STLB"
        self.stlb_misses += 1
        return None, None

    # -- fills -------------------------------------------------------------------------------

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
        """Cache the translation of the ``page_size`` page holding ``vaddr`` (found by a walk)
        in the L1 of ``kind`` and in the STLB, as the most recently used entry of each set;
        returns the entry. A level with no array for ``page_size`` does not cache it."""
        if page_size not in _SIZE_CODE:
            raise ValueError(f"page size {page_size:#x} is not 4 KiB, 2 MiB or 1 GiB")
        if not 0 <= pcid <= PCID_MAX:
            raise ValueError(f"PCID {pcid} is not 12 bits")
        if not 0 <= vaddr < _VADDR_LIMIT:
            raise ValueError(f"address {vaddr:#x} is not 64 bits")
        if kind not in ("data", "instr"):
            raise ValueError(f"kind {kind!r} is not 'data' or 'instr'")
        vbase = vaddr & -page_size
        entry = TlbEntry(vbase, page_size, pfn, perms, pcid, global_)
        tag = GLOBAL_TAG if global_ else pcid
        if global_:
            self._has_global = True
        l1 = self._l1d if kind == "data" else self._l1i
        for level in (l1, self._stlb):
            target = level.fills.get(page_size)
            if target is not None:
                _fill(
                    target, vbase, tag, entry, self.stlb_set_index if level is self._stlb else None
                )
        return entry

    # -- invalidation ------------------------------------------------------------------------

    def invlpg(self, vaddr: int, pcid: int) -> None:
        """INVLPG ``vaddr`` with ``pcid`` current: drop, from every structure, the entries for
        the page holding ``vaddr`` (any page size) tagged with ``pcid``, and every global
        entry for that page (SDM vol. 3A §4.10.4.1)."""
        if not 0 <= pcid <= PCID_MAX:
            raise ValueError(f"PCID {pcid} is not 12 bits")
        self.invlpg_count += 1
        for level in self._levels:
            index = self.stlb_set_index if level is self._stlb else None
            for shift, code, sets, mask in level.probes:
                pn = vaddr >> shift
                base = (pn << _KEY_SHIFT) | code
                if index is None:
                    s = sets[pn & mask]
                    s.pop(base | pcid, None)
                    s.pop(base | GLOBAL_TAG, None)
                else:
                    sets[index(pn, pcid) & mask].pop(base | pcid, None)
                    sets[index(pn, GLOBAL_TAG) & mask].pop(base | GLOBAL_TAG, None)

    def flush_pcid(self, pcid: int) -> None:
        """Drop every non-global entry tagged ``pcid`` (INVPCID single-context, or a CR3 write
        without the NOFLUSH bit: what the kernel's flush_tlb_local() does). Global entries
        stay."""
        if not 0 <= pcid <= PCID_MAX:
            raise ValueError(f"PCID {pcid} is not 12 bits")
        self.flush_pcid_count += 1
        for level in self._levels:
            for sets in level.arrays:
                for s in sets:
                    if s:
                        for key in [k for k in s if k & _TAG_MASK == pcid]:
                            del s[key]

    def flush_all(self, include_global: bool = False) -> None:
        """Drop every non-global entry of every PCID (INVPCID type 3), or with
        ``include_global`` every entry (INVPCID type 2, or toggling CR4.PGE)."""
        self.flush_all_count += 1
        if include_global:
            self._has_global = False
        for level in self._levels:
            for sets in level.arrays:
                for s in sets:
                    if not s:
                        continue
                    if include_global:
                        s.clear()
                    else:
                        for key in [k for k in s if not k & GLOBAL_TAG]:
                            del s[key]

    # -- inspection --------------------------------------------------------------------------

    def contents(self) -> dict[str, list[list[list[TlbEntry]]]]:
        """Every entry, by structure ("l1d", "l1i", "stlb"), array, set, in LRU order (least
        recently used first). For tests and ``--explain``; not a hot path."""
        out: dict[str, list[list[list[TlbEntry]]]] = {}
        for name, level in zip(("l1d", "l1i", "stlb"), self._levels, strict=True):
            out[name] = [[list(s.values()) for s in sets] for sets in level.arrays]
        return out

    def entries(self) -> Iterator[tuple[str, TlbEntry]]:
        """``(structure, entry)`` for every cached entry."""
        for name, arrays in self.contents().items():
            for sets in arrays:
                for s in sets:
                    for e in s:
                        yield name, e

    def __len__(self) -> int:
        return sum(len(s) for level in self._levels for sets in level.arrays for s in sets)

    def check(self) -> None:
        """Assert the invariants of the module docstring (for tests; costs a full scan)."""
        for level in self._levels:
            index = self.stlb_set_index if level is self._stlb else None
            for sets, ways in zip(level.arrays, level.ways, strict=True):
                mask = len(sets) - 1
                for i, s in enumerate(sets):
                    assert len(s) <= ways, f"set {i} holds {len(s)} > {ways} entries"
                    for key, e in s.items():
                        shift = e.page_size.bit_length() - 1
                        pn = e.vbase >> shift
                        tag = GLOBAL_TAG if e.global_ else e.pcid
                        want = (pn << _KEY_SHIFT) | (_SIZE_CODE[e.page_size] << 13) | tag
                        assert key == want, f"key {key:#x} does not match {e}"
                        want_set = (pn if index is None else index(pn, tag)) & mask
                        assert want_set == i, f"{e} is in set {i}"
                        assert (level.fills[e.page_size][2]) is sets, f"{e} in the wrong array"


def flush_tlb_range(
    tlb: TlbHierarchy,
    start: int,
    end: int,
    pcid: int,
    stride: int = PAGE_SIZE_4K,
    ceiling: int = TLB_SINGLE_PAGE_FLUSH_CEILING,
) -> int:
    """Flush ``[start, end)`` of the address space running as ``pcid`` the way Linux does.

    Mirrors flush_tlb_mm_range() -> get_flush_tlb_info() -> flush_tlb_func() in
    arch/x86/mm/tlb.c on one CPU: if ``end`` is TLB_FLUSH_ALL or ``(end - start) >>
    stride_shift`` exceeds tlb_single_page_flush_ceiling (33), the whole PCID is flushed
    (flush_tlb_local(): global entries survive); otherwise one INVLPG per ``stride`` from
    ``start`` while below ``end``. ``stride`` is PAGE_SIZE, or PMD_SIZE when the range is
    known to hold only huge pages (tlb_get_unmap_shift()). Returns what the tlb_flush
    tracepoint reports: the number of pages invalidated one by one, or TLB_FLUSH_ALL; and
    counts vmstat's nr_tlb_local_flush_one / nr_tlb_local_flush_all the same way.
    """
    if stride <= 0 or stride & (stride - 1):
        raise ValueError(f"stride {stride:#x} is not a power of two")
    stride_shift = stride.bit_length() - 1
    if end == TLB_FLUSH_ALL or (end - start) >> stride_shift > ceiling:
        tlb.flush_pcid(pcid)
        tlb.nr_tlb_local_flush_all += 1
        return TLB_FLUSH_ALL
    if end < start:
        raise ValueError(f"range end {end:#x} below start {start:#x}")
    nr_invalidate = (end - start) >> stride_shift
    addr = start
    while addr < end:
        tlb.invlpg(addr, pcid)
        addr += stride
    tlb.nr_tlb_local_flush_one += nr_invalidate
    return nr_invalidate
