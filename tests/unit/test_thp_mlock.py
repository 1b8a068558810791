"""mlock of THPs (issue 13), from mm/mlock.c of Linux 6.18: mlock_folio() / mlock_new_folio()
count a large folio's pages (NR_MLOCK, unevictable_pgs_mlocked, and unevictable_pgs_culled
when __mlock_folio() moves it to the unevictable list, at once: a large folio drains the
batch); mlock_pte_range() locks a PMD-mapped THP whole and a PTE-mapped one only when one run
of PTEs maps all of it inside the range (folio_mlock_step(), allow_mlock_munlock());
__folio_add_anon_rmap() never mlocks a large folio; munlock_vma_folio() on unmap or PMD split
in a locked VMA. The figures were also seen on this machine's kernel for the same steps (see
the mlock scripts of tests/differential/test_thp.py)."""

from __future__ import annotations

import vmsim
from vmsim.constants import (
    MADV_HUGEPAGE,
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    MCL_CURRENT,
    MCL_FUTURE,
    MCL_ONFAULT,
    PROT_READ,
    PROT_WRITE,
)
from vmsim.hw.pagetable import PMD_LEVEL, PTE_LEVEL
from vmsim.mm.huge_memory import deferred_split_scan

M2 = 2 << 20
P = 4096
RW = PROT_READ | PROT_WRITE
PFN = (1 << 55) - 1
KPF_ACTIVE = 1 << 6
KPF_UNEVICTABLE = 1 << 18
KPF_THP = 1 << 22
KPF_MLOCKED = 1 << 33
UNEVICTABLE = ("culled", "rescued", "mlocked", "munlocked")


def counters(m: vmsim.Machine) -> dict[str, int]:
    ev = m.memory.vmstat
    return {k: ev[f"unevictable_pgs_{k}"] for k in UNEVICTABLE}


def meminfo(m: vmsim.Machine, key: str) -> int:
    for line in m.meminfo().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def locked_kb(p: vmsim.Process) -> int:
    return sum(int(x.split()[1]) for x in p.smaps().splitlines() if x.startswith("Locked:"))


