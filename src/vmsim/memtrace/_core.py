"""The compiled hot path of the access-trace engine (numba ``@njit(cache=True)``).

One file on purpose: numba keys its on-disk cache by the source file of each compiled
function, so everything ``run_chunk`` inlines must live beside it or go stale after an edit.

Everything here is a faster execution of the Python model, statement for statement:

* ``_tlb_*``: ``vmsim.hw.tlb.TlbHierarchy`` (same geometry, set index ``(va >> shift) %
  sets``, keys ``pn << 15 | size code << 13 | PCID``, LRU per set, L1-of-its-kind + STLB fill,
  an STLB hit refills the L1, INVLPG / PCID / full flushes);
* ``_pwc_*``: ``vmsim.hw.mmu.PagingStructureCache`` (one fully associative LRU per upper level,
  deepest level tried first, keys ``va >> shift(level)``, entries hold the next table's frame and
  the rights combined so far);
* ``_walk``: ``vmsim.hw.mmu.walk`` (P, reserved-bit and user/write/NX checks, A set on every
  upper entry used, A and D on the leaf, one memory reference per entry read);
* ``cache_line`` / ``cache_access``: ``vmsim.memtrace.cache.CacheModel`` (the data-cache
  model: its rules and its Python twin are there);
* ``run_chunk``: the loop of ``vmsim.mm.access.user_access`` (TLB, on a permission miss an
  INVLPG and a re-walk or a fault, on a walk fault an INVLPG and a return to Python);
  ``hit_run`` is its hit path: user_access() for the records whose translation is an L1 hit
  with the rights they need (nothing for Python to do), the same statements in a small loop.

All state is in int64 arrays (see ``vmsim.memtrace.engine.FastEngine``). Page-table entries
are the model's 64-bit values reinterpreted as int64 (NX is the sign bit).

Where the speed comes from (issue 12; each measured, each keeping the semantics bit for bit):
no NRT reference counting; probes and LRU choices as fixed, branch-free passes over a set (a
TLB hit's way and a cache line's level are random: branches on them mispredict), for sets of
4, 8, 12 or 16 as LLVM vector code (a probe is one compare of the whole set, a mask and a
count of trailing zeros; a move to the front one lane shift and one blend), over arrays that
start on a 64-byte boundary (a set of 8 is one host cache line; a set straddling two made
the iTLB probe 1.5x slower); the cache model's L1D/L2 update computed from where the line was
found (which level answers is random in a hit stream) and the LLC behind one branch (taken
in a miss stream, not in a hit stream); page sizes never filled into a TLB structure are not
probed; the hit path (``hit_run``) as its own small function, so that its loop keeps its
state in registers, tried after an L1 hit only (the next record of a walk or STLB-hit
stream misses the L1 too: a call that returns at once costs as much as an STLB hit), with
one branch on the record's kind and straight code for each: a fetch tries the iTLB's memo
first (code runs on one page for long), a data access the dTLB's 4 KiB array (a data stream
changes pages every other record: a branch on a memo hit mispredicts; a stamp refreshed on a
set's most recent entry changes no order); the PWC's LRU as O(1) linked lists, fills that
take their victim without a search (the walk has just missed that level) and hits on the
most recent entry that leave the recency list alone; the page-table mirror as one hash table
per level (a walk step is one probe, usually one host cache line, with no pointer chase from
the root; 16 to 32 bytes per mirrored entry whatever the pattern); and walks that prefetch (a
random stream waits on host memory, not on work): the PTE's mirror slot PF_AHEAD records
ahead, the cache model's LLC sets of the next record's PTE line and data line one record
ahead; the cache model's tags as 32-bit ``line // sets`` where the model's RAM lets them fit
(half the host memory: a 16-way set is one host line); the PWC's 32-entry level probed as
one vector compare; the STLB's recency order kept as a list of ways per set, so that a
fill takes its victim from the list's end instead of searching the set's stamps; and a 4-way
set's victim (the L1 dTLB's) as straight code. The slot a TLB or PWC entry occupies and the value of a recency stamp are not part of
the model (a set is a set): only which entries a set holds and their recency order are, and
those are the model's exactly (tests/unit/test_memtrace_engine_hitpath.py compares them, set
by set, with the model's TLBs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from llvmlite import ir  # type: ignore[import-untyped]
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

I64 = npt.NDArray[np.int64]
O16 = npt.NDArray[np.int16]  # the STLB's recency lists (way numbers)
Slots = I64 | npt.NDArray[np.int32] | O16  # what the set operations work on
# The cache model's tags: int32 where every tag fits, else int64 (vmsim.memtrace.cache).
Tags = npt.NDArray[np.int64] | npt.NDArray[np.int32]

# Every compiled function runs without numba's reference counting (``_nrt=False``, an option
# numba's typing stubs do not list): nothing here allocates, and with NRT on, each inlined
# call that passes an array costs an atomic incref/decref pair through a function call (it
# halved the cache model's speed).
_OPTS: dict[str, Any] = {"cache": True, "nogil": True, "_nrt": False}
_F = TypeVar("_F", bound=Callable[..., Any])
_jit: Callable[[_F], _F] = njit(**_OPTS)
_inline: Callable[[_F], _F] = njit(inline="always", **_OPTS)  # numba-IR inlined into callers

# The data-cache model's compiled twin (vmsim.memtrace.cache has the rules and the Python
# twin). It lives here, in the file of the loop that inlines it: numba keys its on-disk cache
# by the compiled function's own source file, so an inlined function from another file would
# go stale in run_chunk's cache after an edit of that file alone.
LINE_SHIFT = 6  # 64-byte lines
DRAM = 3


POS = (1 << 62) - 1  # an index ANDed with this is provably >= 0: no negative-index wraparound


# -- set operations as LLVM vector code (one set of 4, 8, 12 or 16 slots of int64, int32 or
# int16: one or two AVX-512 registers; on a host without AVX-512 LLVM splits the vectors, the
# result is the same). Each intrinsic is generic over the slot width: numba compiles one
# version per array dtype (the TLB keys are int64, the cache model's tags int32 where they
# fit, the STLB's recency lists int16).
_I64 = ir.IntType(64)
_I32 = ir.IntType(32)
_VEC_WAYS = (4, 8, 12, 16)  # the set sizes with a vector twin; others take the scalar loops


def _lanes(n: int) -> int:
    """The vector width for a set of ``n`` slots: the next power of two (12 -> 16, masked)."""
    return 1 << (n - 1).bit_length()


def _splat(builder: Any, val: Any, vt: Any) -> Any:
    undef = ir.Constant(vt, ir.Undefined)
    v = builder.insert_element(undef, val, _I32(0))
    return builder.shuffle_vector(
        v, undef, ir.Constant(ir.VectorType(_I32, vt.count), [0] * vt.count)
    )


def _set_ptr(context: Any, builder: Any, sig: Any, args: Any) -> Any:
    """The address of ``arr[b]`` (the set's first slot): ``args[0]`` the array, ``args[1]`` b."""
    aryty = sig.args[0]
    ary = context.make_array(aryty)(context, builder, args[0])
    return cgutils.get_item_pointer(  # type: ignore[no-untyped-call]
        context, builder, aryty, ary, [args[1]], wraparound=False
    )


def _slot_type(sig: Any) -> Any:
    """The LLVM integer type of the array's slots (int64 or int32)."""
    return ir.IntType(sig.args[0].dtype.bitwidth)


def _narrow(builder: Any, val: Any, et: Any) -> Any:
    """An int64 scalar as a slot value (the caller keeps slot values within the slot type)."""
    return builder.trunc(val, et) if et.width < 64 else val


def _active(n: int) -> Any:
    w = _lanes(n)
    return ir.Constant(ir.VectorType(ir.IntType(1), w), [int(j < n) for j in range(w)])


def _vload(builder: Any, ptr: Any, n: int, et: Any) -> Any:
    """The ``n`` slots at ``ptr`` as a vector of ``_lanes(n)``; lanes past ``n`` read as -2
    (no key, no tag and not the empty mark -1: they never match)."""
    w = _lanes(n)
    vt = ir.VectorType(et, w)
    vp = builder.bitcast(ptr, vt.as_pointer())
    align = et.width // 8
    if n == w:
        return builder.load(vp, align=align)
    fnty = ir.FunctionType(vt, [vt.as_pointer(), _I32, _active(n).type, vt])
    fn = cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]
        builder.module, fnty, f"llvm.masked.load.v{w}i{et.width}.p0"
    )
    return builder.call(fn, [vp, _I32(align), _active(n), _splat(builder, et(-2), vt)])


