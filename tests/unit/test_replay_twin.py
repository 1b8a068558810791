"""The fast replay() against its straightforward twin.

``reference_replay`` below is replay() as it was before it was made fast: it reads the trace
afresh for every pass and always runs the written replay (as if every writable private VMA
was written) in full. replay() parses once where the trace fits in memory and skips the
written replay when the plain one proved it could not differ (Replayer._written_pre). Every
report field must be identical, on the recorded fixtures (with and without their binaries,
at the default limit and at a low one) and on random traces built to hit the cases the proof
distinguishes: adjacent writable mappings, mprotect inside and at the ends of a VMA, brk,
mremap, fork, madvise.
"""

from __future__ import annotations

import gzip
import random
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vmsim.constants import PROT_READ, PROT_WRITE
from vmsim.errors import CAUSE_MAP_COUNT
from vmsim.process import Process
from vmsim.trace import read_strace, sniff_and_read
from vmsim.trace.events import Syscall
from vmsim.trace.replay import (
    UNLIMITED,
    Replayer,
    ReplayReport,
    _clone_children,
    _Events,
    _starts_with_execve,
    replay,
)
from vmsim.trace.written import Judgement, WrittenWatch

FIXTURES = Path(__file__).parent.parent / "fixtures"
TRACES = FIXTURES / "traces"
CORPUS = TRACES / "corpus"
PROGRAMS = FIXTURES / "programs"
STACK_ONLY = "7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0                          [stack]\n"


def reference_replay(
    events: Callable[[], Iterator[Any]], *, max_map_count: int = 65530, **options: Any
) -> ReplayReport:
    """replay() before it was made fast: one full pass per question."""
    if "known_children" not in options and not _starts_with_execve(events()):
        options = {**options, "known_children": _clone_children(events())}
    r = Replayer(max_map_count=max_map_count, track_deltas=True, **options)
    rep = r.feed(events())
    if any(f.cause == CAUSE_MAP_COUNT for f in rep.failures):
        r2 = Replayer(max_map_count=UNLIMITED, **options)
        r2.feed(events())
        rep.min_max_map_count = r2.report.min_max_map_count
    w = Replayer(
        max_map_count=max_map_count, track_deltas=True, **{**options, "assume_written": True}
    )
    written = w.feed(events())
    rep.peak_map_count_range = (
        rep.peak_map_count,
        max(rep.peak_map_count, written.peak_map_count),
    )
    rep.write_dependent_calls = sum(
        1
        for key in written.deltas.keys() | rep.deltas.keys()
        if written.deltas.get(key, 0) > rep.deltas.get(key, 0)
    )
    if rep.write_dependent_calls:
        rep.estimates.append(
            f"{rep.write_dependent_calls} call(s) leave more VMAs if the program wrote to "
            "its memory (written VMAs keep their own anon_vma and do not merge): peak "
            f"map_count {rep.peak_map_count_range[0]} if nothing was written, "
            f"{rep.peak_map_count_range[1]} if everything writable was"
        )
    return rep


def assert_twins(read: Callable[[], Iterator[Any]], **options: Any) -> ReplayReport:
    fast = replay(read, **options)
    ref = reference_replay(read, **options)
    assert fast.to_json() == ref.to_json()
    assert fast.series == ref.series
    assert fast.deltas == ref.deltas
    return fast


@pytest.fixture(scope="module")
def bindir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: cannot rebuild the traced programs")
    out = tmp_path_factory.mktemp("bin")
    for prog in ("threads", "arenas", "fill_map_count", "tiny"):
        subprocess.run(
            ["gcc", "-O1", "-g", "-pthread", "-o", str(out / prog), str(PROGRAMS / f"{prog}.c")],
            check=True,
        )
    return out


SINGLE = sorted(p.name for p in TRACES.iterdir() if p.is_file())


@pytest.mark.parametrize("name", SINGLE)
def test_fixture_traces_match_the_reference(name: str, bindir: Path) -> None:
    path = TRACES / name
    assert_twins(lambda: sniff_and_read(path), cwd=bindir)