def huge(m: vmsim.Machine) -> tuple[vmsim.Process, int]:
    """A madvised 4 MiB mapping; returns its first 2 MiB-aligned address."""
    p = m.spawn()
    b = p.mmap(0, 3 * M2, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    a = (b + M2 - 1) & -M2
    p.madvise(a, M2 * 2 if a + 2 * M2 <= b + 3 * M2 else M2, MADV_HUGEPAGE)
    return p, a


def kpf(m: vmsim.Machine, p: vmsim.Process, addr: int) -> int:
    return m.kpageflags(p.pagemap(addr, 1)[0] & PFN)


def test_mlock_of_a_pmd_thp_locks_it_whole_and_munlock_rescues_it() -> None:
    m = vmsim.Machine()
    p, a = huge(m)
    p.write(a, b"x")
    p.mlock(a, M2)
    assert counters(m) == {"culled": 512, "rescued": 0, "mlocked": 512, "munlocked": 0}
    assert meminfo(m, "Mlocked") == meminfo(m, "Unevictable") == 2048
    assert locked_kb(p) == 2048
    for addr in (a, a + 5 * P, a + M2 - P):
        f = kpf(m, p, addr)
        assert f & KPF_MLOCKED and f & KPF_UNEVICTABLE and f & KPF_THP
        assert not f & KPF_ACTIVE  # __mlock_folio() clears PG_active
    m.check_memory()
    p.munlock(a, M2)
    assert counters(m) == {"culled": 512, "rescued": 512, "mlocked": 512, "munlocked": 512}
    assert meminfo(m, "Mlocked") == 0 and locked_kb(p) == 0
    assert not kpf(m, p, a) & (KPF_MLOCKED | KPF_UNEVICTABLE)
    m.check_memory()


def test_partial_mlock_splits_the_pmd_and_leaves_the_folio_unlocked() -> None:
    m = vmsim.Machine()
    p, a = huge(m)
    p.write(a, b"x")
    p.mlock(a + 4 * P, 8 * P)
    assert p.mm.pt.get(a).level == PTE_LEVEL
    assert m.memory.vmstat["thp_split_pmd"] == 1
    assert m.memory.vmstat["thp_deferred_split_page"] == 0  # every page still mapped
    assert counters(m) == dict.fromkeys(UNEVICTABLE, 0)
    assert locked_kb(p) == 32  # smaps Locked is the VMA's: its pages are present
    assert not kpf(m, p, a + 5 * P) & KPF_MLOCKED
    m.check_memory()


def test_pte_mapped_folio_is_mlocked_only_when_all_of_it_is_in_the_range() -> None:
    m = vmsim.Machine()
    p, a = huge(m)
    p.write(a, b"x")
    p.mprotect(a + 10 * P, P, PROT_READ)
    p.mprotect(a + 10 * P, P, RW)  # merged back: PTE-mapped, the folio whole
    assert p.mm.pt.get(a).level == PTE_LEVEL
    p.mlock(a, M2 - P)
    assert counters(m)["mlocked"] == 0
    p.munlock(a, M2)
    p.mlock(a, M2)
    assert counters(m) == {"culled": 512, "rescued": 0, "mlocked": 512, "munlocked": 0}
    assert kpf(m, p, a + M2 - P) & KPF_MLOCKED
    m.check_memory()
    # munlock of half: the walk meets the folio partly (a munlock is always allowed)
    p.munlock(a + M2 // 2, M2 // 2)
    assert counters(m)["munlocked"] == 512
    assert not kpf(m, p, a) & KPF_MLOCKED
    m.check_memory()


def test_thp_faults_in_a_locked_vma_are_mlocked_and_munmap_munlocks() -> None:
    """mlock() of an empty madvised range: the populate's THP faults map each folio mlocked
    (folio_add_lru_vma() -> mlock_new_folio()); munmap of a locked PMD munlocks it."""
    m = vmsim.Machine()
    p, a = huge(m)
    p.mlock(a, 2 * M2)
    assert p.mm.pt.get(a).level == p.mm.pt.get(a + M2).level == PMD_LEVEL
    assert counters(m) == {"culled": 1024, "rescued": 0, "mlocked": 1024, "munlocked": 0}
    p.munmap(a + M2, M2)
    assert counters(m) == {"culled": 1024, "rescued": 512, "mlocked": 1024, "munlocked": 512}
    assert meminfo(m, "Mlocked") == 2048
    m.check_memory()


def test_partial_munmap_of_a_locked_thp_munlocks_it_and_the_split_keeps_the_rest_locked() -> None:
    """munmap of one page of a locked THP: the VMA split splits the PMD inside a VM_LOCKED
    VMA (folio_remove_rmap_pmd() -> munlock_vma_folio(): munlocked); the folio is then
    partly mapped (deferred split). The shrinker splits it; the pages still mapped in the
    locked VMAs keep their lock, one per mapping."""
    m = vmsim.Machine()
    p, a = huge(m)
    p.write(a, b"x")
    p.mlock(a, M2)
    p.munmap(a + 100 * P, P)
    assert counters(m)["munlocked"] == 512
    assert m.memory.vmstat["thp_deferred_split_page"] == 1
    m.check_memory()
    assert deferred_split_scan(m.memory) == 1
    m.check_memory()


def test_mlock2_onfault_and_mlockall() -> None:
    """MLOCK_ONFAULT populates nothing; the THP fault maps the folio mlocked. mlockall
    (MCL_CURRENT) populates and locks the THPs of every VMA; MCL_FUTURE | MCL_ONFAULT locks
    the THP a later fault maps; the huge zero page is never mlocked."""
    m = vmsim.Machine()
    p, a = huge(m)
    p.mlock2(a, 2 * M2, 1)
    assert counters(m)["mlocked"] == 0
    p.write(a + P, b"y")
    p.read(a + M2, 1)  # the huge zero page
    assert counters(m) == {"culled": 512, "rescued": 0, "mlocked": 512, "munlocked": 0}
    m.check_memory()

    m = vmsim.Machine()
    p, a = huge(m)
    p.write(a, b"x")
    p.mlockall(MCL_CURRENT)
    assert kpf(m, p, a) & KPF_MLOCKED
    assert meminfo(m, "Mlocked") >= 4096  # both THPs (populated by write faults)
    m.check_memory()

    m = vmsim.Machine()
    p, a = huge(m)
    p.mlockall(MCL_FUTURE | MCL_ONFAULT)
    b = p.mmap(0, 3 * M2, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    h = (b + M2 - 1) & -M2
    p.madvise(h, M2, MADV_HUGEPAGE)
    before = counters(m)["mlocked"]
    p.write(h, b"z")
    assert p.mm.pt.get(h).level == PMD_LEVEL
    assert counters(m)["mlocked"] - before == 512
    m.check_memory()


def test_fork_child_cow_leaves_the_parents_lock() -> None:
    m = vmsim.Machine()
    p, a = huge(m)
    p.write(a, b"x")
    p.mlock(a, M2)
    c = p.fork()
    c.write(a + P, b"c")  # the child's VMA is not locked: its PMD split munlocks nothing
    assert counters(m)["munlocked"] == 0
    assert kpf(m, p, a) & KPF_MLOCKED
    m.check_memory()
