"""A machine with little RAM under a workload bigger than it, step by step: the engine of
``vmsim demo pressure`` (reclaim, swap, zswap, KSM, the OOM killer, and every byte read back
as written).

The workload is deterministic (a ``random.Random`` seeded with ``Settings.seed``, and a model
machine with the same seed): three processes map anonymous memory and fill it over the first
steps with pages of four kinds: duplicated pages (the same few contents again and again, in a
region advised MADV_MERGEABLE so that ksmd has work), text-like pages (log lines: they
compress), random pages (they do not: zswap stores them as is, a whole page each) and zero
pages (swapped out, each is only a bit in the swap zeromap: no I/O, never offered to zswap, as
in Linux 6.12 and later). Each step every process re-reads part of its memory (a hot working
set, and a little of the rest); one process forks and its child writes part of what it
inherited (copy-on-write), one process exits, and in the last steps pages are rewritten.
Between steps the machine ticks (kswapd, ksmd). After each step the engine records what
/proc/meminfo, /proc/vmstat, /sys/kernel/debug/zswap and /sys/kernel/mm/ksm say.

Every page read is compared with what was written (a BLAKE2b digest of each page is kept); at
the end :meth:`Pressure.verify` reads every page of every live process once more and checks
the model's own invariants (``Machine.check_memory()``).

:class:`Pressure` drives the model and yields :class:`Sample` values; :func:`totals` sums a
run up. Nothing here prints. A run that cannot go on (an mmap refused, or memory exhausted
with no process left to kill) raises :class:`~vmsim.scenarios.ScenarioError`.

Why this module is over 600 lines: it is one engine. The contents it writes, the pages it
remembers, the steps and the read-back all draw on one seeded ``random.Random`` in a fixed
order (the order is the determinism), so they stay in one class.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import vmsim
from vmsim.constants import (
    MADV_MERGEABLE,
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    PAGE_SIZE,
    PROT_READ,
    PROT_WRITE,
)
from vmsim.errors import OomKilled
from vmsim.phys.frames import OutOfMemory
from vmsim.scenarios import ScenarioError
from vmsim.scenarios.proctext import fields, vmstat

PAGE = PAGE_SIZE
KB = 1024
MB = 1 << 20
PAGE_KB = PAGE // KB

FILL_FRACTION = 0.6  # the processes fill their memory over the first 60% of the steps
TICKS_PER_STEP = 4  # kswapd and ksmd (pages_to_scan 100) wake-ups between two steps
HOT_FRACTION = 0.2  # the working set: the first fifth of each process's pages
HOT_READS = 0.8  # share of the reads that go to the working set
READS_PER_STEP = 0.1  # pages read per step, of the pages a process has written
CHURN_PER_STEP = 0.02  # pages rewritten per step after the fill, of the pages written
CHILD_WRITES = 0.125  # the child's copy-on-write writes after the fork, of the pages inherited
TEMPLATES = 12  # distinct contents of the duplicated pages
PREVIEW = 16  # bytes shown of a page that came back wrong

WORDS = (
    "alloc",
    "block",
    "cache",
    "commit",
    "dirty",
    "evict",
    "fault",
    "flush",
    "frame",
    "inode",
    "kswapd",
    "lookup",
    "merge",
    "page",
    "query",
    "reclaim",
    "request",
    "session",
    "shrink",
    "slot",
    "socket",
    "swap",
    "table",
    "update",
    "user",
    "write",
)
LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")


@dataclass(frozen=True)
class ProcSpec:
    """One process of the workload: its share of the workload, the share of its pages that
    are duplicates (in a MADV_MERGEABLE region), and the mix of the other pages."""

    name: str
    share: float
    dup: float
    text: float
    random: float  # the rest of the non-duplicated pages are zero pages


PROCS = (
    ProcSpec("db", 0.40, dup=0.15, text=0.65, random=0.25),
    ProcSpec("web", 0.35, dup=0.45, text=0.70, random=0.15),
    ProcSpec("batch", 0.25, dup=0.10, text=0.30, random=0.50),
)
FORKER = "db"
EXITER = "batch"
KINDS = ("dup", "text", "random", "zero")


@dataclass(frozen=True)
class Settings:
    ram: int  # bytes
    swap: int
    zswap: str | None
    ksm: bool
    steps: int
    seed: int
    workload: int  # bytes the processes map and write
    swap_device: str = "disk"  # disk (rotational), ssd or zram
    swappiness: int = 60


@dataclass(frozen=True)
class Sample:
    """The machine after one step. Sizes in kB as /proc/meminfo gives them; the counters
    (pgfault ... oom_kill) are cumulative since boot, as /proc/vmstat gives them."""

    step: int
    event: str  # what happened in this step besides the reads
    processes: int  # alive
    pages_written: int  # during the step
    pages_read: int
    mem_free_kb: int
    swap_used_kb: int
    swap_cached_kb: int
    zswap_pool_kb: int
    zswap_stored_pages: int
    zswap_incompressible_pages: int  # stored_incompressible_pages: kept as is, a whole page
    ksm_pages_shared: int
    ksm_pages_sharing: int
    ksm_saved_kb: int  # pages_sharing x page size: the frames the merged mappings spare
    pgfault: int
    pgmajfault: int
    pswpin: int
    pswpout: int
    swpin_zero: int  # zero pages read back from the swap zeromap: no I/O
    swpout_zero: int  # zero pages swapped out: a zeromap bit each, never offered to zswap
    zswpin: int
    zswpout: int
    oom_kill: int


@dataclass(frozen=True)
class LostPage:
    """A page that did not read back as written."""

    step: int | None  # None: found by the final read-back
    process: str
    pid: int
    addr: int
    page: int  # index in its region
    region: str
    kind: str  # what was written there
    written_at: int  # the step of the last write
    got: str  # the first bytes read, hex
    got_zeros: bool

    def describe(self) -> str:
        when = f"at step {self.step}" if self.step is not None else "in the final read-back"
        what = "all zeros" if self.got_zeros else f"bytes {self.got}..."
        return (
            f"{self.process} (pid {self.pid}) page {self.page} of its {self.region} region at "
            f"{self.addr:#x}: read back {when} as {what}, not the {self.kind} page written at "
            f"step {self.written_at}"
        )


@dataclass(frozen=True)
class Verification:
    no_byte_lost: bool
    pages_checked: int  # in the final read-back
    processes: int
    lost: tuple[LostPage, ...]
    check_memory: str | None  # None: every invariant holds, else the failed assertion
    majfaults: int  # major faults the final read-back took


@dataclass
class _Page:
    digest: bytes
    kind: str
    step: int


@dataclass
class _Proc:
    name: str
    proc: vmsim.Process
    regions: dict[str, tuple[int, int]]  # "dup"/"data" -> (start, npages)
    plan: list[tuple[str, int, str]]  # (region, page, kind) in the order they are filled
    filled: int = 0  # how much of the plan is written
    pages: dict[int, _Page] = field(default_factory=dict)  # addr -> what was written there
    order: list[int] = field(default_factory=list)  # addresses in the order first written
    gone: str | None = None  # "exits" / "oom-killed"

    @property
    def alive(self) -> bool:
        return self.gone is None and self.proc.alive


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


class Pressure:
    """The machine, the processes and the workload; :meth:`steps` runs it, :meth:`verify`
    reads everything back. Nothing here prints."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rng = random.Random(settings.seed)
        self.machine = vmsim.Machine(
            ram=settings.ram,
            swap=settings.swap,
            zswap=settings.zswap,
            ksm=settings.ksm,
            seed=settings.seed,
            swap_device=settings.swap_device,
            swappiness=settings.swappiness,
        )
        self.lost: list[LostPage] = []
        self._lost_at: set[tuple[int, int]] = set()
        self._ts = 1_700_000_000_000
        self.templates = [
            self._text_page() if i % 2 == 0 else self.rng.randbytes(PAGE) for i in range(TEMPLATES)
        ]
        self.written_by_kind = dict.fromkeys(KINDS, 0)
        self.fill_steps = max(1, math.ceil(settings.steps * FILL_FRACTION))
        self.fork_at = settings.steps // 3
        self.exit_at = max(2 * settings.steps // 3, self.fork_at)
        self.procs: list[_Proc] = []
        total = settings.workload // PAGE
        for spec in PROCS:
            self.procs.append(self._spawn(spec, max(4, round(total * spec.share))))

    # ----------------------------------------------------------------- contents
    def _text_page(self) -> bytes:
        """Log lines: the text-like page that compresses (about 3x with zstd)."""
        rng = self.rng
        out: list[str] = []
        size = 0
        while size < PAGE:
            self._ts += rng.randrange(1, 5000)
            line = (
                f"{self._ts} {rng.choice(LEVELS)} {rng.choice(WORDS)}: {rng.choice(WORDS)} "
                f"{rng.choice(WORDS)} id={rng.randrange(100_000)} took {rng.randrange(900)}ms\n"
            )
            out.append(line)
            size += len(line)
        return "".join(out).encode()[:PAGE]

    def _content(self, kind: str) -> bytes:
        if kind == "dup":
            return self.rng.choice(self.templates)
        if kind == "text":
            return self._text_page()
        if kind == "random":
            return self.rng.randbytes(PAGE)
        return bytes(PAGE)

    def _kind(self, spec: ProcSpec) -> str:
        x = self.rng.random()
        return "text" if x < spec.text else "random" if x < spec.text + spec.random else "zero"

    # ---------------------------------------------------------------- processes
    def _spawn(self, spec: ProcSpec, npages: int) -> _Proc:
        p = self.machine.spawn()
        rw = PROT_READ | PROT_WRITE
        ndup = max(1, round(npages * spec.dup))
        ndata = max(1, npages - ndup)
        try:
            dup = p.mmap(0, ndup * PAGE, rw, MAP_PRIVATE | MAP_ANONYMOUS)
            p.madvise(dup, ndup * PAGE, MADV_MERGEABLE)
            data = p.mmap(0, ndata * PAGE, rw, MAP_PRIVATE | MAP_ANONYMOUS)
        except OSError as exc:
            raise ScenarioError(
                f"{spec.name}: mmap of {npages * PAGE_KB} kB failed: {exc}"
            ) from exc
        plan = [("dup", i, "dup") for i in range(ndup)]
        plan += [("data", i, self._kind(spec)) for i in range(ndata)]
        self.rng.shuffle(plan)  # duplicates and the rest interleaved, as a program fills
        return _Proc(spec.name, p, {"dup": (dup, ndup), "data": (data, ndata)}, plan)

    def _addr(self, pr: _Proc, region: str, page: int) -> int:
        return pr.regions[region][0] + page * PAGE

    def _where(self, pr: _Proc, addr: int) -> tuple[str, int]:
        for name, (start, n) in pr.regions.items():
            if start <= addr < start + n * PAGE:
                return name, (addr - start) // PAGE
        return "?", -1  # pragma: no cover

    def _died(self, pr: _Proc, why: str, events: list[str]) -> None:
        if pr.gone is None:
            pr.gone = why
            pr.pages.clear()
            pr.order.clear()
            events.append(f"{pr.name} {why}")

    def _reap(self, events: list[str]) -> None:
        """Processes the OOM killer took while another one ran."""
        for pr in self.procs:
            if pr.gone is None and not pr.proc.alive:
                self._died(pr, "oom-killed", events)

    def _run(self, pr: _Proc, events: list[str], call: Callable[[], None]) -> bool:
        """One access by ``pr``; False if the OOM killer took it meanwhile."""
        try:
            call()
        except OomKilled:
            self._died(pr, "oom-killed", events)
            self._reap(events)
            return False
        except OutOfMemory as exc:
            raise ScenarioError(
                f"{exc}, and no process left to kill (Linux panics: 'Out of memory and no "
                "killable processes')"
            ) from exc
        self._reap(events)
        return pr.alive

    def _write(self, pr: _Proc, addr: int, kind: str, step: int, events: list[str]) -> bool:
        data = self._content(kind)
        if not self._run(pr, events, lambda: pr.proc.write(addr, data)):
            return False
        if addr not in pr.pages:
            pr.order.append(addr)
        pr.pages[addr] = _Page(_digest(data), kind, step)
        self.written_by_kind[kind] += 1
        return True

    def _check(self, pr: _Proc, addr: int, got: bytes, step: int | None) -> bool:
        want = pr.pages[addr]
        if _digest(got) == want.digest:
            return True
        if (pr.proc.pid, addr) not in self._lost_at:
            self._lost_at.add((pr.proc.pid, addr))
            region, page = self._where(pr, addr)
            self.lost.append(
                LostPage(
                    step=step,
                    process=pr.name,
                    pid=pr.proc.pid,
                    addr=addr,
                    page=page,
                    region=region,
                    kind=want.kind,
                    written_at=want.step,
                    got=got[:PREVIEW].hex(),
                    got_zeros=not any(got),
                )
            )
        return False

    def _read(self, pr: _Proc, addr: int, step: int | None, events: list[str]) -> bool:
        out: list[bytes] = []
        if not self._run(pr, events, lambda: out.append(pr.proc.read(addr, PAGE))):
            return False
        self._check(pr, addr, out[0], step)
        return True

    # --------------------------------------------------------------------- steps
    def _fill(self, pr: _Proc, step: int, events: list[str]) -> int:
        target = math.ceil(len(pr.plan) * (step + 1) / self.fill_steps)
        written = 0
        while pr.alive and pr.filled < min(target, len(pr.plan)):
            region, page, kind = pr.plan[pr.filled]
            pr.filled += 1
            if self._write(pr, self._addr(pr, region, page), kind, step + 1, events):
                written += 1
        return written

    def _fork(self, pr: _Proc, step: int, events: list[str]) -> tuple[_Proc | None, int]:
        out: list[vmsim.Process] = []
        if not self._run(pr, events, lambda: out.append(pr.proc.fork())):
            return None, 0
        child = _Proc(
            f"{pr.name}-child",
            out[0],
            dict(pr.regions),
            [],
            filled=0,
            pages=dict(pr.pages),
            order=list(pr.order),
        )
        self.procs.append(child)
        events.append(f"fork {pr.name} -> {child.name} (pid {child.proc.pid})")
        # the child makes part of what it inherited its own: copy-on-write
        written = 0
        n = max(1, round(len(child.order) * CHILD_WRITES))
        for addr in self.rng.sample(child.order, min(n, len(child.order))):
            kind = child.pages[addr].kind
            if not self._write(child, addr, kind, step + 1, events):
                break
            written += 1
        return child, written

    def _churn(self, pr: _Proc, step: int, events: list[str]) -> int:
        n = max(1, round(len(pr.order) * CHURN_PER_STEP)) if pr.order else 0
        written = 0
        for addr in self.rng.sample(pr.order, min(n, len(pr.order))):
            if not self._write(pr, addr, pr.pages[addr].kind, step + 1, events):
                break
            written += 1
        return written

    def _working_set(self, pr: _Proc, step: int, events: list[str]) -> int:
        order = pr.order
        if not order:
            return 0
        hot = max(1, round(len(order) * HOT_FRACTION))
        n = max(2, round(len(order) * READS_PER_STEP))
        read = 0
        for _ in range(n):
            pool = hot if self.rng.random() < HOT_READS else len(order)
            addr = order[self.rng.randrange(pool)]
            if not self._read(pr, addr, step + 1, events):
                break
            read += 1
        return read

    def sample(self, step: int, event: str, written: int, read: int) -> Sample:
        m = self.machine
        info = fields(m.meminfo())
        vm = vmstat(m)
        z = m.zswap_stats()
        k = m.ksm_stats()
        return Sample(
            step=step,
            event=event,
            processes=sum(pr.alive for pr in self.procs),
            pages_written=written,
            pages_read=read,
            mem_free_kb=info["MemFree"],
            swap_used_kb=info["SwapTotal"] - info["SwapFree"],
            swap_cached_kb=info["SwapCached"],
            zswap_pool_kb=info["Zswap"],
            zswap_stored_pages=z["stored_pages"],
            zswap_incompressible_pages=z["stored_incompressible_pages"],
            ksm_pages_shared=k["pages_shared"],
            ksm_pages_sharing=k["pages_sharing"],
            ksm_saved_kb=k["pages_sharing"] * PAGE_KB,
            pgfault=vm["pgfault"],
            pgmajfault=vm["pgmajfault"],
            pswpin=vm["pswpin"],
            pswpout=vm["pswpout"],
            swpin_zero=vm["swpin_zero"],
            swpout_zero=vm["swpout_zero"],
            zswpin=vm["zswpin"],
            zswpout=vm["zswpout"],
            oom_kill=vm["oom_kill"],
        )

    def steps(self) -> Iterator[Sample]:
        """Run the workload, yielding the machine's state after each step."""
        for step in range(self.settings.steps):
            events: list[str] = []
            written = read = 0
            if step < self.fill_steps:
                for pr in self.procs:
                    written += self._fill(pr, step, events)
                filling = [pr.filled / len(pr.plan) for pr in self.procs if pr.plan and pr.alive]
                if filling:
                    events.insert(0, f"fill {min(filling):.0%}")
                if step == 0:
                    mib = self.settings.workload / MB
                    events.insert(0, f"{len(PROCS)} processes map {mib:g} MiB")
            if step == self.fork_at:
                forker = next((pr for pr in self.procs if pr.name == FORKER), None)
                if forker is not None and forker.alive:
                    _child, n = self._fork(forker, step, events)
                    written += n
            if step >= self.fill_steps:
                for pr in self.procs:
                    if pr.alive:
                        written += self._churn(pr, step, events)
                events.insert(0, "rewrite 2%")
            for pr in self.procs:
                if pr.alive:
                    read += self._working_set(pr, step, events)
            if step == self.exit_at:
                exiter = next((pr for pr in self.procs if pr.name == EXITER), None)
                if exiter is not None and exiter.alive:
                    exiter.proc.exit()
                    self._died(exiter, "exits", events)
            self.machine.tick(TICKS_PER_STEP)
            self._reap(events)
            yield self.sample(step + 1, ", ".join(events) or "reads", written, read)

    def verify(self) -> Verification:
        """Read every page of every live process back, then check the model's invariants."""
        events: list[str] = []
        before = self.machine.stats["pgmajfault"]
        checked = 0
        for pr in self.procs:
            for addr in list(pr.order):
                if not pr.alive:
                    break
                if self._read(pr, addr, None, events):
                    checked += 1
        majfaults = self.machine.stats["pgmajfault"] - before
        problem: str | None = None
        try:
            self.machine.check_memory()
        except AssertionError as exc:
            problem = str(exc) or "an invariant does not hold"
        return Verification(
            no_byte_lost=not self.lost and problem is None,
            pages_checked=checked,
            processes=sum(pr.alive for pr in self.procs),
            lost=tuple(self.lost),
            check_memory=problem,
            majfaults=majfaults,
        )


def run_workload(settings: Settings) -> tuple[list[Sample], Verification, Pressure]:
    """The whole run at once (for tests and the benchmark)."""
    p = Pressure(settings)
    samples = list(p.steps())
    return samples, p.verify(), p


def totals(p: Pressure, samples: list[Sample], verification: Verification) -> dict[str, Any]:
    """The summary: the counters after the last step, the peaks, and what the pool and ksmd
    report (zswap and KSM counters as /sys shows them)."""
    last = samples[-1]
    z = p.machine.zswap_stats()
    return {
        "steps": len(samples),
        "pages_written": sum(s.pages_written for s in samples),
        "pages_read": sum(s.pages_read for s in samples),
        "written_by_kind": dict(p.written_by_kind),
        "min_mem_free_kb": min(s.mem_free_kb for s in samples),
        "max_swap_used_kb": max(s.swap_used_kb for s in samples),
        "max_zswap_pool_kb": max(s.zswap_pool_kb for s in samples),
        "max_zswap_stored_pages": max(s.zswap_stored_pages for s in samples),
        "max_ksm_saved_kb": max(s.ksm_saved_kb for s in samples),
        "max_ksm_pages_sharing": max(s.ksm_pages_sharing for s in samples),
        "zswap_compression_ratio": (  # the pages stored as is count 1:1
            round(z["stored_pages"] * PAGE / z["pool_total_size"], 2)
            if z["pool_total_size"]
            else None
        ),
        "pgfault": last.pgfault,
        "pgmajfault": last.pgmajfault,
        "pswpin": last.pswpin,
        "pswpout": last.pswpout,
        "swpin_zero": last.swpin_zero,
        "swpout_zero": last.swpout_zero,
        "zswpin": last.zswpin,
        "zswpout": last.zswpout,
        "oom_kill": last.oom_kill,
        "zswap": z,
        "ksm": p.machine.ksm_stats(),
        "verification": {
            "no_byte_lost": verification.no_byte_lost,
            "pages_checked": verification.pages_checked,
            "processes": verification.processes,
            "majfaults": verification.majfaults,
            "lost": [asdict(x) for x in verification.lost],
            "check_memory": verification.check_memory or "ok",
        },
    }


__all__ = [
    "EXITER",
    "FORKER",
    "KB",
    "KINDS",
    "MB",
    "PAGE_KB",
    "PROCS",
    "LostPage",
    "Pressure",
    "ProcSpec",
    "Sample",
    "Settings",
    "Verification",
    "run_workload",
    "totals",
]
