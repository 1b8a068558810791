"""The kernel side of the differential tests: a child process that executes raw syscalls.

``LiveChild`` starts ``_child.py`` (see its docstring for why the interpreter never maps memory by
itself once it is up) and sends it calls over a pipe.  The parent reads ``/proc/<pid>/maps`` and
``/proc/<pid>/smaps`` directly.  User memory accesses go through ``process_vm_readv/writev`` on
the child itself: they fault pages in like user accesses (a write creates the anon_vma like a
user write) but report ``EFAULT`` instead of killing the process.  Two known differences from a
real access, which the fuzzer therefore avoids: GUP never expands a ``VM_GROWSDOWN`` VMA, and it
cannot tell SIGSEGV from SIGBUS (both are ``EFAULT``; vmsim's exception kind is not compared).

Page-level tests use ``load``/``store`` instead: real CPU accesses in the child, which fault pages
in exactly like the program's own accesses (GUP, as used by ``read``/``write``, e.g. unshares
COW-shared anonymous pages even for a read).  A bad address kills the child: the next call
raises ``ChildDied`` with the signal.  ``fork()`` returns a ``ForkedChild`` (same methods) that
talks to the forked process over two FIFOs; ``pagemap``, ``smaps_rollup``, ``minflt``/``majflt``
read ``/proc/<pid>`` from the test process.
"""

from __future__ import annotations

import ctypes
import errno
import marshal
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHILD = Path(__file__).with_name("_child.py")

SYS = {
    "close": 3,
    "mmap": 9,
    "mprotect": 10,
    "munmap": 11,
    "brk": 12,
    "mremap": 25,
    "msync": 26,
    "madvise": 28,
    "ftruncate": 77,
    "mlock": 149,
    "munlock": 150,
    "mlockall": 151,
    "munlockall": 152,
    "mlock2": 325,
    "memfd_create": 319,
    "mseal": 462,
}

# glibc.malloc tunables act from the first allocation on, mallopt() in the child only after.
GLIBC_TUNABLES = (
    "glibc.malloc.mmap_max=0:glibc.malloc.top_pad=67108864:glibc.malloc.trim_threshold=2147483647"
)


_personality = ctypes.CDLL(None).personality if sys.platform == "linux" else None


def _no_aslr() -> None:
    # personality(ADDR_NO_RANDOMIZE) survives execve; it is per process, not a system setting.
    # Resolved before fork: no dlopen/dlsym between fork and exec.
    if _personality is not None:
        _personality(0x0040000)


def errname(code: int) -> str:
    return errno.errorcode.get(code, str(code))


def describe_status(status: int | None) -> str:
    """A wait status (``os.waitpid``) in words; None: unknown."""
    if status is None:
        return "exit status unknown"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"killed by {name} ({sig})"
    if os.WIFEXITED(status):
        return f"exited with status {os.WEXITSTATUS(status)}"
    return f"wait status {status:#x}"


class ChildDied(RuntimeError):
    """The child is gone (e.g. a ``load``/``store`` at a bad address killed it).  ``signal`` is
    the number of the signal that killed it, or None."""

    def __init__(self, pid: int, status: int | None) -> None:
        self.pid = pid
        self.status = status
        self.signal = os.WTERMSIG(status) if status is not None and os.WIFSIGNALED(status) else None
        super().__init__(f"child {pid} died: {describe_status(status)}")


# /proc/<pid>/pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst)
PM_PRESENT = 1 << 63
PM_SWAP = 1 << 62
PM_FILE = 1 << 61  # file page or shared anon
PM_GUARD = 1 << 58  # guard region (MADV_GUARD_INSTALL), Linux >= 6.15
PM_UFFD_WP = 1 << 57
PM_EXCLUSIVE = 1 << 56  # page exclusively mapped
PM_SOFT_DIRTY = 1 << 55
PM_PFN_MASK = (1 << 55) - 1


def decode_pagemap(entry: int) -> dict[str, int]:
    """The bits of one pagemap entry by name (``pfn`` is 0 unless present, or without
    CAP_SYS_ADMIN; for a swapped page bits 0-54 are the swap type/offset, not a PFN)."""
    return {
        "present": entry >> 63 & 1,
        "swapped": entry >> 62 & 1,
        "file": entry >> 61 & 1,
        "guard": entry >> 58 & 1,
        "uffd_wp": entry >> 57 & 1,
        "exclusive": entry >> 56 & 1,
        "soft_dirty": entry >> 55 & 1,
        "pfn": entry & PM_PFN_MASK,
    }


