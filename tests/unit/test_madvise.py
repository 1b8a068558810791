"""Which madvise advice changes vm_flags (and so splits), which does not: spec §2 (kernel-verified).

Every case uses an 8-page private anonymous rw VMA at page 0 and advises pages [2,4).
"""

from __future__ import annotations

import errno

import pytest
from layout import BASE, PAGE, RW, anon, at, draw, regions, shared, touch, vmflags

from vmsim import (
    MADV_COLD,
    MADV_DODUMP,
    MADV_DOFORK,
    MADV_DONTDUMP,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_FREE,
    MADV_GUARD_INSTALL,
    MADV_GUARD_REMOVE,
    MADV_HUGEPAGE,
    MADV_KEEPONFORK,
    MADV_MERGEABLE,
    MADV_NOHUGEPAGE,
    MADV_NORMAL,
    MADV_PAGEOUT,
    MADV_POPULATE_READ,
    MADV_POPULATE_WRITE,
    MADV_RANDOM,
    MADV_REMOVE,
    MADV_SEQUENTIAL,
    MADV_UNMERGEABLE,
    MADV_WILLNEED,
    MADV_WIPEONFORK,
)

BASE_FLAGS = ["rd", "wr", "mr", "mw", "me", "ac"]

# advice -> the VmFlags mnemonic it adds
SPLITTING = [
    (MADV_RANDOM, "rr"),
    (MADV_SEQUENTIAL, "sr"),
    (MADV_DONTFORK, "dc"),
    (MADV_MERGEABLE, "mg"),
    (MADV_HUGEPAGE, "hg"),
    (MADV_NOHUGEPAGE, "nh"),
    (MADV_DONTDUMP, "dd"),
    (MADV_WIPEONFORK, "wf"),
]

# (advice that sets a flag, advice that clears it)
UNDOING = [
    (MADV_RANDOM, MADV_NORMAL),
    (MADV_SEQUENTIAL, MADV_NORMAL),
    (MADV_DONTFORK, MADV_DOFORK),
    (MADV_MERGEABLE, MADV_UNMERGEABLE),
    (MADV_DONTDUMP, MADV_DODUMP),
    (MADV_WIPEONFORK, MADV_KEEPONFORK),
    (MADV_HUGEPAGE, MADV_NOHUGEPAGE),
]

NO_SPLIT = [
    MADV_WILLNEED,
    MADV_DONTNEED,
    MADV_FREE,
    MADV_COLD,
    MADV_PAGEOUT,
    MADV_POPULATE_READ,
    MADV_POPULATE_WRITE,
    MADV_GUARD_REMOVE,
]

# advice that only clears a flag: a no-op (no split) on a VMA that lacks it
NOOP_WITHOUT_FLAG = [MADV_NORMAL, MADV_DOFORK, MADV_UNMERGEABLE, MADV_DODUMP, MADV_KEEPONFORK]


@pytest.mark.parametrize(("advice", "flag"), SPLITTING)
def test_flag_advice_splits_in_three(p, advice, flag):
    anon(p, 0, 8)
    p.madvise(at(2), 2 * PAGE, advice)
    assert draw(p, BASE, 10) == "AABBCCCC.."
    assert p.map_count == 3
    assert vmflags(p.smaps(), at(0)) == BASE_FLAGS
    assert flag in vmflags(p.smaps(), at(2))
    assert vmflags(p.smaps(), at(4)) == BASE_FLAGS


@pytest.mark.parametrize(("advice", "flag"), SPLITTING)
def test_flag_advice_on_whole_vma_does_not_split(p, advice, flag):
    anon(p, 0, 8)
    p.madvise(at(0), 8 * PAGE, advice)
    assert draw(p, BASE, 10) == "AAAAAAAA.."
    assert flag in vmflags(p.smaps(), at(0))


@pytest.mark.parametrize(("setter", "clearer"), UNDOING)
def test_clearing_advice_splits_when_flag_set(p, setter, clearer):
    anon(p, 0, 8)
    p.madvise(at(0), 8 * PAGE, setter)
    p.madvise(at(2), 2 * PAGE, clearer)
    assert draw(p, BASE, 10) == "AABBCCCC.."
    p.madvise(at(2), 2 * PAGE, setter)
    assert draw(p, BASE, 10) == "AAAAAAAA.."


