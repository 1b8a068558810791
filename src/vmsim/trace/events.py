"""The events that trace readers yield: one value per syscall, signal, task exit or bad line.

Readers never raise on bad input: a line they cannot read becomes a :class:`Problem` that
carries its line number, so a replay can count them, report them, or (``--strict``) stop.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, make_dataclass

Arg = int | str | None
"""One decoded syscall argument: an int for numbers, pointers, fds and flag expressions,
a str for strings (unquoted) and for anything left undecoded (the raw text)."""


@dataclass(frozen=True, slots=True)
class Syscall:
    """One system call, merged from its ``<unfinished ...>`` and ``<... resumed>`` halves.

    ``args`` are decoded only for the memory and process syscalls a VMA replay needs
    (:data:`vmsim.trace.decode.DECODED_SYSCALLS`); for every other call ``args`` is a
    one-element tuple holding the raw argument text (``()`` when there is none), which
    :func:`vmsim.trace.decode.split_args` splits on demand.
    """

    lineno: int
    """1-based line of the call (of its ``<unfinished ...>`` line if the call was split)."""
    pid: int | None
    """Task id from the line prefix or the ``-ff`` file suffix; None when there is none."""
    time: float | None
    """Seconds: since midnight (``-t``/``-tt``), since the epoch (``-ttt``), or the running
    sum of the relative stamps (``-r``)."""
    name: str
    args: tuple[Arg, ...]
    fd_paths: dict[int, str]
    """fd -> path from the ``-y``/``-yy`` decorations on this call (arguments and result)."""
    ret: int | None
    """Return value; None for ``= ?`` (never returned, e.g. exit_group or a killed task)."""
    errno: str | None
    """Error name (``'ENOMEM'``) when the call failed; ``ret`` is then -1."""
    duration: float | None
    """Seconds spent in the call (``-T``)."""
    stack: tuple[str, ...]
    """``-k`` frames, innermost first, without the leading ``' > '``."""
    raw: str
    """The original line(s), joined with a newline when the call was split."""


@dataclass(frozen=True, slots=True)
class Signal:
    """A signal delivered to a task: ``--- SIGSEGV {si_signo=SIGSEGV, ...} ---``."""

    lineno: int
    pid: int | None
    time: float | None
    signame: str
    si_code: str | None
    si_addr: int | None
    raw: str
    stack: tuple[str, ...] = ()
    """``-k`` frames strace prints after the signal line: where the task was."""


@dataclass(frozen=True, slots=True)
class Exit:
    """A task ended: ``+++ exited with 0 +++`` or ``+++ killed by SIGKILL +++``.

    Both ``status`` and ``killed_by`` are None for ``+++ superseded by execve in pid N +++``
    (a non-leader thread called execve and took over the leader's pid).
    """

    lineno: int
    pid: int | None
    time: float | None
    status: int | None
    killed_by: str | None
    raw: str


@dataclass(frozen=True, slots=True)
class Problem:
    """A line the reader could not make sense of (malformed, truncated, orphaned)."""

    lineno: int
    line: str
    message: str
    file: str | None = None
    """The -ff file the line is in (None for a single trace)."""


Event = Syscall | Signal | Exit | Problem

MAX_QUOTE = 200
"""Input text quoted in a message is cut to this many characters."""


def clip(text: str, limit: int = MAX_QUOTE) -> str:
    """``text`` cut to ``limit`` characters, saying how many were cut (a Problem message
    quotes input; a 200,000-character line must not come back whole)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def mutable_twin(cls: type) -> type:
    """A plain slots dataclass with exactly the fields of the frozen dataclass ``cls``.

    Readers build an event as an instance of the twin (and may still append ``-k`` frames to
    it), then turn it into a ``cls`` by assigning ``__class__``, which Python allows between
    classes with the same slots. That skips the frozen ``__init__``, which sets every field
    through ``object.__setattr__`` and costs four times as much: 0.8 of the ~2 microseconds
    a trace line may take. ``tests/unit/test_strace.py`` checks that the result equals an
    instance built the ordinary way.
    """
    specs = [(f.name, f.type, field(default=f.default)) for f in fields(cls)]
    return make_dataclass(f"_Building{cls.__name__}", specs, slots=True)


__all__ = [
    "Arg",
    "Event",
    "Exit",
    "Problem",
    "Signal",
    "Syscall",
    "mutable_twin",
]
