"""What user reads and writes see: zero fill, sharing, COW, DONTNEED, SIGSEGV and SIGBUS."""

from __future__ import annotations

import pytest
from layout import PAGE, RW, anon, at, shared

from vmsim import (
    MADV_DONTNEED,
    MADV_WIPEONFORK,
    MAP_ANONYMOUS,
    MAP_FIXED_NOREPLACE,
    MAP_PRIVATE,
    MAP_SHARED,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PROT_NONE,
    PROT_READ,
    SEGV_ACCERR,
    SEGV_MAPERR,
    BusError,
    Segfault,
)


def memfd(p, npages: int, name: str = "mem") -> int:
    fd = p.memfd_create(name)
    p.ftruncate(fd, npages * PAGE)
    return fd


def test_new_anon_memory_reads_zero(p):
    anon(p, 0, 2)
    assert p.read(at(0), 2 * PAGE) == bytes(2 * PAGE)


def test_write_then_read_back(p):
    anon(p, 0, 2)
    p.write(at(0) + PAGE - 3, b"abcdef")  # crosses a page boundary
    assert p.read(at(0) + PAGE - 3, 6) == b"abcdef"
    assert p.read(at(0), 1) == b"\0"


def test_access_across_two_vmas(p):
    anon(p, 0, 1)
    anon(p, 1, 1, RW | 0x4)  # rwx: a second VMA
    p.write(at(1) - 2, b"wxyz")
    assert p.read(at(1) - 2, 4) == b"wxyz"


def test_read_unmapped_is_maperr(p):
    with pytest.raises(Segfault) as e:
        p.read(at(0) + 5, 1)
    assert (e.value.addr, e.value.code) == (at(0) + 5, SEGV_MAPERR)


def test_access_running_into_a_hole_faults_at_the_hole(p):
    anon(p, 0, 1)
    with pytest.raises(Segfault) as e:
        p.write(at(1) - 2, b"abcd")
    assert (e.value.addr, e.value.code) == (at(1), SEGV_MAPERR)


def test_write_readonly_is_accerr(p):
    anon(p, 0, 1, PROT_READ)
    assert p.read(at(0), 4) == bytes(4)
    with pytest.raises(Segfault) as e:
        p.write(at(0) + 8, b"x")
    assert (e.value.addr, e.value.code) == (at(0) + 8, SEGV_ACCERR)


def test_read_prot_none_is_accerr(p):
    anon(p, 0, 1, PROT_NONE)
    with pytest.raises(Segfault) as e:
        p.read(at(0), 1)
    assert e.value.code == SEGV_ACCERR


def test_mprotect_keeps_contents(p):
    anon(p, 0, 2)
    p.write(at(1), b"keep")
    p.mprotect(at(0), 2 * PAGE, PROT_READ)
    assert p.read(at(1), 4) == b"keep"
    p.mprotect(at(0), 2 * PAGE, PROT_NONE)
    p.mprotect(at(0), 2 * PAGE, RW)
    assert p.read(at(1), 4) == b"keep"


def test_munmap_then_map_again_is_zero(p):
    anon(p, 0, 1)
    p.write(at(0), b"gone")
    p.munmap(at(0), PAGE)
    anon(p, 0, 1)
    assert p.read(at(0), 4) == bytes(4)


def test_map_fixed_over_data_is_zero(p):
    anon(p, 0, 2)
    p.write(at(0), b"old")
    p.mmap(at(0), PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS | 0x10)  # MAP_FIXED
    assert p.read(at(0), 3) == bytes(3)


def test_mremap_move_keeps_contents(p):
    anon(p, 0, 2)
    p.write(at(1), b"moved")
    assert p.mremap(at(0), 2 * PAGE, 2 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, at(10)) == at(10)
    assert p.read(at(11), 5) == b"moved"
    with pytest.raises(Segfault):
        p.read(at(1), 1)


def test_mremap_grow_in_place_new_part_is_zero(p):
    anon(p, 0, 1)
    p.write(at(0), b"a")
    p.mremap(at(0), PAGE, 2 * PAGE)
    assert p.read(at(0), 1) == b"a"
    assert p.read(at(1), 4) == bytes(4)