def _vstore(builder: Any, ptr: Any, val: Any, n: int, et: Any) -> None:
    w = _lanes(n)
    vt = ir.VectorType(et, w)
    vp = builder.bitcast(ptr, vt.as_pointer())
    align = et.width // 8
    if n == w:
        builder.store(val, vp, align=align)
        return
    fnty = ir.FunctionType(ir.VoidType(), [vt, vt.as_pointer(), _I32, _active(n).type])
    fn = cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]
        builder.module, fnty, f"llvm.masked.store.v{w}i{et.width}.p0"
    )
    builder.call(fn, [val, vp, _I32(align), _active(n)])


def _vfind_of(n: int) -> Any:
    """An intrinsic ``find(arr, b, key)``: the first of the ``n`` slots at ``arr[b]`` equal to
    ``key``, or -1 (one vector compare, a mask, a count of trailing zeros)."""
    w = _lanes(n)

    @intrinsic
    def find(typingctx: Any, arr: Any, b: Any, key: Any) -> Any:  # pragma: no cover
        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            et = _slot_type(sig)
            vt = ir.VectorType(et, w)
            v = _vload(builder, _set_ptr(context, builder, sig, args), n, et)
            eq = builder.icmp_signed("==", v, _splat(builder, _narrow(builder, args[2], et), vt))
            mty = ir.IntType(w)
            m = builder.bitcast(eq, mty)
            fnty = ir.FunctionType(mty, [mty, ir.IntType(1)])
            cttz = cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]
                builder.module, fnty, f"llvm.cttz.i{w}"
            )
            tz = builder.zext(builder.call(cttz, [m, ir.IntType(1)(0)]), _I64)
            return builder.select(builder.icmp_unsigned("==", m, mty(0)), _I64(-1), tz)

        return types.int64(arr, types.int64, types.int64), codegen

    return find


def _vfront_of(n: int) -> Any:
    """An intrinsic ``front(arr, b, key, p)``: :func:`_to_front` on the ``n`` slots at
    ``arr[b]`` (a lane shift with ``key`` coming in first, kept in lanes ``0..p``)."""
    w = _lanes(n)

    @intrinsic
    def front(typingctx: Any, arr: Any, b: Any, key: Any, p: Any) -> Any:  # pragma: no cover
        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            et = _slot_type(sig)
            vt = ir.VectorType(et, w)
            ptr = _set_ptr(context, builder, sig, args)
            v = _vload(builder, ptr, n, et)
            order = ir.Constant(ir.VectorType(_I32, w), [w, *range(w - 1)])
            shifted = builder.shuffle_vector(
                v, _splat(builder, _narrow(builder, args[2], et), vt), order
            )
            # p is -1 .. n - 1: it fits any slot type
            keep = builder.icmp_signed(
                "<=",
                ir.Constant(vt, list(range(w))),
                _splat(builder, _narrow(builder, args[3], et), vt),
            )
            _vstore(builder, ptr, builder.select(keep, shifted, v), n, et)
            return context.get_dummy_value()

        return types.void(arr, types.int64, types.int64, types.int64), codegen

    return front


_vfind4, _vfind8, _vfind12, _vfind16 = (_vfind_of(n) for n in _VEC_WAYS)
_vfront4, _vfront8, _vfront12, _vfront16 = (_vfront_of(n) for n in _VEC_WAYS)
_vfind32 = _vfind_of(32)  # the PWC's 32 PDE entries (Skylake's)


@_inline
def _find_loop(tags: Slots, b: int, ways: int, line: int) -> int:  # pragma: no cover - compiled
    """:func:`_find` for any set size: a fixed, branch-free pass (compare/cmov chains)."""
    p = -1
    for j in range(ways):
        p = j if tags[b + j] == line else p
    return p


@_inline
def _find(tags: Slots, b: int, ways: int, line: int) -> int:  # pragma: no cover - compiled
    """Position of ``line`` in the set of ``ways`` slots at ``b``, or -1. Branch-free within
    the set (a vector compare for 4, 8, 12 or 16 ways); the branch on ``ways`` always goes
    the same way for a given structure."""
    if ways == 8:
        return _vfind8(tags, b, line)  # type: ignore[no-any-return]
    if ways == 4:
        return _vfind4(tags, b, line)  # type: ignore[no-any-return]
    if ways == 16:
        return _vfind16(tags, b, line)  # type: ignore[no-any-return]
    if ways == 12:
        return _vfind12(tags, b, line)  # type: ignore[no-any-return]
    return _find_loop(tags, b, ways, line)


@_inline
def _to_front(tags: Slots, b: int, ways: int, line: int, p: int) -> None:  # pragma: no cover
    """Slots ``0..p`` of the set at ``b`` shift down one and ``line`` goes first: a hit at
    position ``p`` becomes the most recent; ``p = ways - 1`` drops the LRU (or empty) slot;
    ``p = -1`` changes nothing. Branch-free within the set, like :func:`_find`."""
    if ways == 8:
        _vfront8(tags, b, line, p)
    elif ways == 4:
        _vfront4(tags, b, line, p)
    elif ways == 16:
        _vfront16(tags, b, line, p)
    elif ways == 12:
        _vfront12(tags, b, line, p)
    else:
        prev = line
        for j in range(ways):
            cur = tags[b + j]
            tags[b + j] = prev if j <= p else cur
            prev = cur


Geometry = tuple[
    int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int
]

# desc[lv] columns (vmsim.memtrace.cache.cache_arrays)
D_FIRST = 0
D_SETS = 1
D_WAYS = 2
D_MASK = 3  # sets - 1 for a power of two, else -1
D_TSHIFT = 4  # tag = line >> D_TSHIFT (power-of-two sets) ...
D_TDIV = 5  # ... or line // D_TDIV (other set counts)
D_LEN = 6


@_inline
def cache_geometry(desc: I64) -> Geometry:  # pragma: no cover - compiled
    """``desc`` as 18 scalars, (first slot, ways, sets - 1 or -1, sets, tag shift, tag
    divisor) per level: a loop that keeps them in locals does not reload them after every
    store to the tags."""
    return (
        desc[0, D_FIRST],
        desc[0, D_WAYS],
        desc[0, D_MASK],
        desc[0, D_SETS],
        desc[0, D_TSHIFT],
        desc[0, D_TDIV],
        desc[1, D_FIRST],
        desc[1, D_WAYS],
        desc[1, D_MASK],
        desc[1, D_SETS],
        desc[1, D_TSHIFT],
        desc[1, D_TDIV],
        desc[2, D_FIRST],
        desc[2, D_WAYS],
        desc[2, D_MASK],
        desc[2, D_SETS],
        desc[2, D_TSHIFT],
        desc[2, D_TDIV],
    )


