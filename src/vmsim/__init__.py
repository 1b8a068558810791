"""vmsim: a faithful, executable model of Linux virtual memory on x86-64."""

from vmsim import constants as _constants
from vmsim.constants import *  # noqa: F403
from vmsim.errors import BusError, KernelPanic, Segfault
from vmsim.machine import Machine, parse_size
from vmsim.process import Process
from vmsim.snapshot import SnapshotError

__version__ = "0.1.0"

__all__ = [
    "BusError",
    "KernelPanic",
    "Machine",
    "Process",
    "Segfault",
    "SnapshotError",
    "parse_size",
    *[n for n in vars(_constants) if n.isupper() and not n.startswith("_")],
]
