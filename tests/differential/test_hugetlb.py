"""hugetlbfs with this machine's empty pools (HugePages_Total 0), kernel against vmsim.

Nothing here touches a hugetlb page (with an empty pool that is SIGBUS) and nothing changes
a pool: what an empty pool still lets a process do is compared call by call, with the maps
and smaps text (KernelPageSize, VmFlags ``ht``/``nr``/``de``) after every call:

- a reserving mapping fails with ENOMEM (hugetlb_reserve_pages()), after the old mappings of
  a MAP_FIXED range are gone; MAP_NORESERVE maps without a reservation;
- the length is rounded up to the huge page size, MAP_FIXED needs an aligned address, a hint
  is rounded up, placement is huge page aligned;
- munmap and mprotect that would split a huge page are EINVAL (hugetlb_vm_op_split());
- memfd_create(MFD_HUGETLB): ftruncate to a multiple of the huge page size only, unknown
  sizes are ENODEV.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .harness import Call
from .live import LiveChild
from .test_hostile import run_case

pytestmark = pytest.mark.kernel

P = 4096
M2 = 2 << 20
G1 = 1 << 30
W = 0x100000000000  # 1 GiB aligned
RO, RW = 1, 3
PRIV, SHARED, FIXED, ANON = 0x02, 0x01, 0x10, 0x20
NORESERVE, HUGETLB, HUGE_SHIFT = 0x4000, 0x40000, 26
MFD_HUGETLB = 4
MADV_DONTNEED, MADV_FREE = 4, 8
MAYMOVE, MFIXED = 1, 2
H1G = 30 << HUGE_SHIFT
HN = PRIV | ANON | HUGETLB | NORESERVE  # a private MAP_HUGETLB mapping without reservation


# run_case() makes a tmpfs memfd first (logical fd 0): the hugetlb memfd is fd 1


def mm(addr: int, length: int, prot: int, flags: int, fd: int = -1, off: int = 0) -> Call:
    return Call("mmap", (addr, length, prot, flags, fd, off))


CASES: dict[str, list[Call]] = {
    "noreserve_rounds_length": [mm(W, P, RW, HN | FIXED)],
    "noreserve_placed_aligned": [mm(0, 3 * P, RW, HN)],
    "noreserve_hint_rounded_up": [mm(W + M2 + P, P, RW, HN)],
    "noreserve_1g": [mm(W, P, RW, HN | FIXED | H1G)],
    "noreserve_1g_placed": [mm(0, M2, RW, HN | H1G)],
    "fixed_unaligned_einval": [mm(W + P, M2, RW, HN | FIXED)],
    "fixed_unaligned_1g_einval": [mm(W + M2, G1, RW, HN | FIXED | H1G)],
    "reserving_fixed_over_mapping_enomem": [
        mm(W, 2 * M2, RW, PRIV | ANON | FIXED),
        mm(W, M2, RW, PRIV | ANON | FIXED | HUGETLB),
    ],
    "length_wraps_einval": [mm(0, (1 << 64) - P, RW, HN)],
    "munmap_inside_huge_page": [mm(W, M2, RW, HN | FIXED), Call("munmap", (W, P))],
    "munmap_tail_of_huge_page": [mm(W, M2, RW, HN | FIXED), Call("munmap", (W + P, M2 - P))],
    "munmap_one_of_two": [mm(W, 2 * M2, RW, HN | FIXED), Call("munmap", (W + M2, M2))],
    "munmap_unaligned_length": [mm(W, 2 * M2, RW, HN | FIXED), Call("munmap", (W, M2 + P))],
    "mprotect_inside_huge_page": [mm(W, M2, RW, HN | FIXED), Call("mprotect", (W, P, RO))],
    "mprotect_whole_huge_page": [mm(W, 2 * M2, RW, HN | FIXED), Call("mprotect", (W, M2, RO))],
    "mprotect_middle": [
        mm(W, 3 * M2, RW, HN | FIXED),
        Call("mprotect", (W + M2, M2, RO)),
        Call("mprotect", (W + M2 + P, P, RW)),
    ],
    "shared_anon_noreserve_split": [
        mm(W, 3 * M2 // 2, RW, SHARED | ANON | HUGETLB | NORESERVE | FIXED),
        Call("mprotect", (W, M2, RO)),
    ],
    "shared_anon_reserving_enomem": [mm(0, M2, RW, SHARED | ANON | HUGETLB)],
    "madvise_dontneed_aligned": [
        mm(W, 2 * M2, RW, HN | FIXED),
        Call("madvise", (W + M2, P, MADV_DONTNEED)),
    ],
    "madvise_dontneed_unaligned": [
        mm(W, 2 * M2, RW, HN | FIXED),
        Call("madvise", (W + P, P, MADV_DONTNEED)),
    ],
    "madvise_free_hugetlb": [mm(W, M2, RW, HN | FIXED), Call("madvise", (W, M2, MADV_FREE))],
    "mremap_shrink": [mm(W, 2 * M2, RW, HN | FIXED), Call("mremap", (W, 2 * M2, M2, 0, 0))],
    "mremap_shrink_unaligned_len": [
        mm(W, 2 * M2, RW, HN | FIXED),
        Call("mremap", (W, 2 * M2, M2 + P, 0, 0)),
    ],
    "mremap_grow": [mm(W, M2, RW, HN | FIXED), Call("mremap", (W, M2, 2 * M2, MAYMOVE, 0))],
    "mremap_move_aligned": [
        mm(W, M2, RW, HN | FIXED),
        Call("mremap", (W, M2, M2, MAYMOVE | MFIXED, W + 8 * M2)),
    ],
    "mremap_move_unaligned_target": [
        mm(W, M2, RW, HN | FIXED),
        Call("mremap", (W, M2, M2, MAYMOVE | MFIXED, W + 8 * M2 + P)),
    ],
    "mremap_unaligned_source": [
        mm(W, 2 * M2, RW, HN | FIXED),
        Call("mremap", (W + P, P, P, MAYMOVE, 0)),
    ],
    "memfd_hugetlb": [
        Call("memfd_create", ("hh", MFD_HUGETLB)),
        Call("ftruncate", (1, P)),
        Call("ftruncate", (1, M2)),
        mm(W, M2, RW, SHARED | FIXED, fd=1),
        mm(W, P, RW, SHARED | FIXED | NORESERVE, fd=1),
        mm(W + 4 * M2, M2, RW, PRIV | FIXED | NORESERVE, fd=1, off=P),
        mm(W + 4 * M2, M2, RO, PRIV | FIXED | NORESERVE, fd=1),
    ],
    "memfd_hugetlb_1g": [
        Call("memfd_create", ("hg", MFD_HUGETLB | H1G)),
        Call("ftruncate", (1, M2)),
        Call("ftruncate", (1, G1)),
        mm(0, P, RW, SHARED | NORESERVE, fd=1),
    ],
    "memfd_hugetlb_bad_size": [
        Call("memfd_create", ("hb", MFD_HUGETLB | 20 << HUGE_SHIFT)),
        Call("memfd_create", ("hc", 1 << HUGE_SHIFT)),
    ],
}


@pytest.mark.parametrize("name", list(CASES))
def test_hugetlb_empty_pool(name: str, make_sim: Callable[[LiveChild, str], Any]) -> None:
    problems = run_case(CASES[name], make_sim)
    assert not problems, "\n".join(problems)


def _meminfo_tail(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("HugePages_", "Huge"))]


def test_meminfo_hugetlb_lines_equal_the_live_kernels() -> None:
    """With the default (empty) pools the HugePages_*, Hugepagesize and Hugetlb lines are
    byte for byte the live kernel's (nothing on the reference machine uses hugetlbfs)."""
    import vmsim

    live = _meminfo_tail(Path("/proc/meminfo").read_text())
    ours = _meminfo_tail(vmsim.Machine().meminfo())
    assert ours == live


