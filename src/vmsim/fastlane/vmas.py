"""The fast lane's VMA engine: the VMAs of one address space in arrays, and mprotect,
munmap and anonymous mmap over them, compiled (``vmsim.fastlane._vmas``), the twin of the
Python model.

``VmaArrays.from_mm(mm)`` takes an ``AddressSpace``; ``mprotect`` / ``munmap`` run the
calls; ``to_mm(mm)`` writes the VMAs back (new ``Vma`` objects pointing at the same
``OpenFile`` / ``AnonVma`` objects, a rebuilt tree and free-space index, committed pages,
map_count_needed, locked_vm), so the Python model can take over at any call.

Modelled exactly (the Python model is the reference; tests/unit/test_fastlane_vmas.py):

* ``Process.mprotect`` -> ``vmsim.mm.mprotect.do_mprotect``: the ``_reg`` / ``& U32`` argument
  handling, every errno in its order (EINVAL for PROT_GROWSDOWN|PROT_GROWSUP, an unaligned
  start or unknown prot bits; ENOMEM for a wrapping range, an unmapped start or a hole;
  EINVAL for PROT_GROWSDOWN on a VMA without VM_GROWSDOWN or PROT_GROWSUP; EACCES from
  VM_MAY*; EPERM from VM_SEALED), ``mprotect_fixup`` (VM_ACCOUNT charged through
  vm_enough_memory() in the three overcommit modes, dropped for an anonymous VMA without an
  anon_vma, unaccounted on a failed split), ``vma_modify`` (vma_merge_existing_range() in
  all five cases with is_mergeable_vma / is_mergeable_anon_vma / anon_singular, page-offset
  continuity, are_anon_vmas_compatible, can_merge_remove_vma (hugetlb, SysV shm),
  _dup_anon_vma, the sticky VM_MAYBE_GUARD; else split_vma / split_vma_twice), the
  map_count checks at their exact thresholds (and ``cfg.map_count_needed``), special
  mappings (named, VM_SPECIAL: they never merge, they split like any VMA).
* ``Process.munmap`` -> ``do_munmap_syscall`` -> ``vma_ops.do_vmi_munmap``: EINVAL checks
  against TASK_SIZE, the split at each end (the map_count check only for a range strictly
  inside one VMA), EPERM from a sealed VMA (after the first split, which stays),
  locked_vm, the commit charge of VM_ACCOUNT pages, the VMAs' ``swap_ra`` kept by splits.
* ``Process.mmap`` of an anonymous private mapping (MAP_PRIVATE or MAP_DROPPABLE, with or
  without MAP_FIXED / MAP_FIXED_NOREPLACE / a hint, MAP_NORESERVE, MAP_GROWSDOWN, MAP_STACK,
  MAP_SYNC, MAP_POPULATE|MAP_NONBLOCK) -> ``do_mmap`` -> ``mmap_region``: the argument
  checks and errnos in their order (EINVAL, ENOMEM, the do_mmap() map_count check, EEXIST),
  ``get_unmapped_area`` (the replay's ``placement_hint``, consumed; the THP-aligned search
  for a multiple of 2 MiB without a hint unless thp=never; arch_get_unmapped_area_topdown()
  with a hint, the highest gap below mmap_base, the stack guard gap of a VM_GROWSDOWN
  neighbour, the bottom-up fallback; TASK_SIZE, alignment and mmap_min_addr checks, the
  "address_space" cause), MAP_FIXED over VMAs (gather and complete as munmap, the commit
  charge carried over), vm_enough_memory(), ``vma_merge_new_range`` with prev / next.
* Errors: ``error()`` gives the MmError the Python path raises (errno, cause, detail text).

Declined (the call returns ``BAIL`` before any change; the Python model must run it):

* every call while the mm has page tables (``mm.pt.table_pages > 1``: change_protection(),
  zap), guard markers (``mm.guards``) or PMD leaves (THP deposits): ``M_NOMODEL``;
* mprotect over a range (any VMA from the first one the walk reaches to the end of the
  range) holding a VM_HUGETLB VMA or a hugetlbfs file (change_protection, may_split), or a
  locked private read-only VMA made writable (populate);
* munmap while the mlock batch is not empty (lru_add_drain() would move folios), or over
  a range holding a VM_HUGETLB VMA, a hugetlbfs file, or a deleted file (on_file_unmapped);
* mmap of a file, of shared memory (MAP_SHARED|MAP_ANONYMOUS: shmem_zero_setup()),
  MAP_HUGETLB, MAP_32BIT, MAP_LOCKED or MAP_POPULATE without MAP_NONBLOCK (populate), in an
  mm with KSM merge-any state, RLIMIT_AS / RLIMIT_DATA set, or mm.def_flags (mlockall
  MCL_FUTURE) (``M_NOMMAP``), and MAP_FIXED over VMAs that munmap would decline.

The engine has no free-space index: mmap's gap search walks the VMAs down from mmap_base
(O(VMAs above the gap found), as cheap as the Python model's walk over its free ranges when
the VMAs have gaps between them, slower behind a long run of adjacent VMAs).

A file's attributes (SysV, hugetlbfs, deleted) are read at ``from_mm``: a file unlinked
while the engine holds the VMAs needs a new ``from_mm``. ``refresh_globals(mm)`` reloads the
machine-wide numbers (committed pages, sysctls, the mlock batch) when another process ran;
``store_globals(mm)`` writes back what the engine changed.

The VMAs are kept in blocks of at most ``_vmas.B`` (64) sorted entries with an index of
blocks in address order (like ``mm.tree._Ordered``): an insert or removal moves at most one
block's entries (64 x 9 int64), a block split half a block and the block index (one int per
block: ~2,000 at 65,530 VMAs), whatever the order of the splits
(``benchmarks/fastlane_vmas_bench.py``: ascending, descending and random fills to 65k VMAs).
"""

