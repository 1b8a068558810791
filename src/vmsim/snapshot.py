"""Rebuild an address space from a real /proc/PID/maps or smaps text, and the usual layout of
a fresh process.

A maps line cannot show every hidden state Linux keeps; what smaps shows is used
(``VmFlags`` for VM_ACCOUNT/VM_NORESERVE/..., ``Anonymous`` > 0 for an anon_vma), the rest
is inferred: private writable VMAs are taken to have been written (they have an anon_vma
and VM_ACCOUNT), anonymous ``vm_pgoff`` is ``start >> 12``, all VMAs of one file share one
open file.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from vmsim.constants import PAGE_SHIFT
from vmsim.mm.core import AddressSpace
from vmsim.mm.flags import (
    VDSO_FLAGS,
    VM_ACCOUNT,
    VM_EXEC,
    VM_GROWSDOWN,
    VM_MAYEXEC,
    VM_MAYREAD,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    VVAR_FLAGS,
    vmflags_from_text,
)
from vmsim.mm.vma import AnonVma, Inode, OpenFile, Vma

_LINE = re.compile(
    r"^([0-9a-f]+)-([0-9a-f]+)\s+([r-][w-][x-][ps])\s+([0-9a-f]+)\s+"
    r"([0-9a-f]+):([0-9a-f]+)\s+(\d+)(?:\s+(.*))?$"
)
_SPECIAL = ("[vdso]", "[vvar]", "[vvar_vclock]", "[uprobes]", "[sigpage]", "[vectors]")


class SnapshotError(ValueError):
    """A maps/smaps text that cannot be parsed; names the line."""

    def __init__(self, lineno: int, line: str, why: str) -> None:
        super().__init__(f"line {lineno}: {why}: {line!r}")
        self.lineno = lineno


@dataclass
class MapsEntry:
    start: int
    end: int
    perms: str
    offset: int
    dev: tuple[int, int]
    ino: int
    name: str | None
    vmflags: int | None = None  # from smaps VmFlags
    anonymous_kb: int | None = None  # from smaps Anonymous
    lineno: int = 0
    rss_kb: int | None = None  # from smaps Rss, Pss, Swap (pmap -x, smem)
    pss_kb: int | None = None
    swap_kb: int | None = None


_USAGE_FIELDS = {"Rss": "rss_kb", "Pss": "pss_kb", "Swap": "swap_kb"}


def parse(text: str) -> list[MapsEntry]:
    """Parse maps or smaps text (also a maps section pasted from an hs_err file)."""
    entries: list[MapsEntry] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        m = _LINE.match(line)
        if m:
            name = m.group(8)
            name = name.strip() if name and name.strip() else None
            entries.append(
                MapsEntry(
                    int(m.group(1), 16),
                    int(m.group(2), 16),
                    m.group(3),
                    int(m.group(4), 16),
                    (int(m.group(5), 16), int(m.group(6), 16)),
                    int(m.group(7)),
                    name,
                    lineno=lineno,
                )
            )
            continue
        if entries and line.startswith("VmFlags:"):
            entries[-1].vmflags = vmflags_from_text(line[8:])
            continue
        if entries and line.startswith("Anonymous:"):
            entries[-1].anonymous_kb = int(line.split()[1])
            continue
        field_name = line.split(":", 1)[0]
        if entries and field_name in _USAGE_FIELDS:
            try:
                setattr(entries[-1], _USAGE_FIELDS[field_name], int(line.split()[1]))
            except (IndexError, ValueError):
                raise SnapshotError(lineno, line, f"bad smaps {field_name} line") from None
            continue
        if entries and re.match(r"^[A-Za-z_]+:", line):
            continue  # other smaps fields
        raise SnapshotError(lineno, line, "not a maps or smaps line")
    for prev, cur in itertools.pairwise(entries):
        if cur.start < prev.end and cur.name != "[vsyscall]":
            raise SnapshotError(
                cur.lineno, f"{cur.start:x}-{cur.end:x}", "overlaps the line before"
            )
    for e in entries:
        if e.start >= e.end or e.start & 0xFFF or e.end & 0xFFF:
            raise SnapshotError(e.lineno, f"{e.start:x}-{e.end:x}", "not a page-aligned range")
    return entries


def _default_flags(e: MapsEntry) -> int:
    p = e.perms
    flags = VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
    if p[0] == "r":
        flags |= VM_READ
    if p[1] == "w":
        flags |= VM_WRITE
    if p[2] == "x":
        flags |= VM_EXEC
    if p[3] == "s":
        flags |= VM_MAYSHARE | VM_SHARED
    elif p[1] == "w":
        flags |= VM_ACCOUNT
    if e.name == "[stack]":
        flags |= VM_GROWSDOWN
    if e.name in ("[vvar]", "[vvar_vclock]"):
        flags = VVAR_FLAGS
    elif e.name == "[vdso]":
        flags = VDSO_FLAGS
    return flags


def build(mm: AddressSpace, entries: list[MapsEntry]) -> None:
    """Insert the snapshot's VMAs into an empty ``mm`` and set brk/stack/mmap_base hints."""
    files: dict[tuple[tuple[int, int], int, str], OpenFile] = {}
    heap = stack = None
    for e in entries:
        if e.name == "[vsyscall]":
            continue
        flags = e.vmflags if e.vmflags is not None else _default_flags(e)
        file = None
        special = None
        pgoff = e.start >> PAGE_SHIFT
        if e.name and e.name in _SPECIAL:
            special = e.name
            pgoff = 0
        elif e.name and not e.name.startswith("[") and (e.ino or e.name.startswith("/")):
            path = e.name
            deleted = path.endswith(" (deleted)")
            if deleted:
                path = path[: -len(" (deleted)")]
            key = (e.dev, e.ino, path)
            f = files.get(key)
            if f is None:
                shmem = e.dev == (0, 1)
                inode = Inode(path, e.dev, e.ino, size=1 << 62, shmem=shmem, deleted=deleted)
                f = files[key] = OpenFile(
                    inode, writable=not (e.perms[3] == "s" and e.perms[1] != "w")
                )
            file = f
            pgoff = e.offset >> PAGE_SHIFT
        vma = Vma(e.start, e.end, flags, pgoff, file, name=special)
        has_anon = (
            e.anonymous_kb > 0
            if e.anonymous_kb is not None
            else (e.perms[3] == "p" and e.perms[1] == "w")
        )
        if has_anon and special is None and not (flags & VM_SHARED):
            vma.anon_vma = AnonVma()
        mm.tree.insert_new(vma)
        if e.name == "[heap]":
            heap = vma
        elif e.name == "[stack]":
            stack = vma
    if heap is not None:
        mm.start_brk, mm.brk = heap.start, heap.end
    else:
        first = mm.tree.first()
        if first is not None:
            end = first.end
            for v in mm.tree.items_from(first.start):
                if v.file is not first.file or (v.start != end and v is not first):
                    break
                end = v.end
            mm.start_brk = mm.brk = end
    if stack is not None:
        mm.start_stack = stack.end - 0x1000
        below = mm.tree.prev(stack)
        if below is not None:
            mm.mmap_base = below.end