@_inline
def _set_base(first: int, ways: int, mask: int, sets: int, line: int) -> int:  # pragma: no cover
    """The first slot of ``line``'s set: index ``line % sets`` (a mask for a power of two)."""
    index = line & mask if mask >= 0 else line % sets
    return (first + index * ways) & POS


@_inline
def _tag(mask: int, tshift: int, tdiv: int, line: int) -> int:  # pragma: no cover - compiled
    """What a set stores for ``line``: the line number without the set index bits (its
    quotient by the set count; the set's index is the remainder), or the line number itself
    (shift 0, divisor 1). Either is one-to-one within a set."""
    return line >> tshift if mask >= 0 else line // tdiv


@_inline
def cache_line(tags: Tags, g: Geometry, line: int) -> int:  # pragma: no cover - compiled
    """:meth:`CacheModel.access` of line number ``line`` (``g``: :func:`cache_geometry`).

    L1D and L2 are probed and updated without a branch on where the line was found (a hit
    stream's level is random: a branch would mispredict), the LLC only when both miss. The
    line that is already the most recent of its L1D set returns at once: an L1D hit there
    changes no set (the L2 is updated only on an L1D miss)."""
    w0 = g[1]
    w1 = g[7]
    b0 = _set_base(g[0], w0, g[2], g[3], line)
    t0 = _tag(g[2], g[4], g[5], line)
    if tags[b0] == t0:
        return 0  # the most recent line of its L1D set (a real trace's usual case): no change
    b1 = _set_base(g[6], w1, g[8], g[9], line)
    t1 = _tag(g[8], g[10], g[11], line)
    p0 = _find(tags, b0, w0, t0)
    p1 = _find(tags, b1, w1, t1)
    if p0 & p1 < 0:  # neither: the LLC (a branch that goes one way in a hit or a miss stream)
        w2 = g[13]
        b2 = _set_base(g[12], w2, g[14], g[15], line)
        t2 = _tag(g[14], g[16], g[17], line)
        p2 = _find(tags, b2, w2, t2)
        _to_front(tags, b2, w2, t2, p2 if p2 >= 0 else w2 - 1)
        _to_front(tags, b0, w0, t0, w0 - 1)  # filled into L1D and L2, dropping their LRU
        _to_front(tags, b1, w1, t1, w1 - 1)
        return 2 if p2 >= 0 else DRAM
    # L1D or L2 hit (which one is random in a hit stream): arithmetic, not a branch. L1D:
    # the line moves to the front (an L1D miss drops its LRU: position w0 - 1); the L2 only
    # when L1D missed (position -1: no change).
    m0 = p0 >> 63  # -1: an L1D miss
    _to_front(tags, b0, w0, t0, p0 + (m0 & w0))
    _to_front(tags, b1, w1, t1, p1 | ~m0)
    return m0 & 1


@_inline
def cache_access(
    tags: Tags, desc: npt.NDArray[np.int64], paddr: int
) -> int:  # pragma: no cover - compiled (tested through its twin)
    """The array twin of :meth:`CacheModel.access`: 0 L1D, 1 L2, 2 LLC, 3 DRAM."""
    return cache_line(tags, cache_geometry(desc), paddr >> LINE_SHIFT)


@_jit
def cache_run(
    tags: Tags,
    desc: npt.NDArray[np.int64],
    paddrs: npt.NDArray[np.int64],
    out: npt.NDArray[np.int64],
) -> None:  # pragma: no cover - compiled
    """``out[i] = cache_access(..., paddrs[i])`` for every address (tests, benchmarks)."""
    g = cache_geometry(desc)
    for i in range(paddrs.shape[0]):
        out[i] = cache_line(tags, g, paddrs[i] >> LINE_SHIFT)


# Page-table entry bits (vmsim.hw.pte).
P = 1
RW = 2
US = 4
A = 1 << 5
D = 1 << 6
PS = 1 << 7
NX = -(1 << 63)  # bit 63 as int64
PFN_MASK = ((1 << 52) - 1) & ~0xFFF
PKEY_MASK = 0xF << 59
PERMS = RW | US | D | NX | PKEY_MASK  # what the TLB keeps of a leaf (vmsim.mm.access._PERMS)
LARGE_RSVD2 = ((1 << 21) - 1) & ~0x1FFF
LARGE_RSVD3 = ((1 << 30) - 1) & ~0x1FFF

# The page-table mirror: one hash table per level (open addressing, linear probing) in one
# int64 array ``ent`` of 16-byte slots. Slot j holds an entry of the model's page tables:
# ``ent[2 * j]`` its key (``entries[level][key]``: ``va >> (12 + 9 * (level - 1))``), with
# TOUCHED set in a level-1 slot once the trace touched that 4 KiB page, or EMPTY;
# ``ent[2 * j + 1]`` its value (0: no entry). ``meta[level] = (first slot, slots, used,
# limit)``: level ``level``'s table is slots ``first .. first + slots - 1``. A table has
# room for SLACK more keys past its limit; one access or one mirrored entry adds at most one
# key to one table, and reaching a limit sets ``st[ST_PT_FULL]`` (Python then rebuilds the
# tables bigger: :func:`rehash`). Sized by the engine at twice the keys they hold plus SLACK
# (at least MIN_SLOTS), grown at three quarters full: 16 to 32 bytes a key whatever the
# pattern, where a table of 512 entries per page table spends 8 KiB on a page table holding
# one page.
EMPTY = -1
KEY_MASK = (1 << 58) - 1
TOUCHED = 1 << 60
HASH_MUL = -7046029254386353131  # 0x9E3779B97F4A7C15 (Fibonacci hashing) as an int64
M_FIRST = 0
M_SLOTS = 1
M_USED = 2
M_LIMIT = 3
SLACK = 5
MIN_SLOTS = 16

# st[] slots: small scalar state.
ST_TLB_CLOCK = 0
ST_PCID = 2
ST_ROOT = 3
ST_LEVELS = 4
ST_PT_FULL = 5  # 1 once a mirror table reached its limit (Python grows the mirror)
ST_LOG_N = 8
ST_LAST_VPN = 9
ST_VA_MASK = 10
ST_FAULT_ACCESS = 11  # 0 read, 1 write, 2 exec: the access that faulted
ST_FILLED = 12  # bit 3 * structure + size code: that structure was ever filled with that size
ST_LEN = 16

# cnt[] slots: the counters (vmsim.memtrace.records.Counters).
C_RECORDS = 0
C_INSTR = 1
C_ACCESSES = 2
C_L1 = 3
C_STLB = 4
C_WALKS = 5
C_WALK_REFS = 6
C_PWC_HITS = 7
C_FLUSHES = 8
C_TOUCHED = 9
C_WALK_LV = 10  # 4 slots
C_DATA_LV = 14  # 4 slots
C_BY_SIZE = 18  # 3 slots: 4K, 2M, 1G
C_LEN = 24

