"""The victims of ``vmsim demo sidechannel``: what a victim process is (:class:`VictimProgram`),
the documented model of a table lookup (:func:`model_victim`, ``--victim model``), and the
real one (:func:`lackey_victim`, ``--victim lackey``): a C table lookup, compiled
with gcc and traced by Valgrind lackey (``--tool=lackey --trace-mem=yes``, ASLR off, as
``vmsim record`` runs programs), its trace read by ``vmsim.memtrace.readers``.

The program, ``data/sidechannel_victim.c``, reads page ``2i + bit`` of its table for key bit
``i`` (its comment says so; tests check the trace against it). It is recorded twice, with the
all-zero and the all-one key of ``MAX_BITS`` bits. Its lookup loop runs one fixed body per bit
(the C has no other key-dependent branch), so the trace is cut into iterations, each the
records up to and including one table load; the two recordings must agree on every record
but the table load (checked). A victim run for any secret then replays iteration ``i`` of the
recording whose key bit equals ``secret[i]``: every access of the loop (instruction fetches,
the key string on the stack, the table) at the address the trace has, in the victim process
(:class:`VictimProgram`).

What is not replayed: the program's start-up, ``printf`` and exit (only the loop is the
victim's run); the program's own mappings are not rebuilt from the recording: the victim
process maps its table where the trace has it and each other page the loop touches as one
anonymous read/write/exec page (the model's page tables and TLB care about the addresses,
not about what backs them).
"""

from __future__ import annotations

import itertools
import random
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vmsim.constants import PROT_EXEC, PROT_READ, PROT_WRITE
from vmsim.hw.tlb import PAGE_SIZE_4K
from vmsim.memtrace.aslr import no_aslr
from vmsim.memtrace.readers import open_memtrace
from vmsim.memtrace.records import KIND_INSTR, KIND_LOAD, TraceError
from vmsim.mm.access import Access

__all__ = [
    "MAX_BITS",
    "SOURCE",
    "LackeyRun",
    "VictimProgram",
    "VictimUnavailable",
    "lackey_victim",
    "model_victim",
    "record_run",
]

MAX_BITS = 64  # two STLB sets a bit: the default CPU's 128 sets
NOISE_PAGES = 2  # other pages of the model victim touched per run
NOISE_SPAN = 1 << 18  # pages of the model victim's other data (1 GiB)
VICTIM_TABLE = 0x7F00_0000_0000
VICTIM_OTHER = 0x7E00_0000_0000
SOURCE = Path(__file__).parent / "data" / "sidechannel_victim.c"
TABLE_PAGES = 2 * MAX_BITS  # the C program's table: 2 * MAX_BITS pages
_ACCESS: tuple[Access, ...] = ("exec", "read", "write", "write")  # I, L, S, M
_TABLE_LINE = re.compile(rb"^table (0x[0-9a-f]+)$", re.M)


@dataclass(frozen=True)
class VictimProgram:
    """What the victim process is: ``mappings`` (address, length, prot) it mmaps at start,
    ``init`` the pages it writes then (its table: faulted in before the first trial),
    ``table`` the public addresses of its two candidate table pages per bit (what the attacker
    aims at), and ``accesses(secret, rng)`` the (address, access) list of one run."""

    name: str
    mappings: tuple[tuple[int, int, int], ...]
    init: tuple[int, ...]
    table: tuple[tuple[int, int], ...]
    accesses: Callable[[Sequence[int], random.Random], list[tuple[int, Access]]]


def model_victim(bits: int) -> VictimProgram:
    """The documented model of the table lookup (module text): page ``2i + bit`` of a table
    at ``VICTIM_TABLE``, then ``NOISE_PAGES`` random pages of its other 1 GiB of data."""
    pages = [VICTIM_TABLE + p * PAGE_SIZE_4K for p in range(2 * bits)]

    def accesses(secret: Sequence[int], rng: random.Random) -> list[tuple[int, Access]]:
        out: list[tuple[int, Access]] = [(pages[2 * i + b], "read") for i, b in enumerate(secret)]
        for _ in range(NOISE_PAGES):
            out.append((VICTIM_OTHER + rng.randrange(NOISE_SPAN) * PAGE_SIZE_4K, "read"))
        return out

    rw = PROT_READ | PROT_WRITE
    return VictimProgram(
        name="model",
        mappings=(
            (VICTIM_TABLE, 2 * bits * PAGE_SIZE_4K, rw),
            (VICTIM_OTHER, NOISE_SPAN * PAGE_SIZE_4K, rw),
        ),
        init=tuple(pages),
        table=tuple((pages[2 * i], pages[2 * i + 1]) for i in range(bits)),
        accesses=accesses,
    )


class VictimUnavailable(RuntimeError):
    """gcc or valgrind is missing, or the program did not build or run: the one-line why."""


@dataclass(frozen=True)
class LackeyRun:
    """One recorded run: the table's address (the program prints it), every record of the
    trace as (address, kind) in order, and the indices of the loads inside the table."""

    key: str
    table: int
    records: list[tuple[int, int]]
    table_loads: list[int]

    def table_pages(self) -> list[int]:
        """The table page (0 .. TABLE_PAGES-1) each lookup read, in order."""
        return [(self.records[i][0] - self.table) >> 12 for i in self.table_loads]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise VictimUnavailable(f"--victim lackey needs {name}: {name} is not on PATH")
    return path