def unavailable_reason() -> str | None:
    """Why live-kernel tests cannot run here, or None when they can."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"needs Linux x86-64, this is {sys.platform}/{platform.machine()}"
    if os.geteuid() != 0:
        return "needs root (MAP_FIXED below mmap_min_addr, mlock without RLIMIT_MEMLOCK)"
    try:
        int(Path("/proc/sys/vm/max_map_count").read_text())
    except (OSError, ValueError) as exc:
        return f"/proc/sys/vm/max_map_count is not readable: {exc}"
    try:
        child = LiveChild()
    except Exception as exc:
        return f"cannot start the syscall child: {exc}"
    try:
        probe = child.mmap(0, 4096, 3, 0x22)
        if probe.err:
            return f"mmap in the child failed: {probe.err}"
        if child.write(probe.ret or 0, b"probe").err:
            return "process_vm_writev is unavailable (ptrace restrictions?)"
        if child.read(probe.ret or 0, 5).data != b"probe":
            return "process_vm_readv is unavailable (ptrace restrictions?)"
        try:
            child.maps()
            child.smaps()
        except OSError as exc:
            return f"/proc/<pid>/smaps is not readable: {exc}"
    finally:
        child.close()
    return None


def max_map_count() -> int:
    return int(Path("/proc/sys/vm/max_map_count").read_text())


class Outcome:
    """What one call did: ``ret`` (value, or bytes done before a fault), ``err`` (errno name or
    ``"FAULT"``) and, for reads, ``data``."""

    __slots__ = ("data", "err", "ret")

    def __init__(self, ret: int | None = None, err: str | None = None, data: bytes | None = None):
        self.ret = ret
        self.err = err
        self.data = data

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Outcome):
            return NotImplemented
        return (self.ret, self.err, self.data) == (other.ret, other.err, other.data)

    def __hash__(self) -> int:
        return hash((self.ret, self.err, self.data))

    def __repr__(self) -> str:
        ret = hex(self.ret) if isinstance(self.ret, int) and self.ret > 4096 else self.ret
        if self.err == "FAULT":
            return f"FAULT after {ret} bytes"
        if self.err:
            return f"-1 {self.err}"
        if self.data is not None:
            shown = self.data[:16].hex() + ("…" if len(self.data) > 16 else "")
            return f"{ret} [{shown}]"
        return f"{ret}"


class LiveChild:
    """One child process; methods mirror ``vmsim.Process`` and return ``Outcome`` values.

    File descriptors are logical: ``memfd_create`` returns the index of the new fd in
    ``self.fds`` and every other call translates indexes back (``-1`` stays ``-1``, numbers
    >= ``RAW_FD`` are passed through unchanged, to test bad descriptors).
    """

    RAW_FD = 1000

    def __init__(self, aslr: bool = False) -> None:
        """``aslr=False`` (the default) runs the child with ADDR_NO_RANDOMIZE, so two children
        (and two runs of one fuzz seed) get the same layout: failures reproduce exactly."""
        env = dict(os.environ)
        env.update(PYTHONMALLOC="malloc", GLIBC_TUNABLES=GLIBC_TUNABLES, PYTHONHASHSEED="0")
        env.pop("PYTHONDEVMODE", None)
        env.pop("PYTHONTRACEMALLOC", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-S", "-B", str(CHILD)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
            preexec_fn=None if aslr else _no_aslr,
        )
        self.forks: list[ForkedChild] = []
        self._hello(self._recv())
        self.fds: list[int] = []

    def _hello(self, hello: Any) -> None:
        if not (isinstance(hello, tuple) and hello[0] == "hello"):
            raise RuntimeError(f"child said {hello!r}")
        self.pid: int = hello[1]
        self.brk0: int = hello[2]

    # -- transport -------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def _read(self, n: int) -> bytes:
        """Up to ``n`` bytes; fewer only at EOF."""
        assert self.proc.stdout is not None
        return self.proc.stdout.read(n)

    def _died(self) -> ChildDied:
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return ChildDied(self.proc.pid, None)
        # Popen: -N = killed by signal N; rebuild a wait status
        return ChildDied(self.proc.pid, -rc if rc < 0 else rc << 8)

    def _recv(self) -> Any:
        head = self._read(4)
        if len(head) < 4:
            raise self._died()
        size = int.from_bytes(head, "little")
        blob = self._read(size)
        if len(blob) < size:
            raise self._died()
        return marshal.loads(blob)

    def request(self, req: tuple[Any, ...]) -> Any:
        blob = marshal.dumps(req)
        try:
            self._write(len(blob).to_bytes(4, "little") + blob)
        except BrokenPipeError:
            raise self._died() from None
        res = self._recv()
        if isinstance(res, tuple) and res and res[0] == "error":
            raise RuntimeError(f"child error: {res[1]}")
        return res

    def close(self) -> None:
        for f in reversed(list(self.forks)):
            f.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass

    def __enter__(self) -> LiveChild:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- raw syscalls ------------------------------------------------------------------------
    def syscall(self, name: str, *args: int | bytes) -> tuple[int, int]:
        ret, err = self.request(("sc", (SYS[name], *args)))
        return ret, err

    def batch(self, calls: list[tuple[str, tuple[int, ...]]]) -> list[tuple[int, int]]:
        res = self.request(("batch", [(SYS[name], *args) for name, args in calls]))
        return [tuple(r) for r in res]

    def _sc(self, name: str, *args: int | bytes) -> Outcome:
        ret, err = self.syscall(name, *args)
        return Outcome(err=errname(err)) if ret == -1 else Outcome(ret=ret)

    def _fd(self, lfd: int) -> int:
        if lfd < 0 or lfd >= self.RAW_FD:
            return lfd
        return self.fds[lfd]

    # -- the vmsim.Process surface -----------------------------------------------------------
    def mmap(
        self, addr: int, length: int, prot: int, flags: int, fd: int = -1, offset: int = 0
    ) -> Outcome:
        return self._sc("mmap", addr, length, prot, flags, self._fd(fd), offset)

    def munmap(self, addr: int, length: int) -> Outcome:
        return self._sc("munmap", addr, length)

    def mprotect(self, addr: int, length: int, prot: int) -> Outcome:
        return self._sc("mprotect", addr, length, prot)

    def mremap(
        self, addr: int, old_size: int, new_size: int, flags: int = 0, new_addr: int = 0
    ) -> Outcome:
        return self._sc("mremap", addr, old_size, new_size, flags, new_addr)

    def madvise(self, addr: int, length: int, advice: int) -> Outcome:
        return self._sc("madvise", addr, length, advice)

    def mlock(self, addr: int, length: int) -> Outcome:
        return self._sc("mlock", addr, length)

    def mlock2(self, addr: int, length: int, flags: int = 0) -> Outcome:
        return self._sc("mlock2", addr, length, flags)

    def msync(self, addr: int, length: int, flags: int) -> Outcome:
        return self._sc("msync", addr, length, flags)

    def munlock(self, addr: int, length: int) -> Outcome:
        return self._sc("munlock", addr, length)

    def mseal(self, addr: int, length: int, flags: int = 0) -> Outcome:
        return self._sc("mseal", addr, length, flags)

    def brk(self, addr: int) -> Outcome:
        return self._sc("brk", addr)

    def memfd_create(self, name: str, flags: int = 0) -> Outcome:
        ret, err = self.syscall("memfd_create", name.encode(), flags)
        if ret == -1:
            return Outcome(err=errname(err))
        self.fds.append(ret)
        return Outcome(ret=len(self.fds) - 1)

    def ftruncate(self, lfd: int, size: int) -> Outcome:
        return self._sc("ftruncate", self._fd(lfd), size)

    def close_fd(self, lfd: int) -> Outcome:
        return self._sc("close", self._fd(lfd))

    def read(self, addr: int, n: int) -> Outcome:
        done, err, data = self.request(("read", addr, n))
        if done == n:
            return Outcome(ret=n, data=data)
        if done < 0 and err != errno.EFAULT:
            return Outcome(err=errname(err))
        return Outcome(ret=max(done, 0), err="FAULT")

    def write(self, addr: int, data: bytes) -> Outcome:
        done, err = self.request(("write", addr, data))
        if done == len(data):
            return Outcome(ret=done)
        if done < 0 and err != errno.EFAULT:
            return Outcome(err=errname(err))
        return Outcome(ret=max(done, 0), err="FAULT")

    # -- page-level access (real CPU accesses in the child) ------------------------------------
    def load(self, addr: int, n: int) -> bytes:
        """A real load of ``n`` bytes at ``addr`` in the child.  The caller guarantees that it is
        allowed: a bad address kills the child (``ChildDied``, with the signal)."""
        data: bytes = self.request(("load", addr, n))
        return data

    def store(self, addr: int, data: bytes) -> None:
        """A real store of ``data`` at ``addr`` in the child (same caveat as ``load``)."""
        self.request(("store", addr, data))

    def mincore(self, addr: int, length: int) -> Outcome:
        """mincore(2): ``Outcome(ret=0, data=vector)`` (one byte per page) or ``Outcome(err=)``."""
        ret, err, vec = self.request(("mincore", addr, length))
        if ret == -1:
            return Outcome(err=errname(err))
        return Outcome(ret=ret, data=vec)

    def getrusage(self) -> tuple[int, int]:
        """(ru_minflt, ru_majflt) of the child, from getrusage(RUSAGE_SELF) in the child."""
        minflt, majflt = self.request(("getrusage",))
        return minflt, majflt

    # -- fork ----------------------------------------------------------------------------------
    def fork(self, timeout: float = 10.0) -> ForkedChild:
        """fork() in the child; the new process is served over two FIFOs.  Close it (or this
        child: that closes its forks first) to make it exit and be reaped."""
        return ForkedChild(self, timeout)

    def reap(self, pid: int, nohang: bool = False) -> int | None:
        """waitpid(pid) in the child (for its forks): the wait status, or None if ``nohang``
        and still running; raises ``ChildProcessError`` if ``pid`` is not its child."""
        wpid, status = self.request(("reap", pid, 1 if nohang else 0))
        if wpid == -1:
            raise ChildProcessError(status, os.strerror(status))
        return None if wpid == 0 else status

    # -- /proc -------------------------------------------------------------------------------
    def pagemap(self, addr: int, npages: int) -> list[int]:
        """Raw /proc/<pid>/pagemap entries of ``npages`` pages from ``addr`` (see
        ``decode_pagemap``; PFNs are visible to CAP_SYS_ADMIN only)."""
        fd = os.open(f"/proc/{self.pid}/pagemap", os.O_RDONLY)
        try:
            want = 8 * npages
            data = b""
            while len(data) < want:
                chunk = os.pread(fd, want - len(data), (addr >> 12) * 8 + len(data))
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(fd)
        if len(data) != want:
            raise OSError(f"short pagemap read: {len(data)} of {want} bytes")
        return [int.from_bytes(data[i : i + 8], "little") for i in range(0, want, 8)]

    def smaps_rollup(self) -> str:
        return Path(f"/proc/{self.pid}/smaps_rollup").read_text()

    def stat_faults(self) -> tuple[int, int]:
        """(minflt, majflt): fields 10 and 12 of /proc/<pid>/stat."""
        text = Path(f"/proc/{self.pid}/stat").read_text()
        fields = text[text.rindex(")") + 2 :].split()  # fields[0] is field 3 (state)
        return int(fields[10 - 3]), int(fields[12 - 3])

    @property
    def minflt(self) -> int:
        return self.stat_faults()[0]

    @property
    def majflt(self) -> int:
        return self.stat_faults()[1]

    def maps(self) -> str:
        return Path(f"/proc/{self.pid}/maps").read_text()

    def smaps(self) -> str:
        return Path(f"/proc/{self.pid}/smaps").read_text()

    def maps_bytes(self) -> bytes:
        with open(f"/proc/{self.pid}/maps", "rb", buffering=0) as f:
            chunks = []
            while chunk := f.read(1 << 20):
                chunks.append(chunk)
        return b"".join(chunks)

    @property
    def map_count(self) -> int:
        # [vsyscall] is the gate VMA: printed last, not counted in mm->map_count.
        return self.maps_bytes().count(b"\n") - 1

    def map_floor(self) -> int:
        """Map the one-page shared memfd "floor" with mmap(NULL): later mmap(NULL) land below."""
        fd = self.memfd_create("vmsim_floor").ret
        assert fd is not None
        assert self.ftruncate(fd, 4096).err is None
        out = self.mmap(0, 4096, 1, 0x01, fd, 0)
        assert out.err is None, out
        self.close_fd(fd)
        self.fds.pop()
        assert out.ret is not None
        return out.ret


class ForkedChild(LiveChild):
    """A process forked by a ``LiveChild`` (or by another ``ForkedChild``): same methods, served
    over two FIFOs in a temporary directory.  It is a grandchild of the test process, so its
    parent reaps it: ``close()`` makes it exit (``exit``, then EOF, then SIGKILL after a grace
    period), has the parent reap it and removes the FIFOs."""

    def __init__(self, parent: LiveChild, timeout: float = 10.0) -> None:
        self.parent = parent
        self.forks = []
        self.status: int | None = None  # wait status once reaped
        self._rfd = self._wfd = -1
        self._closed = False
        self._tmp = tempfile.mkdtemp(prefix="vmsim-fork-")
        fifo_in = os.path.join(self._tmp, "in")  # test -> forked process
        fifo_out = os.path.join(self._tmp, "out")  # forked process -> test
        os.mkfifo(fifo_in, 0o600)
        os.mkfifo(fifo_out, 0o600)
        try:
            self.pid = parent.request(("fork", fifo_in, fifo_out))
            parent.forks.append(self)
            deadline = time.monotonic() + timeout
            # The forked process opens fifo_in (blocking) then fifo_out; nonblocking opens here
            # so that a process that never shows up cannot hang the test.
            while True:
                try:
                    self._wfd = os.open(fifo_in, os.O_WRONLY | os.O_NONBLOCK)
                    break
                except OSError as exc:
                    if exc.errno != errno.ENXIO:
                        raise
                if time.monotonic() > deadline or not self._running():
                    raise self._died()
                time.sleep(0.001)
            os.set_blocking(self._wfd, True)
            self._rfd = os.open(fifo_out, os.O_RDONLY | os.O_NONBLOCK)
            poller = select.poll()
            poller.register(self._rfd, select.POLLIN)
            while not poller.poll(50):
                if time.monotonic() > deadline or not self._running():
                    raise self._died()
            os.set_blocking(self._rfd, True)
            self._hello(self._recv())
        except BaseException:
            self.close()
            raise
        self.fds = list(parent.fds)

    def _running(self) -> bool:
        try:
            text = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return False
        return text[text.rindex(")") + 2] not in "ZX"

    # -- transport -------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if self._wfd < 0:
            raise BrokenPipeError("closed")
        view = memoryview(data)
        while view:
            view = view[os.write(self._wfd, view) :]

    def _read(self, n: int) -> bytes:
        if self._rfd < 0:
            return b""
        chunks = []
        while n:
            chunk = os.read(self._rfd, n)
            if not chunk:
                break
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def _reap(self, grace: float) -> int | None:
        """Wait status of the forked process (SIGKILL after ``grace`` seconds), None if its
        parent cannot reap it any more."""
        if self.status is not None:
            return self.status
        try:
            deadline = time.monotonic() + grace
            while True:
                status = self.parent.reap(self.pid, nohang=True)
                if status is not None:
                    self.status = status
                    return status
                if time.monotonic() > deadline:
                    break
                time.sleep(0.002)
            os.kill(self.pid, signal.SIGKILL)
            self.status = self.parent.reap(self.pid)
        except (ChildDied, ChildProcessError, ProcessLookupError):
            return None
        return self.status

    def _died(self) -> ChildDied:
        return ChildDied(self.pid, self._reap(10.0))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for f in reversed(list(self.forks)):
            f.close()
        if self._wfd >= 0 and self.status is None:
            try:
                self._write(self._exit_blob())
            except OSError:
                pass
        for fd in (self._wfd, self._rfd):
            if fd >= 0:
                os.close(fd)
        self._wfd = self._rfd = -1
        if hasattr(self, "pid"):
            self._reap(5.0)
        if self in self.parent.forks:
            self.parent.forks.remove(self)
        shutil.rmtree(self._tmp, ignore_errors=True)

    @staticmethod
    def _exit_blob() -> bytes:
        blob = marshal.dumps(("exit",))
        return len(blob).to_bytes(4, "little") + blob
