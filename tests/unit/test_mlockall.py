"""mlockall(2)/munlockall(2). Expected VmFlags are those the live kernel printed for the same
calls (kernel-verified with a C program on Linux 6.18: see the comments)."""

from __future__ import annotations

import errno

import pytest

import vmsim
from vmsim import MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PROT_NONE, PROT_READ, PROT_WRITE

P = 4096
B = 0x200000000000
RW = PROT_READ | PROT_WRITE
FIXED = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED


def vmflags(p: vmsim.Process, addr: int) -> str:
    """The smaps VmFlags of the VMA that starts at ``addr``."""
    lines = p.smaps().splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"{addr:x}-"):
            for follow in lines[i:]:
                if follow.startswith("VmFlags: "):
                    return follow[len("VmFlags: ") :].strip()
    raise AssertionError(f"no VMA starts at {addr:#x}")


def test_current_and_future() -> None:
    p = vmsim.Machine().spawn()
    p.mmap(B, 4 * P, RW, FIXED)
    p.mmap(B + 0x10000, 4 * P, PROT_NONE, FIXED)
    p.mlockall(vmsim.MCL_CURRENT | vmsim.MCL_FUTURE)  # kernel: 0, even with a PROT_NONE VMA
    assert vmflags(p, B) == "rd wr mr mw me lo ac"
    assert vmflags(p, B + 0x10000) == "mr mw me lo"
    # a later mapping is locked too (def_flags) and so merges with the locked neighbour
    p.mmap(B + 4 * P, 4 * P, RW, FIXED)
    assert p.maps().startswith(f"{B:x}-{B + 8 * P:x} rw-p")
    p.mmap(B + 0x20000, 4 * P, PROT_READ, FIXED)
    assert vmflags(p, B + 0x20000) == "rd mr mw me lo"


def test_munlockall_unlocks_everything_and_the_future() -> None:
    p = vmsim.Machine().spawn()
    p.mmap(B, 4 * P, RW, FIXED)
    p.mlockall(vmsim.MCL_CURRENT | vmsim.MCL_FUTURE)
    p.munlockall()
    assert vmflags(p, B) == "rd wr mr mw me ac"
    p.mmap(B + 0x30000, 4 * P, PROT_READ, FIXED)
    assert vmflags(p, B + 0x30000) == "rd mr mw me"


def test_future_onfault_only_touches_new_mappings() -> None:
    p = vmsim.Machine().spawn()
    p.mmap(B, 4 * P, RW, FIXED)
    p.mlockall(vmsim.MCL_FUTURE | vmsim.MCL_ONFAULT)
    p.mmap(B + 0x40000, 4 * P, PROT_READ, FIXED)
    assert vmflags(p, B + 0x40000) == "rd mr mw me lo lf"
    assert vmflags(p, B) == "rd wr mr mw me ac"


@pytest.mark.parametrize("flags", [0, vmsim.MCL_ONFAULT, 8])
def test_invalid_flags(flags: int) -> None:
    p = vmsim.Machine().spawn()
    with pytest.raises(OSError) as e:
        p.mlockall(flags)
    assert e.value.errno == errno.EINVAL


def test_mlockall_future_locks_the_heap_and_populates_it() -> None:
    p = vmsim.Machine().spawn(layout="linux")
    p.mlockall(vmsim.MCL_FUTURE)
    old = p.brk(0)
    p.brk(old + 2 * P)
    # the heap grew in place or by a new VMA: either way the new pages are locked ("lo"),
    # and with a different VM_LOCKED the grown part cannot merge into the old [heap]
    assert "lo" in vmflags(p, old).split()
