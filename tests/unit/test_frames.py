"""Physical frames: refcount and mapcount lifecycles, the zero page, contents, the buddy
allocator, out-of-memory, 4 PiB of RAM at no host cost, and /proc/meminfo counts worked out by
hand."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from vmsim.phys import MAX_PHYS_BYTES, PAGE_SIZE, BadPage, FrameAllocator, OutOfMemory, PageFlag
from vmsim.phys.buddy import MAX_PAGE_ORDER, BuddyAllocator

ANON = PageFlag.ANON | PageFlag.SWAPBACKED
FILE = PageFlag.FILE | PageFlag.UPTODATE
SHMEM = PageFlag.FILE | PageFlag.SWAPBACKED
MiB = 1 << 20


@pytest.fixture
def ram() -> FrameAllocator:
    return FrameAllocator(64 * MiB)  # 16384 frames; pfn 0 is the zero page


# --- lifecycles -------------------------------------------------------------------------------


def test_alloc_gives_a_referenced_unmapped_frame(ram):
    pfn = ram.alloc(ANON)
    assert pfn != ram.zero_pfn
    assert (ram.refcount(pfn), ram.mapcount(pfn), ram.flags(pfn)) == (1, 0, ANON)
    assert ram.read(pfn) == bytes(PAGE_SIZE)
    assert not ram.has_data(pfn)


def test_refcount_lifecycle_frees_at_zero_and_reuses_the_frame(ram):
    pfn = ram.alloc(ANON)
    ram.get(pfn)  # e.g. a page-table mapping takes a reference
    ram.map(pfn)
    assert (ram.refcount(pfn), ram.mapcount(pfn)) == (2, 1)
    ram.write(pfn, 0, b"data")
    ram.unmap(pfn)
    assert ram.put(pfn) is False
    assert ram.refcount(pfn) == 1
    assert ram.put(pfn) is True  # the last reference: freed
    assert not ram.is_allocated(pfn)
    assert ram.used_pages == 0
    again = ram.alloc(ANON)
    assert again == pfn  # most recently freed frame first, like the per-cpu lists
    assert ram.read(again, 0, 4) == bytes(4)  # contents did not survive the free
    ram.check()


def test_mapcount_counts_mappings_not_references(ram):
    pfn = ram.alloc(ANON)
    for _ in range(3):  # fork twice: three page tables map it, each with a reference
        ram.get(pfn)
        ram.map(pfn)
    assert (ram.refcount(pfn), ram.mapcount(pfn)) == (4, 3)
    for _ in range(3):
        ram.unmap(pfn)
        ram.put(pfn)
    assert (ram.refcount(pfn), ram.mapcount(pfn)) == (1, 0)


def test_misuse_raises_bad_page(ram):
    pfn = ram.alloc(ANON)
    with pytest.raises(BadPage):
        ram.unmap(pfn)  # not mapped
    ram.map(pfn)
    with pytest.raises(BadPage, match="freed while mapped"):
        ram.put(pfn)
    free = pfn + 1
    for op in (ram.get, ram.put, ram.map, ram.unmap, ram.refcount, ram.flags):
        with pytest.raises(BadPage):
            op(free)
    with pytest.raises(BadPage):
        ram.read(free)
    with pytest.raises(BadPage):
        ram.write(free, 0, b"x")
    with pytest.raises(ValueError):
        ram.alloc(PageFlag.ZERO)


# --- the zero page ----------------------------------------------------------------------------


def test_zero_page_is_shared_and_never_counted(ram):
    z = ram.zero_pfn
    assert z == 0
    assert ram.flags(z) == PageFlag.ZERO
    assert ram.read(z, 100, 8) == bytes(8)
    for _ in range(5):  # special PTEs: no refcount, no mapcount, never freed
        ram.get(z)
        ram.map(z)
    for _ in range(10):
        ram.unmap(z)
        assert ram.put(z) is False
    assert (ram.refcount(z), ram.mapcount(z)) == (1, 0)
    with pytest.raises(BadPage):
        ram.write(z, 0, b"\x01")
    assert ram.meminfo()["AnonPages"] == 0
    ram.check()


def test_zero_page_is_never_handed_out():
    ram = FrameAllocator(32 * PAGE_SIZE)
    got = [ram.alloc() for _ in range(31)]
    assert sorted(got) == list(range(1, 32))


def test_cow_copy_of_the_zero_page_is_a_new_zeroed_anon_frame(ram):
    new = ram.copy(ram.zero_pfn)
    assert new != ram.zero_pfn
    assert ram.flags(new) == ANON
    assert ram.read(new) == bytes(PAGE_SIZE)


# --- contents ---------------------------------------------------------------------------------


def test_write_read_and_cow_copy_are_independent(ram):
    a = ram.alloc(ANON)
    ram.write(a, 4090, b"abcdef")
    assert ram.read(a, 4088, 8) == b"\0\0abcdef"
    b = ram.copy(a)
    assert ram.read(b, 4090, 6) == b"abcdef"
    ram.write(b, 4090, b"XY")
    assert ram.read(a, 4090, 2) == b"ab"
    assert ram.read(b, 4090, 2) == b"XY"
    assert (ram.refcount(b), ram.mapcount(b)) == (1, 0)


def test_zero_writes_store_nothing(ram):
    a = ram.alloc(ANON)
    ram.write(a, 0, bytes(PAGE_SIZE))
    assert not ram.has_data(a)
    ram.write(a, 7, b"\x00\x01")
    assert ram.has_data(a)
    c = ram.copy(ram.alloc(ANON))  # copy of a never-written frame stores nothing either
    assert not ram.has_data(c)


def test_accesses_must_stay_inside_one_page(ram):
    a = ram.alloc(ANON)
    with pytest.raises(ValueError):
        ram.write(a, 4095, b"ab")
    with pytest.raises(ValueError):
        ram.read(a, 4000, 100)
    with pytest.raises(ValueError):
        ram.read(a, -1, 1)


def test_large_folio_metadata_lives_at_the_head(ram):
    head = ram.alloc(ANON, order=9)  # a 2 MiB THP: 512 frames
    assert head % 512 == 0
    assert ram.flags(head) == ANON | PageFlag.HEAD
    assert ram.used_pages == 512
    ram.write(head + 300, 0, b"tail")
    assert ram.read(head + 300, 0, 4) == b"tail"
    assert ram.refcount(head + 300) == 1 and ram.order(head + 511) == 9
    ram.get(head + 1)  # get_page(tail) takes the reference on the folio (page_folio())
    assert ram.refcount(head) == 2
    ram.put(head + 1)
    ram.map_pmd(head)  # folio_add_anon_rmap_pmd(): every page mapped at once
    assert ram.meminfo()["AnonPages"] == 2048  # 512 pages x 4 kB
    ram.map(head + 7)  # a PTE of page 7 as well: already counted through the PMD
    assert ram.meminfo()["AnonPages"] == 2048 and ram.mapcount(head) == 2
    ram.unmap_pmd(head)  # only page 7 is mapped now (NR_ANON_MAPPED counts pages)
    assert ram.meminfo()["AnonPages"] == 4 and ram.page_mapcount(head + 7) == 1
    ram.check()
    ram.unmap(head + 7)
    assert ram.meminfo()["AnonPages"] == 0
    with pytest.raises(BadPage):
        ram.unmap(head + 7)  # not mapped any more
    assert ram.put(head)
    assert ram.used_pages == 0 and not ram.has_data(head + 300)
    ram.check()


def test_split_of_a_pte_mapped_large_folio_frees_the_unmapped_pages(ram):
    head = ram.alloc(ANON, order=2)
    for i in (0, 2):
        ram.get(head + i)
        ram.map(head + i)
    ram.write(head + 2, 0, b"kept")
    assert ram.refcount(head) == 3 and ram.mapcount(head) == 2
    assert ram.meminfo()["AnonPages"] == 8
    kept = ram.split(head)  # refcount = mapcount + the caller's (the allocation's) one
    assert kept == [head, head + 2]
    assert ram.used_pages == 2 and ram.order(head + 2) == 0
    assert ram.refcount(head + 2) == 1 and ram.mapcount(head + 2) == 1
    assert ram.flags(head) == ANON and ram.read(head + 2, 0, 4) == b"kept"
    assert ram.meminfo()["AnonPages"] == 8
    ram.check()


# --- sizes, OOM, host memory ------------------------------------------------------------------


def test_out_of_memory_when_ram_is_exhausted():
    ram = FrameAllocator(16 * PAGE_SIZE)  # 16 frames, one of them the zero page
    assert (ram.total_pages, ram.free_pages) == (15, 15)
    pfns = [ram.alloc(ANON) for _ in range(15)]
    assert ram.free_pages == 0
    with pytest.raises(OutOfMemory) as exc:
        ram.alloc(ANON)
    assert (exc.value.order, exc.value.free_pages, exc.value.total_pages) == (0, 0, 15)
    with pytest.raises(OutOfMemory):
        ram.copy(pfns[0])
    ram.put(pfns[7])
    assert ram.alloc(ANON) == pfns[7]
    for p in pfns:
        ram.put(p)
    with pytest.raises(OutOfMemory):  # 16 contiguous frames never exist: pfn 0 is reserved
        ram.alloc(order=4)
    assert ram.alloc(order=3) == 8
    ram.check()


def test_ram_size_limits():
    assert FrameAllocator(MAX_PHYS_BYTES).nr_pages == 1 << 40
    with pytest.raises(ValueError):
        FrameAllocator(MAX_PHYS_BYTES + PAGE_SIZE)
    with pytest.raises(ValueError):
        FrameAllocator(PAGE_SIZE)
    assert FrameAllocator(5 * PAGE_SIZE + 100).nr_pages == 5  # partial pages are ignored


def test_4_pib_of_ram_with_a_few_frames_touched_uses_little_host_memory():
    tracemalloc.start()
    try:
        ram = FrameAllocator(4 << 50)
        pfns = [ram.alloc(ANON) for _ in range(1000)]
        for p in pfns[:100]:
            ram.write(p, 0, b"\xff" * PAGE_SIZE)
        huge = [ram.alloc(ANON, order=9) for _ in range(10)]
        current, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 100 stored pages are 400 KiB; metadata for ~1000 folios is a few hundred KiB more.
    assert current < 2 * MiB, current
    # MemTotal: 2**40 frames, less the zero page, in kB: (2**40 - 1) * 4.
    info = ram.meminfo()
    assert info["MemTotal"] == 4_398_046_511_100
    assert info["MemFree"] == (2**40 - 1 - 1000 - 10 * 512) * 4
    assert ram.read(pfns[5], 0, 2) == b"\xff\xff"
    assert len(set(pfns) | set(huge)) == 1010


# --- the buddy allocator ----------------------------------------------------------------------


def test_buddy_hands_out_low_frames_first_and_splits_like_expand():
    b = BuddyAllocator(4096)
    # Block 0 (order 10) splits: 0 is taken, the high halves 512, 256, ..., 2, 1 are freed.
    assert b.alloc(0) == 0
    assert [list(a) for a in b.free_area] == [[1 << o] for o in range(10)] + [[]]
    assert [b.alloc(0) for _ in range(6)] == [1, 2, 3, 4, 5, 6]
    assert b.alloc(9) == 512
    assert b.alloc(10) == 1024  # from above the frontier
    b.check()


def test_buddy_merges_back_on_free():
    b = BuddyAllocator(2048)
    pfns = [b.alloc(0) for _ in range(1024)]
    assert sorted(pfns) == list(range(1024))
    for p in reversed(pfns):
        b.free(p, 0)
    assert [list(a) for a in b.free_area] == [[]] * MAX_PAGE_ORDER + [[0]]
    assert b.nr_free == 2048
    b.check()


def test_buddy_with_a_ragged_tail():
    # 1500 frames: blocks 0..1023 (order 10), 1024..1279 (8), 1280..1407 (7), 1408..1471 (6),
    # 1472..1487 (4), 1488..1495 (3), 1496..1499 (2).
    b = BuddyAllocator(1500)
    got = [b.alloc(0) for _ in range(1500)]
    assert sorted(got) == list(range(1500))
    assert b.alloc(0) is None and b.nr_free == 0
    for p in got:
        b.free(p)
    b.check()
    assert sorted((o, p) for o, a in enumerate(b.free_area) for p in a) == [
        (2, 1496),
        (3, 1488),
        (4, 1472),
        (6, 1408),
        (7, 1280),
        (8, 1024),
        (10, 0),
    ]


# --- /proc/meminfo, by hand -------------------------------------------------------------------


def test_meminfo_counts_by_hand(ram):
    # 64 MiB = 16384 frames; the zero page is reserved: MemTotal = 16383 * 4 = 65532 kB.
    a1 = ram.alloc(ANON)
    ram.map(a1)  # mapped once
    a2 = ram.alloc(ANON)
    ram.map(a2)
    ram.map(a2)  # mapped twice: still one page of AnonPages
    ram.alloc(ANON)  # never mapped: not in AnonPages (NR_ANON_MAPPED)
    f1 = ram.alloc(FILE)
    ram.map(f1)
    ram.map(f1)
    f2 = ram.alloc(FILE | PageFlag.DIRTY)  # page cache, dirty, unmapped
    s1 = ram.alloc(SHMEM | PageFlag.DIRTY)  # shmem: Cached and Shmem, never Dirty
    ram.map(s1)
    ram.alloc(PageFlag.PAGETABLE)
    ram.alloc(PageFlag.PAGETABLE)
    ram.set_flags(a1, PageFlag.MLOCKED)
    # 8 frames in use: MemFree = (16383 - 8) * 4 = 65500 kB.
    assert ram.meminfo() == {
        "MemTotal": 65532,
        "MemFree": 65500,
        "Cached": 12,  # f1, f2, s1
        "Mlocked": 4,  # a1
        "Dirty": 4,  # f2
        "AnonPages": 8,  # a1, a2
        "Mapped": 8,  # f1, s1
        "Shmem": 4,  # s1
        "PageTables": 8,
    }
    ram.check()
    ram.unmap(a2)
    assert ram.meminfo()["AnonPages"] == 8
    ram.unmap(a2)
    assert ram.meminfo()["AnonPages"] == 4
    ram.put(a2)
    ram.clear_flags(f2, PageFlag.DIRTY)  # written back
    ram.clear_flags(a1, PageFlag.MLOCKED)  # munlock
    ram.unmap(s1)
    info = ram.meminfo()
    assert (info["MemFree"], info["Dirty"], info["Mlocked"], info["Mapped"]) == (65504, 0, 0, 4)
    ram.check()
    for pfn in list(ram.allocated()):
        while ram.mapcount(pfn):
            ram.unmap(pfn)
        ram.put(pfn)
    assert ram.meminfo() == {
        "MemTotal": 65532,
        "MemFree": 65532,
        "Cached": 0,
        "Mlocked": 0,
        "Dirty": 0,
        "AnonPages": 0,
        "Mapped": 0,
        "Shmem": 0,
        "PageTables": 0,
    }
    ram.check()


def test_flag_changes_on_mapped_frames_move_them_between_counters(ram):
    p = ram.alloc(PageFlag.SWAPBACKED)  # not yet anon (folio_add_new_anon_rmap sets it)
    ram.map(p)
    assert ram.meminfo()["AnonPages"] == 0
    ram.set_flags(p, PageFlag.ANON)
    assert ram.meminfo()["AnonPages"] == 4
    ram.clear_flags(p, PageFlag.ANON)
    assert ram.meminfo()["AnonPages"] == 0
    ram.check()


# --- random lifecycles against a naive model --------------------------------------------------

FLAG_CHOICES = [
    ANON,
    FILE,
    FILE | PageFlag.DIRTY,
    SHMEM,
    SHMEM | PageFlag.DIRTY,
    PageFlag.PAGETABLE,
    PageFlag(0),
]


class FramesMachine(RuleBasedStateMachine):
    """Random allocs, references, mappings, writes, COW copies and flag changes; the
    allocator must agree with a dict of {pfn: [refcount, mapcount, flags, contents]} and its
    meminfo with a recount written here from the meminfo definitions."""

    frames = Bundle("frames")

    def __init__(self) -> None:
        super().__init__()
        self.ram = FrameAllocator(64 * PAGE_SIZE)
        self.model: dict[int, list] = {}

    @rule(target=frames, flags=st.sampled_from(FLAG_CHOICES))
    def alloc(self, flags: PageFlag) -> int:
        try:
            pfn = self.ram.alloc(flags)
        except OutOfMemory:
            assert len(self.model) == 63
            return self.ram.zero_pfn
        assert pfn not in self.model
        self.model[pfn] = [1, 0, int(flags), bytearray(PAGE_SIZE)]
        return pfn

    @rule(pfn=frames)
    def get_and_map(self, pfn: int) -> None:
        if pfn in self.model:
            self.ram.get(pfn)
            self.ram.map(pfn)
            self.model[pfn][0] += 1
            self.model[pfn][1] += 1

    @rule(pfn=frames)
    def unmap_and_put(self, pfn: int) -> None:
        if pfn in self.model and self.model[pfn][1]:
            self.ram.unmap(pfn)
            assert self.ram.put(pfn) is False
            self.model[pfn][0] -= 1
            self.model[pfn][1] -= 1

    @rule(pfn=consumes(frames))
    def release(self, pfn: int) -> None:
        if pfn not in self.model:
            return
        ref, mapc, _, _ = self.model[pfn]
        for _ in range(mapc):
            self.ram.unmap(pfn)
        for i in range(ref):
            assert self.ram.put(pfn) is (i == ref - 1)
        del self.model[pfn]
        assert not self.ram.is_allocated(pfn)

    @rule(pfn=frames, off=st.integers(0, PAGE_SIZE - 1), data=st.binary(max_size=64))
    def write(self, pfn: int, off: int, data: bytes) -> None:
        if pfn in self.model:
            data = data[: PAGE_SIZE - off]
            self.ram.write(pfn, off, data)
            self.model[pfn][3][off : off + len(data)] = data

    @rule(target=frames, pfn=frames)
    def cow_copy(self, pfn: int) -> int:
        if pfn not in self.model and pfn != self.ram.zero_pfn:
            return self.ram.zero_pfn
        try:
            new = self.ram.copy(pfn)
        except OutOfMemory:
            return self.ram.zero_pfn
        src = self.model[pfn][3] if pfn in self.model else bytes(PAGE_SIZE)
        self.model[new] = [1, 0, int(ANON), bytearray(src)]
        return new

    @rule(pfn=frames, flag=st.sampled_from([PageFlag.DIRTY, PageFlag.MLOCKED]), on=st.booleans())
    def toggle(self, pfn: int, flag: PageFlag, on: bool) -> None:
        if pfn in self.model:
            if on:
                self.ram.set_flags(pfn, flag)
                self.model[pfn][2] |= int(flag)
            else:
                self.ram.clear_flags(pfn, flag)
                self.model[pfn][2] &= ~int(flag)

    @invariant()
    def agrees(self) -> None:
        ram = self.ram
        ram.check()
        assert set(ram.allocated()) == set(self.model)
        pages = {"Cached": 0, "Mlocked": 0, "Dirty": 0, "AnonPages": 0, "Mapped": 0}
        pages |= {"Shmem": 0, "PageTables": 0}
        for pfn, (ref, mapc, flags, data) in self.model.items():
            assert (ram.refcount(pfn), ram.mapcount(pfn), int(ram.flags(pfn))) == (
                ref,
                mapc,
                flags,
            )
            assert ram.read(pfn) == bytes(data)
            f = PageFlag(flags)
            pages["Cached"] += PageFlag.FILE in f
            pages["Shmem"] += PageFlag.FILE in f and PageFlag.SWAPBACKED in f
            pages["Dirty"] += (
                PageFlag.FILE in f and PageFlag.DIRTY in f and not f & PageFlag.SWAPBACKED
            )
            pages["AnonPages"] += PageFlag.ANON in f and mapc > 0
            pages["Mapped"] += PageFlag.FILE in f and mapc > 0
            pages["Mlocked"] += PageFlag.MLOCKED in f
            pages["PageTables"] += PageFlag.PAGETABLE in f
        want = {"MemTotal": 63 * 4, "MemFree": (63 - len(self.model)) * 4}
        want |= {k: v * 4 for k, v in pages.items()}
        assert ram.meminfo() == want


FramesMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestFramesMachine = FramesMachine.TestCase
