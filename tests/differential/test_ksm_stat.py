"""/proc/PID/ksm_stat and prctl(PR_SET/GET_MEMORY_MERGE) against the live kernel.

ksmd is not running on the test machine (never started here, /sys/kernel/mm/ksm is never
written), but the per-process state still shows: ``ksm_merge_any`` (MMF_VM_MERGE_ANY, set by
prctl and inherited by fork, ksm_fork()), ``ksm_mergeable`` (some VMA is VM_MERGEABLE,
ksm_process_mergeable()) and the counters, all zero without a scan. Each step runs on a live
child (the differential harness's _child.py) and on a vmsim process; after each, the two
ksm_stat texts, ksm_merging_pages and the region's ``mg`` VmFlag must be equal, and every
prctl return value / errno too.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import vmsim
from vmsim.constants import (
    MADV_MERGEABLE,
    MADV_UNMERGEABLE,
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    MAP_SHARED,
    PR_GET_MEMORY_MERGE,
    PR_SET_MEMORY_MERGE,
    PROT_READ,
    PROT_WRITE,
)

from .live import LiveChild

pytestmark = pytest.mark.kernel

P = 4096
RW = PROT_READ | PROT_WRITE
NR_PRCTL = 157
KSM_PROC = Path("/proc/self/ksm_stat")


def _require_ksm() -> None:
    if not KSM_PROC.exists():
        pytest.skip("the kernel has no /proc/PID/ksm_stat (CONFIG_KSM off)")
    run = Path("/sys/kernel/mm/ksm/run")
    if run.exists() and run.read_text().strip() != "0":
        pytest.skip("ksmd is running: the counters would move under the test")


def _live_prctl(child: LiveChild, *args: int) -> int | str:
    ret, err = child.request(("sc", (NR_PRCTL, *args, *([0] * (5 - len(args))))))
    return errno.errorcode[err] if ret == -1 else ret


def _sim_prctl(p: vmsim.Process, *args: int) -> int | str:
    try:
        return p.prctl(*args)
    except OSError as e:
        return errno.errorcode[e.errno]


def _live_mg(child: LiveChild, addr: int) -> bool:
    block = _block(Path(f"/proc/{child.pid}/smaps").read_text(), addr)
    return " mg" in block.split("VmFlags:")[1]


def _sim_mg(p: vmsim.Process, addr: int) -> bool:
    return " mg" in _block(p.smaps(), addr).split("VmFlags:")[1]


def _block(smaps: str, addr: int) -> str:
    blocks = smaps.split("\n")
    out: list[str] = []
    inside = False
    for line in blocks:
        head = line.split(" ", 1)[0]
        if "-" in head and ":" not in head:
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= addr < hi
        if inside:
            out.append(line)
    assert out, f"no VMA at {addr:#x}"
    return "\n".join(out)


class Pair:
    """A live process and a vmsim process driven step by step."""

    def __init__(self, live: LiveChild, sim: vmsim.Process) -> None:
        self.live = live
        self.sim = sim

    def check(self, addrs: tuple[int, int], what: str) -> str:
        """Compare after a step; ``addrs`` = (live, vmsim) address of one region."""
        live = Path(f"/proc/{self.live.pid}/ksm_stat").read_text()
        assert self.sim.ksm_stat() == live, what
        merging = Path(f"/proc/{self.live.pid}/ksm_merging_pages").read_text()
        assert self.sim.ksm_merging_pages() == merging, what
        assert _sim_mg(self.sim, addrs[1]) == _live_mg(self.live, addrs[0]), what
        return live

    def prctl(self, *args: int) -> int | str:
        a = _live_prctl(self.live, *args)
        b = _sim_prctl(self.sim, *args)
        assert a == b, f"prctl{args}: kernel {a}, vmsim {b}"
        return a

    def mmap(self, length: int, flags: int = MAP_PRIVATE | MAP_ANONYMOUS) -> tuple[int, int]:
        out = self.live.mmap(0, length, RW, flags)
        assert out.ret is not None, out
        addr = self.sim.mmap(0, length, RW, flags)
        return out.ret, addr


def test_madvise_prctl_fork_and_unmerge_show_in_ksm_stat() -> None:
    _require_ksm()
    m = vmsim.Machine()
    with LiveChild() as live:
        pair = Pair(live, m.spawn())
        la, sa = pair.mmap(8 * P)
        lb, sb = pair.mmap(4 * P)
        for i in range(8):  # fault the pages in with writes, as a program would
            live.write(la + i * P, bytes([i + 1]) * 64)
            pair.sim.write(sa + i * P, bytes([i + 1]) * 64)
        text = pair.check((la, sa), "fresh")
        assert "ksm_merge_any: no\nksm_mergeable: no\n" in text
        assert pair.prctl(PR_GET_MEMORY_MERGE) == 0

        # MADV_MERGEABLE on one region: the mm is mergeable, not merge-any
        assert live.madvise(la, 8 * P, MADV_MERGEABLE).ret == 0
        pair.sim.madvise(sa, 8 * P, MADV_MERGEABLE)
        text = pair.check((la, sa), "after MADV_MERGEABLE")
        assert "ksm_mergeable: yes" in text and "ksm_merge_any: no" in text
        # and back: no VMA is VM_MERGEABLE any more (the mm_slot stays; no ksmd to drop it)
        assert live.madvise(la, 8 * P, MADV_UNMERGEABLE).ret == 0
        pair.sim.madvise(sa, 8 * P, MADV_UNMERGEABLE)
        assert "ksm_mergeable: no" in pair.check((la, sa), "after MADV_UNMERGEABLE")

        # the prctl's argument checks (kernel/sys.c): unused arguments must be 0
        assert pair.prctl(PR_SET_MEMORY_MERGE, 1, 1) == "EINVAL"
        assert pair.prctl(PR_GET_MEMORY_MERGE, 1) == "EINVAL"
        assert pair.prctl(PR_SET_MEMORY_MERGE, 0) == 0  # not set: nothing to do
        assert pair.prctl(PR_SET_MEMORY_MERGE, 1) == 0
        assert pair.prctl(PR_SET_MEMORY_MERGE, 1) == 0  # already set
        assert pair.prctl(PR_GET_MEMORY_MERGE) == 1
        text = pair.check((la, sa), "after PR_SET_MEMORY_MERGE")
        assert "ksm_merge_any: yes\nksm_mergeable: yes\n" in text
        assert _sim_mg(pair.sim, sb)
        # a new private mapping is born VM_MERGEABLE (ksm_vma_flags()); a shared one is not
        lc, sc = pair.mmap(2 * P)
        assert pair.check((lc, sc), "new private mapping") == text
        assert _sim_mg(pair.sim, sc)
        ld, sd = pair.mmap(2 * P, MAP_SHARED | MAP_ANONYMOUS)
        pair.check((ld, sd), "new shared mapping")
        assert not _sim_mg(pair.sim, sd)

        # fork: the child inherits MMF_VM_MERGE_ANY and the VM_MERGEABLE VMAs
        lchild = live.fork()
        schild = pair.sim.fork()
        kid = Pair(lchild, schild)
        assert kid.prctl(PR_GET_MEMORY_MERGE) == 1
        text = kid.check((la, sa), "forked child")
        assert "ksm_merge_any: yes\nksm_mergeable: yes\n" in text
        le, se = kid.mmap(P)
        kid.check((le, se), "child's new mapping")
        assert _sim_mg(schild, se)
        # MADV_UNMERGEABLE in the child: one region loses mg, the others keep it
        assert lchild.madvise(la, 8 * P, MADV_UNMERGEABLE).ret == 0
        schild.madvise(sa, 8 * P, MADV_UNMERGEABLE)
        kid.check((la, sa), "child after MADV_UNMERGEABLE")
        assert not _sim_mg(schild, sa)
        # PR_SET_MEMORY_MERGE 0 in the child: every VM_MERGEABLE VMA is unmerged
        assert kid.prctl(PR_SET_MEMORY_MERGE, 0) == 0
        text = kid.check((lb, sb), "child after PR_SET_MEMORY_MERGE 0")
        assert "ksm_merge_any: no\nksm_mergeable: no\n" in text
        assert kid.prctl(PR_GET_MEMORY_MERGE) == 0
        # the parent is untouched
        assert pair.prctl(PR_GET_MEMORY_MERGE) == 1
        pair.check((lb, sb), "parent after the child's changes")
        lchild.close()


def test_merge_any_off_clears_madvised_regions_too() -> None:
    """ksm_disable_merge_any() -> ksm_del_vmas(): every VM_MERGEABLE VMA loses the flag,
    the ones MADV_MERGEABLE set as well."""
    _require_ksm()
    m = vmsim.Machine()
    with LiveChild() as live:
        pair = Pair(live, m.spawn())
        la, sa = pair.mmap(4 * P)
        assert live.madvise(la, 4 * P, MADV_MERGEABLE).ret == 0
        pair.sim.madvise(sa, 4 * P, MADV_MERGEABLE)
        assert pair.prctl(PR_SET_MEMORY_MERGE, 1) == 0
        pair.check((la, sa), "merge-any on")
        assert pair.prctl(PR_SET_MEMORY_MERGE, 0) == 0
        text = pair.check((la, sa), "merge-any off")
        assert "ksm_mergeable: no" in text
        assert not _sim_mg(pair.sim, sa)


EXEC_PROBE = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(67, 1, 0, 0, 0) != 0:
    sys.exit(3)
os.execv("/bin/sh", ["sh", "-c", "cat /proc/$$/ksm_stat; echo ==; cat /proc/$$/smaps"])
"""