# run_chunk() results.
EV_DONE = 0
EV_FAULT = 1
EV_GROW = 2
EV_LOG = 3
EV_STALE = 4
EV_BADADDR = 5

SCRATCH_LEN = 40  # run_chunk scratch: walk refs, walk result, local counters, memos
LOG_SLACK = 16  # entries one access can add to the write-back log at most (5 levels + leaf)

# Structures of the TLB: 0 L1 dTLB, 1 L1 iTLB, 2 STLB.
S_L1D = 0
S_L1I = 1
S_STLB = 2


# --------------------------------------------------------------------------- page-table mirror


@_inline
def _home(key: int, slots: int) -> int:  # pragma: no cover - compiled
    """The slot (0 .. slots - 1) where the search for ``key`` starts: the high half of a
    Fibonacci hash, scaled to ``slots`` by a multiply (no division; any table size)."""
    return (((key * HASH_MUL) >> 32) & 0xFFFFFFFF) * slots >> 32


@_inline
def _slot(ent: I64, meta: I64, lv: int, key: int) -> int:  # pragma: no cover - compiled
    """The mirror slot of the level-``lv`` entry ``key``, or -1 (never mirrored)."""
    first = meta[lv, M_FIRST]
    slots = meta[lv, M_SLOTS]
    i = _home(key, slots)
    while True:
        kw = ent[((first + i) << 1) & POS]
        if kw & KEY_MASK == key:
            return first + i  # type: ignore[no-any-return]
        if kw == EMPTY:
            return -1
        i += 1
        if i == slots:
            i = 0


@_jit
def _insert(ent: I64, meta: I64, st: I64, lv: int, key: int) -> int:  # pragma: no cover
    """:func:`_slot`, adding ``key`` (value 0) when missing (the table has SLACK keys of room
    past its limit; reaching the limit sets ``st[ST_PT_FULL]``)."""
    first = meta[lv, M_FIRST]
    slots = meta[lv, M_SLOTS]
    i = _home(key, slots)
    while True:
        j = first + i
        kw = ent[j << 1]
        if kw & KEY_MASK == key:
            return j  # type: ignore[no-any-return]
        if kw == EMPTY:
            ent[j << 1] = key
            ent[(j << 1) | 1] = 0
            meta[lv, M_USED] += 1
            if meta[lv, M_USED] >= meta[lv, M_LIMIT]:
                st[ST_PT_FULL] = 1
            return j  # type: ignore[no-any-return]
        i += 1
        if i == slots:
            i = 0


@_jit
def pt_update(
    ent: I64,
    meta: I64,
    st: I64,
    levels: I64,
    vkeys: I64,
    values: I64,
    start: int,
    pfn_limit: int,
) -> int:  # pragma: no cover - compiled
    """Mirror the model's entries from ``start`` on: ``entries[levels[i]][vkeys[i]] =
    values[i]`` (0: none). Returns where it stopped: ``len(levels)``, or earlier when the
    table of the next new key is at its limit (the caller grows the mirror and calls again),
    or ``-1 - i`` when entry ``i`` is present and maps a frame at or past ``pfn_limit`` (the
    model's RAM: the cache model's tags are sized for it), mirroring nothing of it."""
    for i in range(start, levels.shape[0]):
        v = values[i]
        if v & P and (v & PFN_MASK) >> 12 >= pfn_limit:
            return -1 - i
        lv = levels[i]
        j = _slot(ent, meta, lv, vkeys[i])
        if j < 0:
            if v == 0:
                continue
            if meta[lv, M_USED] >= meta[lv, M_LIMIT]:
                return i
            j = _insert(ent, meta, st, lv, vkeys[i])
        ent[(j << 1) | 1] = v
    return int(levels.shape[0])


@_jit
def rehash(old: I64, old_meta: I64, ent: I64, meta: I64, st: I64) -> None:  # pragma: no cover
    """Every key of the mirror ``old`` into the empty mirror ``ent`` laid out by ``meta``
    (bigger tables), but keys with neither an entry nor a TOUCHED mark (entries the model
    removed). Slot numbers change: the write-back log must be empty. Sets
    ``st[ST_PT_FULL]`` if a table reached its limit."""
    for lv in range(1, 6):
        first = old_meta[lv, M_FIRST]
        for j in range(first, first + old_meta[lv, M_SLOTS]):
            kw = old[j << 1]
            v = old[(j << 1) | 1]
            if kw == EMPTY or (v == 0 and not kw & TOUCHED):
                continue
            k = _insert(ent, meta, st, lv, kw & KEY_MASK)
            ent[k << 1] = kw
            ent[(k << 1) | 1] = v