def test_buddyinfo_and_pagetypeinfo_format_match_the_live_kernels() -> None:
    """The model's one zone prints like the live Normal zone line: same prefix, 11 columns
    of '%6lu '; pagetypeinfo's headers and row prefixes are the live ones."""
    import vmsim

    m = vmsim.Machine()
    live = Path("/proc/buddyinfo").read_text().splitlines()
    normal = next(line for line in live if ", zone   Normal " in line)
    ours = m.buddyinfo().rstrip("\n")
    assert ours[:22] == normal[:22]
    assert len(ours) == len(normal) or max(len(x) for x in normal.split()) > 6
    assert len(ours.split()) == len(normal.split()) == 4 + 11
    live_pt = Path("/proc/pagetypeinfo").read_text().splitlines()
    ours_pt = m.pagetypeinfo().splitlines()
    assert ours_pt[:4] == live_pt[:4]
    for name in ("Unmovable", "Movable", "Reclaimable", "HighAtomic", "Isolate"):
        lrow = next(
            r for r in live_pt if r.startswith("Node    0, zone   Normal, type") and name in r
        )
        orow = next(r for r in ours_pt if name in r and "type" in r)
        assert orow[:43] == lrow[:43]
        assert len(orow.split()) == len(lrow.split())
    lhead = next(r for r in live_pt if r.startswith("Number of blocks type"))
    assert next(r for r in ours_pt if r.startswith("Number of blocks type")) == lhead


