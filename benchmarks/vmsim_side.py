"""The vmsim side: the same calls as fill_limit.c, in-process through the public API."""

from __future__ import annotations

import errno
from time import perf_counter

from scenario import Phase, SideResult

import vmsim
from vmsim.constants import PAGE_SIZE

PAGE = PAGE_SIZE
REGION_FLAGS = vmsim.MAP_PRIVATE | vmsim.MAP_ANONYMOUS | vmsim.MAP_NORESERVE
PAD_FLAGS = vmsim.MAP_PRIVATE | vmsim.MAP_ANONYMOUS


def spawn(machine: vmsim.Machine, before_mmap: int | None) -> vmsim.Process:
    """A process holding ``before_mmap`` VMAs, like the kernel-side process before its mmap.

    Starts from the usual fresh-process layout and adds isolated one-page mappings (alternate
    protections, so neighbours never merge) until the count matches; falls back to an empty
    address space if the layout already holds more VMAs than the kernel-side process.
    """
    proc = machine.spawn(layout="linux")
    if before_mmap is None:
        return proc
    if proc.map_count > before_mmap:
        proc = machine.spawn()
    prots = (vmsim.PROT_NONE, vmsim.PROT_READ)
    while proc.map_count < before_mmap:
        count = proc.map_count
        proc.mmap(0, PAGE, prots[count % 2], PAD_FLAGS)
        if proc.map_count != count + 1:
            raise RuntimeError(f"padding mmap moved map_count {count} -> {proc.map_count}")
    return proc


def run(npages: int, max_map_count: int, before_mmap: int | None) -> SideResult:
    """One run of the scenario on a fresh Machine; timings with time.perf_counter."""
    machine = vmsim.Machine(max_map_count=max_map_count)
    proc = spawn(machine, before_mmap)
    counts = {"before_mmap": proc.map_count}
    phases: dict[str, Phase] = {}

    t0 = perf_counter()
    base = proc.mmap(0, npages * PAGE, vmsim.PROT_READ | vmsim.PROT_WRITE, REGION_FLAGS)
    phases["mmap"] = Phase(1, perf_counter() - t0)
    counts["after_mmap"] = proc.map_count

    mprotect = proc.mprotect
    split_ns: list[int] = []
    fill_errno = ""
    calls = 0
    t0 = perf_counter()
    for k in range(npages // 2):  # 2k + 1 < npages, as in fill_limit.c
        s = perf_counter()
        calls += 1
        try:
            mprotect(base + (2 * k + 1) * PAGE, PAGE, vmsim.PROT_READ)
        except OSError as exc:
            fill_errno = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            break
        split_ns.append(int((perf_counter() - s) * 1e9))
    phases["fill"] = Phase(calls, perf_counter() - t0)

    t0 = perf_counter()
    text = proc.maps()
    count = proc.map_count
    phases["maps"] = Phase(1, perf_counter() - t0)
    counts["at_limit"] = count

    munmap = proc.munmap
    ok = len(split_ns)
    t0 = perf_counter()
    for k in range(ok):
        munmap(base + (2 * k + 1) * PAGE, PAGE)
    phases["unmap"] = Phase(ok, perf_counter() - t0)
    counts["after_unmap"] = proc.map_count

    t0 = perf_counter()
    munmap(base, npages * PAGE)
    phases["teardown"] = Phase(1, perf_counter() - t0)
    counts["after_teardown"] = proc.map_count

    return SideResult(
        side="vmsim",
        npages=npages,
        max_map_count=max_map_count,
        map_count=counts,
        fill_errno=fill_errno,
        phases=phases,
        split_ns=split_ns,
        maps_bytes=len(text.encode()),
    )
