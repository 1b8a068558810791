"""Reading /proc/pid/maps text back: each line's address range, the line covering an
address, an excerpt of the lines over a range, the lines a call created. The scenario engines
use these to show what a step did to the maps; the CLI renders the lines they pick.
"""

from __future__ import annotations

from dataclasses import dataclass

ELLIPSIS = "..."


@dataclass(frozen=True)
class MapsLine:
    """One line of /proc/pid/maps with its address range parsed."""

    start: int
    end: int
    text: str


def parse_maps(text: str) -> list[MapsLine]:
    """Split maps text into lines, reading each line's ``start-end`` field."""
    lines = []
    for line in text.splitlines():
        start, end = line.split(" ", 1)[0].split("-")
        lines.append(MapsLine(int(start, 16), int(end, 16), line))
    return lines


def vma_at(text: str, addr: int) -> MapsLine | None:
    """The maps line whose range contains ``addr``, if any."""
    for line in parse_maps(text):
        if line.start <= addr < line.end:
            return line
    return None


def excerpt(text: str, lo: int, hi: int, head: int = 4, tail: int = 3) -> tuple[str, ...]:
    """The maps lines overlapping [lo, hi), the middle elided to one ``... N more VMAs ...`` line."""
    inside = [line.text for line in parse_maps(text) if line.start < hi and line.end > lo]
    if len(inside) <= head + tail + 1:
        return tuple(inside)
    hidden = len(inside) - head - tail
    marker = f"{ELLIPSIS} {hidden:,} more VMAs {ELLIPSIS}"
    return (*inside[:head], marker, *inside[-tail:])


def new_lines(before: str, after: str) -> tuple[str, ...]:
    """Lines of ``after`` that are not in ``before`` (what a call created or changed)."""
    old = set(before.splitlines())
    return tuple(line for line in after.splitlines() if line not in old)


__all__ = ["ELLIPSIS", "MapsLine", "excerpt", "new_lines", "parse_maps", "vma_at"]