@pytest.mark.parametrize(
    ("name", "limit"),
    [
        ("fill_map_count.strace.gz", 40),
        ("fill_map_count.strace.gz", 3000),
        ("python.strace.gz", 40),
        ("python.strace.gz", 100),
    ],
)
def test_low_limits_match_the_reference(name: str, limit: int, tmp_path: Path) -> None:
    """Without the binaries (estimated layouts), at limits the trace hits early."""
    path = TRACES / name
    rep = assert_twins(lambda: sniff_and_read(path), cwd=tmp_path, max_map_count=limit)
    assert rep.first_failure is not None


@pytest.mark.parametrize(
    "name",
    sorted(p.name for p in CORPUS.glob("*.strace.gz") if not p.name.endswith(".k.strace.gz")),
)
def test_corpus_traces_match_the_reference(name: str) -> None:
    with gzip.open(CORPUS / name, "rt") as f:
        lines = f.read().splitlines()
    options: dict[str, Any] = {"cwd": PROGRAMS}
    if name.startswith("attach"):
        stem = name.removesuffix(".strace.gz")
        one = CORPUS / f"{stem}.smaps.gz"
        if one.exists():
            with gzip.open(one, "rt") as f:
                options["from_maps"] = f.read()
        else:  # several processes attached together: NAME.PID.smaps.gz for each
            options["from_maps"] = {
                int(path.name.split(".")[-3]): gzip.decompress(path.read_bytes()).decode()
                for path in CORPUS.glob(f"{stem}.[0-9]*.smaps.gz")
            }
    assert_twins(lambda: read_strace(lines), **options)


def test_ff_traces_match_the_reference(bindir: Path) -> None:
    files = sorted((TRACES / "threads-ff").iterdir())
    assert_twins(lambda: sniff_and_read(files[0]), cwd=bindir)


# ------------------------------------------------------------------ random traces
BASE = 0x100000000000
PROTS = ("PROT_READ", "PROT_READ|PROT_WRITE", "PROT_NONE", "PROT_READ|PROT_WRITE")
ANON = "MAP_PRIVATE|MAP_ANONYMOUS"


def random_trace(seed: int, n: int = 150, pages: int = 48) -> list[str]:
    """Calls on ``pages`` pages at BASE, all recorded as succeeding: whether they do in the
    model does not matter, only that both replays see the same."""
    rng = random.Random(seed)
    pids = [1]
    out: list[str] = []
    brk = 0x200000000000
    out.append(f"1 brk(NULL) = {brk:#x}")
    for _ in range(n):
        pid = rng.choice(pids)
        page = rng.randrange(pages)
        npages = rng.choice((1, 1, 1, 2, 3, 8))
        addr = BASE + page * 4096
        length = npages * 4096
        prot = rng.choice(PROTS)
        op = rng.random()
        if op < 0.25:
            out.append(
                f"{pid} mmap({addr:#x}, {length}, {prot}, {ANON}|MAP_FIXED, -1, 0) = {addr:#x}"
            )
        elif op < 0.35:
            out.append(f"{pid} mmap(NULL, {length}, {prot}, {ANON}, -1, 0) = {addr:#x}")
        elif op < 0.6:
            out.append(f"{pid} mprotect({addr:#x}, {length}, {prot}) = 0")
        elif op < 0.7:
            out.append(f"{pid} munmap({addr:#x}, {length}) = 0")
        elif op < 0.78:
            advice = rng.choice(("MADV_DONTNEED", "MADV_DONTFORK", "MADV_FREE", "MADV_NORMAL"))
            out.append(f"{pid} madvise({addr:#x}, {length}, {advice}) = 0")
        elif op < 0.84:
            new = BASE + rng.randrange(pages) * 4096
            grow = length + rng.choice((-4096, 0, 4096, 8192)) if length > 4096 else length * 2
            out.append(f"{pid} mremap({addr:#x}, {length}, {grow}, MREMAP_MAYMOVE) = {new:#x}")
        elif op < 0.92:
            brk += rng.choice((0, 4096, 8192, -4096))
            out.append(f"{pid} brk({brk:#x}) = {brk:#x}")
        elif op < 0.95 and len(pids) < 4:
            child = max(pids) + 1
            pids.append(child)
            if rng.random() < 0.5:
                out.append(f"{pid} fork() = {child}")
            else:
                out.append(f"{pid} clone(child_stack=NULL, flags=CLONE_VM|CLONE_THREAD) = {child}")
        else:
            out.append(f"{pid} mlock({addr:#x}, {length}) = 0")
    return out


