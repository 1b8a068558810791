"""SysV shared memory (vmsim.mm.shm): shmget, shmat, shmdt, shmctl(IPC_RMID).

Expected values: ipc/shm.c (do_shmat(), ksys_shmdt(), newseg()) and, for the /proc text and the
errnos, the live kernel (Linux 6.18 on the project machine; ``test_live_maps_line`` re-checks
the maps line here when the kernel allows shmget).
"""

from __future__ import annotations

import ctypes
import errno

import pytest

import vmsim
from vmsim.mm.shm import (
    IPC_CREAT,
    IPC_EXCL,
    IPC_PRIVATE,
    IPC_RMID,
    IPC_STAT,
    SHM_DEST,
    SHM_RDONLY,
    SHM_REMAP,
    SHM_RND,
)

P = 4096


@pytest.fixture
def p() -> vmsim.Process:
    return vmsim.Machine().spawn()


def maps_lines(p: vmsim.Process) -> list[list[str]]:
    return [line.split() for line in p.maps().splitlines() if "[vsyscall]" not in line]


def test_attach_is_a_shared_mapping_named_after_the_key(p: vmsim.Process) -> None:
    """Live: '7f590a7ba000-7f590a7bd000 rw-s 00000000 00:01 4  /SYSV1234abcd (deleted)' for
    shmget(0x1234abcd, 10000, IPC_CREAT|0600) = 4 then shmat(4, NULL, 0): the size rounds up
    to pages, the inode number is the shmid, '(deleted)' from the first attach on."""
    shmid = p.shmget(0x1234ABCD, 10000, IPC_CREAT | 0o600)
    addr = p.shmat(shmid, 0, 0)
    (line,) = maps_lines(p)
    assert line[0] == f"{addr:x}-{addr + 3 * P:x}"
    assert line[1:5] == ["rw-s", "00000000", "00:01", str(shmid)]
    assert line[5:] == ["/SYSV1234abcd", "(deleted)"]


def test_rdonly_and_two_attaches_do_not_merge(p: vmsim.Process) -> None:
    """Each shmat maps through a file of its own: two attaches side by side stay two VMAs.
    SHM_RDONLY maps PROT_READ ('r--s')."""
    shmid = p.shmget(IPC_PRIVATE, 2 * P, IPC_CREAT | 0o600)
    a = p.shmat(shmid, 0x7F0000000000, 0)
    b = p.shmat(shmid, 0x7F0000002000, SHM_RDONLY)
    assert (a, b) == (0x7F0000000000, 0x7F0000002000)
    assert [(ln[1], ln[5]) for ln in maps_lines(p)] == [
        ("rw-s", "/SYSV00000000"),
        ("r--s", "/SYSV00000000"),
    ]
    c = p.shmat(shmid, 0x7F0000004000, 0)
    assert c == 0x7F0000004000
    assert p.map_count == 3  # same flags as the first, still its own file


def test_address_checks(p: vmsim.Process) -> None:
    """do_shmat(): an unaligned address is EINVAL unless SHM_RND (then rounded down to
    SHMLBA); an address whose range is mapped is EINVAL (not replaced) without SHM_REMAP;
    SHM_REMAP without an address is EINVAL; a bad or negative id is EINVAL."""
    shmid = p.shmget(IPC_PRIVATE, P, IPC_CREAT | 0o600)
    with pytest.raises(OSError) as e:
        p.shmat(shmid, 0x7F0000000007, 0)
    assert e.value.errno == errno.EINVAL
    assert p.shmat(shmid, 0x7F0000000007, SHM_RND) == 0x7F0000000000
    with pytest.raises(OSError) as e:
        p.shmat(shmid, 0x7F0000000000, 0)
    assert e.value.errno == errno.EINVAL
    assert p.map_count == 1
    assert p.shmat(shmid, 0x7F0000000000, SHM_REMAP) == 0x7F0000000000
    assert p.map_count == 1  # replaced in place
    for bad in ((shmid, 0, SHM_REMAP), (123456789, 0, 0), (-1, 0, 0)):
        with pytest.raises(OSError) as e:
            p.shmat(*bad)
        assert e.value.errno == errno.EINVAL