@intrinsic
def _prefetch(typingctx: Any, arr: Any, idx: Any) -> Any:  # pragma: no cover - compiled
    """``prefetcht0`` of ``arr[idx]`` (LLVM's llvm.prefetch): a hint that changes no state."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(  # type: ignore[no-untyped-call]
            context, builder, aryty, ary, [args[1]], wraparound=False
        )
        i32 = ir.IntType(32)
        vp = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [vp, i32, i32, i32])
        fn = cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]
            builder.module, fnty, "llvm.prefetch.p0"
        )
        builder.call(fn, [builder.bitcast(ptr, vp), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(arr, idx), codegen


PF_AHEAD = 3  # records between prefetching a PTE's slot and the walk that reads it


@_inline
def _prefetch_llc(ctags: Tags, cdesc: I64, paddr: int) -> None:  # pragma: no cover - compiled
    """Prefetch the cache model's LLC set of the line of ``paddr`` (its first and its last
    slot: 16 ways of 4-byte tags are one host line, of 8-byte tags two)."""
    line = paddr >> LINE_SHIFT
    ways = cdesc[2, D_WAYS]
    b = _set_base(cdesc[2, D_FIRST], ways, cdesc[2, D_MASK], cdesc[2, D_SETS], line)
    _prefetch(ctags, b)  # type: ignore[call-arg]
    _prefetch(ctags, (b + ways - 1) & POS)


@_inline
def _prefetch_pte(ent: I64, meta: I64, m: int) -> None:  # pragma: no cover - compiled
    """Start loading the mirror slot where the search for the PTE of ``m`` starts (a hint
    computed from ``m`` alone: no load)."""
    _prefetch(ent, ((meta[1, M_FIRST] + _home(m >> 12, meta[1, M_SLOTS])) << 1) & POS)  # type: ignore[call-arg]


@_inline
def _prefetch_walk(
    ent: I64, meta: I64, ctags: Tags, cdesc: I64, m: int, data: bool
) -> None:  # pragma: no cover - compiled
    """Start loading what a 4 KiB walk of ``m`` and its data access will read from host
    memory, the PTE's slot being (probably) loaded already by :func:`_prefetch_pte`: the
    cache model's LLC sets of the PTE's line and, when ``data`` (a load or store), of the
    data line. Changes no state; a hint only."""
    j = _slot(ent, meta, 2, m >> 21)
    if j < 0:
        return
    e = ent[(j << 1) | 1]
    if not e & P or e & PS:
        return
    vpn = m >> 12
    _prefetch_llc(ctags, cdesc, (e & PFN_MASK) | ((vpn & 511) << 3))
    if data:
        k = _slot(ent, meta, 1, vpn)
        if k >= 0:
            pte = ent[(k << 1) | 1]
            if pte & P:
                _prefetch_llc(ctags, cdesc, (pte & PFN_MASK) | (m & 4095))


# --------------------------------------------------------------------------- TLB


@_inline
def _oldest(tkey: I64, tstamp: I64, b: int, ways: int) -> int:  # pragma: no cover - compiled
    """Position of the first empty way of the set at ``b``, else of its least recently used
    (smallest stamp: stamps within a set are distinct): the minimum of ``stamp << 16 | way``,
    0 | way for an empty way (key -1), without a branch or a select (ways < 65536)."""
    if ways == 4:  # the L1 dTLB's sets (every walk fills one): straight code, two levels
        # of minima (the loop below, vectorized by LLVM for any length, ran a 4-way set
        # through its scalar remainder: random 1 GiB 5% slower)
        m0 = min(_age(tkey, tstamp, b, 0), _age(tkey, tstamp, b, 1))
        m1 = min(_age(tkey, tstamp, b, 2), _age(tkey, tstamp, b, 3))
        return min(m0, m1) & 0xFFFF
    best = (tstamp[b] << 16) & ~(tkey[b] >> 63)
    for j in range(1, ways):
        best = min(best, ((tstamp[b + j] << 16) & ~(tkey[b + j] >> 63)) | j)
    return best & 0xFFFF  # type: ignore[no-any-return]


@_inline
def _age(tkey: I64, tstamp: I64, b: int, j: int) -> int:  # pragma: no cover - compiled
    """Way ``j`` of the set at ``b`` as :func:`_oldest` orders it: ``stamp << 16 | j``, or
    ``j`` alone for an empty way."""
    w = (b + j) & POS
    return ((tstamp[w] << 16) & ~(tkey[w] >> 63)) | j  # type: ignore[no-any-return]


@_inline
def _tlb_probe(
    tkey: I64, arr: I64, probe: I64, s: int, vaddr: int, pcid: int, filled: int
) -> tuple[int, int]:  # pragma: no cover - compiled
    """(slot, size code) of the entry of structure ``s`` for ``vaddr``, smallest page first;
    (-1, -1) on a miss. No global entries: user accesses never fill one. A page size never
    filled into ``s`` (bit ``3 * s + code`` of ``filled`` clear) has no entry to find."""
    for code in range(3):
        a = probe[s, code]
        if a < 0 or not (filled >> (3 * s + code)) & 1:
            continue
        pn = vaddr >> (12 + 9 * code)
        ways = arr[a, 2]
        base = (arr[a, 0] + (pn & (arr[a, 1] - 1)) * ways) & POS
        p = _find(tkey, base, ways, (pn << 15) | (code << 13) | pcid)
        if p >= 0:
            return base + p, code
    return -1, -1


@_inline
def _tlb_fill(
    tkey: I64,
    tpfn: I64,
    tperm: I64,
    tstamp: I64,
    arr: I64,
    a: int,
    pn: int,
    key: int,
    pfn: int,
    perms: int,
    now: int,
) -> None:  # pragma: no cover - compiled
    """vmsim.hw.tlb._fill() of a key that is not in the set: take an empty way, else evict
    the least recently used. The model's _fill() first looks for the key to refresh it, but
    every fill here follows a probe of that structure that has just missed the key (an STLB
    hit refilling the L1, a walk after a miss of both) or an INVLPG that has just removed it
    (a walk after a permission miss), so that search would find nothing: it is left out."""
    ways = arr[a, 2]
    base = (arr[a, 0] + (pn & (arr[a, 1] - 1)) * ways) & POS
    victim = base + _oldest(tkey, tstamp, base, ways)
    tkey[victim] = key
    tpfn[victim] = pfn
    tperm[victim] = perms
    tstamp[victim] = now


# The STLB's recency order. Every STLB fill needs its set's least recently used way, and a
# search of the set's stamps for it (a minimum over 12 stamps, which LLVM vectorizes with a
# remainder loop) cost a random stream's walks about a sixth of their time (random 1 GiB:
# 10.6 -> 11.9 M/s without it, best of 12 alternating passes). So the STLB also
# keeps, per set, the list of its ways in recency order: ``tord[base .. base + ways - 1]``
# (int16 way numbers) for the set whose first slot is ``base``: the used ways most recent
# first, then the empty ones (any order). A fill takes the last way of the list (an empty
# way if there is one, else the LRU: the same entry as the stamps' minimum, or an equivalent
# empty way) and moves it to the front, an STLB hit moves its way to the front (one vector
# find and one lane shift, like the cache model's sets), an invalidation rebuilds the list of
# its set from the stamps. The stamps stay what they are (the order of a set's entries).


@_inline
def _stlb_touch(tord: O16, base: int, ways: int, w: int) -> None:  # pragma: no cover
    """Way ``w`` of the STLB set at ``base`` becomes the most recent of its recency list."""
    _to_front(tord, base, ways, w, _find(tord, base, ways, w))


@_inline
def _stlb_fill(
    tkey: I64,
    tpfn: I64,
    tperm: I64,
    tstamp: I64,
    tord: O16,
    arr: I64,
    a: int,
    pn: int,
    key: int,
    pfn: int,
    perms: int,
    now: int,
) -> None:  # pragma: no cover - compiled
    """:func:`_tlb_fill` into an STLB array: the victim is the last way of the set's recency
    list (an empty way, else the least recently used), which becomes its first."""
    ways = arr[a, 2]
    base = (arr[a, 0] + (pn & (arr[a, 1] - 1)) * ways) & POS
    w = tord[(base + ways - 1) & POS]
    victim = (base + w) & POS
    tkey[victim] = key
    tpfn[victim] = pfn
    tperm[victim] = perms
    tstamp[victim] = now
    _to_front(tord, base, ways, w, ways - 1)


@_jit
def stlb_order(
    tkey: I64, tstamp: I64, tord: O16, arr: I64, probe: I64, a_only: int, base_only: int
) -> None:  # pragma: no cover - compiled
    """Rebuild the STLB's recency lists from the keys and stamps: the used ways by stamp,
    most recent first, then the empty ones. Every set of every STLB array, or
    (``a_only >= 0``) the set at ``base_only`` of array ``a_only`` alone."""
    for code in range(3):
        a = probe[S_STLB, code]
        if a < 0 or (a_only >= 0 and a != a_only):
            continue
        if code > 0 and (probe[S_STLB, 0] == a or (code > 1 and probe[S_STLB, 1] == a)):
            continue  # an array holding several page sizes: done once
        ways = arr[a, 2]
        for b in range(arr[a, 0], arr[a, 0] + arr[a, 1] * ways, ways):
            if a_only >= 0 and b != base_only:
                continue
            n = 0
            for j in range(ways):  # insertion sort: used ways by stamp (descending)
                if tkey[b + j] == -1:
                    continue
                i = n
                while i > 0 and tstamp[b + tord[b + i - 1]] < tstamp[b + j]:
                    tord[b + i] = tord[b + i - 1]
                    i -= 1
                tord[b + i] = j
                n += 1
            for j in range(ways):
                if tkey[b + j] == -1:
                    tord[b + n] = j
                    n += 1


@_jit
def tlb_invlpg(
    tkey: I64, tstamp: I64, tord: O16, arr: I64, probe: I64, vaddr: int, pcid: int
) -> None:  # pragma: no cover - compiled
    """TlbHierarchy.invlpg(): every structure, every page size, this PCID (and global)."""
    for s in range(3):
        for code in range(3):
            a = probe[s, code]
            if a < 0:
                continue
            pn = vaddr >> (12 + 9 * code)
            base = arr[a, 0] + (pn & (arr[a, 1] - 1)) * arr[a, 2]
            key = (pn << 15) | (code << 13)
            removed = False
            for w in range(base, base + arr[a, 2]):
                k = tkey[w]
                if k == (key | pcid) or k == (key | 4096):
                    tkey[w] = -1
                    removed = True
            if removed and s == S_STLB:
                stlb_order(tkey, tstamp, tord, arr, probe, a, base)


@_jit
def tlb_flush(
    tkey: I64, tstamp: I64, tord: O16, arr: I64, probe: I64, pcid: int
) -> None:  # pragma: no cover - compiled
    """flush_pcid(pcid) (pcid >= 0) or flush_all (pcid == -1: non-global; -2: everything)."""
    for w in range(tkey.shape[0]):
        k = tkey[w]
        if k == -1:
            continue
        tag = k & 8191
        if pcid == -2 or (pcid == -1 and tag != 4096) or (pcid >= 0 and tag == pcid):
            tkey[w] = -1
    stlb_order(tkey, tstamp, tord, arr, probe, -1, -1)


# --------------------------------------------------------------------------- PWC


@_jit
def pwc_flush(pkey: I64) -> None:  # pragma: no cover - compiled
    for lv in range(pkey.shape[0]):
        for i in range(pkey.shape[1]):
            pkey[lv, i] = -1


@_inline
def _pwc_find(pkey: I64, lv: int, n: int, key: int) -> int:  # pragma: no cover - compiled
    """Index of ``key`` among the ``n`` entries of level ``lv``, or -1 (branch-free; a key
    is in a level at most once: a fill follows a miss). 32 entries (Skylake's PDE cache,
    probed by every walk) as one vector compare instead of a chain of 32 compare/cmov
    pairs (random 1 GiB: about 5% faster)."""
    if n == 32:
        return _vfind32(pkey[lv], 0, key)  # type: ignore[no-any-return]
    hit = -1
    if n == 4:
        for i in range(4):
            hit = i if pkey[lv, i] == key else hit
    else:
        for i in range(n):
            hit = i if pkey[lv, i] == key else hit
    return hit


def pwc_links(psize: I64, width: int) -> I64:
    """The recency lists of the paging-structure caches: ``link[level, i] = (previous, next)``
    over the ``n = psize[level]`` entries, slot ``n`` being the list's head (next: the most
    recently used entry; previous: the least). Every entry is always on its list; empty ones
    (key -1) stay behind every used one, because only a hit or a fill moves an entry to the
    front and a flush empties them all: the last entry is the first empty one, else the LRU."""
    link = np.zeros((6, width + 1, 2), dtype=np.int64)
    for lv in range(6):
        n = int(psize[lv])
        for i in range(n + 1):
            link[lv, i] = (i - 1 if i > 0 else n, i + 1 if i < n else 0)
    return link


@_inline
def _pwc_front(link: I64, lv: int, n: int, i: int) -> None:  # pragma: no cover - compiled
    """Entry ``i`` of level ``lv`` becomes the most recently used (O(1); nothing to do when
    it is already: a walk's PWC hit is usually the same entry as the last walk's)."""
    if link[lv, n, 1] == i:
        return
    p = link[lv, i, 0]
    q = link[lv, i, 1]
    link[lv, p, 1] = q
    link[lv, q, 0] = p
    h = link[lv, n, 1]
    link[lv, i, 0] = n
    link[lv, i, 1] = h
    link[lv, h, 0] = i
    link[lv, n, 1] = i


@_inline
def _pwc_fill(
    pkey: I64,
    pval: I64,
    link: I64,
    psize: I64,
    level: int,
    key: int,
    pfn: int,
    rw: int,
    us: int,
    nx: int,
) -> None:  # pragma: no cover - compiled
    n = psize[level]
    if n == 0:
        return
    # The walk probed this level for ``key`` and missed (it fills only the levels below the
    # one that hit): the key is absent, and the entry taken is the first empty one, else the
    # least recently used.
    victim = link[level, n, 0]
    pkey[level, victim] = key
    pval[level, victim, 0] = pfn
    pval[level, victim, 1] = rw
    pval[level, victim, 2] = us
    pval[level, victim, 3] = nx
    _pwc_front(link, level, n, victim)


# --------------------------------------------------------------------------- walk


@_inline
def _log(log: I64, st: I64, pos: int) -> None:  # pragma: no cover - compiled
    """Remember a mirror entry whose A/D bits changed (an entry logs at most twice, A then D,
    between write-backs: no de-duplication needed)."""
    log[st[ST_LOG_N]] = pos
    st[ST_LOG_N] += 1


@_inline
def _walk(
    m: int,
    write: bool,
    fetch: bool,
    ent: I64,
    meta: I64,
    log: I64,
    pkey: I64,
    pval: I64,
    link: I64,
    psize: I64,
    st: I64,
    wbuf: I64,
    out: I64,
) -> int:  # pragma: no cover - compiled
    """vmsim.hw.mmu.walk() for a user access (CPL 3, SMEP, WP, no SMAP, PKRU 0, MAXPHYADDR 52).
    Returns 0 (translated), 1 (page fault) or 2 (stale PWC entry). On success ``out`` holds
    (leaf level, leaf entry, memory refs, pwc hit, leaf's mirror slot) and ``wbuf[:refs]``
    the physical address of every entry read."""
    rw = RW
    us = US
    nx = 0
    level = st[ST_LEVELS]
    table = st[ST_ROOT]
    pwc_hit = 0
    for lv in range(2, 6):
        n = psize[lv]
        if n == 0:
            continue
        key = m >> (12 + 9 * (lv - 1))
        hit = _pwc_find(pkey, lv, n, key)
        if hit >= 0:
            _pwc_front(link, lv, n, hit)
            # The model (strict=True) checks the hit against the live upper entry and raises
            # StalePagingStructure if it changed without a flush. Here it cannot have: page
            # tables change only in Python, and every return from Python flushes this PWC.
            pwc_hit = 1
            rw = pval[lv, hit, 1]
            us = pval[lv, hit, 2]
            nx = pval[lv, hit, 3]
            table = pval[lv, hit, 0]
            level = lv - 1
            break
    refs = 0
    while True:
        key = m >> (12 + 9 * (level - 1))
        pos = _slot(ent, meta, level, key)
        e = ent[((pos << 1) | 1) & POS] if pos >= 0 else 0
        wbuf[refs] = (table << 12) | ((key & 511) << 3)
        refs += 1
        if not e & P:
            return 1
        leaf = False
        if level == 1:
            leaf = True
        elif e & PS:
            if level >= 4:
                return 1
            if level == 2 and e & LARGE_RSVD2:
                return 1
            if level == 3 and e & LARGE_RSVD3:
                return 1
            leaf = True
        rw &= e
        us &= e
        nx |= e & NX
        if leaf:
            break
        if not e & A:
            e |= A
            ent[(pos << 1) | 1] = e
            _log(log, st, pos)
        _pwc_fill(pkey, pval, link, psize, level, key, (e & PFN_MASK) >> 12, rw, us, nx)
        table = (e & PFN_MASK) >> 12
        level -= 1
    if not us & US:
        return 1
    if fetch:
        if nx != 0:
            return 1
    elif write and not rw & RW:
        return 1
    new = e | A
    if write:
        new |= D
    if new != e:
        ent[(pos << 1) | 1] = new
        _log(log, st, pos)
        e = new
    out[0] = level
    out[1] = e
    out[2] = refs
    out[3] = pwc_hit
    out[4] = pos
    return 0


# --------------------------------------------------------------------------- the loop


@_jit
def _store(
    cnt: I64, local: I64, st: I64, clock: int, filled: int
) -> None:  # pragma: no cover - compiled
    """Add the hot loop's local counters to ``cnt``: local = (L1 hits, STLB hits, instruction
    records, 4K, 2M, 1G translations; then, from 8, data lines by the level that answered)."""
    cnt[C_L1] += local[0]
    cnt[C_STLB] += local[1]
    cnt[C_INSTR] += local[2]
    done = local[3] + local[4] + local[5]
    cnt[C_RECORDS] += done
    cnt[C_ACCESSES] += done
    cnt[C_BY_SIZE] += local[3]
    cnt[C_BY_SIZE + 1] += local[4]
    cnt[C_BY_SIZE + 2] += local[5]
    for lv in range(4):
        cnt[C_DATA_LV + lv] += local[8 + lv]
    st[ST_TLB_CLOCK] = clock
    st[ST_FILLED] = filled


@_jit
def _fault(pkey: I64, st: I64, fetch: bool, write: bool) -> int:  # pragma: no cover - compiled
    """A page fault goes to Python: the PWC is flushed (the model flushes its own), the
    access kind noted. Returns EV_FAULT."""
    pwc_flush(pkey)
    st[ST_FAULT_ACCESS] = 2 if fetch else (1 if write else 0)
    return EV_FAULT


@_jit
def hit_run(
    addr: I64,
    kind: npt.NDArray[np.uint8],
    i: int,
    tkey: I64,
    tpfn: I64,
    tperm: I64,
    tstamp: I64,
    arr: I64,
    probe: I64,
    ctags: Tags,
    cdesc: I64,
    st: I64,
    scr: I64,
    clock: int,
) -> tuple[int, int]:  # pragma: no cover - compiled
    """run_chunk's hit path: from record ``i`` on, the records whose translation is an L1 hit
    (the memo or the 4 KiB array of the L1 structure) with the rights the access needs, with
    nothing for Python to do. It is user_access() for those records exactly (the TLB recency,
    the counters, the data line), in a small function whose loop keeps its state in registers;
    the first other record ends it before changing anything. Returns (that record, clock).
    The memo and the local counters are run_chunk's (``scr``)."""
    n = addr.shape[0]
    pcid = st[ST_PCID]
    va_top = st[ST_VA_MASK] >> 1
    # invariants in locals (a store to an int64 state array could alias them, so loads in
    # the loop would be repeated): the cache geometry and, per L1 structure, its 4 KiB array
    # as (first slot, sets - 1, ways; ways 0: none)
    g = cache_geometry(cdesc)
    a = probe[S_L1D, 0]
    d_first = arr[a, 0] if a >= 0 else 0
    d_mask = arr[a, 1] - 1 if a >= 0 else 0
    d_ways = arr[a, 2] if a >= 0 else 0
    a = probe[S_L1I, 0]
    i_first = arr[a, 0] if a >= 0 else 0
    i_mask = arr[a, 1] - 1 if a >= 0 else 0
    i_ways = arr[a, 2] if a >= 0 else 0
    mk0 = scr[32]
    mk1 = scr[33]
    ms0 = scr[34]
    ms1 = scr[35]
    mc0 = scr[36]
    mc1 = scr[37]
    h_l1 = 0
    h_instr = 0
    h_4k = 0
    h_2m = 0
    h_1g = 0
    h_d0 = 0
    h_d1 = 0
    h_d2 = 0
    h_d3 = 0
    while i < n:
        va = addr[i & POS]
        if va < 0 or va > va_top:
            break
        k = kind[i & POS]
        if k == 0:
            # an instruction fetch: the iTLB's memo (a fetch stream stays on one page for
            # long), else its 4 KiB array
            code = mc1
            if mk1 == ((va >> (12 + 9 * code)) << 15) | (code << 13) | pcid:
                if tperm[ms1] & NX or (code > 0 and va >> 12 != st[ST_LAST_VPN]):
                    break  # (a large page's 4 KiB page not counted as touched yet)
            else:
                pn = va >> 12
                base = (i_first + (pn & i_mask) * i_ways) & POS
                p = _find(tkey, base, i_ways, (pn << 15) | pcid)  # never filled: all -1
                if p < 0:
                    break
                slot = (base + p) & POS
                if tperm[slot] & NX:
                    break
                clock += 1  # the entry becomes the most recent of its set
                tstamp[slot] = clock
                mk1 = tkey[slot]
                ms1 = slot
                mc1 = 0
                code = 0
            h_instr += 1
        else:
            # a data access: the dTLB's 4 KiB array first (a data stream changes pages
            # often: a memo hit would be a coin toss for the branch predictor), else the
            # memo (a large page)
            pn = va >> 12
            base = (d_first + (pn & d_mask) * d_ways) & POS
            p = _find(tkey, base, d_ways, (pn << 15) | pcid)
            if p >= 0:
                slot = (base + p) & POS
                code = 0
            elif mk0 == ((va >> (12 + 9 * mc0)) << 15) | (mc0 << 13) | pcid:
                slot = ms0
                code = mc0
                if pn != st[ST_LAST_VPN]:
                    break  # a large page's 4 KiB page not counted as touched yet
            else:
                break
            perms = tperm[slot]
            if k >= 2 and (perms & (RW | D)) != RW | D:
                break
            if p >= 0:
                # the entry becomes the most recent of its set (if it was, its recency
                # stamp only grows: the set's order is the same)
                clock += 1
                tstamp[slot] = clock
                mk0 = tkey[slot]
                ms0 = slot
                mc0 = 0
            pfn = tpfn[slot] + ((va & ((1 << (12 + 9 * code)) - 1)) >> 12)
            lv = cache_line(ctags, g, ((pfn << 12) | (va & 4095)) >> LINE_SHIFT)
            h_d0 += lv == 0
            h_d1 += lv == 1
            h_d2 += lv == 2
            h_d3 += lv == 3
        h_l1 += 1
        h_4k += code == 0
        h_2m += code == 1
        h_1g += code == 2
        i += 1
    scr[32] = mk0
    scr[33] = mk1
    scr[34] = ms0
    scr[35] = ms1
    scr[36] = mc0
    scr[37] = mc1
    scr[16] += h_l1  # local[0]: L1 hits
    scr[18] += h_instr
    scr[19] += h_4k
    scr[20] += h_2m
    scr[21] += h_1g
    scr[24] += h_d0  # local[8 + level]: data lines
    scr[25] += h_d1
    scr[26] += h_d2
    scr[27] += h_d3
    return i, clock