@pytest.mark.parametrize("seed", range(60))
def test_random_traces_match_the_reference(seed: int) -> None:
    lines = random_trace(seed)
    assert_twins(lambda: read_strace(lines), from_maps=STACK_ONLY, max_map_count=12)


def sparse_trace(seed: int) -> list[str]:
    """Mappings with gaps between most of them, no fork or mremap (which always force the
    written replay): about half of these traces are ones where replay() skips it, so the
    proof itself is what is being checked, next to traces that only just need it."""
    lines = random_trace(seed, 40, pages=300)
    return [ln for ln in lines if "mremap" not in ln and "fork" not in ln]


@pytest.mark.parametrize("seed", range(60, 140))
def test_sparse_random_traces_match_the_reference(seed: int) -> None:
    lines = sparse_trace(seed)
    assert_twins(lambda: read_strace(lines), from_maps=STACK_ONLY)


def test_sparse_random_traces_exercise_both_paths() -> None:
    """The sparse traces above include both kinds: the written replay skipped, and run."""
    skipped = 0
    for seed in range(60, 140):
        r = Replayer(watch_written=True, from_maps=STACK_ONLY)
        r.feed(read_strace(sparse_trace(seed)))
        skipped += not r.written_sensitive
    assert 10 <= skipped <= 70


def test_the_writable_mprotect_fast_path_judges_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """WrittenWatch.before_writable(), the replay's fast path for mprotect(PROT_READ |
    PROT_WRITE), judges each call of the random traces as before() does: a split inside a
    VMA that may hold an anon_vma, inside one that may not, and the calls at a VMA's ends
    (before()'s participants); the traces are the two kinds above."""
    fast = WrittenWatch.before_writable
    seen: list[Judgement] = []

    def both(self: WrittenWatch, p: Process, lo: int, length: int) -> Judgement:
        got = fast(self, p, lo, length)
        prot = PROT_READ | PROT_WRITE
        ev = Syscall(0, None, None, "mprotect", (lo, length, prot), {}, 0, None, None, (), "")
        assert got == self.before(p, ev), (hex(lo), length)
        seen.append(got)
        return got

    monkeypatch.setattr(WrittenWatch, "before_writable", both)
    for seed in range(60, 140):
        Replayer(watch_written=True, from_maps=STACK_ONLY).feed(read_strace(sparse_trace(seed)))
    for seed in range(20):
        r = Replayer(watch_written=True, from_maps=STACK_ONLY, max_map_count=12)
        r.feed(read_strace(random_trace(seed)))
    inside = [j for j in seen if isinstance(j, tuple) and j[1] < j[0]]
    assert None in seen and False in seen and inside, seen


def test_the_written_replay_is_skipped_for_the_fill_trace(tmp_path: Path) -> None:
    """The fill trace never puts two possibly written VMAs next to each other: replay()
    answers the written range from the plain replay (this test fails if it stops doing so,
    which the twin tests above would not notice)."""
    path = TRACES / "fill_map_count.strace.gz"
    r = Replayer(watch_written=True, cwd=tmp_path)
    r.feed(sniff_and_read(path))
    assert not r.written_sensitive


def test_the_written_replay_runs_when_a_merge_depends_on_writes() -> None:
    """Two writable neighbours of a new mapping: the merge depends on their anon_vmas."""
    rw = "PROT_READ|PROT_WRITE"
    fixed = f"{ANON}|MAP_FIXED"
    lines = [
        f"1 mmap(0x100000000000, 16384, {rw}, {fixed}, -1, 0) = 0x100000000000",
        f"1 mmap(0x100000008000, 16384, {rw}, {fixed}, -1, 0) = 0x100000008000",
        f"1 mmap(0x100000004000, 16384, {rw}, {fixed}, -1, 0) = 0x100000004000",
    ]
    two = Replayer(watch_written=True, from_maps=STACK_ONLY)
    two.feed(read_strace(lines[:2]))
    assert not two.written_sensitive
    three = Replayer(watch_written=True, from_maps=STACK_ONLY)
    three.feed(read_strace(lines))
    assert three.written_sensitive


def _counting(path: Path) -> tuple[list[int], Callable[[], Iterator[Any]]]:
    opened = [0]

    def read() -> Iterator[Any]:
        opened[0] += 1
        return sniff_and_read(path)

    return opened, read