def test_shmdt(p: vmsim.Process) -> None:
    """ksys_shmdt(): EINVAL for an unaligned address or one where no attach starts; the
    attach (every page of it) goes."""
    shmid = p.shmget(IPC_PRIVATE, 3 * P, IPC_CREAT | 0o600)
    a = p.shmat(shmid, 0, 0)
    for bad in (a + 1, 0x10000):
        with pytest.raises(OSError) as e:
            p.shmdt(bad)
        assert e.value.errno == errno.EINVAL
    p.mprotect(a + P, P, vmsim.PROT_READ)  # three VMAs of one attach
    assert p.map_count == 3
    p.shmdt(a)
    assert p.map_count == 0


def test_shmget_and_rmid(p: vmsim.Process) -> None:
    """newseg(): size 0 is EINVAL; ipcget(): a known key is found again (EEXIST with
    IPC_CREAT|IPC_EXCL, EINVAL when asked for more than its size), an unknown key without
    IPC_CREAT is ENOENT. IPC_RMID with nothing attached destroys it: shmat is then EINVAL;
    an attached segment lives until its last detach."""
    with pytest.raises(OSError) as e:
        p.shmget(IPC_PRIVATE, 0, IPC_CREAT | 0o600)
    assert e.value.errno == errno.EINVAL
    s = p.shmget(0x42, P, IPC_CREAT | 0o600)
    assert p.shmget(0x42, P, 0o600) == s
    for flags, size, code in (
        (IPC_CREAT | IPC_EXCL, P, errno.EEXIST),
        (0, 2 * P, errno.EINVAL),
    ):
        with pytest.raises(OSError) as e:
            p.shmget(0x42, size, flags | 0o600)
        assert e.value.errno == code
    with pytest.raises(OSError) as e:
        p.shmget(0x43, P, 0o600)
    assert e.value.errno == errno.ENOENT
    a = p.shmat(s, 0, 0)
    p.shmctl(s, 0)
    b = p.shmat(s, 0, 0)  # SHM_DEST but attached: Linux still attaches it by id
    p.shmdt(a)
    p.shmdt(b)
    with pytest.raises(OSError) as e:
        p.shmat(s, 0, 0)
    assert e.value.errno == errno.EINVAL