# The layout of a fresh process without ASLR (as under `setarch -R`): a PIE program,
# [heap], libc, an anonymous area, [vvar], [vvar_vclock], [vdso], ld.so and [stack].
LINUX_LAYOUT = """\
555555554000-555555556000 r--p 00000000 fe:00 1048577                    /usr/bin/app
VmFlags: rd mr mw me
555555556000-55555555b000 r-xp 00002000 fe:00 1048577                    /usr/bin/app
VmFlags: rd ex mr mw me
55555555b000-55555555e000 r--p 00007000 fe:00 1048577                    /usr/bin/app
VmFlags: rd mr mw me
55555555e000-55555555f000 r--p 00009000 fe:00 1048577                    /usr/bin/app
VmFlags: rd mr mw me ac
Anonymous:             4 kB
55555555f000-555555560000 rw-p 0000a000 fe:00 1048577                    /usr/bin/app
VmFlags: rd wr mr mw me ac
Anonymous:             4 kB
555555560000-555555581000 rw-p 00000000 00:00 0                          [heap]
VmFlags: rd wr mr mw me ac
Anonymous:             4 kB
7ffff7d7f000-7ffff7d82000 rw-p 00000000 00:00 0
VmFlags: rd wr mr mw me ac
Anonymous:             4 kB
7ffff7d82000-7ffff7da8000 r--p 00000000 fe:00 1048600                    /usr/lib/x86_64-linux-gnu/libc.so.6
VmFlags: rd mr mw me
7ffff7da8000-7ffff7efe000 r-xp 00026000 fe:00 1048600                    /usr/lib/x86_64-linux-gnu/libc.so.6
VmFlags: rd ex mr mw me
7ffff7efe000-7ffff7f51000 r--p 0017c000 fe:00 1048600                    /usr/lib/x86_64-linux-gnu/libc.so.6
VmFlags: rd mr mw me
7ffff7f51000-7ffff7f55000 r--p 001cf000 fe:00 1048600                    /usr/lib/x86_64-linux-gnu/libc.so.6
VmFlags: rd mr mw me ac
Anonymous:            16 kB
7ffff7f55000-7ffff7f57000 rw-p 001d3000 fe:00 1048600                    /usr/lib/x86_64-linux-gnu/libc.so.6
VmFlags: rd wr mr mw me ac
Anonymous:             8 kB
7ffff7f57000-7ffff7f64000 rw-p 00000000 00:00 0
VmFlags: rd wr mr mw me ac
Anonymous:            20 kB
7ffff7fc0000-7ffff7fc2000 rw-p 00000000 00:00 0
VmFlags: rd wr mr mw me ac
Anonymous:             8 kB
7ffff7fc2000-7ffff7fc6000 r--p 00000000 00:00 0                          [vvar]
VmFlags: rd mr pf io de dd
7ffff7fc6000-7ffff7fc8000 r--p 00000000 00:00 0                          [vvar_vclock]
VmFlags: rd mr pf io de dd
7ffff7fc8000-7ffff7fca000 r-xp 00000000 00:00 0                          [vdso]
VmFlags: rd ex mr mw me de
7ffff7fca000-7ffff7fcb000 r--p 00000000 fe:00 1048590                    /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
VmFlags: rd mr mw me
7ffff7fcb000-7ffff7ff1000 r-xp 00001000 fe:00 1048590                    /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
VmFlags: rd ex mr mw me
7ffff7ff1000-7ffff7ffb000 r--p 00027000 fe:00 1048590                    /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
VmFlags: rd mr mw me
7ffff7ffb000-7ffff7ffd000 r--p 00031000 fe:00 1048590                    /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
VmFlags: rd mr mw me ac
Anonymous:             8 kB
7ffff7ffd000-7ffff7fff000 rw-p 00033000 fe:00 1048590                    /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
VmFlags: rd wr mr mw me ac
Anonymous:             8 kB
7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0                          [stack]
VmFlags: rd wr mr mw me gd ac
Anonymous:            12 kB
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
"""
LINUX_LAYOUT_MMAP_BASE = 0x7FFFF7FFF000
LINUX_LAYOUT_BRK = 0x555555581000


__all__ = [
    "LINUX_LAYOUT",
    "LINUX_LAYOUT_BRK",
    "LINUX_LAYOUT_MMAP_BASE",
    "MapsEntry",
    "SnapshotError",
    "build",
    "parse",
]
