"""Errors: OSError with the kernel's errno (and, for the ENOMEM verdict, why), and the
exceptions for what Linux reports with a signal rather than an errno."""

from __future__ import annotations

import os

from vmsim.constants import BUS_ADRERR, SEGV_ACCERR, SEGV_MAPERR, SIGBUS, SIGSEGV

# Why a call failed, for the ENOMEM verdict (vmsim replay, vmsim maps).
CAUSE_MAP_COUNT = "map_count"  # vm.max_map_count reached
CAUSE_OVERCOMMIT = "overcommit"  # __vm_enough_memory() refused the commit charge
CAUSE_RLIMIT_AS = "rlimit_as"
CAUSE_RLIMIT_DATA = "rlimit_data"
CAUSE_ADDRESS_SPACE = "address_space"  # no free range large enough / beyond TASK_SIZE


class MmError(OSError):
    """``OSError(errno, strerror)`` as the os module raises it, plus ``cause`` (one of the
    CAUSE_* strings, or None) and ``detail`` (the kernel check that refused)."""

    def __init__(self, code: int, cause: str | None = None, detail: str = "") -> None:
        super().__init__(code, os.strerror(code))
        self.cause = cause
        self.detail = detail


def oserror(code: int, cause: str | None = None, detail: str = "") -> MmError:
    """The error to raise for ``code`` (an OSError subclass)."""
    return MmError(code, cause, detail)


class Segfault(Exception):
    """A user access the kernel answers with SIGSEGV (``code`` is SEGV_MAPERR or SEGV_ACCERR)."""

    signo = SIGSEGV

    def __init__(self, addr: int, code: int) -> None:
        kind = {SEGV_MAPERR: "SEGV_MAPERR", SEGV_ACCERR: "SEGV_ACCERR"}.get(code, str(code))
        super().__init__(f"SIGSEGV {kind} at {addr:#x}")
        self.addr = addr
        self.code = code


class BusError(Exception):
    """A user access past the end of the file behind a mapping (SIGBUS, BUS_ADRERR)."""

    signo = SIGBUS

    def __init__(self, addr: int, code: int = BUS_ADRERR) -> None:
        super().__init__(f"SIGBUS BUS_ADRERR at {addr:#x}")
        self.addr = addr
        self.code = code


class KernelPanic(Exception):
    """The kernel would panic here (``Kernel panic - not syncing: <reason>``); the machine is
    dead and must not be used any further. Raised by the OOM killer when an allocation cannot
    be satisfied and every process is exempt (``oom_score_adj`` -1000): Linux prints ``Out of
    memory and no killable processes...`` and panics with ``System is deadlocked on memory``.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(
            f"Kernel panic - not syncing: {reason}" + (f" ({detail})" if detail else "")
        )
        self.reason = reason
        self.detail = detail


class OomKilled(ProcessLookupError):
    """The OOM killer chose this process while it was running: it is gone."""

    def __init__(self, pid: int) -> None:
        super().__init__(f"process {pid} was killed by the OOM killer")
        self.pid = pid


__all__ = [
    "CAUSE_ADDRESS_SPACE",
    "CAUSE_MAP_COUNT",
    "CAUSE_OVERCOMMIT",
    "CAUSE_RLIMIT_AS",
    "CAUSE_RLIMIT_DATA",
    "BusError",
    "KernelPanic",
    "MmError",
    "OomKilled",
    "Segfault",
    "oserror",
]
