"""A process whose map_count the exporter tests steer (run as a script, commands on stdin).

It maps a private anonymous region of PAGES pages whose first and last pages are PROT_NONE;
each "hole" made with mprotect(PROT_NONE) on a page inside it, between two read-write pages,
splits one VMA into three: +2 VMAs, the alternating rw-p/---p shape of an allocator that
decommits with PROT_NONE. Commands, one per line, each answered "ok" once done:

- ``holes K``: make K more holes now;
- ``threads T``: start T more threads (each a glibc stack and its guard page), which sleep;
- ``grow K RATE``: make K more holes in the background, RATE holes per second;
- end of input: exit.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
import threading
import time

PAGE = mmap.PAGESIZE
PROT_NONE = 0


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


if __name__ == "__main__":
    main()
