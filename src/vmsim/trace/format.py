"""Syscall arguments printed back the way strace prints them: flags by name
(``PROT_READ|PROT_WRITE``, ``MAP_PRIVATE|MAP_ANONYMOUS``), addresses in hex, ``NULL``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from vmsim import constants as c
from vmsim.trace.events import Arg

__all__ = ["format_args", "format_flags"]

_PROT: Final = [
    ("PROT_READ", c.PROT_READ),
    ("PROT_WRITE", c.PROT_WRITE),
    ("PROT_EXEC", c.PROT_EXEC),
]
_PROT_EXTRA: Final = [("PROT_GROWSDOWN", 0x01000000), ("PROT_GROWSUP", 0x02000000)]
_MAP_TYPE: Final = {0x01: "MAP_SHARED", 0x02: "MAP_PRIVATE", 0x03: "MAP_SHARED_VALIDATE"}
_MAP: Final = [
    ("MAP_FIXED", 0x10),
    ("MAP_ANONYMOUS", 0x20),
    ("MAP_32BIT", 0x40),
    ("MAP_GROWSDOWN", 0x100),
    ("MAP_DENYWRITE", 0x800),
    ("MAP_EXECUTABLE", 0x1000),
    ("MAP_LOCKED", 0x2000),
    ("MAP_NORESERVE", 0x4000),
    ("MAP_POPULATE", 0x8000),
    ("MAP_NONBLOCK", 0x10000),
    ("MAP_STACK", 0x20000),
    ("MAP_HUGETLB", 0x40000),
    ("MAP_SYNC", 0x80000),
    ("MAP_FIXED_NOREPLACE", 0x100000),
    ("MAP_UNINITIALIZED", 0x4000000),
]
_MREMAP: Final = [("MREMAP_MAYMOVE", 1), ("MREMAP_FIXED", 2), ("MREMAP_DONTUNMAP", 4)]
_MLOCK: Final = [("MLOCK_ONFAULT", 1)]
_SHM: Final = [
    ("SHM_RDONLY", 0o10000),
    ("SHM_RND", 0o20000),
    ("SHM_REMAP", 0o40000),
    ("SHM_EXEC", 0o100000),
]
_MADV: Final = {
    getattr(c, n): n for n in dir(c) if n.startswith("MADV_") and isinstance(getattr(c, n), int)
}


def format_flags(value: int, names: Sequence[tuple[str, int]], zero: str = "0") -> str:
    """``value`` as ``NAME|NAME|0x...`` (the bits no name covers in hex at the end)."""
    parts = []
    rest = value
    for name, bit in names:
        if rest & bit:
            parts.append(name)
            rest &= ~bit
    if rest:
        parts.append(hex(rest))
    return "|".join(parts) if parts else zero


def _prot(v: int) -> str:
    return format_flags(v, _PROT + _PROT_EXTRA, "PROT_NONE")


def _map(v: int) -> str:
    kind = _MAP_TYPE.get(v & 0x0F)
    rest = v & ~0x0F if kind else v
    huge = (rest >> c.MAP_HUGE_SHIFT) & 0x3F if rest & c.MAP_HUGETLB else 0
    if huge:
        rest &= ~(0x3F << c.MAP_HUGE_SHIFT)
    text = format_flags(rest, _MAP, "")
    out = "|".join(p for p in (kind, text) if p) or "0"
    return out + (f"|{huge}<<MAP_HUGE_SHIFT" if huge else "")


def _addr(v: int) -> str:
    return "NULL" if v == 0 else hex(v)


def _num(v: int) -> str:
    return str(v) if -10 < v < 10 else hex(v)


_KINDS: Final = {
    "mmap": (_addr, _num, _prot, _map, str, _num),
    "munmap": (_addr, _num),
    "mprotect": (_addr, _num, _prot),
    "pkey_mprotect": (_addr, _num, _prot, str),
    "mremap": (_addr, _num, _num, lambda v: format_flags(v, _MREMAP), _addr),
    "madvise": (_addr, _num, lambda v: _MADV.get(v, str(v))),
    "brk": (_addr,),
    "mlock": (_addr, _num),
    "mlock2": (_addr, _num, lambda v: format_flags(v, _MLOCK)),
    "munlock": (_addr, _num),
    "shmat": (str, _addr, lambda v: format_flags(v, _SHM)),
    "shmdt": (_addr,),
}


def format_args(name: str, args: Sequence[Arg]) -> list[str]:
    """Each argument of ``name`` as strace would print it (unknown calls: numbers in hex)."""
    kinds = _KINDS.get(name, ())
    out = []
    for i, a in enumerate(args):
        if isinstance(a, int):
            fmt = kinds[i] if i < len(kinds) else _num
            out.append(fmt(a))
        else:
            out.append(str(a))
    return out
