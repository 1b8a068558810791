"""One chapter of the tour as data, and the small readers of the model's text that the
chapters share (/proc/meminfo-style ``Name: value kB`` lines, /proc/vmstat lines)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Figures = dict[str, Any]  # JSON-ready: ints, floats, strings, bools, lists and dicts of them


@dataclass(frozen=True)
class Chapter:
    """A chapter after it ran: what the essay says (``essay``, prose without figures), what the
    model showed (``lines``, each built from ``figures``), the kernel functions and the why
    (``explain``, for --explain), the demo that tells it at length, and what the model of this
    build cannot show yet (``missing``, "" if nothing). ``matches_linux`` is False when a demo
    engine the chapter ran flagged a step where the model strays from Linux (``expected`` says
    what Linux does)."""

    number: int
    key: str
    title: str
    essay: str
    lines: tuple[str, ...]
    explain: tuple[str, ...]
    figures: Figures = field(default_factory=dict)
    demo: str = ""
    missing: str = ""
    matches_linux: bool = True
    expected: str = ""

    @property
    def id(self) -> str:  # the CheckedStep protocol of vmsim.cli.commands
        return self.key


def size(n: int) -> str:
    """Bytes in the largest binary unit that divides them (KiB .. EiB), else bytes."""
    for shift, unit in (
        (60, "EiB"),
        (50, "PiB"),
        (40, "TiB"),
        (30, "GiB"),
        (20, "MiB"),
        (10, "KiB"),
    ):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift:,} {unit}"
    return f"{n:,} bytes"


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def checked(steps: Any) -> tuple[bool, str]:
    """(every step matches Linux, what Linux does at those that do not) of a demo's steps."""
    off = [s for s in steps if not s.matches_linux]
    return not off, "; ".join(f"{s.id}: {s.expected}" for s in off)


__all__ = ["Chapter", "Figures", "checked", "pct", "size"]
