"""The process the differential tests drive: it executes raw memory syscalls sent over a pipe.

Run by ``live.LiveChild`` as ``python -S _child.py`` with ``PYTHONMALLOC=malloc`` and glibc
tunables that keep malloc away from mmap.  Everything that could make the interpreter map
memory by itself (imports, ctypes types, buffers, a pre-grown heap and stack) happens in
``setup()``; after the ``hello`` message the interpreter only allocates from its heap, so every
change in ``/proc/<pid>/maps`` is caused by a command.

Protocol (stdin/stdout): each message is a 4-byte little-endian length and a ``marshal`` blob.
Requests are tuples whose first item names the command; see ``serve()``.
"""

import ctypes
import marshal
import os
import sys

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4
BUFSIZE = 8 << 20  # largest read/write a command may do


class Iovec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


def setup():
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt(M_MMAP_MAX, 0)
    libc.mallopt(M_TOP_PAD, 64 << 20)
    libc.mallopt(M_TRIM_THRESHOLD, 0x7FFFFFFF)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = (ctypes.c_void_p,)
    # Grow the heap well past what the interpreter will ever need, then give it back to malloc
    # (never to the kernel: the trim threshold is huge), so malloc never calls brk again.
    libc.free(libc.malloc(96 << 20))
    libc.syscall.restype = ctypes.c_long
    for name in ("process_vm_readv", "process_vm_writev"):
        fn = getattr(libc, name)
        fn.restype = ctypes.c_ssize_t
        fn.argtypes = (
            ctypes.c_int,
            ctypes.POINTER(Iovec),
            ctypes.c_ulong,
            ctypes.POINTER(Iovec),
            ctypes.c_ulong,
            ctypes.c_ulong,
        )
    return libc


def grow_stack(depth):
    # Each level nests a C call (map -> grow_stack), so the C stack really grows; the kernel then
    # extends [stack] once, now, instead of in the middle of a test.
    if depth:
        return sum(map(grow_stack, (depth - 1,)))
    return 0


def serve(libc):
    pid = os.getpid()
    buf = ctypes.create_string_buffer(BUFSIZE)
    local = Iovec(ctypes.cast(buf, ctypes.c_void_p), 0)
    remote = Iovec(0, 0)
    plocal = ctypes.pointer(local)
    premote = ctypes.pointer(remote)
    ulong = ctypes.c_ulong
    mask = (1 << 64) - 1
    syscall = libc.syscall
    readv = libc.process_vm_readv
    writev = libc.process_vm_writev
    get_errno = ctypes.get_errno
    set_errno = ctypes.set_errno
    memmove = ctypes.memmove
    string_at = ctypes.string_at
    rfd, wfd = 0, 1

    def sc(req):
        # req = (nr, arg0, ...): a raw syscall -> (ret, errno)
        set_errno(0)
        args = [ulong(a & mask) if a.__class__ is int else a for a in req[1:]]
        ret = syscall(ulong(req[0]), *args)
        return (ret, get_errno() if ret == -1 else 0)

    def recv_exact(n):
        chunks = []
        while n:
            chunk = os.read(rfd, n)
            if not chunk:
                raise SystemExit(0)
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def send(obj):
        blob = marshal.dumps(obj)
        data = len(blob).to_bytes(4, "little") + blob
        while data:
            data = data[os.write(wfd, data) :]

    def handle(req):
        op = req[0]
        if op == "sc":
            return sc(req[1])
        if op == "batch":
            return [sc(r) for r in req[1]]
        if op == "read":  # ("read", addr, n) -> (done, errno, bytes)
            addr, n = req[1], req[2]
            local.iov_len = n
            remote.iov_base = addr
            remote.iov_len = n
            set_errno(0)
            done = readv(pid, plocal, 1, premote, 1, 0)
            err = get_errno() if done < 0 else 0
            return (done, err, string_at(buf, max(done, 0)))
        if op == "write":  # ("write", addr, data) -> (done, errno)
            addr, data = req[1], req[2]
            memmove(buf, data, len(data))
            local.iov_len = len(data)
            remote.iov_base = addr
            remote.iov_len = len(data)
            set_errno(0)
            done = writev(pid, plocal, 1, premote, 1, 0)
            return (done, get_errno() if done < 0 else 0)
        if op == "ping":
            return "pong"
        if op == "exit":
            raise SystemExit(0)
        return ("error", f"unknown command {op!r}")

    # Warm every path once (quickening, lazy attribute caches) before the first real request.
    handle(("sc", (39,)))
    handle(("batch", [(39,)]))
    handle(("read", ctypes.addressof(buf) + BUFSIZE // 2, 16))
    handle(("write", ctypes.addressof(buf) + BUFSIZE // 2, b"warmup"))
    marshal.loads(marshal.dumps((1, b"", "s", [0], -1, 1 << 70)))
    send(("hello", pid, sc((12, 0))[0]))
    while True:
        size = int.from_bytes(recv_exact(4), "little")
        req = marshal.loads(recv_exact(size))
        try:
            res = handle(req)
        except SystemExit:
            raise
        except BaseException as exc:  # report, keep serving
            res = ("error", repr(exc))
        send(res)


def main():
    sys.setrecursionlimit(20000)
    libc = setup()
    grow_stack(3000)
    serve(libc)


if __name__ == "__main__":
    main()