_SHM_SCRIPT = r"""
import ctypes, errno, json, re
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.shmdt.argtypes = [ctypes.c_void_p]
out = {}
for name, size, flags in json.loads(CASES):
    shmid = libc.shmget(0, size, flags)
    if shmid < 0:
        out[name] = errno.errorcode[ctypes.get_errno()]
        continue
    addr = libc.shmat(shmid, None, 0)
    line = next(l for l in open("/proc/self/maps") if l.startswith("%08x-" % addr))
    m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+) (\S+) (\S+) \d+ +(.*)", line)
    out[name] = [int(m[2], 16) - int(m[1], 16), m[3], m[4], m[5], m[6]]
    libc.shmdt(ctypes.c_void_p(addr))
    libc.shmctl(shmid, 0, None)
print(json.dumps(out))
"""

_SHM_CASES = [
    ("reserving", M2, 0o1000 | 0o4000 | 0o600),
    ("noreserve_2m", P, 0o1000 | 0o4000 | 0o10000 | 0o600),
    ("noreserve_1g", P, 0o1000 | 0o4000 | 0o10000 | 0o600 | H1G),
    ("bad_size", P, 0o1000 | 0o4000 | 0o10000 | 0o600 | 20 << HUGE_SHIFT),
]


def test_shm_hugetlb_empty_pool() -> None:
    """shmget(SHM_HUGETLB) reserves at once (ENOMEM with the empty pool); with
    SHM_NORESERVE it succeeds and shmat maps the whole huge page as /SYSV... on the
    hugetlbfs mount; an unknown SHM_HUGE_* size is EINVAL. The attach is never touched."""
    import json
    import re
    import subprocess
    import sys

    import vmsim

    script = _SHM_SCRIPT.replace("CASES", repr(json.dumps(_SHM_CASES)))
    live = json.loads(
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout
    )
    p = vmsim.Machine().spawn()
    ours: dict[str, object] = {}
    for name, size, flags in _SHM_CASES:
        try:
            shmid = p.shmget(0, size, flags)
        except OSError as e:
            ours[name] = errno.errorcode[e.errno or 0]
            continue
        addr = p.shmat(shmid)
        line = next(x for x in p.maps().splitlines() if x.startswith(f"{addr:08x}-"))
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+) (\S+) (\S+) \d+ +(.*)", line)
        assert m is not None
        ours[name] = [int(m[2], 16) - int(m[1], 16), m[3], m[4], m[5], m[6]]
        p.shmdt(addr)
        p.shmctl(shmid, 0)
    assert ours == live