def _mg_by_name(smaps: str) -> dict[str, bool]:
    """VMA name -> whether every VMA of that name has the mg VmFlag."""
    out: dict[str, bool] = {}
    name = ""
    for line in smaps.split("\n"):
        head = line.split(" ", 1)[0]
        if "-" in head and ":" not in head:
            fields = line.split()
            name = fields[5] if len(fields) > 5 else ""
        elif line.startswith("VmFlags:"):
            mg = " mg" in line
            out[name] = out.get(name, True) and mg
    return out


def test_merge_any_survives_exec() -> None:
    """ksm_execve(): MMF_VM_MERGE_ANY is kept by exec; the program's and the interpreter's
    mappings are born VM_MERGEABLE, the stack (set up before) and the vDSO are not."""
    import subprocess
    import sys

    _require_ksm()
    out = subprocess.run(
        [sys.executable, "-c", EXEC_PROBE], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    live_stat, live_smaps = out.split("==\n")
    m = vmsim.Machine()
    p = m.spawn()
    assert p.prctl(PR_SET_MEMORY_MERGE, 1) == 0
    p.execve("/bin/sh")
    assert p.ksm_stat() == live_stat
    live = _mg_by_name(live_smaps)
    sim = _mg_by_name(p.smaps())
    binary = os.path.realpath("/bin/sh")
    for name in ("[stack]", "[vdso]", "[vvar]"):
        assert sim[name] == live[name], name
    assert live[binary] and sim["/bin/sh"]  # the model names it by the path it was given
    assert not live["[stack]"]
