"""vmsim: a faithful, executable model of Linux virtual memory on x86-64.

The public surface:

- ``Machine`` (RAM, swap, the CPU, max_map_count and the other sysctls) and ``Process``
  (one method per syscall, /proc files, accesses through the TLB and page tables);
- the errors a call can raise besides ``OSError`` (which carries the kernel's errno):
  ``Segfault``, ``BusError``, ``OomKilled``, ``KernelPanic``, ``SnapshotError``; ``MmError`` is
  the ``OSError`` subclass that also says which limit refused the call;
- ``parse_size`` ("64M", "1G");
- the modules ``constants`` (PROT_*, MAP_*, MADV_*, MREMAP_*, ...: Linux's values, listed in
  ``vmsim.constants.__all__``) and ``procfs`` (the /proc text builders); the packages
  ``vmsim.trace`` (readers and replay), ``vmsim.analysis`` and ``vmsim.scenarios``.

The constants are also attributes of this package (``vmsim.PROT_READ``), as ``os`` and
``mmap`` offer theirs, but ``from vmsim import *`` brings only the names below.
"""

from importlib.metadata import PackageNotFoundError, version

from vmsim import constants, procfs
from vmsim.constants import *  # noqa: F403
from vmsim.errors import BusError, KernelPanic, MmError, OomKilled, Segfault
from vmsim.machine import Machine, parse_size
from vmsim.process import Process
from vmsim.snapshot import SnapshotError

try:
    __version__ = version("vmsim")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "BusError",
    "KernelPanic",
    "Machine",
    "MmError",
    "OomKilled",
    "Process",
    "Segfault",
    "SnapshotError",
    "constants",
    "parse_size",
    "procfs",
]