def test_dontneed_on_private_anon_rezeroes(p):
    anon(p, 0, 4)
    p.write(at(1), b"data")
    p.write(at(3), b"more")
    p.madvise(at(1), PAGE, MADV_DONTNEED)
    assert p.read(at(1), 4) == bytes(4)
    assert p.read(at(3), 4) == b"more"


def test_memfd_contents_seen_by_every_shared_mapping(p):
    fd = memfd(p, 4)
    shared(p, 0, 4, fd, 0)
    shared(p, 10, 2, fd, 2)
    p.write(at(2), b"shared")
    assert p.read(at(10), 6) == b"shared"
    p.write(at(11) + 7, b"back")
    assert p.read(at(3) + 7, 4) == b"back"


def test_dontneed_on_shared_memfd_keeps_contents(p):
    fd = memfd(p, 2)
    shared(p, 0, 2, fd, 0)
    p.write(at(0), b"file")
    p.madvise(at(0), 2 * PAGE, MADV_DONTNEED)
    assert p.read(at(0), 4) == b"file"


def test_private_file_mapping_cow_is_not_visible_in_the_file(p):
    fd = memfd(p, 2)
    shared(p, 0, 2, fd, 0)
    p.write(at(0), b"orig")
    p.mmap(at(10), 2 * PAGE, RW, MAP_PRIVATE | MAP_FIXED_NOREPLACE, fd, 0)
    assert p.read(at(10), 4) == b"orig"  # private mapping reads the file
    p.write(at(10), b"priv")
    assert p.read(at(0), 4) == b"orig"  # its COW copy is not the file
    p.write(at(0), b"new!")
    assert p.read(at(10), 4) == b"priv"  # the COWed page no longer follows the file
    p.write(at(1), b"page1")
    assert p.read(at(11), 5) == b"page1"  # an untouched page still does


def test_dontneed_on_private_file_mapping_drops_the_cow_copy(p):
    fd = memfd(p, 1)
    shared(p, 0, 1, fd, 0)
    p.write(at(0), b"file")
    p.mmap(at(10), PAGE, RW, MAP_PRIVATE | MAP_FIXED_NOREPLACE, fd, 0)
    p.write(at(10), b"priv")
    p.madvise(at(10), PAGE, MADV_DONTNEED)
    assert p.read(at(10), 4) == b"file"


def test_memfd_mapping_past_eof_is_sigbus(p):
    fd = memfd(p, 1)
    p.mmap(at(0), 3 * PAGE, RW, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0)
    p.write(at(0), b"ok")
    with pytest.raises(BusError) as e:
        p.read(at(1) + 16, 1)
    assert e.value.addr == at(1) + 16
    with pytest.raises(BusError):
        p.write(at(2), b"x")


def test_ftruncate_shrink_makes_mapped_pages_sigbus_and_grow_back_zero(p):
    fd = memfd(p, 2)
    shared(p, 0, 2, fd, 0)
    p.write(at(1), b"lost")
    p.ftruncate(fd, PAGE)
    with pytest.raises(BusError):
        p.read(at(1), 1)
    p.ftruncate(fd, 2 * PAGE)
    assert p.read(at(1), 4) == bytes(4)


def test_file_contents_survive_close_and_munmap(p):
    fd = memfd(p, 1)
    shared(p, 0, 1, fd, 0)
    p.write(at(0), b"persist")
    p.munmap(at(0), PAGE)
    shared(p, 4, 1, fd, 0)
    p.close(fd)
    assert p.read(at(4), 7) == b"persist"


def test_fork_private_memory_is_copied(p):
    anon(p, 0, 1)
    p.write(at(0), b"before")
    c = p.fork()
    p.write(at(0), b"parent")
    assert c.read(at(0), 6) == b"before"
    c.write(at(0), b"child!")
    assert p.read(at(0), 6) == b"parent"


def test_fork_shared_memory_is_shared(p):
    p.mmap(at(0), PAGE, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE)
    c = p.fork()
    c.write(at(0), b"hello")
    assert p.read(at(0), 5) == b"hello"


def test_fork_wipeonfork_child_reads_zero(p):
    anon(p, 0, 2)
    p.write(at(0), b"secret")
    p.write(at(1), b"kept")
    p.madvise(at(0), PAGE, MADV_WIPEONFORK)
    c = p.fork()
    assert c.read(at(0), 6) == bytes(6)
    assert c.read(at(1), 4) == b"kept"
    assert p.read(at(0), 6) == b"secret"