def compile_victim(workdir: Path) -> Path:
    """gcc -O1 the victim program into ``workdir``; its path."""
    out = workdir / "sidechannel_victim"
    p = subprocess.run(
        [_tool("gcc"), "-O1", "-o", str(out), str(SOURCE)],
        capture_output=True,
        text=True,
        check=False,
    )
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise VictimUnavailable(f"gcc could not build {SOURCE.name}: {last}")
    return out


def record_run(binary: Path, key: str, workdir: Path) -> LackeyRun:
    """Run ``binary key`` under lackey with ASLR off and read its trace."""
    if not key or set(key) - {"0", "1"} or len(key) > MAX_BITS:
        raise ValueError(f"key {key!r}: 1 to {MAX_BITS} characters 0 or 1")
    log = workdir / f"lackey-{key}.txt"
    p = subprocess.run(
        [
            _tool("valgrind"),
            "--tool=lackey",
            "--trace-mem=yes",
            f"--log-file={log}",
            str(binary),
            key,
        ],
        capture_output=True,
        preexec_fn=no_aslr,
        check=False,
    )
    m = _TABLE_LINE.search(p.stdout)
    if m is None or not log.exists():
        last = (p.stderr.decode(errors="replace").strip().splitlines() or ["(no message)"])[-1]
        raise VictimUnavailable(f"valgrind could not run {binary.name}: {last}")
    table = int(m.group(1), 16)
    addrs: list[int] = []
    kinds: list[int] = []
    try:
        for chunk in open_memtrace(log, "lackey"):
            addrs.extend(chunk.addr.astype(np.int64).tolist())
            kinds.extend(chunk.kind.tolist())
    except TraceError as e:
        raise VictimUnavailable(f"the lackey trace of {binary.name} is unreadable: {e}") from e
    end = table + TABLE_PAGES * PAGE_SIZE_4K
    loads = [i for i, (a, k) in enumerate(zip(addrs, kinds, strict=True)) if k == KIND_LOAD]
    table_loads = [i for i in loads if table <= addrs[i] < end]
    return LackeyRun(key, table, list(zip(addrs, kinds, strict=True)), table_loads)


def _iterations(run: LackeyRun, bits: int) -> list[list[tuple[int, int]]]:
    """The records of each lookup iteration: the ``body`` records ending at table load ``i``
    (``body``: the distance between two table loads, the same for every iteration)."""
    idx = run.table_loads
    if len(idx) != len(run.key):
        raise VictimUnavailable(
            f"the trace of key {run.key} has {len(idx)} table lookups, not {len(run.key)}"
        )
    if len(idx) < 2:
        raise ValueError(f"key {run.key}: the loop's body needs two lookups to measure")
    body = idx[1] - idx[0]
    if any(b - a != body for a, b in itertools.pairwise(idx)):
        raise VictimUnavailable(f"the lookup loop of key {run.key} has iterations of unequal size")
    return [run.records[i - body + 1 : i + 1] for i in idx[:bits]]


def lackey_victim(bits: int, workdir: Path | None = None) -> VictimProgram:
    """Build, record and cut the C victim (module text) into a ``VictimProgram``."""
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits {bits}: between 1 and {MAX_BITS}")
    with tempfile.TemporaryDirectory(prefix="vmsim-victim-") as tmp:
        work = Path(tmp) if workdir is None else workdir
        binary = compile_victim(work)
        runs = [record_run(binary, b * MAX_BITS, work) for b in "01"]
    if runs[0].table != runs[1].table:
        raise VictimUnavailable("the two recordings put the table at different addresses")
    table = runs[0].table
    its = [_iterations(r, bits) for r in runs]
    for i in range(bits):
        a, b = its[0][i], its[1][i]
        if len(a) != len(b) or any(x != y for x, y in zip(a[:-1], b[:-1], strict=True)):
            raise VictimUnavailable(f"lookup {i}: the recordings differ outside the table load")
    page = PAGE_SIZE_4K
    others = sorted({a & -page for it in its[0] for a, _ in it[:-1]} - {0})
    others = [p for p in others if not table <= p < table + TABLE_PAGES * page]
    tables = tuple((table + 2 * i * page, table + (2 * i + 1) * page) for i in range(bits))
    steps = [[[(a, _ACCESS[k]) for a, k in it] for it in side] for side in its]

    def accesses(secret: Sequence[int], rng: random.Random) -> list[tuple[int, Access]]:
        out: list[tuple[int, Access]] = []
        for i, bit in enumerate(secret):
            out.extend(steps[bit][i])
        return out

    rwx = PROT_READ | PROT_WRITE | PROT_EXEC
    return VictimProgram(
        name="lackey",
        mappings=(
            (table, TABLE_PAGES * page, PROT_READ | PROT_WRITE),
            *((p, page, rwx) for p in others),
        ),
        init=tuple(table + p * page for p in range(TABLE_PAGES)),
        table=tables,
        accesses=accesses,
    )


assert KIND_INSTR == 0  # _ACCESS is indexed by the lackey kind