from __future__ import annotations

import errno as _errno

import numpy as np

from vmsim.errors import (
    CAUSE_ADDRESS_SPACE,
    CAUSE_MAP_COUNT,
    CAUSE_OVERCOMMIT,
    MmError,
    oserror,
)
from vmsim.fastlane import _vmas as k
from vmsim.mm.core import AddressSpace
from vmsim.mm.tree import VmaTree
from vmsim.mm.vma import AnonVma, OpenFile, Vma
from vmsim.process import U32, _reg

__all__ = ["BAIL", "VmaArrays", "VmaRecord"]

BAIL = k.BAIL
_U64 = (1 << 64) - 1
_TOP = 1 << 63
_FIT = 1 << 62  # mm numbers the compiled code multiplies must stay far below 2**63
_SITES = {
    k.SITE_SPLIT: "split_vma()",
    k.SITE_GATHER: "vms_gather_munmap_vmas()",
    k.SITE_MMAP: "do_mmap()",
    k.SITE_BRK: "do_brk_flags()",
}

# One VMA as the tests and to_mm() read it back: start, end, flags, pgoff, file, anon_vma,
# anon_singular, name, swap_ra
VmaRecord = tuple[
    int,
    int,
    int,
    int,
    OpenFile | None,
    AnonVma | None,
    bool,
    str | None,
    tuple[int, int, int] | None,
]


def _s64(v: int) -> int:
    """A register's value (0 .. 2**64-1) as the int64 with the same bits."""
    return v - (1 << 64) if v >= _TOP else v


