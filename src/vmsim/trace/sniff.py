"""Which tracer wrote a file, and reading any trace file or ``-ff`` directory in one call."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path

from vmsim.trace.events import Event
from vmsim.trace.ltrace import read_ltrace
from vmsim.trace.strace import open_trace, read_strace_files, read_strace_stream

__all__ = ["detect_format", "sniff_and_read"]

_LTRACE = re.compile(
    r" *(?:\[pid +\d+\] |\d+ +)?(?:[\d:.]+ +)?(?:SYS_\w+\(|<\.\.\. SYS_|\+\+\+ exited \(status )"
)
_SNIFF_LINES = 50
_FF_SUFFIX = re.compile(r"\.(\d+)(?:\.gz)?$")


def detect_format(first_lines: list[str]) -> str:
    """``'ltrace'`` when any line is an ``ltrace -S`` syscall (``SYS_name(``) or ltrace's
    ``+++ exited (status N) +++``; otherwise ``'strace'``."""
    if any(_LTRACE.match(line) for line in first_lines):
        return "ltrace"
    return "strace"


def sniff_and_read(path: Path) -> Iterator[Event]:
    """Read a strace or ltrace file (``.gz`` too), or a directory of ``strace -ff`` files
    (``P.<pid>``, merged by :func:`~vmsim.trace.strace.read_strace_files`)."""
    if path.is_dir():
        files = sorted(
            (p for p in path.iterdir() if _FF_SUFFIX.search(p.name)),
            key=lambda p: (p.name[: _FF_SUFFIX.search(p.name).start()], _pid(p)),  # type: ignore[union-attr]
        )
        yield from read_strace_files(files)
        return
    with open_trace(path) as handle:
        head = list(itertools.islice(handle, _SNIFF_LINES))
        if detect_format(head) == "ltrace":
            yield from read_ltrace(itertools.chain(head, handle))
        else:
            yield from read_strace_stream(handle, head)


def _pid(path: Path) -> int:
    m = _FF_SUFFIX.search(path.name)
    return int(m.group(1)) if m else -1
