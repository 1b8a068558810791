"""read_strace_numbered(): the reader with runs of lines taken by the fast lane.

The expected events are read_strace()'s for the whole trace, less the calls of the lines
taken: with the lane replaying those itself, the reader must yield everything else the same,
in the same order, and must have yielded, by the time it reads past a run, exactly the events
read_strace() yields before the run's first call (the lane replays the run at that point).
"""

from __future__ import annotations

import gzip
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmsim.trace.decode import Timestamps
from vmsim.trace.events import Syscall
from vmsim.trace.strace import TAKEN, read_strace, read_strace_numbered

TRACES = Path(__file__).parent.parent / "fixtures" / "traces"
CASES = [
    "fill_map_count.exec.strace.gz",  # no timestamps
    "arenas.r.strace",  # -r: relative stamps, summed
    "arenas.ttt.strace",  # -ttt
    "corpus/gcc.strace.gz",  # -tt, several processes
    "corpus/initdb.strace.gz",
    "corpus/attach.strace.gz",  # unfinished / resumed pairs
    "corpus/java-g1.strace.gz",
]
# a complete call on one line: a pid or none, a timestamp or none, a number as the result
_COMPLETE = re.compile(
    r"^(?:[0-9]+ +)?(?:([0-9][0-9:.]*) +)?[a-z_][a-z0-9_]*\([^\"<>{}\[\]]*\) += "
    r"(?:0x[0-9a-f]+|[0-9]+)(?: <[0-9.]+>)?$"
)


def _lines(name: str) -> list[str]:
    path = TRACES / name
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        return fh.read().splitlines()


def _takeable(lines: list[str]) -> list[bool]:
    ok = []
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        prev = lines[i - 1] if i else ""
        ok.append(
            bool(_COMPLETE.match(line)) and not nxt.startswith(" > ") and "strace: " not in prev
        )
    return ok


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("seed", [1, 2])
def test_taken_runs_leave_every_other_event_as_it_was(name: str, seed: int) -> None:
    lines = _lines(name)
    full = list(read_strace(lines))
    ok = _takeable(lines)
    rng = random.Random(seed)
    taken: set[int] = set()
    runs: list[tuple[int, list[int]]] = []  # (first line, lines) of each run
    i = 0
    while i < len(lines):
        if ok[i] and rng.random() < 0.3:
            j = i
            while j < len(lines) and ok[j] and rng.random() < 0.9:
                j += 1
            if j > i:
                runs.append((i + 1, list(range(i, j))))
                taken.update(range(i + 1, j + 1))
                i = j
                continue
        i += 1
    clock = Timestamps()
    starts = {first: run for first, run in runs}

    def numbered() -> Iterator[tuple[int, object]]:
        n = 0
        while n < len(lines):
            run = starts.get(n + 1)
            if run is None:
                yield n + 1, lines[n]
                n += 1
                continue
            # what the lane does for the lines it takes: keep the clock going
            for k in run:
                m = _COMPLETE.match(lines[k])
                assert m is not None
                if m.group(1):
                    clock.parse(m.group(1))
            yield n + 1, TAKEN
            # the reader asks for the next line: it must have yielded every event that
            # read_strace() yields before the run's first call (the lane replays the run now)
            seen.append((n + 1, len(got)))
            n = run[-1] + 1

    assert taken, "the trace has no line a lane could take"
    by_line = [e for e in full if e.lineno in taken]
    assert len(by_line) == len(taken) and all(type(e) is Syscall for e in by_line)
    expected = [e for e in full if e.lineno not in taken]
    got: list[object] = []
    seen: list[tuple[int, int]] = []
    for ev in read_strace_numbered(numbered(), clock=clock):
        got.append(ev)
    assert got == expected
    # where each run goes in the event order: before the first of its calls in read_strace()'s
    position = {e.lineno: k for k, e in enumerate(full) if e.lineno in taken}
    for first, count in seen:
        assert count == sum(1 for e in full[: position[first]] if e.lineno not in taken), first


def test_no_run_may_take_the_rest_of_a_cut_line() -> None:
    lines = [
        "100 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0strace: Process 101 attached",
        ") = 0x7f0000000000",
    ]
    with pytest.raises(RuntimeError, match="cut by a strace message"):
        list(read_strace_numbered([(1, lines[0]), (2, TAKEN)]))