def test_live_maps_line() -> None:
    """The live kernel's maps line for an attach, compared field by field with the model's."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
    libc.shmdt.argtypes = [ctypes.c_void_p]
    shmid = libc.shmget(0x5EED1234, 3 * P, IPC_CREAT | IPC_EXCL | 0o600)
    if shmid < 0:
        pytest.skip(f"shmget: {errno.errorcode.get(ctypes.get_errno())}")
    try:
        addr = libc.shmat(shmid, None, 0)
        with open("/proc/self/maps") as f:
            live = next(ln.split() for ln in f if f"{addr:x}-" in ln.split()[0])
        libc.shmdt(ctypes.c_void_p(addr))
    finally:
        libc.shmctl(shmid, 0, None)
    p = vmsim.Machine().spawn()
    model_id = p.shmget(0x5EED1234, 3 * P, IPC_CREAT | IPC_EXCL | 0o600)
    maddr = p.shmat(model_id, 0, 0)
    (model,) = maps_lines(p)
    assert int(live[0].split("-")[1], 16) - addr == int(model[0].split("-")[1], 16) - maddr
    assert live[1:4] == model[1:4]
    assert live[5:] == model[5:]


def test_an_attach_inherited_by_fork_outlives_rmid(p: vmsim.Process) -> None:
    """fork() copies the attach; after IPC_RMID and the parent's detach, the child's shmdt
    still finds it (ksys_shmdt() looks for a shm VMA, not for the id)."""
    shmid = p.shmget(IPC_PRIVATE, P, IPC_CREAT | 0o600)
    a = p.shmat(shmid, 0, 0)
    child = p.fork()
    p.shmctl(shmid, 0)
    p.shmdt(a)
    child.shmdt(a)
    assert child.mm.tree.lookup(a) is None


def test_contents_outlive_the_last_detach_until_rmid(p: vmsim.Process) -> None:
    """A segment's pages belong to its shm file, not to the attaches: after the last shmdt
    (no IPC_RMID) a new shmat sees what was written (ipc/shm.c: shm_close() destroys only
    when shm_may_destroy(): SHM_DEST set and nattch 0). After IPC_RMID with nothing
    attached, the pages go (shm_destroy(): fput of the shmem file)."""
    s = p.shmget(0x77, 2 * P, IPC_CREAT | 0o600)
    a = p.shmat(s, 0, 0)
    p.write(a + P, b"kept across detach")
    p.shmdt(a)
    b = p.shmat(s, 0, 0)
    assert p.read(b + P, 18) == b"kept across detach"
    p.shmdt(b)
    before = shmem_kb(p.machine)
    p.shmctl(s, 0)
    assert shmem_kb(p.machine) == before - 4  # the one written page, in kB


def shmem_kb(m: vmsim.Machine) -> int:
    line = next(x for x in m.meminfo().splitlines() if x.startswith("Shmem:"))
    return int(line.split()[1])


# --- shm_nattch: one count per VMA (shm_open()/shm_close()); checked live by
# tests/differential/test_shm_nattch.py ---------------------------------------------------
def nattch(p: vmsim.Process, shmid: int) -> int:
    ds = p.shmctl(shmid, IPC_STAT)
    assert ds is not None
    return ds.nattch


def test_nattch_counts_fork_split_munmap_and_exit(p: vmsim.Process) -> None:
    shmid = p.shmget(IPC_PRIVATE, 4 * P, IPC_CREAT | 0o600)
    assert nattch(p, shmid) == 0
    a = p.shmat(shmid)
    assert nattch(p, shmid) == 1
    # __split_vma(): vm_ops->open on the new VMA, twice for a middle page
    p.mprotect(a + P, P, 1)
    assert nattch(p, shmid) == 3
    # and the pieces never merge back (can_merge_remove_vma(): shm VMAs have a close)
    p.mprotect(a + P, P, 3)
    assert nattch(p, shmid) == 3 and len(maps_lines(p)) == 3
    c = p.fork()  # dup_mmap(): shm_open() for each copied VMA
    assert nattch(p, shmid) == 6
    c.munmap(a, 2 * P)
    assert nattch(p, shmid) == 4
    c.exit()  # exit_mmap(): shm_close() for each
    assert nattch(p, shmid) == 3
    p.munmap(a + 3 * P, P)  # a partial munmap of the last piece: split, then close
    assert nattch(p, shmid) == 3
    p.munmap(a + 2 * P, 2 * P)
    assert nattch(p, shmid) == 2


def test_a_removed_segment_goes_at_the_last_munmap_or_exit(p: vmsim.Process) -> None:
    m = p.machine
    shmid = p.shmget(IPC_PRIVATE, 2 * P, IPC_CREAT | 0o600)
    a = p.shmat(shmid)
    p.write(a, b"kept")
    c = p.fork()
    p.shmctl(shmid, IPC_RMID)
    ds = p.shmctl(shmid, IPC_STAT)  # still there, marked SHM_DEST, key private
    assert ds is not None and (ds.nattch, ds.key, ds.mode & SHM_DEST) == (2, 0, SHM_DEST)
    p.munmap(a, 2 * P)  # not shmdt: shm_close() all the same
    assert nattch(p, shmid) == 1
    assert c.read(a, 4) == b"kept" and shmem_kb(m) == 4
    c.exit()
    with pytest.raises(OSError) as e:
        p.shmctl(shmid, IPC_STAT)
    assert e.value.errno == errno.EINVAL
    assert "Shmem:" in m.meminfo() and shmem_kb(m) == 0  # its file went with it


def test_ipc_stat_of_an_unknown_id_is_einval(p: vmsim.Process) -> None:
    for shmid in (-1, 12345):
        with pytest.raises(OSError) as e:
            p.shmctl(shmid, IPC_STAT)
        assert e.value.errno == errno.EINVAL


def test_execve_closes_the_attaches_of_the_old_address_space(p: vmsim.Process) -> None:
    shmid = p.shmget(IPC_PRIVATE, 2 * P, IPC_CREAT | 0o600)
    a = p.shmat(shmid)
    p.mprotect(a, P, 1)
    c = p.fork()
    assert nattch(p, shmid) == 4
    c.execve(None)  # exec_mmap() -> mmput() of the old mm: shm_close() for each VMA
    assert nattch(p, shmid) == 2
    p.shmctl(shmid, IPC_RMID)
    p.execve(None)
    with pytest.raises(OSError) as e:
        c.shmctl(shmid, IPC_STAT)
    assert e.value.errno == errno.EINVAL