class VmaArrays:
    """The VMAs and the mm numbers of one address space, for the compiled calls.

    ``vm``, ``ix``, ``mm``, ``info``: the arrays of ``_vmas`` (see its docstring). ``files``,
    ``anons``, ``names``, ``aux``: the Python objects behind the keys (index 0: none).
    """

    def __init__(self, capacity: int = 8) -> None:
        self.vm = np.zeros((capacity, k.NF, k.B), dtype=np.int64)
        self.ix = np.zeros(3 * capacity, dtype=np.int64)
        self.ix[2 * capacity : 3 * capacity] = np.arange(capacity - 1, -1, -1)
        self.mm = np.zeros(k.NMM, dtype=np.int64)
        self.mm[k.M_NFREE] = capacity
        self.info = np.zeros(4, dtype=np.int64)
        self.files: list[OpenFile | None] = [None]
        self.anons: list[AnonVma | None] = [None]
        self.names: list[str | None] = [None]
        self.aux: list[tuple[int, int, int] | None] = [None]
        self._file_keys: dict[int, int] = {}
        self._anon_keys: dict[int, int] = {}
        self._name_keys: dict[str, int] = {}
        self._aux_keys: dict[tuple[int, int, int], int] = {}
        self._hint_held = True

    # ------------------------------------------------------------- conversions
    @classmethod
    def from_mm(cls, mm: AddressSpace) -> VmaArrays:
        """The arrays of ``mm``'s VMAs and numbers (blocks half full: room to split)."""
        vmas = list(mm.tree)
        n = len(vmas)
        nblocks = (n + k.HALF - 1) // k.HALF
        self = cls(max(8, 2 * nblocks + 8))
        cols = np.zeros((k.NF, nblocks * k.HALF), dtype=np.int64)
        for j, v in enumerate(vmas):
            cols[k.F_START, j] = v.start
            cols[k.F_END, j] = v.end
            cols[k.F_FLAGS, j] = v.flags
            cols[k.F_PGOFF, j] = v.pgoff
            cols[k.F_FILE, j] = self._file_key(v.file)
            cols[k.F_ANON, j] = self._anon_key(v.anon_vma)
            cols[k.F_SING, j] = 1 if v.anon_singular else 0
            cols[k.F_NAME, j] = self._name_key(v.name)
            cols[k.F_AUX, j] = self._aux_key(v.swap_ra)
        c = self.vm.shape[0]
        if nblocks:
            self.vm[:nblocks, :, : k.HALF] = cols.reshape(k.NF, nblocks, k.HALF).transpose(1, 0, 2)
            self.ix[:nblocks] = np.arange(nblocks)
            self.ix[c : c + nblocks] = k.HALF
            self.ix[c + nblocks - 1] = n - (nblocks - 1) * k.HALF
        nfree = c - nblocks
        self.ix[2 * c : 2 * c + nfree] = np.arange(c - 1, nblocks - 1, -1)
        m = self.mm
        m[k.M_COUNT] = n
        m[k.M_NB] = nblocks
        m[k.M_NFREE] = nfree
        m[k.M_USED] = mm.tree.free.used
        m[k.M_LOCKED] = mm.locked_vm
        m[k.M_TASK] = mm.cfg.task_size
        self.refresh_globals(mm)
        return self

    def refresh_globals(self, mm: AddressSpace) -> None:
        """Reload what other code may have changed since: the machine-wide numbers (commit
        charge, sysctls) and the states that make every call BAIL."""
        cfg = mm.cfg
        m = self.mm
        values = (
            cfg.max_map_count,
            cfg.map_count_needed,
            cfg.committed_pages,
            cfg.overcommit_memory,
            cfg.overcommit_ratio,
            cfg.ram_pages,
            cfg.swap_pages,
        )
        fits = all(0 <= x < _FIT for x in values) and cfg.ram_pages * cfg.overcommit_ratio < _FIT
        m[k.M_MAX] = min(cfg.max_map_count, _FIT)
        m[k.M_NEEDED] = min(max(cfg.map_count_needed, 0), _FIT)
        m[k.M_COMMITTED] = min(max(cfg.committed_pages, 0), _FIT)
        m[k.M_OVERCOMMIT] = cfg.overcommit_memory if fits else 0
        m[k.M_RATIO] = cfg.overcommit_ratio if fits else 0
        m[k.M_RAM] = cfg.ram_pages if fits else 0
        m[k.M_SWAP] = cfg.swap_pages if fits else 0
        m[k.M_NOMODEL] = int(
            not fits
            or mm.pt.table_pages > 1
            or bool(mm.guards)
            or bool(mm.mem.thp.deposit.get(mm.serial))
        )
        mem = mm.mem
        m[k.M_NODRAIN] = int(bool(mem.mlock_pending) or mem.mlock_batch != 0)
        hint = mm.placement_hint
        bases = (mm.mmap_base, mm.mmap_legacy_base, cfg.mmap_min_addr, cfg.effective_mmap_min_addr)
        mmap_fits = all(0 <= x < _FIT for x in bases) and (hint is None or 0 <= hint < _FIT)
        m[k.M_NOMMAP] = int(
            not mmap_fits
            or (mem.ksm is not None and mm.serial in mem.ksm.per_mm)
            or cfg.rlimit_as is not None
            or cfg.rlimit_data is not None
            or mm.def_flags != 0
        )
        m[k.M_MMAP_BASE] = mm.mmap_base if mmap_fits else 0
        m[k.M_LEGACY_BASE] = mm.mmap_legacy_base if mmap_fits else 0
        m[k.M_MIN_ADDR] = cfg.mmap_min_addr if mmap_fits else 0
        m[k.M_EFF_MIN_ADDR] = cfg.effective_mmap_min_addr if mmap_fits else 0
        m[k.M_RAWIO] = int(cfg.cap_sys_rawio)
        m[k.M_THP] = int(cfg.thp != "never")
        self.placement_hint = hint if mmap_fits else None
        self._hint_held = mmap_fits  # else mm keeps its own (every mmap BAILs)

    def store_globals(self, mm: AddressSpace) -> None:
        """Write back the numbers the calls change: committed pages, map_count_needed,
        locked_vm."""
        m = self.mm
        mm.cfg.committed_pages = int(m[k.M_COMMITTED])
        mm.cfg.map_count_needed = max(mm.cfg.map_count_needed, int(m[k.M_NEEDED]))
        mm.locked_vm = int(m[k.M_LOCKED])
        if self._hint_held:
            mm.placement_hint = self.placement_hint

    def to_mm(self, mm: AddressSpace) -> None:
        """Give ``mm`` these VMAs (a new tree and free-space index) and numbers."""
        out: list[Vma] = []
        add = out.append
        files, anons, names, aux = self.files, self.anons, self.names, self.aux
        c = self.vm.shape[0]
        vm = self.vm
        shift = k.FA_SHIFT
        for j in range(int(self.mm[k.M_NB])):
            b = int(self.ix[j])
            cnt = int(self.ix[c + b])
            for start, end, flags, pgoff, file, anon, sing, name, ra in vm[b, :, :cnt].T.tolist():
                v = Vma(
                    start, end, flags, pgoff, files[file >> shift], anons[anon], sing != 0,
                    names[name],
                )  # fmt: skip
                if ra:
                    v.swap_ra = aux[ra]
                add(v)
        mm.tree = VmaTree.from_sorted(out)
        self.store_globals(mm)

    def vmas(self) -> list[VmaRecord]:
        """Every VMA, in address order."""
        out: list[VmaRecord] = []
        c = self.vm.shape[0]
        vm = self.vm
        for j in range(int(self.mm[k.M_NB])):
            b = int(self.ix[j])
            cnt = int(self.ix[c + b])
            rows = vm[b, :, :cnt].T.tolist()
            for r in rows:
                out.append(
                    (
                        r[k.F_START],
                        r[k.F_END],
                        r[k.F_FLAGS],
                        r[k.F_PGOFF],
                        self.files[r[k.F_FILE] >> k.FA_SHIFT],
                        self.anons[r[k.F_ANON]],
                        bool(r[k.F_SING]),
                        self.names[r[k.F_NAME]],
                        self.aux[r[k.F_AUX]],
                    )
                )
        return out

    @property
    def placement_hint(self) -> int | None:
        """mm.placement_hint: where the replay says the next mapping goes (None: none)."""
        return int(self.mm[k.M_HINT]) if self.mm[k.M_HAS_HINT] else None

    @placement_hint.setter
    def placement_hint(self, value: int | None) -> None:
        """Set as the replay sets mm.placement_hint: an address (a call's return value)."""
        if value is not None and not 0 <= value < _FIT:
            raise ValueError(f"placement hint {value:#x} is not an address the engine holds")
        self.mm[k.M_HAS_HINT] = int(value is not None)
        self.mm[k.M_HINT] = 0 if value is None else value

    @property
    def address(self) -> int:
        """The address the last successful mmap returned."""
        return int(self.info[k.I_A])

    @property
    def map_count(self) -> int:
        return int(self.mm[k.M_COUNT])

    @property
    def committed_pages(self) -> int:
        return int(self.mm[k.M_COMMITTED])

    @property
    def map_count_needed(self) -> int:
        return int(self.mm[k.M_NEEDED])

    @property
    def locked_vm(self) -> int:
        return int(self.mm[k.M_LOCKED])

    @property
    def total_vm(self) -> int:
        return int(self.mm[k.M_USED]) >> 12

    # ------------------------------------------------------------------- keys
    def _file_key(self, f: OpenFile | None) -> int:
        if f is None:
            return 0
        key = self._file_keys.get(id(f))
        if key is None:
            attrs = 0
            inode = f.inode
            if inode.path.startswith("/SYSV"):
                attrs |= k.FA_SYSV
            if inode.huge_shift:
                attrs |= k.FA_HUGE
            if inode.deleted:
                attrs |= k.FA_DELETED
            key = len(self.files) << k.FA_SHIFT | attrs
            self.files.append(f)
            self._file_keys[id(f)] = key
        return key

    def _anon_key(self, a: AnonVma | None) -> int:
        if a is None:
            return 0
        key = self._anon_keys.get(id(a))
        if key is None:
            key = len(self.anons)
            self.anons.append(a)
            self._anon_keys[id(a)] = key
        return key

    def _name_key(self, name: str | None) -> int:
        if name is None:
            return 0
        key = self._name_keys.get(name)
        if key is None:
            key = len(self.names)
            self.names.append(name)
            self._name_keys[name] = key
        return key

    def _aux_key(self, ra: tuple[int, int, int] | None) -> int:
        if ra is None:
            return 0
        key = self._aux_keys.get(ra)
        if key is None:
            key = len(self.aux)
            self.aux.append(ra)
            self._aux_keys[ra] = key
        return key

    # ------------------------------------------------------------------ calls
    def _reserve(self) -> None:
        """Unused blocks for one call (it inserts at most two VMAs: two block splits)."""
        if self.mm[k.M_NFREE] < 4:
            self.reserve(2)

    def reserve(self, vmas: int) -> None:
        """Unused blocks for ``vmas`` more VMAs, for a compiled caller that makes many calls
        (the Python calls reserve their own). Each insert splits at most one (full) block,
        and a block made by a split takes HALF inserts before it is full again: at most
        ``min(vmas, blocks) + vmas // HALF`` splits."""
        m = self.mm
        need = min(vmas, int(m[k.M_NB])) + vmas // k.HALF + 4
        while m[k.M_NFREE] < need:
            c = self.vm.shape[0]
            c2 = 2 * c
            vm = np.zeros((c2, k.NF, k.B), dtype=np.int64)
            vm[:c] = self.vm
            ix = np.zeros(3 * c2, dtype=np.int64)
            nb = int(m[k.M_NB])
            nfree = int(m[k.M_NFREE])
            ix[:nb] = self.ix[:nb]
            ix[c2 : c2 + c] = self.ix[c : 2 * c]
            ix[2 * c2 : 2 * c2 + c] = np.arange(c2 - 1, c - 1, -1)
            ix[2 * c2 + c : 2 * c2 + c + nfree] = self.ix[2 * c : 2 * c + nfree]
            self.vm = vm
            self.ix = ix
            m[k.M_NFREE] = nfree + c

    def mprotect(self, addr: int, length: int, prot: int) -> int:
        """mprotect(2) as ``Process.mprotect`` takes it: 0, an errno (``error()`` gives the
        exception the Python path raises), or BAIL (nothing changed). Arguments that fit no
        register raise OverflowError, as there."""
        a = _reg(addr, "addr")
        n = _reg(length, "length")
        p = _reg(prot, "prot") & U32
        self._reserve()
        return int(k.mprotect(self.vm, self.ix, self.mm, self.info, _s64(a), _s64(n), p))

    def munmap(self, addr: int, length: int) -> int:
        """munmap(2) as ``Process.munmap`` takes it (see ``mprotect``)."""
        a = _reg(addr, "addr")
        n = _reg(length, "length")
        self._reserve()
        return int(k.munmap(self.vm, self.ix, self.mm, self.info, _s64(a), _s64(n)))

    def mmap(
        self, addr: int, length: int, prot: int, flags: int, fd: int = -1, offset: int = 0
    ) -> int:
        """mmap(2) as ``Process.mmap`` takes it, for anonymous private mappings: 0 (the
        address is ``address``), an errno, or BAIL (nothing changed)."""
        a = _reg(addr, "addr")
        n = _reg(length, "length")
        off = _reg(offset, "offset")
        p = _reg(prot, "prot") & U32
        f = _reg(flags, "flags") & U32
        _reg(fd, "fd")  # read as an int, unused by an anonymous mapping
        self._reserve()
        return int(k.mmap(self.vm, self.ix, self.mm, self.info, _s64(a), _s64(n), p, f, _s64(off)))

    def error(self, code: int) -> MmError:
        """The MmError the Python model raises for the last call, which returned ``code``."""
        info = self.info
        cause = int(info[k.I_CAUSE])
        m = self.mm
        if cause == k.CAUSE_MAP_COUNT:
            site = _SITES[int(info[k.I_SITE])]
            return oserror(
                _errno.ENOMEM,
                CAUSE_MAP_COUNT,
                f"{site}: map_count {int(info[k.I_A])}, max_map_count {int(m[k.M_MAX])}",
            )
        if cause == k.CAUSE_OVERCOMMIT:
            pages = int(info[k.I_A])
            ram_swap = int(m[k.M_RAM]) + int(m[k.M_SWAP])
            if int(m[k.M_OVERCOMMIT]) == 0:
                why = f"overcommit_memory=0: {pages} pages > RAM + swap ({ram_swap} pages)"
            else:
                limit = int(m[k.M_RAM]) * int(m[k.M_RATIO]) // 100 + int(m[k.M_SWAP])
                why = (
                    f"overcommit_memory=2: Committed_AS {int(info[k.I_B])} + {pages} pages "
                    f"> CommitLimit {limit} pages"
                )
            return oserror(_errno.ENOMEM, CAUSE_OVERCOMMIT, why)
        if cause == k.CAUSE_ADDRESS_SPACE:
            length = int(info[k.I_A]) & _U64
            return oserror(
                _errno.ENOMEM,
                CAUSE_ADDRESS_SPACE,
                f"no free range of {length:#x} bytes in the address space",
            )
        return oserror(code)

    def outcome(self, code: int) -> tuple[int, int, str | None]:
        """(return value, errno, cause) of a call that returned ``code`` (not BAIL)."""
        if code == 0:
            return (0, 0, None)
        return (-1, code, self.error(code).cause)
