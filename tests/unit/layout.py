"""Draw a process's VMAs around a base address, so each test states the layout literally.

Everything here reads only ``/proc/pid/maps`` text (``p.maps()``), the same text Linux prints,
so the helpers work unchanged on the live kernel's ``/proc/self/maps``.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any, Protocol

PAGE = 4096

_LINE = re.compile(
    r"^(?P<start>[0-9a-f]{8,16})-(?P<end>[0-9a-f]{8,16}) (?P<perms>[r-][w-][x-][ps]) "
    r"(?P<offset>[0-9a-f]{8,16}) (?P<dev>[0-9a-f]{2,}:[0-9a-f]{2,}) (?P<inode>\d+) "
    r"(?P<pad> *)(?P<name>.*)$"
)


class HasMaps(Protocol):
    def maps(self) -> str: ...


@dataclass(frozen=True)
class MapsLine:
    """One parsed line of /proc/pid/maps."""

    start: int
    end: int
    perms: str
    offset: int
    dev: str
    inode: int
    name: str


def parse_maps(text: str) -> list[MapsLine]:
    """Parse maps text; every line must match the kernel's format exactly."""
    out = []
    for line in text.splitlines():
        m = _LINE.match(line)
        assert m is not None, f"malformed maps line: {line!r}"
        out.append(
            MapsLine(
                start=int(m["start"], 16),
                end=int(m["end"], 16),
                perms=m["perms"],
                offset=int(m["offset"], 16),
                dev=m["dev"],
                inode=int(m["inode"]),
                name=m["name"],
            )
        )
    return out


def vmas_in(p: HasMaps, base: int, npages: int) -> list[MapsLine]:
    """The maps lines that intersect [base, base + npages pages)."""
    end = base + npages * PAGE
    return [v for v in parse_maps(p.maps()) if v.start < end and v.end > base]


def regions(p: HasMaps, base: int, npages: int = 64, *, names: bool = False) -> list[str]:
    """VMAs meeting the window as ``"[s,e) perms"``, s and e in pages relative to ``base``.

    Bounds are not clipped to the window, so a VMA reaching outside it shows its true extent.
    """
    out = []
    for v in vmas_in(p, base, npages):
        s = (v.start - base) // PAGE
        e = (v.end - base) // PAGE
        text = f"[{s},{e}) {v.perms}"
        if names and v.name:
            text += f" {v.name}"
        out.append(text)
    return out


def draw(p: HasMaps, base: int, npages: int) -> str:
    """One character per page of the window: ``.`` unmapped, ``A``, ``B``... one letter per VMA.

    Letters are given in address order, so ``"AAAABBBB"`` is two VMAs and ``"AAAAAAAA"`` one.
    """
    cells = ["."] * npages
    for i, v in enumerate(vmas_in(p, base, npages)):
        letter = string.ascii_uppercase[i % 26]
        first = max(0, (v.start - base) // PAGE)
        last = min(npages, (v.end - base) // PAGE)
        for k in range(first, last):
            cells[k] = letter
    return "".join(cells)


def vmflags(smaps_text: str, start: int) -> list[str]:
    """The VmFlags mnemonics of the smaps record whose VMA starts at ``start``."""
    header = f"{start:08x}-"
    inside = False
    for line in smaps_text.splitlines():
        if _LINE.match(line):
            inside = line.startswith(header)
        elif inside and line.startswith("VmFlags:"):
            return line[len("VmFlags:") :].split()
    raise AssertionError(f"no smaps record at {start:#x}")


# --- building layouts at fixed pages --------------------------------------------------------------
# Tests place their VMAs at BASE + page * PAGE with MAP_FIXED_NOREPLACE, far from anything a
# fresh or "linux" process has (and from anything the live kernel's python process has).

BASE = 0x1_0000_0000
PROT_READ, PROT_WRITE, PROT_EXEC = 0x1, 0x2, 0x4
RW = PROT_READ | PROT_WRITE
MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS = 0x01, 0x02, 0x20
MAP_FIXED, MAP_FIXED_NOREPLACE = 0x10, 0x100000


def at(page: int) -> int:
    """The address of page ``page`` of the test window."""
    return BASE + page * PAGE


def anon(p: Any, page: int, npages: int, prot: int = RW, extra: int = 0) -> int:
    """mmap a private anonymous region at window page ``page`` (must be free)."""
    flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | extra
    addr = p.mmap(at(page), npages * PAGE, prot, flags)
    assert addr == at(page)
    return addr


def shared(p: Any, page: int, npages: int, fd: int, pgoff: int, prot: int = RW) -> int:
    """mmap ``fd`` MAP_SHARED at window page ``page`` from file page ``pgoff``."""
    addr = p.mmap(at(page), npages * PAGE, prot, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, pgoff * PAGE)
    assert addr == at(page)
    return addr


def touch(p: Any, page: int, npages: int = 1) -> None:
    """Write-fault ``npages`` pages starting at window page ``page`` (gives the VMA an anon_vma)."""
    for k in range(npages):
        p.write(at(page + k), b"x")


def peek(p: Any, page: int, npages: int = 1) -> None:
    """Read-fault pages (maps the zero page: no anon_vma)."""
    for k in range(npages):
        p.read(at(page + k), 1)


def offsets(p: HasMaps, base: int, npages: int) -> list[int]:
    """The offset column (vm_pgoff << 12 for file VMAs) of each VMA meeting the window."""
    return [v.offset for v in vmas_in(p, base, npages)]
