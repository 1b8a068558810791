"""The fast lane's VMA engine, compiled (numba ``@njit(cache=True)``): mprotect, munmap,
anonymous mmap and brk of one address space held in arrays, and the replay's step around
them (``lane_mprotect``, ``lane_munmap``, ``lane_brk``, ``lane_stretch``: what
``vmsim.fastlane.lane`` runs per strace line). ``vmsim.fastlane.vmas`` is its Python
side and says what is modelled and what is declined (BAIL); every function here mirrors the
Python model statement for statement, named after it.

One file on purpose: numba keys its on-disk cache by the source file of each compiled
function, so everything the entry points call lives here. The constants are this file's
own (a compiled function freezes the globals it reads; a constant imported from another
file would not invalidate the cache when that file changed); a unit test checks each against
``vmsim.mm.flags`` / ``vmsim.constants``.

Layout (all int64; ``vm`` addresses fit: every VMA lies below TASK_SIZE < 2**63):

* ``vm[C, NF, B]``: C blocks of up to B VMAs each, field by field (``F_*``), each block
  sorted by start; a block is never empty once in use.
* ``ix[3 * C]``: ``ix[k]`` (k < nb) the block holding the k-th run of VMAs in address order;
  ``ix[C + b]`` the number of VMAs in block b; ``ix[2C : 2C + nfree]`` the unused blocks.
* ``mm[NMM]``: the mm-level numbers (``M_*``), ``info[4]``: why the last call failed
  (``I_*``: the MmError cause and the numbers of its detail text).

A position is ``k << 16 | i`` (logical block k, slot i); any insert or removal may move
positions, so the functions find a VMA again by its address after one.

Arguments arrive as int64 bit patterns of the 64-bit registers; the checks on them are made
in uint64 (numba's signed arithmetic may not wrap: LLVM assumes it does not overflow).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from numba import njit

I64 = npt.NDArray[np.int64]

_OPTS: dict[str, Any] = {"cache": True, "nogil": True, "_nrt": False}
_F = TypeVar("_F", bound=Callable[..., Any])
_jit: Callable[[_F], _F] = njit(**_OPTS)

# ------------------------------------------------------------------ layout
B = 64  # VMAs per block at most
HALF = B // 2
POS_SHIFT = 16
POS_MASK = (1 << POS_SHIFT) - 1
NF = 9
F_START = 0
F_END = 1
F_FLAGS = 2  # vm_flags
F_PGOFF = 3
F_FILE = 4  # 0: none; else index << FA_SHIFT | FA_* attributes (one key per OpenFile)
F_ANON = 5  # 0: none; else the AnonVma's index
F_SING = 6  # anon_singular (0/1)
F_NAME = 7  # 0: none; else the special mapping's name index
F_AUX = 8  # 0: swap_ra None; else its index (carried by splits, untouched by merges)

# attributes of a file key (the low bits): what decides behaviour
FA_SYSV = 1  # a SysV shm attach: can_merge_remove_vma() refuses it (vm_ops->close)
FA_HUGE = 2  # a hugetlbfs file (inode.huge_shift): may_split() would ask: BAIL
FA_DELETED = 4  # an unlinked file: remove_vma() would call on_file_unmapped: BAIL
FA_SHIFT = 3

M_COUNT = 0  # map_count
M_MAX = 1  # cfg.max_map_count
M_NEEDED = 2  # cfg.map_count_needed
M_COMMITTED = 3  # cfg.committed_pages (machine-wide)
M_OVERCOMMIT = 4  # cfg.overcommit_memory
M_RATIO = 5  # cfg.overcommit_ratio
M_RAM = 6  # cfg.ram_pages
M_SWAP = 7  # cfg.swap_pages
M_LOCKED = 8  # mm.locked_vm
M_USED = 9  # bytes mapped (tree.free.used)
M_TASK = 10  # cfg.task_size
M_NB = 11  # blocks in use
M_NFREE = 12  # unused blocks
M_NOMODEL = 13  # nonzero: page tables, guards or PMD leaves exist: every call BAILs
M_NODRAIN = 14  # nonzero: the mlock batch is not empty (munmap would drain it): BAIL
M_NOMMAP = 15  # nonzero: mmap BAILs (KSM merge-any, rlimits, mm.def_flags)
M_MMAP_BASE = 16  # mm.mmap_base
M_LEGACY_BASE = 17  # mm.mmap_legacy_base
M_MIN_ADDR = 18  # cfg.mmap_min_addr
M_EFF_MIN_ADDR = 19  # cfg.effective_mmap_min_addr
M_RAWIO = 20  # cfg.cap_sys_rawio
M_THP = 21  # cfg.thp != "never"
M_HAS_HINT = 22  # mm.placement_hint is not None
M_HINT = 23  # mm.placement_hint
NMM = 32

I_CAUSE = 0
I_SITE = 1
I_A = 2
I_B = 3
CAUSE_NONE = 0
CAUSE_MAP_COUNT = 1
CAUSE_OVERCOMMIT = 2
CAUSE_ADDRESS_SPACE = 3  # I_A: the length asked for
SITE_SPLIT = 1  # "split_vma()"
SITE_GATHER = 2  # "vms_gather_munmap_vmas()"
SITE_MMAP = 3  # "do_mmap()"

BAIL = -1  # return code: not modelled here, nothing changed

# ------------------------------------------------------------------ constants
EPERM = 1
ENOMEM = 12
EACCES = 13
EEXIST = 17
EINVAL = 22

PAGE_SHIFT = 12
PROT_READ = 0x1
PROT_WRITE = 0x2
PROT_EXEC = 0x4
PROT_SEM = 0x8
PROT_GROWSDOWN = 0x01000000
PROT_GROWSUP = 0x02000000
GROWS = PROT_GROWSDOWN | PROT_GROWSUP
PROT_VALID = PROT_READ | PROT_WRITE | PROT_EXEC | PROT_SEM

VM_WRITE = 1 << 1
VM_SHARED = 1 << 3
VM_GROWSDOWN = 1 << 8
VM_PFNMAP = 1 << 10
VM_MAYBE_GUARD = 1 << 11
VM_LOCKED = 1 << 13
VM_IO = 1 << 14
VM_DONTEXPAND = 1 << 18
VM_ACCOUNT = 1 << 20
VM_NORESERVE = 1 << 21
VM_HUGETLB = 1 << 22
VM_MIXEDMAP = 1 << 28
VM_SEALED = 1 << 42
VM_MAYREAD = 1 << 4
VM_MAYWRITE = 1 << 5
VM_MAYEXEC = 1 << 6
VM_SYNC = 1 << 23
VM_WIPEONFORK = 1 << 25
VM_DONTDUMP = 1 << 26
VM_NOHUGEPAGE = 1 << 30
VM_SHADOW_STACK = 1 << 39
VM_DROPPABLE = 1 << 40
VM_STARTGAP_FLAGS = VM_GROWSDOWN | VM_SHADOW_STACK
VM_ACCESS_FLAGS = 7
VM_SPECIAL = VM_IO | VM_DONTEXPAND | VM_PFNMAP | VM_MIXEDMAP
VM_IGNORE_MERGE = VM_MAYBE_GUARD  # | VM_SOFTDIRTY, which is 0
NOT_CHARGED = VM_ACCOUNT | VM_WRITE | VM_HUGETLB | VM_SHARED | VM_NORESERVE
PRIVATE_LOCKED = VM_WRITE | VM_SHARED | VM_LOCKED

PAGE_SIZE = 1 << PAGE_SHIFT
PMD_SIZE = 2 << 20
STACK_GUARD_GAP = 256 << PAGE_SHIFT
DEFAULT_WINDOW = (1 << 47) - PAGE_SIZE  # DEFAULT_MAP_WINDOW
MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_DROPPABLE = 0x08
MAP_TYPE = 0x0F
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_32BIT = 0x40
MAP_GROWSDOWN = 0x0100
MAP_LOCKED = 0x2000
MAP_NORESERVE = 0x4000
MAP_POPULATE = 0x8000
MAP_NONBLOCK = 0x10000
MAP_STACK = 0x20000
MAP_HUGETLB = 0x40000
MAP_SYNC = 0x80000
MAP_FIXED_NOREPLACE = 0x100000

INT64_MAX = (1 << 63) - 1
_U_OFFSET = np.uint64(4095)
_U_MASK = np.uint64((1 << 64) - 4096)
_U_ZERO = np.uint64(0)
_U_TOP = np.uint64(1 << 63)


# ------------------------------------------------------------------ positions
@_jit
def _i64(u: np.uint64) -> int:  # pragma: no cover - compiled
    """The int64 of a uint64 below 2**63 (for mypy: an int)."""
    return np.int64(u)  # type: ignore[return-value]


@_jit
def _get(vm: I64, ix: I64, p: int, f: int) -> int:  # pragma: no cover - compiled
    return vm[ix[p >> POS_SHIFT], f, p & POS_MASK]  # type: ignore[no-any-return]


@_jit
def _set(vm: I64, ix: I64, p: int, f: int, v: int) -> None:  # pragma: no cover - compiled
    vm[ix[p >> POS_SHIFT], f, p & POS_MASK] = v


@_jit
def _next(vm: I64, ix: I64, mm: I64, p: int) -> int:  # pragma: no cover - compiled
    """The VMA after ``p`` (-1: none)."""
    c = vm.shape[0]
    k = p >> POS_SHIFT
    i = p & POS_MASK
    if i + 1 < ix[c + ix[k]]:
        return p + 1
    if k + 1 < mm[M_NB]:
        return (k + 1) << POS_SHIFT
    return -1


@_jit
def _prev(vm: I64, ix: I64, p: int) -> int:  # pragma: no cover - compiled
    """The VMA before ``p`` (-1: none)."""
    c = vm.shape[0]
    k = p >> POS_SHIFT
    i = p & POS_MASK
    if i > 0:
        return p - 1
    if k > 0:
        return ((k - 1) << POS_SHIFT) | (ix[c + ix[k - 1]] - 1)  # type: ignore[no-any-return]
    return -1


@_jit
def find(vm: I64, ix: I64, mm: I64, addr: int) -> int:  # pragma: no cover - compiled
    """find_vma(): the position of the first VMA with ``end > addr`` (-1: none)."""
    nb = mm[M_NB]
    if nb == 0:
        return -1
    c = vm.shape[0]
    lo = 0
    hi = nb
    while lo < hi:  # the blocks whose first VMA starts at or below addr
        mid = (lo + hi) >> 1
        if vm[ix[mid], F_START, 0] <= addr:
            lo = mid + 1
        else:
            hi = mid
    k = lo - 1
    if k < 0:
        return 0  # every VMA starts above addr: the first one
    b = ix[k]
    lo = 0
    hi = ix[c + b]
    while lo < hi:
        mid = (lo + hi) >> 1
        if vm[b, F_START, mid] <= addr:
            lo = mid + 1
        else:
            hi = mid
    p = (k << POS_SHIFT) | (lo - 1)
    if vm[b, F_END, lo - 1] > addr:
        return p
    return _next(vm, ix, mm, p)


# ------------------------------------------------------------------ blocks
# The entry moves index rows with uint64: numba's wraparound test of a signed index (one
# branch per element) keeps LLVM from vectorising them (4x slower measured).
@_jit
def _move_up(vm: I64, b: int, i: int, n: int) -> None:  # pragma: no cover - compiled
    """Slots ``i .. n-1`` of block ``b`` move up by one (``n`` < B)."""
    lo = np.uint64(i)
    hi = np.uint64(n)
    one = np.uint64(1)
    for f in range(NF):
        row = vm[b, f]
        j = hi
        while j > lo:
            row[j] = row[j - one]
            j -= one


@_jit
def _move_down(vm: I64, b: int, i: int, n: int, by: int) -> None:  # pragma: no cover
    """Slots ``i + by .. n-1`` of block ``b`` move down by ``by`` (to ``i`` on)."""
    lo = np.uint64(i)
    hi = np.uint64(n - by)
    d = np.uint64(by)
    for f in range(NF):
        row = vm[b, f]
        j = lo
        while j < hi:
            row[j] = row[j + d]
            j += np.uint64(1)


@_jit
def _copy_rows(vm: I64, dst: int, at: int, src: int, lo: int, hi: int) -> None:  # pragma: no cover
    """Slots ``lo .. hi-1`` of block ``src`` copied to block ``dst`` from slot ``at`` on."""
    a = np.uint64(at)
    s0 = np.uint64(lo)
    s1 = np.uint64(hi)
    for f in range(NF):
        out = vm[dst, f]
        row = vm[src, f]
        j = s0
        while j < s1:
            out[a + j - s0] = row[j]
            j += np.uint64(1)


@_jit
def _open_slot(vm: I64, ix: I64, mm: I64, k: int, i: int) -> int:  # pragma: no cover - compiled
    """Make room for one VMA at slot ``i`` of logical block ``k`` (``i`` may be the block's
    count: after its last VMA); a full block is split in two first. Returns the new slot's
    position (its fields are the caller's to fill). Needs one unused block."""
    c = vm.shape[0]
    nb = mm[M_NB]
    if nb == 0:  # the first VMA: a block of its own
        nfree = mm[M_NFREE] - 1
        mm[M_NFREE] = nfree
        ix[0] = ix[2 * c + nfree]
        ix[c + ix[0]] = 0
        mm[M_NB] = 1
        k = 0
        i = 0
    b = ix[k]
    n = ix[c + b]
    if n == B:
        nfree = mm[M_NFREE] - 1
        mm[M_NFREE] = nfree
        b2 = ix[2 * c + nfree]
        _copy_rows(vm, b2, 0, b, HALF, B)
        ix[c + b] = HALF
        ix[c + b2] = B - HALF
        nb = mm[M_NB]
        for j in range(nb, k + 1, -1):
            ix[j] = ix[j - 1]
        ix[k + 1] = b2
        mm[M_NB] = nb + 1
        if i > HALF:
            k += 1
            i -= HALF
            b = b2
        n = ix[c + b]
    _move_up(vm, b, i, n)
    ix[c + b] = n + 1
    mm[M_COUNT] += 1
    return (k << POS_SHIFT) | i


@_jit
def _drop_block(vm: I64, ix: I64, mm: I64, k: int) -> None:  # pragma: no cover - compiled
    """Logical block ``k`` (empty) leaves the order; its block becomes unused."""
    c = vm.shape[0]
    b = ix[k]
    nb = mm[M_NB] - 1
    for j in range(k, nb):
        ix[j] = ix[j + 1]
    mm[M_NB] = nb
    nfree = mm[M_NFREE]
    ix[2 * c + nfree] = b
    mm[M_NFREE] = nfree + 1


@_jit
def _remove_run(vm: I64, ix: I64, mm: I64, p: int, count: int) -> None:  # pragma: no cover
    """Remove ``count`` consecutive VMAs from position ``p`` on (the tree only: accounting is
    the caller's). A block left empty is dropped; a small one takes in its next neighbour
    when both fit in half a block (so that blocks stay O(n / B))."""
    c = vm.shape[0]
    k = p >> POS_SHIFT
    i = p & POS_MASK
    mm[M_COUNT] -= count
    while count > 0:
        b = ix[k]
        n = ix[c + b]
        take = n - i
        if take > count:
            take = count
        _move_down(vm, b, i, n, take)
        n -= take
        count -= take
        ix[c + b] = n
        if n == 0:
            _drop_block(vm, ix, mm, k)
        else:
            k += 1
            i = 0
    # k: the block after the last one cut (or the one the cut ended in, when it was emptied
    # and dropped); try to merge the block before it (where the cut began) with it
    k0 = p >> POS_SHIFT
    if k0 < mm[M_NB] - 1:
        b = ix[k0]
        b2 = ix[k0 + 1]
        n = ix[c + b]
        n2 = ix[c + b2]
        if n + n2 <= HALF:
            _copy_rows(vm, b, n, b2, 0, n2)
            ix[c + b] = n + n2
            ix[c + b2] = 0
            _drop_block(vm, ix, mm, k0 + 1)


@_jit
def split_vma_nocheck(vm: I64, ix: I64, mm: I64, p: int, addr: int) -> int:  # pragma: no cover
    """__split_vma() without the map_count check: the VMA at ``p`` keeps ``[start, addr)``,
    a copy (vm_area_dup(): file, anon_vma, name, swap_ra too) covers ``[addr, end)``;
    returns the new VMA's position."""
    q = _open_slot(vm, ix, mm, p >> POS_SHIFT, (p & POS_MASK) + 1)
    p = _prev(vm, ix, q)
    bp = ix[p >> POS_SHIFT]
    ip = p & POS_MASK
    bq = ix[q >> POS_SHIFT]
    iq = q & POS_MASK
    for f in range(NF):
        vm[bq, f, iq] = vm[bp, f, ip]
    vm[bq, F_START, iq] = addr
    vm[bq, F_PGOFF, iq] = vm[bp, F_PGOFF, ip] + ((addr - vm[bp, F_START, ip]) >> PAGE_SHIFT)
    vm[bp, F_END, ip] = addr
    return q


# ------------------------------------------------------------------ accounting
@_jit
def check_map_count(mm: I64, info: I64, need: int, site: int) -> bool:  # pragma: no cover
    """check_map_count(): record ``need`` in map_count_needed; False (info filled) when it
    exceeds max_map_count."""
    if need > mm[M_NEEDED]:
        mm[M_NEEDED] = need
    if need > mm[M_MAX]:
        info[I_CAUSE] = CAUSE_MAP_COUNT
        info[I_SITE] = site
        info[I_A] = mm[M_COUNT]
        return False
    return True


@_jit
def vm_enough_memory(mm: I64, pages: int) -> bool:  # pragma: no cover - compiled
    """AddressSpace.vm_enough_memory() (__vm_enough_memory())."""
    mode = mm[M_OVERCOMMIT]
    if mode == 1:
        mm[M_COMMITTED] += pages
        return True
    if mode == 0:
        if pages > mm[M_RAM] + mm[M_SWAP]:
            return False
        mm[M_COMMITTED] += pages
        return True
    allowed = mm[M_RAM] * mm[M_RATIO] // 100 + mm[M_SWAP]
    if mm[M_COMMITTED] + pages > allowed:
        return False
    mm[M_COMMITTED] += pages
    return True


@_jit
def vm_unacct(mm: I64, pages: int) -> None:  # pragma: no cover - compiled
    v = mm[M_COMMITTED] - pages
    mm[M_COMMITTED] = v if v > 0 else 0


# ------------------------------------------------------------------ splits
@_jit
def split_vma(vm: I64, ix: I64, mm: I64, info: I64, p: int, addr: int) -> int:  # pragma: no cover
    """split_vma(): the map_count check, then the split (may_split: hugetlb BAILs before);
    returns the new (upper) VMA's position or -ENOMEM."""
    if not check_map_count(mm, info, mm[M_COUNT] + 1, SITE_SPLIT):
        return -ENOMEM
    return split_vma_nocheck(vm, ix, mm, p, addr)


@_jit
def split_vma_twice(  # pragma: no cover - compiled
    vm: I64, ix: I64, mm: I64, info: I64, p: int, start: int, end: int
) -> int:
    """split_vma_twice(): both checks first; the second failing leaves the first split made.
    Returns the position of the VMA of ``[start, end)`` or -ENOMEM."""
    n = mm[M_COUNT] + 1
    if not check_map_count(mm, info, n, SITE_SPLIT):
        return -ENOMEM
    n += 1
    if n > mm[M_NEEDED]:
        mm[M_NEEDED] = n
    if n > mm[M_MAX]:
        split_vma_nocheck(vm, ix, mm, p, start)
        check_map_count(mm, info, n, SITE_SPLIT)
        return -ENOMEM
    q = split_vma_nocheck(vm, ix, mm, p, start)
    r = split_vma_nocheck(vm, ix, mm, q, end)
    return _prev(vm, ix, r)


# ------------------------------------------------------------------ merges
@_jit
def _mergeable(  # pragma: no cover - compiled
    vm: I64, ix: I64, t: int, flags: int, file: int, anon: int, singular: int
) -> bool:
    """is_mergeable_vma() and is_mergeable_anon_vma() of the target VMA ``t``."""
    if _get(vm, ix, t, F_NAME) != 0:
        return False
    if (_get(vm, ix, t, F_FLAGS) ^ flags) & ~VM_IGNORE_MERGE:
        return False
    if _get(vm, ix, t, F_FILE) != file:
        return False
    tgt = _get(vm, ix, t, F_ANON)
    if tgt == 0 and anon != 0:
        return singular != 0
    if tgt != 0 and anon == 0:
        return _get(vm, ix, t, F_SING) != 0
    return tgt == anon


@_jit
def _can_merge_remove(vm: I64, ix: I64, p: int) -> bool:  # pragma: no cover - compiled
    """can_merge_remove_vma(): no vm_ops->close (hugetlb, SysV shm)."""
    return not (_get(vm, ix, p, F_FLAGS) & VM_HUGETLB or _get(vm, ix, p, F_FILE) & FA_SYSV)


@_jit
def _dup_anon_vma(vm: I64, ix: I64, dst: int, src: int) -> bool:  # pragma: no cover - compiled
    """One source of _dup_anon_vma(): True when ``dst`` (which lacked one) took its anon_vma."""
    if _get(vm, ix, dst, F_ANON) == 0 and _get(vm, ix, src, F_ANON) != 0:
        _set(vm, ix, dst, F_ANON, _get(vm, ix, src, F_ANON))
        _set(vm, ix, dst, F_SING, _get(vm, ix, src, F_SING))
        return True
    return False


@_jit
def vma_merge_existing_range(  # pragma: no cover - compiled
    vm: I64, ix: I64, mm: I64, p: int, prv: int, nxt: int, start: int, end: int, flags: int
) -> int:
    """vma_merge_existing_range() of ``[start, end)`` of the VMA at ``p`` given ``flags``;
    ``prv``/``nxt`` the candidates (-1: not considered). Returns the merged VMA's position,
    or -1 when no merge is made (nothing changed)."""
    vstart = _get(vm, ix, p, F_START)
    vend = _get(vm, ix, p, F_END)
    file = _get(vm, ix, p, F_FILE)
    anon = _get(vm, ix, p, F_ANON)
    singular = _get(vm, ix, p, F_SING)
    pgoff = _get(vm, ix, p, F_PGOFF) + ((start - vstart) >> PAGE_SHIFT)
    left_side = start == vstart
    right_side = end == vend
    merge_left = (
        left_side
        and prv >= 0
        and _get(vm, ix, prv, F_END) == start
        and _mergeable(vm, ix, prv, flags, file, anon, singular)
        and _get(vm, ix, prv, F_PGOFF)
        + ((_get(vm, ix, prv, F_END) - _get(vm, ix, prv, F_START)) >> PAGE_SHIFT)
        == pgoff
    )
    merge_right = False
    if (
        right_side
        and nxt >= 0
        and _get(vm, ix, nxt, F_START) == end
        and _mergeable(vm, ix, nxt, flags, file, anon, singular)
        and _get(vm, ix, nxt, F_PGOFF) == pgoff + ((end - start) >> PAGE_SHIFT)
    ):
        merge_right = True
        if merge_left:  # are_anon_vmas_compatible(prev, next)
            a = _get(vm, ix, prv, F_ANON)
            b = _get(vm, ix, nxt, F_ANON)
            merge_right = a == 0 or b == 0 or a == b
    if not (merge_left or merge_right):
        return -1
    if left_side and right_side and not _can_merge_remove(vm, ix, p):
        return -1
    if merge_left and merge_right and not _can_merge_remove(vm, ix, nxt):
        merge_right = False
    sticky = (flags | _get(vm, ix, p, F_FLAGS)) & VM_MAYBE_GUARD
    if merge_left:
        sticky |= _get(vm, ix, prv, F_FLAGS) & VM_MAYBE_GUARD
        at = _get(vm, ix, prv, F_START)
        if merge_right:  # prev + whole vma + next
            sticky |= _get(vm, ix, nxt, F_FLAGS) & VM_MAYBE_GUARD
            _set(vm, ix, prv, F_END, _get(vm, ix, nxt, F_END))
            if not _dup_anon_vma(vm, ix, prv, p):
                _dup_anon_vma(vm, ix, prv, nxt)
            _remove_run(vm, ix, mm, p, 2)
        elif right_side:  # prev + whole vma
            _set(vm, ix, prv, F_END, vend)
            _dup_anon_vma(vm, ix, prv, p)
            _remove_run(vm, ix, mm, p, 1)
        else:  # prev grows over the head of vma
            _set(vm, ix, prv, F_END, end)
            _set(vm, ix, p, F_START, end)
            _set(vm, ix, p, F_PGOFF, _get(vm, ix, p, F_PGOFF) + ((end - start) >> PAGE_SHIFT))
            _dup_anon_vma(vm, ix, prv, p)
    else:
        at = start
        if left_side:  # whole vma + next
            _set(vm, ix, nxt, F_START, start)
            _set(vm, ix, nxt, F_PGOFF, _get(vm, ix, p, F_PGOFF))
            _dup_anon_vma(vm, ix, nxt, p)
            sticky |= _get(vm, ix, nxt, F_FLAGS) & VM_MAYBE_GUARD
            _remove_run(vm, ix, mm, p, 1)
        else:  # next grows down over the tail of vma
            _set(vm, ix, p, F_END, start)
            _set(vm, ix, nxt, F_START, start)
            _set(vm, ix, nxt, F_PGOFF, pgoff)
            _dup_anon_vma(vm, ix, nxt, p)
            sticky |= _get(vm, ix, nxt, F_FLAGS) & VM_MAYBE_GUARD
    q = find(vm, ix, mm, at)
    _set(vm, ix, q, F_FLAGS, flags | sticky)
    return q


@_jit
def vma_modify(  # pragma: no cover - compiled
    vm: I64, ix: I64, mm: I64, info: I64, p: int, start: int, end: int, flags: int
) -> int:
    """vma_modify_flags(): merge, else split; the position of the VMA of exactly
    ``[start, end)`` afterwards, or -ENOMEM."""
    left_side = start == _get(vm, ix, p, F_START)
    right_side = end == _get(vm, ix, p, F_END)
    if (left_side or right_side) and not (flags & VM_SPECIAL):
        prv = _prev(vm, ix, p) if left_side else -1
        nxt = _next(vm, ix, mm, p) if right_side else -1
        q = vma_merge_existing_range(vm, ix, mm, p, prv, nxt, start, end, flags)
        if q >= 0:
            return q
    if left_side:
        if not right_side:
            q = split_vma(vm, ix, mm, info, p, end)
            if q < 0:
                return q
            p = _prev(vm, ix, q)
    elif right_side:
        p = split_vma(vm, ix, mm, info, p, start)
        if p < 0:
            return p
    else:
        p = split_vma_twice(vm, ix, mm, info, p, start, end)
        if p < 0:
            return p
    _set(vm, ix, p, F_FLAGS, flags)
    return p


# ------------------------------------------------------------------ mprotect
@_jit
def mprotect_fixup(  # pragma: no cover - compiled
    vm: I64, ix: I64, mm: I64, info: I64, p: int, start: int, end: int, newflags: int
) -> int:
    """mprotect_fixup(): EPERM when sealed, VM_ACCOUNT follows write permission, then the
    flags change. Returns the position of the VMA now covering the range, or -errno."""
    oldflags = _get(vm, ix, p, F_FLAGS)
    if oldflags & VM_SEALED:
        return -EPERM
    if newflags == oldflags:
        return p
    nrpages = (end - start) >> PAGE_SHIFT
    charged = 0
    if newflags & VM_WRITE:
        if not (oldflags & NOT_CHARGED):
            if not vm_enough_memory(mm, nrpages):
                info[I_CAUSE] = CAUSE_OVERCOMMIT
                info[I_A] = nrpages
                info[I_B] = mm[M_COMMITTED]
                return -ENOMEM
            charged = nrpages
            newflags |= VM_ACCOUNT
    elif (
        oldflags & VM_ACCOUNT
        and _get(vm, ix, p, F_FILE) == 0
        and _get(vm, ix, p, F_NAME) == 0
        and _get(vm, ix, p, F_ANON) == 0
    ):
        newflags &= ~VM_ACCOUNT
    if _get(vm, ix, p, F_START) < start and end < _get(vm, ix, p, F_END):
        q = split_vma_twice(vm, ix, mm, info, p, start, end)
        if q >= 0:
            _set(vm, ix, q, F_FLAGS, newflags)
    else:
        q = vma_modify(vm, ix, mm, info, p, start, end, newflags)
    if q < 0:
        vm_unacct(mm, charged)
        return q
    if oldflags & VM_ACCOUNT and not (newflags & VM_ACCOUNT):
        vm_unacct(mm, nrpages)
    return q


@_jit
def mprotect(  # pragma: no cover - compiled
    vm: I64, ix: I64, mm: I64, info: I64, start_arg: int, len_arg: int, prot: int
) -> int:
    """do_mprotect() (do_mprotect_pkey(), pkey -1) of the registers ``start_arg`` and
    ``len_arg`` (int64 bit patterns) and ``prot`` (its low 32 bits). Returns 0, an errno
    (``info``: the cause), or BAIL before any change."""
    info[I_CAUSE] = CAUSE_NONE
    info[I_SITE] = 0
    info[I_A] = 0
    info[I_B] = 0
    if mm[M_NOMODEL]:
        return BAIL
    grows = prot & GROWS
    prot &= ~GROWS
    if grows == GROWS:
        return EINVAL
    ustart = np.uint64(start_arg)
    ulen = np.uint64(len_arg)
    if ustart & _U_OFFSET:
        return EINVAL
    if ulen == _U_ZERO:
        return 0
    ulen = (ulen + _U_OFFSET) & _U_MASK
    uend = ustart + ulen
    if uend <= ustart:
        return ENOMEM
    if prot & ~PROT_VALID:
        return EINVAL
    if ustart >= _U_TOP:  # above every VMA: find() finds none
        return ENOMEM
    start = _i64(ustart)
    end = _i64(uend) if uend < _U_TOP else INT64_MAX  # above every VMA: the same tests
    p = find(vm, ix, mm, start)
    if p < 0 or _get(vm, ix, p, F_START) >= end:
        return ENOMEM
    if grows & PROT_GROWSDOWN:
        start = _get(vm, ix, p, F_START)
        if not (_get(vm, ix, p, F_FLAGS) & VM_GROWSDOWN):
            return EINVAL
    else:
        if _get(vm, ix, p, F_START) > start:
            return ENOMEM
        if grows & PROT_GROWSUP:
            return EINVAL
    # BAIL, decided over every VMA the walk may reach, before any change
    q = p
    while q >= 0 and _get(vm, ix, q, F_START) < end:
        flags = _get(vm, ix, q, F_FLAGS)
        if flags & VM_HUGETLB or _get(vm, ix, q, F_FILE) & FA_HUGE:
            return BAIL  # change_protection() of hugetlb, may_split()
        if (flags & PRIVATE_LOCKED) == VM_LOCKED and prot & PROT_WRITE:
            return BAIL  # populate of a locked private VMA made writable
        q = _next(vm, ix, mm, q)
    nstart = start
    tmp = _get(vm, ix, p, F_START)
    newprot = prot & VM_ACCESS_FLAGS
    while p >= 0 and _get(vm, ix, p, F_START) < end:
        if _get(vm, ix, p, F_START) != tmp:
            return ENOMEM
        newflags = newprot | (_get(vm, ix, p, F_FLAGS) & ~VM_ACCESS_FLAGS)
        if (newflags & ~(newflags >> 4)) & VM_ACCESS_FLAGS:
            return EACCES
        vend = _get(vm, ix, p, F_END)
        tmp = vend if vend < end else end
        p = mprotect_fixup(vm, ix, mm, info, p, nstart, tmp, newflags)
        if p < 0:
            return -p
        tmp = _get(vm, ix, p, F_END)
        if tmp >= end:
            return 0
        nstart = tmp
        p = _next(vm, ix, mm, p)
    if tmp < end:
        return ENOMEM
    return 0


# ------------------------------------------------------------------ munmap
@_jit
def munmap(  # pragma: no cover - compiled
    vm: I64, ix: I64, mm: I64, info: I64, start_arg: int, len_arg: int
) -> int:
    """do_munmap_syscall() -> do_vmi_munmap(): validate, gather (split the edges, the
    map_count check of a range strictly inside one VMA, EPERM when sealed), complete
    (locked_vm, the commit charge of VM_ACCOUNT pages). Returns 0, an errno or BAIL."""
    info[I_CAUSE] = CAUSE_NONE
    info[I_SITE] = 0
    info[I_A] = 0
    info[I_B] = 0
    if mm[M_NOMODEL]:
        return BAIL
    ustart = np.uint64(start_arg)
    ulen = np.uint64(len_arg)
    task = np.uint64(mm[M_TASK])
    if ustart & _U_OFFSET or ustart > task or ulen > task - ustart:
        return EINVAL
    uend = ustart + ((ulen + _U_OFFSET) & _U_MASK)
    if uend == ustart:
        return EINVAL
    start = _i64(ustart)
    end = _i64(uend)
    p = find(vm, ix, mm, start)
    if p < 0 or _get(vm, ix, p, F_START) >= end:
        return 0
    if mm[M_NODRAIN]:
        return BAIL  # lru_add_drain() would move the pending mlocked folios
    q = p
    while q >= 0 and _get(vm, ix, q, F_START) < end:
        if _get(vm, ix, q, F_FLAGS) & VM_HUGETLB or _get(vm, ix, q, F_FILE) & (
            FA_HUGE | FA_DELETED
        ):
            return BAIL  # unmap_hugepage_range(), may_split(), on_file_unmapped()
        q = _next(vm, ix, mm, q)
    # vms_gather_munmap_vmas()
    if start > _get(vm, ix, p, F_START):
        if end < _get(vm, ix, p, F_END) and not check_map_count(
            mm, info, mm[M_COUNT] + 1, SITE_GATHER
        ):
            return ENOMEM
        if _get(vm, ix, p, F_FLAGS) & VM_SEALED:
            return EPERM
        p = split_vma_nocheck(vm, ix, mm, p, start)
    first = _get(vm, ix, p, F_START)
    q = p
    last = p
    n = 0
    while q >= 0 and _get(vm, ix, q, F_START) < end:
        if _get(vm, ix, q, F_FLAGS) & VM_SEALED:
            return EPERM
        last = q
        n += 1
        q = _next(vm, ix, mm, q)
    if _get(vm, ix, last, F_END) > end:
        split_vma_nocheck(vm, ix, mm, last, end)
    # vms_complete_munmap_vmas()
    p = find(vm, ix, mm, first)
    q = p
    accounted = 0
    locked = 0
    mapped = 0
    for _ in range(n):
        flags = _get(vm, ix, q, F_FLAGS)
        pages = (_get(vm, ix, q, F_END) - _get(vm, ix, q, F_START)) >> PAGE_SHIFT
        mapped += pages
        if flags & VM_ACCOUNT:
            accounted += pages
        if flags & VM_LOCKED:
            locked += pages
        q = _next(vm, ix, mm, q)
    _remove_run(vm, ix, mm, p, n)
    mm[M_USED] -= mapped << PAGE_SHIFT
    if locked:
        mm[M_LOCKED] -= locked
    if accounted:
        vm_unacct(mm, accounted)
    return 0


# ------------------------------------------------------------------ mmap
@_jit
def _last(vm: I64, ix: I64, mm: I64) -> int:  # pragma: no cover - compiled
    """The position of the last VMA (-1: none)."""
    nb = mm[M_NB]
    if nb == 0:
        return -1
    n = ix[vm.shape[0] + ix[nb - 1]]
    return ((nb - 1) << POS_SHIFT) | (n - 1)  # type: ignore[no-any-return]


@_jit
def vm_start_gap(vm: I64, ix: I64, p: int) -> int:  # pragma: no cover - compiled
    """vm_start_gap(): a stack's start minus the guard gap."""
    start = _get(vm, ix, p, F_START)
    flags = _get(vm, ix, p, F_FLAGS)
    if flags & VM_GROWSDOWN:
        gap = start - STACK_GUARD_GAP
        return gap if gap > 0 else 0
    if flags & VM_SHADOW_STACK:
        gap = start - PAGE_SIZE
        return gap if gap > 0 else 0
    return start


@_jit
def _hint_fits(vm: I64, ix: I64, mm: I64, addr: int, length: int) -> bool:  # pragma: no cover
    p = find(vm, ix, mm, addr)
    return p < 0 or addr + length <= vm_start_gap(vm, ix, p)


@_jit
def _highest_gap(
    vm: I64, ix: I64, mm: I64, need: int, low: int, high: int
) -> int:  # pragma: no cover
    """_highest_gap() (mas_empty_area_rev()): the end of the highest free range inside
    ``[low, high)`` with room for ``need`` bytes (-1: none). Walks the gaps between VMAs
    down from ``high``, the empty ones (adjacent VMAs) not being free ranges."""
    if high <= low or high - low < need:
        return -1
    r = find(vm, ix, mm, high - 1)  # the first VMA ending at or above high
    cur = _prev(vm, ix, r) if r >= 0 else _last(vm, ix, mm)  # the last ending below it
    nx = r if r >= 0 else -1
    if cur >= 0:
        nx = _next(vm, ix, mm, cur)
    elif mm[M_NB] > 0:
        nx = 0
    while True:
        fs = _get(vm, ix, cur, F_END) if cur >= 0 else 0
        fe = _get(vm, ix, nx, F_START) if nx >= 0 else INT64_MAX
        if fs < fe:
            if fe <= low:
                return -1
            ge = fe if fe < high else high
            gs = fs if fs > low else low
            if ge - gs >= need:
                return ge
        if cur < 0:
            return -1
        nx = cur
        cur = _prev(vm, ix, cur)


@_jit
def _lowest_gap(
    vm: I64, ix: I64, mm: I64, need: int, low: int, high: int
) -> int:  # pragma: no cover
    """_lowest_gap() (mas_empty_area()): the start of the lowest free range inside
    ``[low, high)`` with room for ``need`` bytes (-1: none)."""
    if high <= low or high - low < need:
        return -1
    nx = find(vm, ix, mm, low)  # the first VMA ending above low
    cur = _prev(vm, ix, nx) if nx >= 0 else _last(vm, ix, mm)
    while True:
        fs = _get(vm, ix, cur, F_END) if cur >= 0 else 0
        fe = _get(vm, ix, nx, F_START) if nx >= 0 else INT64_MAX
        if fs < fe:
            gs = fs if fs > low else low
            if gs >= high:
                return -1
            ge = fe if fe < high else high
            if ge - gs >= need:
                return gs
        if nx < 0:
            return -1
        cur = nx
        nx = _next(vm, ix, mm, nx)


@_jit
def unmapped_area_topdown(  # pragma: no cover - compiled
    vm: I64, ix: I64, mm: I64, length: int, low: int, high: int
) -> int:
    """unmapped_area_topdown() (no start gap: no shadow stacks here); -ENOMEM if none."""
    eff = mm[M_EFF_MIN_ADDR]
    if eff > low:
        low = eff
    while True:
        ge = _highest_gap(vm, ix, mm, length, low, high)
        if ge < 0:
            return -ENOMEM
        nx = find(vm, ix, mm, ge)
        if nx >= 0 and _get(vm, ix, nx, F_FLAGS) & VM_STARTGAP_FLAGS:
            g = vm_start_gap(vm, ix, nx)
            if g < ge:
                high = g
                continue
        return ge - length


@_jit
def unmapped_area(  # pragma: no cover - compiled
    vm: I64, ix: I64, mm: I64, length: int, low: int, high: int
) -> int:
    """unmapped_area() (no start gap); -ENOMEM if none."""
    eff = mm[M_EFF_MIN_ADDR]
    if eff > low:
        low = eff
    while True:
        gap = _lowest_gap(vm, ix, mm, length, low, high)
        if gap < 0:
            return -ENOMEM
        nx = find(vm, ix, mm, gap)
        if (
            nx >= 0
            and _get(vm, ix, nx, F_FLAGS) & VM_STARTGAP_FLAGS
            and vm_start_gap(vm, ix, nx) < gap + length - 1
        ):
            low = _get(vm, ix, nx, F_END)
            continue
        return gap


@_jit
def arch_get_unmapped_area(  # pragma: no cover - compiled
    vm: I64, ix: I64, mm: I64, addr: int, length: int, flags: int
) -> int:
    """arch_get_unmapped_area(): bottom-up from mmap_legacy_base (MAP_32BIT BAILs before)."""
    if length > mm[M_TASK]:
        return -ENOMEM
    if flags & MAP_FIXED:
        return addr
    end = DEFAULT_WINDOW
    if length > end:
        return -ENOMEM
    # a hint is page-aligned already (do_mmap() rounded it)
    if addr and end - length >= addr and _hint_fits(vm, ix, mm, addr, length):
        return addr
    return unmapped_area(vm, ix, mm, length, mm[M_LEGACY_BASE], end)


@_jit
def arch_get_unmapped_area_topdown(  # pragma: no cover - compiled
    vm: I64, ix: I64, mm: I64, addr0: int, length: int, flags: int
) -> int:
    """arch_get_unmapped_area_topdown(): MAP_FIXED as given, a free hint, else the highest
    gap below mmap_base; bottom-up when that fails."""
    task = mm[M_TASK]
    if length > task:
        return -ENOMEM
    if flags & MAP_FIXED:
        return addr0
    addr = addr0
    if addr:
        addr &= ~(PAGE_SIZE - 1)
        valid = task - length >= addr and (addr > DEFAULT_WINDOW) == (
            addr + length > DEFAULT_WINDOW
        )
        if valid and _hint_fits(vm, ix, mm, addr, length):
            return addr
    high = mm[M_MMAP_BASE]
    if addr > DEFAULT_WINDOW:
        high += task - DEFAULT_WINDOW
    found = unmapped_area_topdown(vm, ix, mm, length, PAGE_SIZE, high)
    if found >= 0:
        return found
    return arch_get_unmapped_area(vm, ix, mm, addr0, length, flags)


@_jit
def get_unmapped_area(  # pragma: no cover - compiled
    vm: I64, ix: I64, mm: I64, addr: int, length: int, flags: int
) -> int:
    """get_unmapped_area() of an anonymous private mapping: the replay's placement hint
    (consumed), the THP-aligned search for a multiple of 2 MiB without a hint, else
    arch_get_unmapped_area_topdown(); then the range and mmap_min_addr checks. A negative
    errno when it fails. ``addr`` is at most 2**63 - PAGE_SIZE (larger hints: the same
    outcomes)."""
    task = mm[M_TASK]
    if length > task:
        return -ENOMEM
    if mm[M_HAS_HINT] and not (flags & MAP_FIXED):
        mm[M_HAS_HINT] = 0
        forced = mm[M_HINT]
        if not (forced & (PAGE_SIZE - 1)) and forced <= task - length:
            p = find(vm, ix, mm, forced)
            if p < 0 or _get(vm, ix, p, F_START) >= forced + length:
                return forced  # type: ignore[no-any-return]
    if mm[M_THP] and not (flags & MAP_SHARED) and not addr and length % PMD_SIZE == 0:
        # _thp_get_unmapped_area(addr 0, file offset 0): room for len + 2 MiB, aligned
        ret = 0
        pad = arch_get_unmapped_area_topdown(vm, ix, mm, 0, length + PMD_SIZE, flags)
        if pad > 0:
            sub = (0 - pad) & (PMD_SIZE - 1)
            ret = pad + PMD_SIZE if not sub else pad + sub
        if not ret:
            ret = arch_get_unmapped_area_topdown(vm, ix, mm, addr, length, flags)
        addr = ret
    else:
        addr = arch_get_unmapped_area_topdown(vm, ix, mm, addr, length, flags)
    if addr < 0:
        return addr
    if addr > task - length:
        return -ENOMEM
    if addr & (PAGE_SIZE - 1):
        return -EINVAL
    if addr < mm[M_MIN_ADDR] and not mm[M_RAWIO]:
        return -EPERM
    return addr


@_jit
def vma_merge_new_range(  # pragma: no cover - compiled
    vm: I64,
    ix: I64,
    mm: I64,
    prv: int,
    nxt: int,
    start: int,
    end: int,
    flags: int,
    pgoff: int,
) -> int:
    """vma_merge_new_range() of a new anonymous range (no file, no anon_vma of its own):
    expand prev, next or both; -1 when neither can take it (nothing changed)."""
    if flags & VM_SPECIAL or (prv < 0 and nxt < 0):
        return -1
    can_left = (
        prv >= 0
        and _get(vm, ix, prv, F_END) == start
        and _mergeable(vm, ix, prv, flags, 0, 0, 1)
        and _get(vm, ix, prv, F_PGOFF)
        + ((_get(vm, ix, prv, F_END) - _get(vm, ix, prv, F_START)) >> PAGE_SHIFT)
        == pgoff
    )
    can_right = False
    if (
        nxt >= 0
        and _get(vm, ix, nxt, F_START) == end
        and _mergeable(vm, ix, nxt, flags, 0, 0, 1)
        and _get(vm, ix, nxt, F_PGOFF) == pgoff + ((end - start) >> PAGE_SHIFT)
    ):
        can_right = True
        if can_left:
            a = _get(vm, ix, prv, F_ANON)
            b = _get(vm, ix, nxt, F_ANON)
            can_right = a == 0 or b == 0 or a == b
    if not (can_left or can_right):
        return -1
    if can_left and can_right and not _can_merge_remove(vm, ix, nxt):
        can_right = False
    sticky = flags & VM_MAYBE_GUARD
    mm[M_USED] += end - start  # tree.occupy()
    if can_left:
        at = _get(vm, ix, prv, F_START)
        if can_right:
            _set(vm, ix, prv, F_END, _get(vm, ix, nxt, F_END))
            _dup_anon_vma(vm, ix, prv, nxt)
            sticky |= _get(vm, ix, nxt, F_FLAGS) & VM_MAYBE_GUARD
            _remove_run(vm, ix, mm, nxt, 1)
        else:
            _set(vm, ix, prv, F_END, end)
        q = find(vm, ix, mm, at)
    else:
        _set(vm, ix, nxt, F_START, start)
        _set(vm, ix, nxt, F_PGOFF, pgoff)
        q = nxt
    _set(vm, ix, q, F_FLAGS, _get(vm, ix, q, F_FLAGS) | sticky)
    return q


@_jit
def mmap(  # pragma: no cover - compiled
    vm: I64,
    ix: I64,
    mm: I64,
    info: I64,
    addr_arg: int,
    len_arg: int,
    prot: int,
    flags: int,
    offset_arg: int,
) -> int:
    """Process.mmap() -> do_mmap() -> mmap_region() of an anonymous private mapping
    (registers as int64 bit patterns; ``prot``, ``flags`` their low 32 bits). Returns 0
    (``info[I_A]``: the address), an errno, or BAIL before any change: a file, shared,
    hugetlb, MAP_32BIT, MAP_LOCKED or populating mapping, M_NOMMAP, or a MAP_FIXED range
    over VMAs munmap would decline."""
    info[I_CAUSE] = CAUSE_NONE
    info[I_SITE] = 0
    info[I_A] = 0
    info[I_B] = 0
    if mm[M_NOMODEL] or mm[M_NOMMAP]:
        return BAIL
    if not (flags & MAP_ANONYMOUS) or flags & (MAP_HUGETLB | MAP_32BIT | MAP_LOCKED):
        return BAIL
    if (flags & MAP_TYPE) == MAP_SHARED:
        return BAIL  # shmem_zero_setup()
    if (flags & (MAP_POPULATE | MAP_NONBLOCK)) == MAP_POPULATE:
        return BAIL  # populate: faults
    if np.uint64(offset_arg) & _U_OFFSET:
        return EINVAL
    ulen = np.uint64(len_arg)
    if ulen == _U_ZERO:
        return EINVAL
    if flags & MAP_FIXED_NOREPLACE:
        flags |= MAP_FIXED
    uaddr = np.uint64(addr_arg)
    if not (flags & MAP_FIXED):
        uaddr &= _U_MASK
        eff = np.uint64(mm[M_EFF_MIN_ADDR])
        if uaddr != _U_ZERO and uaddr < eff:
            uaddr = (eff + _U_OFFSET) & _U_MASK
    ulen = (ulen + _U_OFFSET) & _U_MASK
    if ulen == _U_ZERO:
        return ENOMEM
    # (pgoff + pages > U64, EOVERFLOW, cannot happen: both are below 2**52)
    needed_was = mm[M_NEEDED]
    if not check_map_count(mm, info, mm[M_COUNT], SITE_MMAP):
        return ENOMEM
    vm_flags = (prot & VM_ACCESS_FLAGS) | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
    if flags & MAP_GROWSDOWN:
        vm_flags |= VM_GROWSDOWN
    if flags & MAP_SYNC:
        vm_flags |= VM_SYNC
    if flags & MAP_STACK:
        vm_flags |= VM_NOHUGEPAGE
    if ulen > np.uint64(mm[M_TASK]):  # get_unmapped_area()'s first test
        info[I_CAUSE] = CAUSE_ADDRESS_SPACE
        info[I_A] = np.int64(ulen)  # the bits of the length (Python reads them unsigned)
        return ENOMEM
    length = _i64(ulen)
    top = np.uint64(INT64_MAX - PAGE_SIZE + 1)
    addr = _i64(uaddr if uaddr < top else top)  # above TASK_SIZE either way
    hint_was = mm[M_HAS_HINT]
    addr = get_unmapped_area(vm, ix, mm, addr, length, flags)
    if addr < 0:
        if addr == -ENOMEM:
            info[I_CAUSE] = CAUSE_ADDRESS_SPACE
            info[I_A] = length
        return -addr
    end = addr + length
    p = find(vm, ix, mm, addr)
    doomed = p >= 0 and _get(vm, ix, p, F_START) < end
    if flags & MAP_FIXED_NOREPLACE and doomed:
        return EEXIST
    maptype = flags & MAP_TYPE
    if maptype == MAP_DROPPABLE:
        if vm_flags & VM_GROWSDOWN:
            return EINVAL
        vm_flags |= VM_DROPPABLE | VM_NORESERVE | VM_WIPEONFORK | VM_DONTDUMP
    elif maptype != MAP_PRIVATE:
        return EINVAL
    pgoff = addr >> PAGE_SHIFT
    if flags & MAP_NORESERVE and mm[M_OVERCOMMIT] != 2:
        vm_flags |= VM_NORESERVE
    # mmap_region(): BAIL where munmap would, before any change (the placement hint, taken
    # by get_unmapped_area(), is given back)
    if doomed:
        q = p
        bail = mm[M_NODRAIN] != 0
        while not bail and q >= 0 and _get(vm, ix, q, F_START) < end:
            if _get(vm, ix, q, F_FLAGS) & VM_HUGETLB or _get(vm, ix, q, F_FILE) & (
                FA_HUGE | FA_DELETED
            ):
                bail = True
            q = _next(vm, ix, mm, q)
        if bail:
            mm[M_HAS_HINT] = hint_was
            mm[M_NEEDED] = needed_was
            return BAIL
    n = 0
    accounted = 0
    locked = 0
    mapped = 0
    if doomed:  # vms_gather_munmap_vmas()
        if addr > _get(vm, ix, p, F_START):
            if end < _get(vm, ix, p, F_END) and not check_map_count(
                mm, info, mm[M_COUNT] + 1, SITE_GATHER
            ):
                return ENOMEM
            if _get(vm, ix, p, F_FLAGS) & VM_SEALED:
                return EPERM
            p = split_vma_nocheck(vm, ix, mm, p, addr)
        q = p
        last = p
        while q >= 0 and _get(vm, ix, q, F_START) < end:
            if _get(vm, ix, q, F_FLAGS) & VM_SEALED:
                return EPERM
            last = q
            n += 1
            q = _next(vm, ix, mm, q)
        if _get(vm, ix, last, F_END) > end:
            split_vma_nocheck(vm, ix, mm, last, end)
        q = find(vm, ix, mm, addr)
        for _ in range(n):
            fl = _get(vm, ix, q, F_FLAGS)
            pages = (_get(vm, ix, q, F_END) - _get(vm, ix, q, F_START)) >> PAGE_SHIFT
            mapped += pages
            if fl & VM_ACCOUNT:
                accounted += pages
            if fl & VM_LOCKED:
                locked += pages
            q = _next(vm, ix, mm, q)
    if (vm_flags & (VM_NORESERVE | VM_SHARED | VM_WRITE)) == VM_WRITE:
        charged = (length >> PAGE_SHIFT) - accounted
        if charged > 0 and not vm_enough_memory(mm, charged):
            info[I_CAUSE] = CAUSE_OVERCOMMIT
            info[I_A] = charged
            info[I_B] = mm[M_COMMITTED]
            return ENOMEM
        if charged < 0:
            vm_unacct(mm, -charged)
        vm_flags |= VM_ACCOUNT
        accounted = 0  # the doomed VMAs' pages carry over to this mapping
    if doomed:  # vms_complete_munmap_vmas()
        _remove_run(vm, ix, mm, find(vm, ix, mm, addr), n)
        mm[M_USED] -= mapped << PAGE_SHIFT
        if locked:
            mm[M_LOCKED] -= locked
        if accounted:
            vm_unacct(mm, accounted)
    nx = find(vm, ix, mm, addr)
    pv = _prev(vm, ix, nx) if nx >= 0 else _last(vm, ix, mm)
    if vma_merge_new_range(vm, ix, mm, pv, nx, addr, end, vm_flags, pgoff) < 0:
        _insert_new(vm, ix, mm, nx, addr, end, vm_flags, pgoff)
    info[I_A] = addr
    return 0


# ------------------------------------------------------------------ the replay's step
# One compiled call per replayed line (vmsim.fastlane.lane): what Replayer's handler and
# WrittenWatch do around the model's call, on the same VMAs.
S_JUDGE = 0  # WrittenWatch's judgement: 0 None, 1 (lo, S_A, S_B), 2 False
S_A = 1
S_B = 2
S_BEFORE = 3  # map_count before the call
S_AFTER = 4  # ... and after it
S_CAUSE = 5  # a C_* code when the call added VMAs
S_NTAINT = 6  # tainted ranges in ``taint`` (in and out)
S_SENSITIVE = 7  # 1: the watch found a call the written replay could do differently
S_ANCHOR = 8  # 1: BAIL because Replayer._anchor() must look at the call
NST = 9

C_NONE = 0
C_THREAD_STACK = 1
C_MALLOC_ARENA = 2
C_GUARD = 3
C_SPLIT = 4
C_PARTIAL_MUNMAP = 5
CAUSE_NAMES = (
    "",
    "thread stack",
    "malloc arena",
    "mprotect guard",
    "mprotect split",
    "partial munmap",
    "brk",
)  # Replayer._cause()'s strings

ARENA_ALIGN = 64 << 20
J_NONE = 0
J_HOLD = 1
J_FALSE = 2


@_jit
def _lookup(vm: I64, ix: I64, mm: I64, addr: int) -> int:  # pragma: no cover - compiled
    """vma_lookup(): the VMA containing ``addr`` (int64 >= 0; INT64_MAX: above all), -1."""
    p = find(vm, ix, mm, addr)
    if p >= 0 and _get(vm, ix, p, F_START) <= addr:
        return p
    return -1


@_jit
def _prev_of(vm: I64, ix: I64, mm: I64, addr: int) -> int:  # pragma: no cover - compiled
    """VmaTree.prev_of(): the last VMA that starts below ``addr``."""
    if addr <= 0:
        return -1
    p = find(vm, ix, mm, addr)
    if p < 0:
        return _last(vm, ix, mm)
    if _get(vm, ix, p, F_START) < addr:
        return p
    return _prev(vm, ix, p)


@_jit
def _may_hold(vm: I64, ix: I64, p: int, taint: I64, st: I64) -> bool:  # pragma: no cover
    """WrittenWatch.may_hold_anon()."""
    if _get(vm, ix, p, F_ANON) != 0:
        return True
    if _get(vm, ix, p, F_FLAGS) & (VM_WRITE | VM_SHARED) == VM_WRITE:
        return True
    start = _get(vm, ix, p, F_START)
    end = _get(vm, ix, p, F_END)
    for t in range(st[S_NTAINT]):  # noqa: SIM110 (numba: no generator in any())
        if taint[2 * t] < end and start < taint[2 * t + 1]:
            return True
    return False


@_jit
def _participants(  # pragma: no cover - compiled
    vm: I64, ix: I64, mm: I64, taint: I64, st: I64, lo: int, hi: int
) -> None:
    """WrittenWatch._participants() of an mprotect over ``[lo, hi)``."""
    held = -1
    first = find(vm, ix, mm, lo)
    last = -1
    q = first
    if first >= 0 and _get(vm, ix, first, F_START) >= hi:
        first = -1
        q = -1
    while q >= 0 and _get(vm, ix, q, F_START) < hi:
        if _may_hold(vm, ix, q, taint, st):
            if held >= 0:
                st[S_JUDGE] = J_FALSE
                return
            held = q
        last = q
        q = _next(vm, ix, mm, q)
    before = _prev_of(vm, ix, mm, lo)
    if (
        before >= 0
        and _get(vm, ix, before, F_END) == lo
        and before != first
        and _may_hold(vm, ix, before, taint, st)
    ):
        if held >= 0:
            st[S_JUDGE] = J_FALSE
            return
        held = before
    after = find(vm, ix, mm, hi)
    if (
        after >= 0
        and _get(vm, ix, after, F_START) == hi
        and after != last
        and _may_hold(vm, ix, after, taint, st)
    ):
        if held >= 0:
            st[S_JUDGE] = J_FALSE
            return
        held = after
    if held >= 0:
        st[S_JUDGE] = J_HOLD
        st[S_A] = _get(vm, ix, held, F_START)
        st[S_B] = _get(vm, ix, held, F_END)
    else:
        st[S_JUDGE] = J_NONE


@_jit
def _watch_mprotect(  # pragma: no cover - compiled
    vm: I64, ix: I64, mm: I64, taint: I64, st: I64, addr: int, length: int, prot: int
) -> None:
    """WrittenWatch.before() of mprotect(addr, length, prot), three ints >= 0 (the bits of
    ``addr``/``length`` as uint64)."""
    st[S_JUDGE] = J_NONE
    grows_or_write = prot & (PROT_WRITE | GROWS)
    if grows_or_write != PROT_WRITE and prot & GROWS:
        st[S_JUDGE] = J_FALSE  # PROT_GROWSDOWN widens the range to the VMA's start
        return
    ulo = np.uint64(addr)
    al = (np.uint64(length) + _U_OFFSET) & _U_MASK
    if al == _U_ZERO:
        return  # hi <= lo: nothing to change
    lo = _i64(ulo) if ulo < _U_TOP else INT64_MAX
    uhi = ulo + al
    hi = _i64(uhi) if (ulo < _U_TOP and al < _U_TOP and uhi < _U_TOP) else INT64_MAX
    p = _lookup(vm, ix, mm, lo) if lo != INT64_MAX else -1
    if grows_or_write != PROT_WRITE and not prot & PROT_WRITE:
        # _keeps_account() over range(lo, hi)
        q = find(vm, ix, mm, lo) if lo != INT64_MAX else -1
        while q >= 0 and _get(vm, ix, q, F_START) < hi:
            if (
                _get(vm, ix, q, F_FLAGS) & VM_ACCOUNT
                and _get(vm, ix, q, F_FILE) == 0
                and _get(vm, ix, q, F_NAME) == 0
                and _get(vm, ix, q, F_ANON) == 0
                and _may_hold(vm, ix, q, taint, st)
            ):
                st[S_JUDGE] = J_FALSE
                return
            q = _next(vm, ix, mm, q)
    if p >= 0 and _get(vm, ix, p, F_START) < lo and hi < _get(vm, ix, p, F_END):
        if _may_hold(vm, ix, p, taint, st):
            st[S_JUDGE] = J_HOLD
            st[S_A] = _get(vm, ix, p, F_START)
            st[S_B] = _get(vm, ix, p, F_END)
        return
    _participants(vm, ix, mm, taint, st, lo, hi)


@_jit
def _watch_after(  # pragma: no cover - compiled
    vm: I64, ix: I64, mm: I64, taint: I64, st: I64, taint_max: int
) -> None:
    """WrittenWatch.after() of a cleared call: the VMAs over [S_A, S_B) the predicate no
    longer covers join the taint (sensitive past ``taint_max`` ranges)."""
    start = st[S_A]
    end = st[S_B]
    if start == end:
        return
    q = find(vm, ix, mm, start)
    cap = taint.shape[0] // 2
    while q >= 0 and _get(vm, ix, q, F_START) < end:
        if not _may_hold(vm, ix, q, taint, st):
            n = st[S_NTAINT]
            if n >= cap:
                st[S_SENSITIVE] = 1  # past taint_max already: the watch stops here
                return
            taint[2 * n] = _get(vm, ix, q, F_START)
            taint[2 * n + 1] = _get(vm, ix, q, F_END)
            st[S_NTAINT] = n + 1
        q = _next(vm, ix, mm, q)
    if st[S_NTAINT] > taint_max:
        st[S_SENSITIVE] = 1


@_jit
def _mprotect_cause(vm: I64, ix: I64, mm: I64, addr: int, prot: int) -> int:  # pragma: no cover
    """Replayer._cause() of an mprotect that added VMAs (``addr`` int64 >= 0)."""
    p = _lookup(vm, ix, mm, addr)
    if p >= 0 and _get(vm, ix, p, F_FILE) == 0 and _get(vm, ix, p, F_NAME) == 0:
        flags = _get(vm, ix, p, F_FLAGS)
        if flags & VM_NOHUGEPAGE:
            return C_THREAD_STACK
        if flags & VM_NORESERVE and _get(vm, ix, p, F_START) % ARENA_ALIGN == 0:
            return C_MALLOC_ARENA
    return C_GUARD if prot == 0 else C_SPLIT


@_jit
def lane_mprotect(  # pragma: no cover - compiled
    vm: I64,
    ix: I64,
    mm: I64,
    info: I64,
    taint: I64,
    st: I64,
    addr: int,
    length: int,
    prot: int,
    watching: bool,
    anchoring: bool,
    taint_max: int,
) -> int:
    """One mprotect line of the replay (Replayer._mprotect and syscall()): the RELRO anchor
    question (BAIL with S_ANCHOR when _anchor() must see it: ``anchoring`` says the replay
    would ask), the written watch's judgement before and its taint after (``watching``),
    the model's call, and its cause. ``addr``/``length`` the uint64 bits as int64, ``prot``
    the argument (>= 0). Returns what mprotect() returns."""
    st[S_ANCHOR] = 0
    st[S_CAUSE] = C_NONE
    before = mm[M_COUNT]
    st[S_BEFORE] = before
    ulo = np.uint64(addr)
    if anchoring and prot == PROT_READ and (ulo >= _U_TOP or _lookup(vm, ix, mm, _i64(ulo)) < 0):
        st[S_ANCHOR] = 1
        return BAIL
    if watching:
        _watch_mprotect(vm, ix, mm, taint, st, addr, length, prot)
    code = mprotect(vm, ix, mm, info, addr, length, prot & 0xFFFFFFFF)
    if code == BAIL:
        return BAIL
    if watching:
        j = st[S_JUDGE]
        if j == J_FALSE:
            st[S_SENSITIVE] = 1
        elif j == J_HOLD:
            _watch_after(vm, ix, mm, taint, st, taint_max)
    after = mm[M_COUNT]
    st[S_AFTER] = after
    if after > before:
        st[S_CAUSE] = _mprotect_cause(vm, ix, mm, _i64(ulo) if ulo < _U_TOP else INT64_MAX, prot)
    return code


@_jit
def lane_munmap(  # pragma: no cover - compiled
    vm: I64, ix: I64, mm: I64, info: I64, st: I64, addr: int, length: int
) -> int:
    """One munmap line of the replay (WrittenWatch judges nothing: munmap never merges)."""
    st[S_CAUSE] = C_NONE
    before = mm[M_COUNT]
    st[S_BEFORE] = before
    code = munmap(vm, ix, mm, info, addr, length)
    if code == BAIL:
        return BAIL
    st[S_AFTER] = mm[M_COUNT]
    if mm[M_COUNT] > before:
        st[S_CAUSE] = C_PARTIAL_MUNMAP
    return code


# stretches: many rows of one process in one call (vmsim.fastlane.lane.run_rows)
S_STOP = 9  # why lane_stretch() stopped: R_* bits
S_CODE = 10  # the return code of the last row it replayed
NST_STRETCH = 11
R_END = 0  # every row replayed
R_PID = 1  # the next row is another process's (or an unknown task's)
R_NEG = 2  # the next row has a negative argument: the Python replay reads it
R_SNAP = 4  # the next row is near the limit: copy the replay first
R_BAIL = 8  # the next row is not modelled here (nothing changed; S_ANCHOR: the loader's)
R_COMPARE = 16  # the last row replayed differs from the trace (or failed): compare it
R_CROSS = 32  # the last row replayed needed more than max_map_count
R_ROOM = 64  # the blocks are nearly all in use: VmaArrays._reserve() before the next row


@_jit
def lane_stretch(  # pragma: no cover - compiled
    vm: I64,
    ix: I64,
    mm: I64,
    info: I64,
    taint: I64,
    st: I64,
    ok_pids: I64,
    pids: I64,
    calls: I64,
    a0: I64,
    a1: I64,
    a2: I64,
    neg: I64,
    rets: I64,
    unknown: I64,
    errnos: I64,
    j0: int,
    n: int,
    mprotect_code: int,
    brk_code: int,
    watching: bool,
    anchor_base: bool,
    taint_max: int,
    snap_check: bool,
    skip_first_snap: bool,
    cross_check: bool,
    counts_only: bool,
    limit: int,
    slack: int,
    out_before: I64,
    out_after: I64,
    out_cause: I64,
) -> int:
    """The rows ``j0`` to ``n`` of a run (mprotect or munmap lines of the processes whose
    pids are ``ok_pids``), each as lane_mprotect()/lane_munmap() replays it, until one
    needs Python (S_STOP says why). Returns the index of the first row not replayed."""
    st[S_STOP] = R_END
    for j in range(j0, n):
        pid = pids[j]
        found = False
        for q in range(ok_pids.shape[0]):
            if ok_pids[q] == pid:
                found = True
                break
        if not found:
            st[S_STOP] = R_PID
            return j
        is_mprotect = calls[j] == mprotect_code
        if neg[j] & (7 if is_mprotect else 3):
            st[S_STOP] = R_NEG
            return j
        if snap_check and not (skip_first_snap and j == j0) and mm[M_COUNT] + slack > limit:
            st[S_STOP] = R_SNAP
            return j
        if mm[M_NFREE] < 4:
            st[S_STOP] = R_ROOM
            return j
        if calls[j] == brk_code:
            st[S_STOP] = R_CALL
            return j
        if is_mprotect:
            anchoring = anchor_base and unknown[j] == 0 and rets[j] == 0 and errnos[j] == 0
            code = lane_mprotect(
                vm, ix, mm, info, taint, st, a0[j], a1[j], a2[j], watching, anchoring, taint_max
            )
        else:
            code = lane_munmap(vm, ix, mm, info, st, a0[j], a1[j])
        if code == BAIL:
            st[S_STOP] = R_BAIL
            return j
        if watching and st[S_SENSITIVE]:
            watching = False
        out_before[j] = st[S_BEFORE]
        out_after[j] = st[S_AFTER]
        out_cause[j] = st[S_CAUSE]
        stop = 0
        if not counts_only and (code != 0 or errnos[j] != 0 or unknown[j] != 0 or rets[j] != 0):
            stop |= R_COMPARE
        if cross_check and mm[M_NEEDED] > limit:
            stop |= R_CROSS
        if stop:
            st[S_CODE] = code
            st[S_STOP] = stop
            return j + 1
    return n


# ------------------------------------------------------------------ brk
C_BRK = 6
R_CALL = 128  # the next row is a call lane_stretch() leaves to its caller (brk)
SITE_BRK = 4  # "do_brk_flags()"
VM_DATA_DEFAULT_FLAGS = 1 | 2 | 16 | 32 | 64  # VM_READ|VM_WRITE|VM_MAYREAD|VM_MAYWRITE|VM_MAYEXEC


@_jit
def _insert_new(  # pragma: no cover - compiled
    vm: I64, ix: I64, mm: I64, nx: int, start: int, end: int, flags: int, pgoff: int
) -> int:
    """VmaTree.insert_new() of a new anonymous VMA over free ``[start, end)``, before the
    VMA at ``nx`` (-1: after the last one)."""
    c = vm.shape[0]
    if nx >= 0:
        q = _open_slot(vm, ix, mm, nx >> POS_SHIFT, nx & POS_MASK)
    elif mm[M_NB] > 0:
        q = _open_slot(vm, ix, mm, mm[M_NB] - 1, ix[c + ix[mm[M_NB] - 1]])
    else:
        q = _open_slot(vm, ix, mm, 0, 0)
    b = ix[q >> POS_SHIFT]
    i = q & POS_MASK
    vm[b, F_START, i] = start
    vm[b, F_END, i] = end
    vm[b, F_FLAGS, i] = flags
    vm[b, F_PGOFF, i] = pgoff
    vm[b, F_FILE, i] = 0
    vm[b, F_ANON, i] = 0
    vm[b, F_SING, i] = 1
    vm[b, F_NAME, i] = 0
    vm[b, F_AUX, i] = 0
    mm[M_USED] += end - start
    return q


@_jit
def _brk_flags(  # pragma: no cover - compiled
    vm: I64, ix: I64, mm: I64, info: I64, prev: int, addr: int, length: int
) -> bool:
    """do_brk_flags() with no RLIMIT_AS/RLIMIT_DATA, no mm->def_flags and no KSM (the
    caller's conditions): extend the heap VMA ``prev`` or add a new one."""
    if not check_map_count(mm, info, mm[M_COUNT], SITE_BRK):
        return False
    if not vm_enough_memory(mm, length >> PAGE_SHIFT):
        return False
    flags = VM_DATA_DEFAULT_FLAGS | VM_ACCOUNT
    end = addr + length
    pgoff = addr >> PAGE_SHIFT
    if prev >= 0 and vma_merge_new_range(vm, ix, mm, prev, -1, addr, end, flags, pgoff) >= 0:
        return True  # just_expand: prev takes the range, next is not tried
    _insert_new(vm, ix, mm, find(vm, ix, mm, addr), addr, end, flags, pgoff)
    return True


@_jit
def _brk(  # pragma: no cover - compiled
    vm: I64,
    ix: I64,
    mm: I64,
    info: I64,
    st: I64,
    brk: np.uint64,
    cur: np.uint64,
    start_brk: np.uint64,
) -> np.uint64:
    """do_brk() of the register ``brk`` with mm->brk ``cur``: the new break, or ``cur``
    when it does not move; st[S_CODE] 1 where the engine does not model it (nothing
    changed)."""
    if brk < start_brk:
        return cur
    newbrk = (brk + _U_OFFSET) & _U_MASK
    oldbrk = (cur + _U_OFFSET) & _U_MASK
    if oldbrk == newbrk:
        return brk
    if brk <= cur:
        # shrink: find_intersection(newbrk, oldbrk), then gather and remove (munmap's code)
        p = find(vm, ix, mm, _i64(newbrk))
        if p < 0 or _get(vm, ix, p, F_START) >= _i64(oldbrk):
            return cur
        code = munmap(vm, ix, mm, info, _i64(newbrk), _i64(oldbrk - newbrk))
        if code == BAIL:
            st[S_CODE] = 1
            return cur
        if code != 0:
            return cur
        return brk
    reach = newbrk + np.uint64(4096 + (256 << 12))
    hi = _i64(reach) if reach < _U_TOP and reach > newbrk else INT64_MAX
    lo = _i64(oldbrk) if oldbrk < _U_TOP else INT64_MAX
    p = find(vm, ix, mm, lo) if lo != INT64_MAX else -1
    if p >= 0 and _get(vm, ix, p, F_START) < hi:
        gap = vm_start_gap(vm, ix, p)
        top = newbrk + np.uint64(4096)
        if top < newbrk or top >= _U_TOP or _i64(top) > gap:
            return cur
    length = newbrk - oldbrk
    task = np.uint64(mm[M_TASK])
    if length > task or oldbrk > task - length:
        return cur
    prev = _prev_of(vm, ix, mm, _i64(oldbrk))
    if prev >= 0 and _get(vm, ix, prev, F_END) <= _i64(start_brk):
        prev = -1
    if not _brk_flags(vm, ix, mm, info, prev, _i64(oldbrk), _i64(length)):
        return cur
    return brk


@_jit
def lane_brk(  # pragma: no cover - compiled
    vm: I64,
    ix: I64,
    mm: I64,
    info: I64,
    taint: I64,
    st: I64,
    brk_arg: int,
    cur_arg: int,
    start_brk_arg: int,
    watching: bool,
    taint_max: int,
) -> int:
    """One brk line of the replay: the written watch's judgement before (WrittenWatch.before
    of brk: the range the heap would grow over), do_brk(), the taint after. Returns the new
    break (int64 bits; S_CODE: 1 when the engine does not model it, nothing changed)."""
    st[S_CODE] = 0
    st[S_CAUSE] = C_NONE
    before = mm[M_COUNT]
    st[S_BEFORE] = before
    if mm[M_NOMODEL]:
        st[S_CODE] = 1
        return 0
    brk = np.uint64(brk_arg)
    cur = np.uint64(cur_arg)
    start_brk = np.uint64(start_brk_arg)
    st[S_JUDGE] = J_NONE
    if watching:
        ulo = (cur + _U_OFFSET) & _U_MASK
        uhi = (brk + _U_OFFSET) & _U_MASK
        if not (brk < start_brk or uhi <= ulo):
            lo = _i64(ulo) if ulo < _U_TOP else INT64_MAX
            hi = _i64(uhi) if uhi < _U_TOP else INT64_MAX
            _participants(vm, ix, mm, taint, st, lo, hi)
    out = _brk(vm, ix, mm, info, st, brk, cur, start_brk)
    if st[S_CODE]:
        return 0  # munmap() declined before changing anything
    if watching:
        j = st[S_JUDGE]
        if j == J_FALSE:
            st[S_SENSITIVE] = 1
        elif j == J_HOLD:
            _watch_after(vm, ix, mm, taint, st, taint_max)
    after = mm[M_COUNT]
    st[S_AFTER] = after
    if after > before:
        st[S_CAUSE] = C_BRK
    return np.int64(out)  # type: ignore[return-value]
