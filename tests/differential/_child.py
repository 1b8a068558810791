"""The process the differential tests drive: it executes raw memory syscalls sent over a pipe.

Run by ``live.LiveChild`` as ``python -S _child.py`` with ``PYTHONMALLOC=malloc`` and glibc
tunables that keep malloc away from mmap.  Everything that could make the interpreter map
memory by itself (imports, ctypes types, buffers, a pre-grown heap and stack) happens in
``setup()``; after the ``hello`` message the interpreter only allocates from its heap, so every
change in ``/proc/<pid>/maps`` is caused by a command.

Protocol (stdin/stdout): each message is a 4-byte little-endian length and a ``marshal`` blob.
Requests are tuples whose first item names the command; see ``serve()``.

``("fork", fifo_in, fifo_out)`` forks: the new process opens the two FIFOs (made by the test
side), moves them onto fds 0 and 1, says hello there and serves the same protocol; the parent
replies with its pid and reaps it on ``("reap", pid, nohang)``.  The forked process only uses the
interpreter's heap (a copy of the parent's), never the regions the test maps, and leaves with
``os._exit`` on ``exit`` or EOF (no interpreter shutdown, no stdio buffer flushed into the
parent's pipe).
"""

import ctypes
import marshal
import os
import resource
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


NOREPLY = object()  # handle() result of a freshly forked process: it already said hello


def serve(libc):
    pid = os.getpid()
    forked = False  # True in a process made by the "fork" command
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
    getrusage = resource.getrusage
    rusage_self = resource.RUSAGE_SELF
    buf_addr = ctypes.addressof(buf)

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

    def hello():
        send(("hello", pid, sc((12, 0))[0]))

    def become_forked(fifo_in, fifo_out, parent):
        # In the new process: serve on the FIFOs instead of the parent's pipes.  Any failure
        # here must not reach the main loop (it would answer on the parent's stdout).
        nonlocal pid, forked
        try:
            pid = os.getpid()
            forked = True
            sc((157, 1, 9))  # prctl(PR_SET_PDEATHSIG, SIGKILL): die with the parent
            if os.getppid() != parent:
                os._exit(71)
            fi = os.open(fifo_in, os.O_RDONLY)
            fo = os.open(fifo_out, os.O_WRONLY)
            os.dup2(fi, rfd)
            os.dup2(fo, wfd)
            os.close(fi)
            os.close(fo)
            hello()
        except BaseException:
            os._exit(70)
        return NOREPLY

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
        if op == "load":  # ("load", addr, n) -> bytes: a real CPU load (may kill us)
            return string_at(req[1], req[2])
        if op == "store":  # ("store", addr, data) -> None: a real CPU store (may kill us)
            data = req[2]
            memmove(req[1], data, len(data))
            return None
        if op == "mincore":  # ("mincore", addr, length) -> (ret, errno, vector)
            addr, length = req[1], req[2]
            npages = ((length & mask) + 4095) // 4096
            # beyond TASK_SIZE the kernel fails (ENOMEM) before writing the vector
            if npages > BUFSIZE and (addr & mask) + (length & mask) <= 0x7FFFFFFFF000:
                raise ValueError("mincore vector larger than the buffer")
            set_errno(0)
            ret = syscall(ulong(27), ulong(addr & mask), ulong(length & mask), buf)
            if ret == -1:
                return (ret, get_errno(), b"")
            return (ret, 0, string_at(buf_addr, npages))
        if op == "getrusage":  # ("getrusage",) -> (minflt, majflt) of this process
            ru = getrusage(rusage_self)
            return (ru.ru_minflt, ru.ru_majflt)
        if op == "fork":  # ("fork", fifo_in, fifo_out) -> pid (parent) | hello on the FIFOs
            parent = os.getpid()
            child = os.fork()
            if child:
                return child
            return become_forked(req[1], req[2], parent)
        if op == "reap":  # ("reap", pid, nohang) -> (pid or 0, wait status) | (-1, errno)
            try:
                return os.waitpid(req[1], os.WNOHANG if req[2] else 0)
            except OSError as exc:
                return (-1, exc.errno)
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
    handle(("load", ctypes.addressof(buf) + BUFSIZE // 2, 16))
    handle(("store", ctypes.addressof(buf) + BUFSIZE // 2, b"warmup"))
    handle(("mincore", ctypes.addressof(buf) & ~4095, 4096))
    handle(("getrusage",))
    handle(("reap", -1, 1))
    marshal.loads(marshal.dumps((1, b"", "s", [0], -1, 1 << 70, None, (1, 2))))
    hello()
    while True:
        try:
            size = int.from_bytes(recv_exact(4), "little")
            req = marshal.loads(recv_exact(size))
            try:
                res = handle(req)
            except SystemExit:
                raise
            except BaseException as exc:  # report, keep serving
                res = ("error", repr(exc))
        except SystemExit:
            if forked:
                os._exit(0)
            raise
        if res is not NOREPLY:
            send(res)


def main():
    sys.setrecursionlimit(20000)
    libc = setup()
    grow_stack(3000)
    serve(libc)


if __name__ == "__main__":
    main()