def test_a_short_trace_is_parsed_once(tmp_path: Path) -> None:
    """fill_map_count.strace.gz has no execve (a first pass for the clone()s), hits the
    limit (the unlimited replay): three passes, one full parse (plus the first line)."""
    opened, read = _counting(TRACES / "fill_map_count.strace.gz")
    rep = replay(read, cwd=tmp_path)
    assert rep.passes == ["limited", "unlimited"]
    assert opened[0] == 2  # _starts_with_execve() reads up to the first call only


def test_a_long_trace_is_read_again_for_each_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = TRACES / "fill_map_count.strace.gz"
    expected = replay(lambda: sniff_and_read(path), cwd=tmp_path, max_map_count=500)
    monkeypatch.setattr(_Events, "CACHE_LINES", 100)
    opened, read = _counting(path)
    rep = replay(read, cwd=tmp_path, max_map_count=500)
    assert opened[0] == 4  # first call, clone()s, limited, unlimited
    assert rep.to_json() == expected.to_json()


def _unlimited_feeds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many events each replay without a limit (counts only) is fed."""
    fed: list[int] = []
    feed = Replayer.feed

    def counting(self: Replayer, events: Iterable[Any]) -> ReplayReport:
        if self.machine.cfg.max_map_count != UNLIMITED:
            return feed(self, events)
        n = [0]

        def each() -> Iterator[Any]:
            for ev in events:
                n[0] += 1
                yield ev

        try:
            return feed(self, each())
        finally:
            fed.append(n[0])

    monkeypatch.setattr(Replayer, "feed", counting)
    return fed


def test_the_unlimited_replay_goes_on_from_the_first_limit_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fill trace hits the limit 7 lines before its end: the replay without a limit
    starts from a copy taken just before that call, not from the first line."""
    path = TRACES / "fill_map_count.strace.gz"
    fed = _unlimited_feeds(monkeypatch)
    rep = replay(lambda: sniff_and_read(path), cwd=tmp_path)
    assert rep.passes == ["limited", "unlimited"]
    assert rep.first_failure is not None
    assert len(fed) == 1
    assert fed[0] < 10, fed


def in_order_trace(seed: int) -> list[str]:
    """A random trace whose calls all run in the order recorded: no mmap(NULL) or moving
    mremap to a busy address, which the replay would hold back (they take other paths, where
    it makes no copy)."""
    return [ln for ln in random_trace(seed) if "mmap(NULL" not in ln and "MAYMOVE" not in ln]


@pytest.mark.parametrize("seed", range(60))
def test_random_traces_match_the_reference_from_any_copy(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy of the replay before every call (not only near the limit): the replay without
    a limit goes on from whichever call first crossed it, and must give the reference's
    min_max_map_count (and every other field) whatever that call is."""
    monkeypatch.setattr(Replayer, "SNAPSHOTS_MAX", 10**9)
    monkeypatch.setattr(Replayer, "SNAPSHOT_SLACK", 10**9)
    monkeypatch.setattr(Replayer, "SNAPSHOT_SLACK_MREMAP", 10**9)
    fed = _unlimited_feeds(monkeypatch)
    lines = in_order_trace(seed)
    rep = assert_twins(lambda: read_strace(lines), from_maps=STACK_ONLY, max_map_count=12)
    assert rep.first_failure is not None
    # replay()'s, from the copy made before the first call that crossed the limit (from
    # the start only where that call was held back), then the reference's, from the start
    assert len(fed) == 2
    assert fed[0] <= fed[1] == len(list(read_strace(lines)))


def test_random_traces_go_on_from_a_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """...and the test above does go on from copies: for most seeds, from the middle."""
    monkeypatch.setattr(Replayer, "SNAPSHOTS_MAX", 10**9)
    monkeypatch.setattr(Replayer, "SNAPSHOT_SLACK", 10**9)
    monkeypatch.setattr(Replayer, "SNAPSHOT_SLACK_MREMAP", 10**9)
    fed = _unlimited_feeds(monkeypatch)
    resumed = 0
    for seed in range(60):
        lines = in_order_trace(seed)
        replay(lambda lines=lines: read_strace(lines), from_maps=STACK_ONLY, max_map_count=12)
        resumed += 0 < fed[-1] < len(list(read_strace(lines)))
    assert resumed >= 30, resumed
