"""What the THP unit tests (test_thp.py, test_mthp.py) read back from the model: its /proc
text parsed here, independently of vmsim's own readers, and the kpageflags/pagemap bits
(include/uapi/linux/kernel-page-flags.h, Documentation/admin-guide/mm/pagemap.rst)."""

from __future__ import annotations

import vmsim
from vmsim.constants import PROT_READ, PROT_WRITE

M2 = 2 << 20
P = 4096
RW = PROT_READ | PROT_WRITE
PFN = (1 << 55) - 1
KPF_THP = 1 << 22
KPF_HEAD = 1 << 15
KPF_TAIL = 1 << 16
KPF_ZERO = 1 << 24


def vmstat(m: vmsim.Machine) -> dict[str, int]:
    """/proc/vmstat of the model as {name: value}."""
    return {k: int(v) for k, v in (line.split() for line in m.vmstat().splitlines())}


def smaps(p: vmsim.Process, addr: int) -> dict[str, int]:
    """The kB fields and THPeligible of the smaps block of the VMA starting at ``addr``."""
    out: dict[str, int] = {}
    on = False
    for line in p.smaps().splitlines():
        first = line.split(" ", 1)[0]
        if "-" in first and ":" not in first:
            on = int(first.split("-")[0], 16) == addr
            continue
        if on and line.endswith(" kB"):
            k, v = line.split(":", 1)
            out[k] = int(v.split()[0])
        elif on and line.startswith("THPeligible:"):
            out["THPeligible"] = int(line.split()[1])
    return out