@_jit
def run_chunk(
    addr: I64,
    kind: npt.NDArray[np.uint8],
    start: int,
    tkey: I64,
    tpfn: I64,
    tperm: I64,
    tstamp: I64,
    tord: O16,
    arr: I64,
    probe: I64,
    pkey: I64,
    pval: I64,
    link: I64,
    psize: I64,
    ent: I64,
    meta: I64,
    log: I64,
    ctags: Tags,
    cdesc: I64,
    st: I64,
    cnt: I64,
    scr: I64,
) -> tuple[int, int]:  # pragma: no cover - compiled
    """Translate ``addr[start:]`` (user_access() per record) until the end (EV_DONE) or an
    event Python must handle; returns (event, index of the record it concerns).

    ``memo_*[s]`` remembers the entry of L1 structure ``s`` (dTLB, iTLB) that answered last:
    it is that structure's most recently used entry, so a repeated hit on it changes no LRU
    order and needs no probe. Any L1 miss of ``s``, any INVLPG and every return forget it.
    ``scr``: SCRATCH_LEN int64 of scratch (nothing here allocates: compiled without NRT)."""
    pcid = st[ST_PCID]
    va_mask = st[ST_VA_MASK]
    wbuf = scr[0:8]
    out = scr[8:16]
    local = scr[16:32]
    memo_key = scr[32:34]
    memo_slot = scr[34:36]
    memo_code = scr[36:38]
    for j in range(16):
        local[j] = 0
    for j in range(2):
        memo_key[j] = -1
        memo_slot[j] = 0
        memo_code[j] = 0
    n = addr.shape[0]
    log_limit = log.shape[0] - LOG_SLACK
    clock = st[ST_TLB_CLOCK]
    filled = st[ST_FILLED]
    g = cache_geometry(cdesc)  # in locals: not reloaded after every store to the state arrays
    i = start
    hits = True  # try the hit path first; then only after an L1 hit (the next record of a
    # walk or an STLB-hit stream misses the L1 too, and a call of hit_run that returns at once
    # costs as much as an STLB hit)
    while i < n:
        if hits:  # -- the hit path: the records whose translation is an L1 hit
            i, clock = hit_run(
                addr,
                kind,
                i,
                tkey,
                tpfn,
                tperm,
                tstamp,
                arr,
                probe,
                ctags,
                cdesc,
                st,
                scr,
                clock,
            )
            if i >= n:
                break
        # -- the general path: one record, anything may happen
        if st[ST_PT_FULL]:
            _store(cnt, local, st, clock, filled)
            return EV_GROW, i
        if st[ST_LOG_N] > log_limit:
            _store(cnt, local, st, clock, filled)
            return EV_LOG, i
        va = addr[i]
        if va < 0 or va > va_mask >> 1:
            _store(cnt, local, st, clock, filled)
            return EV_BADADDR, i
        k = kind[i]
        fetch = k == 0
        write = k >= 2
        s = S_L1I if fetch else S_L1D
        # -- TLB (TlbHierarchy.lookup)
        code = memo_code[s]
        slot = -1
        level_hit = 1
        if memo_key[s] == (((va >> (12 + 9 * code)) << 15) | (code << 13) | pcid):
            slot = memo_slot[s]
        else:
            slot, code = _tlb_probe(tkey, arr, probe, s, va, pcid, filled)
            if slot < 0:
                memo_key[s] = -1
                slot, code = _tlb_probe(tkey, arr, probe, S_STLB, va, pcid, filled)
                level_hit = 2
            if slot >= 0:
                clock += 1
                now = clock
                tstamp[slot] = now
                if level_hit == 1:
                    memo_key[s] = tkey[slot]
                    memo_slot[s] = slot
                    memo_code[s] = code
                else:
                    a2 = probe[S_STLB, code]  # the entry's way moves to the list's front
                    w2 = arr[a2, 2]
                    b2 = (arr[a2, 0] + ((va >> (12 + 9 * code)) & (arr[a2, 1] - 1)) * w2) & POS
                    _stlb_touch(tord, b2, w2, slot - b2)
                    a1 = probe[s, code]
                    if a1 >= 0:
                        filled |= 1 << (3 * s + code)
                        _tlb_fill(
                            tkey,
                            tpfn,
                            tperm,
                            tstamp,
                            arr,
                            a1,
                            va >> (12 + 9 * code),
                            tkey[slot],
                            tpfn[slot],
                            tperm[slot],
                            now,
                        )
        pfn = 0
        translated = False
        if slot >= 0:
            perms = tperm[slot]
            if fetch:
                ok = perms & NX == 0
            elif write:
                ok = (perms & RW) != 0 and (perms & D) != 0
            else:
                ok = True
            if ok:
                translated = True
                shift = 12 + 9 * code
                pfn = tpfn[slot] + ((va & ((1 << shift) - 1)) >> 12)
                local[level_hit - 1] += 1
            else:
                memo_key[0] = -1
                memo_key[1] = -1
                tlb_invlpg(tkey, tstamp, tord, arr, probe, va, pcid)
                cnt[C_FLUSHES] += 1
                if not (write and perms & RW):
                    _store(cnt, local, st, clock, filled)
                    return _fault(pkey, st, fetch, write), i
        if not translated:
            memo_key[s] = -1
            m = va & va_mask
            if i + PF_AHEAD < n:  # the next records probably walk too (a random stream)
                _prefetch_pte(ent, meta, addr[i + PF_AHEAD] & va_mask)
            if i + 1 < n:
                _prefetch_walk(ent, meta, ctags, cdesc, addr[i + 1] & va_mask, kind[i + 1] != 0)
            r = _walk(m, write, fetch, ent, meta, log, pkey, pval, link, psize, st, wbuf, out)
            if r != 0:
                _store(cnt, local, st, clock, filled)
                if r == 2:
                    return EV_STALE, i
                tlb_invlpg(tkey, tstamp, tord, arr, probe, va, pcid)
                cnt[C_FLUSHES] += 1
                return _fault(pkey, st, fetch, write), i
            leaf_level = out[0]
            e = out[1]
            refs = out[2]
            cnt[C_WALKS] += 1
            cnt[C_WALK_REFS] += refs
            cnt[C_PWC_HITS] += out[3]
            for j in range(refs):
                cnt[C_WALK_LV + cache_line(ctags, g, wbuf[j] >> LINE_SHIFT)] += 1
            code = leaf_level - 1
            shift = 12 + 9 * code
            base_pfn = (e & PFN_MASK & ~((1 << shift) - 1)) >> 12
            perms = e & PERMS
            clock += 1
            now = clock
            pn = va >> shift
            key = (pn << 15) | (code << 13) | pcid
            a1 = probe[s, code]
            if a1 >= 0:
                filled |= 1 << (3 * s + code)
                _tlb_fill(tkey, tpfn, tperm, tstamp, arr, a1, pn, key, base_pfn, perms, now)
            a2 = probe[S_STLB, code]
            if a2 >= 0:
                filled |= 1 << (3 * S_STLB + code)
                _stlb_fill(tkey, tpfn, tperm, tstamp, tord, arr, a2, pn, key, base_pfn, perms, now)
            pfn = base_pfn + ((va & ((1 << shift) - 1)) >> 12)
            if code == 0:
                ls = out[4] << 1
                if not ent[ls] & TOUCHED:
                    ent[ls] |= TOUCHED
                    cnt[C_TOUCHED] += 1
        # -- translated: count, touched pages under large pages, the data line
        local[3 + code] += 1
        if fetch:
            local[2] += 1
        if code > 0:
            vpn = va >> 12
            if vpn != st[ST_LAST_VPN]:
                st[ST_LAST_VPN] = vpn
                ts = _insert(ent, meta, st, 1, vpn) << 1
                if not ent[ts] & TOUCHED:
                    ent[ts] |= TOUCHED
                    cnt[C_TOUCHED] += 1
        if not fetch:
            local[8 + cache_line(ctags, g, ((pfn << 12) | (va & 4095)) >> LINE_SHIFT)] += 1
        hits = translated and level_hit == 1
        i += 1
    _store(cnt, local, st, clock, filled)
    return EV_DONE, n
