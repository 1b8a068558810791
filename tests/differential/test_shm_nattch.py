"""SysV shm ``shm_nattch``, kernel against vmsim: one count per VMA that maps the segment
(ipc/shm.c: shm_open() for each new VMA, shm_close() for each one that goes), followed
through a second attach, a split by mprotect (and no merge back: can_merge_remove_vma()), a
fork and the child's munmaps and exit, a partial munmap, mremap moves of a whole piece and of
part of one, IPC_RMID while attached (the id still answers IPC_STAT, with SHM_DEST and a
private key), shmdt, and the munmaps that end it (the segment is destroyed: EINVAL).

Each step records its return value, IPC_STAT's (nattch, key == 0, SHM_DEST) or the errno, and
how many /SYSV lines the parent's maps has. The live side runs in a child python; every
segment it makes is removed (IPC_RMID) however it ends.
"""

from __future__ import annotations

import ctypes
import errno
import json
import subprocess
import sys

import pytest

import vmsim
from vmsim.constants import MAP_ANONYMOUS, MAP_PRIVATE, PROT_NONE, PROT_READ, PROT_WRITE

pytestmark = pytest.mark.kernel

P = 4096
IPC_PRIVATE, IPC_CREAT, IPC_RMID, IPC_STAT, SHM_DEST = 0, 0o1000, 0, 2, 0o1000
MREMAP_MAYMOVE, MREMAP_FIXED = 1, 2

_SCRIPT = r"""
import ctypes, json, os, sys
P = 4096
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.shmdt.argtypes = [ctypes.c_void_p]
libc.shmctl.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.mremap.restype = ctypes.c_void_p
libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int,
                        ctypes.c_void_p]

def rc(r):
    return -ctypes.get_errno() if r == -1 or r == ctypes.c_void_p(-1).value else 0

def stat(shmid):
    buf = ctypes.create_string_buffer(112)  # struct shmid64_ds
    if libc.shmctl(shmid, 2, buf) < 0:
        return "E%d" % ctypes.get_errno()
    raw = buf.raw
    key = int.from_bytes(raw[0:4], "little")
    mode = int.from_bytes(raw[20:22], "little")
    return [int.from_bytes(raw[88:96], "little"), key == 0, bool(mode & 0o1000)]

def sysv():
    return sum("/SYSV" in l for l in open("/proc/self/maps"))

shmid = libc.shmget(0, 4 * P, 0o1000 | 0o600)
print(json.dumps({"shmid": shmid}), flush=True)
out = []
def rec(name, r):
    out.append([name, r, stat(shmid), sysv()])
try:
    a = libc.shmat(shmid, None, 0); rec("attach", rc(a))
    b = libc.shmat(shmid, None, 0); rec("attach again", rc(b))
    r = libc.mmap(None, 4 * P, 0, 0x22, -1, 0)
    rec("mprotect middle page", rc(libc.mprotect(a + P, P, 1)))
    rec("mprotect it back", rc(libc.mprotect(a + P, P, 3)))
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        child = []
        child.append(["child: after fork", 0, stat(shmid), sysv()])
        child.append(["child: munmap first piece", rc(libc.munmap(a, P)), stat(shmid), sysv()])
        child.append(["child: munmap inside b", rc(libc.munmap(b + P, P)), stat(shmid), sysv()])
        os.write(wfd, json.dumps(child).encode())
        os._exit(0)
    os.close(wfd)
    data = b""
    while True:
        chunk = os.read(rfd, 65536)
        if not chunk:
            break
        data += chunk
    os.waitpid(pid, 0)
    out.extend(json.loads(data))
    rec("child exited", 0)
    rec("munmap last two pages", rc(libc.munmap(a + 2 * P, 2 * P)))
    rec("mremap a piece", rc(libc.mremap(a + P, P, P, 3, r)))
    rec("mremap part of b", rc(libc.mremap(b + P, P, P, 3, r + 2 * P)))
    rec("IPC_RMID", rc(libc.shmctl(shmid, 0, None)))
    rec("shmdt a", rc(libc.shmdt(a)))
    rec("munmap moved piece", rc(libc.munmap(r, P)))
    rec("munmap b", rc(libc.munmap(b, 4 * P)))
    rec("munmap last", rc(libc.munmap(r + 2 * P, P)))
finally:
    libc.shmctl(shmid, 0, None)
print(json.dumps(out))
"""


def _model() -> list[list[object]]:
    m = vmsim.Machine()
    p = m.spawn()
    shmid = p.shmget(IPC_PRIVATE, 4 * P, IPC_CREAT | 0o600)
    out: list[list[object]] = []

    def stat() -> object:
        try:
            ds = p.shmctl(shmid, IPC_STAT)
        except OSError as e:
            return f"E{e.errno}"
        assert ds is not None
        return [ds.nattch, ds.key == 0, bool(ds.mode & SHM_DEST)]

    def sysv(q: vmsim.Process) -> int:
        return sum("/SYSV" in line for line in q.maps().splitlines())

    def run(call: object, *args: int) -> int:
        try:
            call(*args)  # type: ignore[operator]
        except OSError as e:
            return -(e.errno or 0)
        return 0

    def rec(name: str, r: int, q: vmsim.Process = p) -> None:
        out.append([name, r, stat(), sysv(q)])

    a = p.shmat(shmid)
    rec("attach", 0)
    b = p.shmat(shmid)
    rec("attach again", 0)
    r = p.mmap(0, 4 * P, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS)
    rec("mprotect middle page", run(p.mprotect, a + P, P, PROT_READ))
    rec("mprotect it back", run(p.mprotect, a + P, P, PROT_READ | PROT_WRITE))
    c = p.fork()
    rec("child: after fork", 0, c)
    rec("child: munmap first piece", run(c.munmap, a, P), c)
    rec("child: munmap inside b", run(c.munmap, b + P, P), c)
    c.exit()
    rec("child exited", 0)
    rec("munmap last two pages", run(p.munmap, a + 2 * P, 2 * P))
    flags = MREMAP_MAYMOVE | MREMAP_FIXED
    rec("mremap a piece", run(p.mremap, a + P, P, P, flags, r))
    rec("mremap part of b", run(p.mremap, b + P, P, P, flags, r + 2 * P))
    rec("IPC_RMID", run(p.shmctl, shmid, IPC_RMID))
    rec("shmdt a", run(p.shmdt, a))
    rec("munmap moved piece", run(p.munmap, r, P))
    rec("munmap b", run(p.munmap, b, 4 * P))
    rec("munmap last", run(p.munmap, r + 2 * P, P))
    return out


def _remove(shmid: int) -> None:
    """IPC_RMID of a segment the live script made and may have left behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmctl.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
    if libc.shmctl(shmid, IPC_RMID, None) < 0 and ctypes.get_errno() != errno.EINVAL:
        raise OSError(ctypes.get_errno(), f"IPC_RMID of {shmid}")


def test_shm_nattch_follows_every_vma_like_the_kernel() -> None:
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True)
    lines = proc.stdout.splitlines()
    shmid = json.loads(lines[0])["shmid"] if lines else -1
    if proc.returncode != 0 and shmid >= 0:
        _remove(shmid)  # the script died before its own IPC_RMID
    assert proc.returncode == 0, proc.stderr
    assert shmid >= 0, "shmget failed"
    live = json.loads(lines[1])
    assert _model() == live
