"""Recording with ASLR off, as ``setarch -R`` does: ``vmsim record`` and the side channel's
lackey victim run their programs this way, so the addresses in a trace match the layout."""

from __future__ import annotations

import ctypes

ADDR_NO_RANDOMIZE = 0x0040000  # include/uapi/linux/personality.h


def no_aslr() -> None:
    """In the child before exec: personality(ADDR_NO_RANDOMIZE), as ``setarch -R`` does
    (inherited by valgrind: its own mappings and the kernel's stack and vdso stay put)."""
    libc = ctypes.CDLL(None, use_errno=True)
    current = libc.personality(0xFFFFFFFF)
    if current == -1 or libc.personality(current | ADDR_NO_RANDOMIZE) == -1:
        raise OSError(ctypes.get_errno(), "personality(ADDR_NO_RANDOMIZE) failed")


__all__ = ["ADDR_NO_RANDOMIZE", "no_aslr"]
