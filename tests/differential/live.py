"""The kernel side of the differential tests: a child process that executes raw syscalls.

``LiveChild`` starts ``_child.py`` (see its docstring for why the interpreter never maps memory by
itself once it is up) and sends it calls over a pipe.  The parent reads ``/proc/<pid>/maps`` and
``/proc/<pid>/smaps`` directly.  User memory accesses go through ``process_vm_readv/writev`` on
the child itself: they fault pages in like user accesses (a write creates the anon_vma like a
user write) but report ``EFAULT`` instead of killing the process.  Two known differences from a
real access, which the fuzzer therefore avoids: GUP never expands a ``VM_GROWSDOWN`` VMA, and it
cannot tell SIGSEGV from SIGBUS (both are ``EFAULT``; vmsim's exception kind is not compared).
"""

from __future__ import annotations

import ctypes
import errno
import marshal
import os
import platform
import subprocess
import sys
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
    "madvise": 28,
    "ftruncate": 77,
    "mlock": 149,
    "munlock": 150,
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
        hello = self._recv()
        if not (isinstance(hello, tuple) and hello[0] == "hello"):
            raise RuntimeError(f"child said {hello!r}")
        self.pid: int = hello[1]
        self.brk0: int = hello[2]
        self.fds: list[int] = []

    # -- transport -------------------------------------------------------------------------
    def _recv(self) -> Any:
        assert self.proc.stdout is not None
        head = self.proc.stdout.read(4)
        if len(head) < 4:
            raise RuntimeError(f"child {self.proc.pid} died (rc={self.proc.poll()})")
        blob = self.proc.stdout.read(int.from_bytes(head, "little"))
        return marshal.loads(blob)

    def request(self, req: tuple[Any, ...]) -> Any:
        assert self.proc.stdin is not None
        blob = marshal.dumps(req)
        self.proc.stdin.write(len(blob).to_bytes(4, "little") + blob)
        self.proc.stdin.flush()
        res = self._recv()
        if isinstance(res, tuple) and res and res[0] == "error":
            raise RuntimeError(f"child error: {res[1]}")
        return res

    def close(self) -> None:
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

    # -- /proc -------------------------------------------------------------------------------
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
