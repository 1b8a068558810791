"""Exceptions for what Linux reports with a signal rather than an errno."""

from __future__ import annotations

import errno
import os

from vmsim.constants import BUS_ADRERR, SEGV_ACCERR, SEGV_MAPERR, SIGBUS, SIGSEGV


def oserror(code: int) -> OSError:
    """An OSError carrying ``code`` and its strerror text, as the os module raises."""
    return OSError(code, os.strerror(code))


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


__all__ = ["BusError", "Segfault", "errno", "oserror"]
