"""A process whose map_count the exporter tests steer (run as a script, commands on stdin).

It maps a private anonymous region of PAGES pages whose first and last pages are PROT_NONE;
each "hole" made with mprotect(PROT_NONE) on a page inside it, between two read-write pages,
splits one VMA into three: +2 VMAs, the alternating rw-p/---p shape of an allocator that
decommits with PROT_NONE. Commands, one per line, each answered "ok" once done:

- ``holes K``: make K more holes now;
- ``threads T``: start T more threads (each a glibc stack and its guard page), which sleep;
- ``grow K RATE``: make K more holes in the background, RATE holes per second;
- end of input: exit.

Imported, it gives the tests :class:`Child` (starts and steers one) and :func:`wc_map_count`.
"""

from __future__ import annotations

import ctypes
import mmap
import subprocess
import sys
import threading
import time
from pathlib import Path

PAGE = mmap.PAGESIZE
PROT_NONE = 0
CHILD = Path(__file__)


def main() -> None:
    pages = int(sys.argv[1]) if len(sys.argv) > 1 else 4096
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    region = mmap.mmap(
        -1,
        pages * PAGE,
        flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
        prot=mmap.PROT_READ | mmap.PROT_WRITE,
    )
    base = ctypes.addressof(ctypes.c_char.from_buffer(region))
    next_hole = [2]  # page 1 stays read-write; holes at pages 2, 4, 6, ...

    def protect(page: int) -> None:
        if libc.mprotect(base + page * PAGE, PAGE, PROT_NONE) != 0:
            raise OSError(ctypes.get_errno(), "mprotect")

    protect(0)
    protect(pages - 1)

    def holes(k: int, rate: float | None) -> None:
        for _ in range(k):
            if next_hole[0] >= pages - 2:
                return
            protect(next_hole[0])
            next_hole[0] += 2
            if rate:
                time.sleep(1.0 / rate)

    stop = threading.Event()
    workers: list[threading.Thread] = []
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "holes":
            holes(int(args[0]), None)
        elif cmd == "threads":
            for _ in range(int(args[0])):
                t = threading.Thread(target=stop.wait, daemon=True)
                t.start()
                workers.append(t)
        elif cmd == "grow":
            threading.Thread(target=holes, args=(int(args[0]), float(args[1])), daemon=True).start()
        print("ok", flush=True)
    stop.set()


class Child:
    """tests/unit/exporter_child.py, steered through its stdin."""

    def __init__(self, pages: int = 512) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(pages)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.readline() == "ready"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def readline(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        assert self.readline() == "ok"

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def wc_map_count(pid: int) -> int | None:
    """The live kernel's answer: ``wc -l`` of the maps file minus its [vsyscall] line (None
    if it cannot be read: gone, or not ours to read)."""
    out = subprocess.run(
        ["sh", "-c", f"wc -l < /proc/{pid}/maps; grep -c '\\[vsyscall\\]' /proc/{pid}/maps"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return int(out[0]) - int(out[1]) if len(out) == 2 else None


if __name__ == "__main__":
    main()