@pytest.mark.parametrize("advice", NOOP_WITHOUT_FLAG)
def test_clearing_advice_without_flag_does_not_split(p, advice):
    anon(p, 0, 8)
    p.madvise(at(2), 2 * PAGE, advice)
    assert regions(p, BASE, 10) == ["[0,8) rw-p"]
    assert vmflags(p.smaps(), at(0)) == BASE_FLAGS


@pytest.mark.parametrize("advice", NO_SPLIT)
def test_advice_that_never_splits(p, advice):
    anon(p, 0, 8)
    touch(p, 0, 8)
    p.madvise(at(2), 2 * PAGE, advice)
    assert regions(p, BASE, 10) == ["[0,8) rw-p"]
    assert p.map_count == 1
    assert vmflags(p.smaps(), at(0)) == BASE_FLAGS


def test_guard_install_marks_whole_vma_without_split(p):
    anon(p, 0, 8)
    p.madvise(at(2), 2 * PAGE, MADV_GUARD_INSTALL)
    assert regions(p, BASE, 10) == ["[0,8) rw-p"]
    assert vmflags(p.smaps(), at(0)) == ["rd", "wr", "mr", "mw", "me", "gu", "ac"]


def test_guard_flag_is_sticky_and_does_not_block_merge(p):
    anon(p, 0, 4)
    p.madvise(at(0), PAGE, MADV_GUARD_INSTALL)
    p.madvise(at(0), PAGE, MADV_GUARD_REMOVE)
    anon(p, 4, 4)
    assert regions(p, BASE, 10) == ["[0,8) rw-p"]
    assert "gu" in vmflags(p.smaps(), at(0))


def test_wipeonfork_on_shared_memfd_is_einval(p):
    fd = p.memfd_create("w")
    p.ftruncate(fd, 8 * PAGE)
    shared(p, 0, 8, fd, 0)
    with pytest.raises(OSError) as e:
        p.madvise(at(2), 2 * PAGE, MADV_WIPEONFORK)
    assert e.value.errno == errno.EINVAL
    assert regions(p, BASE, 10) == ["[0,8) rw-s"]


def test_wipeonfork_on_shared_anon_is_einval(p):
    p.mmap(at(0), 8 * PAGE, RW, 0x01 | 0x20 | 0x100000)  # MAP_SHARED|ANONYMOUS|FIXED_NOREPLACE
    with pytest.raises(OSError) as e:
        p.madvise(at(0), 8 * PAGE, MADV_WIPEONFORK)
    assert e.value.errno == errno.EINVAL


def test_remove_on_private_anon_is_einval(p):
    anon(p, 0, 8)
    with pytest.raises(OSError) as e:
        p.madvise(at(2), 2 * PAGE, MADV_REMOVE)
    assert e.value.errno == errno.EINVAL
    assert regions(p, BASE, 10) == ["[0,8) rw-p"]


def test_remove_on_shared_memfd_zeroes_the_file_range(p):
    fd = p.memfd_create("r")
    p.ftruncate(fd, 8 * PAGE)
    shared(p, 0, 8, fd, 0)
    p.write(at(2), b"abc")
    p.write(at(5), b"def")
    p.madvise(at(2), 2 * PAGE, MADV_REMOVE)
    assert p.read(at(2), 3) == b"\0\0\0"
    assert p.read(at(5), 3) == b"def"
    assert regions(p, BASE, 10) == ["[0,8) rw-s"]


def test_unknown_advice_is_einval(p):
    anon(p, 0, 8)
    with pytest.raises(OSError) as e:
        p.madvise(at(0), PAGE, 99)
    assert e.value.errno == errno.EINVAL


def test_madvise_across_two_vmas_splits_each_end(p):
    anon(p, 0, 4)
    anon(p, 4, 4, 0x1)  # PROT_READ: a second VMA
    p.madvise(at(2), 4 * PAGE, MADV_DONTDUMP)
    assert regions(p, BASE, 10) == ["[0,2) rw-p", "[2,4) rw-p", "[4,6) r--p", "[6,8) r--p"]
    assert "dd" in vmflags(p.smaps(), at(2))
    assert "dd" in vmflags(p.smaps(), at(4))
    assert "dd" not in vmflags(p.smaps(), at(6))
