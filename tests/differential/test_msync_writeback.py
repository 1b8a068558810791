"""msync() write-back, kernel against vmsim: a MAP_SHARED mapping of a regular file on a
filesystem that writes back (ext4 here, not tmpfs: tmpfs has nothing to write), written, then
msync'd. MS_SYNC of part of the mapping writes the dirty pages of that part of the file only
(vfs_fsync_range() -> file_write_and_wait_range()), MS_ASYNC none (a no-op since 2.6.19); a
written-back page is write-protected again (folio_mkclean()), so the next write re-dirties it.

Compared after each step: the VMA's Private_Dirty / Shared_Dirty / Shared_Clean /
Private_Clean from smaps, the return value, and the file's bytes (through read() on the live
side, the bytes the model wrote to its disk on the model side) against the mapped bytes.

The live file is written one page per write(): ext4 (6.16+) caches a 16 KB write as one large
folio, which one store dirties whole; the model's page cache has 4 KB pages only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest

import vmsim
from vmsim.constants import MAP_SHARED, MS_ASYNC, MS_INVALIDATE, MS_SYNC, PROT_READ, PROT_WRITE

pytestmark = pytest.mark.kernel

P = 4096
FIELDS = ("Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty")
# (what, page offset, bytes) writes and (msync, page offset, pages, flags) calls, in order
STEPS: list[tuple[str, int, int | bytes]] = [
    ("write", 0, b"page0"),
    ("write", 2, b"page2"),
    ("msync", 0, MS_ASYNC),  # whole mapping: nothing written
    ("msync", 0, 0),
    ("msync", 1, MS_SYNC),  # pages 0..1 only: page 2 stays dirty
    ("msync", 2, MS_SYNC | MS_INVALIDATE),  # the rest
    ("write", 0, b"again"),  # write-protected by the write-back: faults and re-dirties
    ("write", 3, b"page3"),
    ("msync", 0, MS_SYNC),
]
NPAGES = 4

_SCRIPT = r"""
import ctypes, json, os, sys
P, NPAGES = 4096, NPAGES_
STEPS = json.loads(STEPS_)
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
libc.msync.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
path = sys.argv[1]
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
for pg in range(NPAGES):  # one write() a page: order-0 folios (ext4 has large ones)
    os.write(fd, bytes([pg + 1]) * P)
os.fsync(fd)
addr = libc.mmap(None, NPAGES * P, 3, 1, fd, 0)

def smaps():
    lines = open("/proc/self/smaps").read().splitlines()
    i = next(i for i, l in enumerate(lines) if l.startswith("%x-" % addr))
    out = {}
    for l in lines[i + 1:]:
        if l[:1].isdigit() or l[:1] in "abcdef" and "-" in l.split()[0]:
            break
        k, _, v = l.partition(":")
        out[k] = int(v.split()[0]) if v.split() and v.split()[0].isdigit() else v
    return out

res = []
for what, a, b in STEPS:
    if what == "write":
        data = b.encode("latin-1")
        ctypes.memmove(addr + a * P, data, len(data))
        r = 0
    else:
        if a == 0:
            start, n = addr, NPAGES * P
        elif a == 1:
            start, n = addr, 2 * P
        else:
            start, n = addr + 2 * P, 2 * P
        r = libc.msync(ctypes.c_void_p(start), n, b)
        r = -ctypes.get_errno() if r else 0
    s = smaps()
    res.append([r, {k: s[k] for k in FIELDS_}])
mapped = ctypes.string_at(addr, NPAGES * P)
onfile = os.pread(fd, NPAGES * P, 0)
print(json.dumps({"steps": res, "file_is_mapped": onfile == mapped, "mapped": mapped.hex()}))
"""


def _writeback_fs(directory: str) -> str | None:
    """The filesystem type of ``directory`` (from /proc/self/mountinfo)."""
    best, fstype = "", None
    real = os.path.realpath(directory)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            mount = parts[4]
            sep = parts.index("-")
            if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) > len(
                best
            ):
                best, fstype = mount, parts[sep + 1]
    return fstype


def _range(a: int) -> tuple[int, int]:
    return {0: (0, NPAGES), 1: (0, 2), 2: (2, 2)}[a]


def _live(directory: str) -> dict[str, object]:
    script = (
        _SCRIPT.replace("NPAGES_", str(NPAGES))
        .replace("STEPS_", repr(json.dumps([[w, a, _enc(b)] for w, a, b in STEPS])))
        .replace("FIELDS_", repr(FIELDS))
    )
    path = os.path.join(directory, "f")
    out = subprocess.run(
        [sys.executable, "-c", script, path], capture_output=True, text=True, check=True
    ).stdout
    result: dict[str, object] = json.loads(out)
    return result


def _enc(b: int | bytes) -> int | str:
    return b.decode("latin-1") if isinstance(b, bytes) else b


def _model() -> dict[str, object]:
    m = vmsim.Machine(ram="256M")
    p = m.spawn()
    inode = m.inode_for("/data/f", (8, 1), 12, NPAGES * P)
    for pg in range(NPAGES):
        inode.backing[pg] = bytes([pg + 1]) * P
    fd = p.open_inode(inode)
    addr = p.mmap(0, NPAGES * P, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
    res: list[object] = []
    for what, a, b in STEPS:
        r = 0
        if what == "write":
            assert isinstance(b, bytes)
            p.write(addr + a * P, b)
        else:
            assert isinstance(b, int)
            first, n = _range(a)
            try:
                p.msync(addr + first * P, n * P, b)
            except OSError as e:
                r = -(e.errno or 0)
        lines = p.smaps().splitlines()
        i = next(i for i, x in enumerate(lines) if x.startswith(f"{addr:x}-"))
        fields: dict[str, int] = {}
        for x in lines[i + 1 :]:
            k, _, v = x.partition(":")
            if k in FIELDS and k not in fields:
                fields[k] = int(v.split()[0])
        res.append([r, fields])
    mapped = p.read(addr, NPAGES * P)
    disk = b"".join(inode.backing.get(pg, bytes(P)) for pg in range(NPAGES))
    return {"steps": res, "file_is_mapped": disk == mapped, "mapped": mapped.hex()}


def test_msync_writes_back_like_the_kernel() -> None:
    directory = tempfile.mkdtemp(prefix="vmsim-msync-", dir="/tmp")
    try:
        fstype = _writeback_fs(directory)
        if fstype in (None, "tmpfs", "ramfs"):
            pytest.skip(f"{directory} is on {fstype}: no write-back to compare")
        live = _live(directory)
    finally:
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)
    ours = _model()
    assert ours["steps"] == live["steps"]
    assert ours["mapped"] == live["mapped"]
    assert live["file_is_mapped"] is True
    assert ours["file_is_mapped"] is True
