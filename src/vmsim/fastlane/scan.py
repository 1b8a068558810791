"""The fast lane's strace scanner: a block of whole lines -> one row of numbers per line.

:func:`scan_block` reads the bytes of whole strace lines with the compiled kernel
(:mod:`vmsim.fastlane._scan`, which has the grammar) and marks each line ``taken`` or not. A
taken line is a complete memory call on one line (:data:`CALLS`) decoded completely, to
exactly the :class:`~vmsim.trace.events.Syscall` fields that
:func:`vmsim.trace.strace.read_strace_stream` gives for it: pid, name, int arguments, return
value, errno name, time, ``-T`` duration, the ``-y`` path of an fd argument, line number (the
twin tests, tests/unit/test_fastlane_scan.py, hold it to that). Every other line (other
calls, unfinished or resumed halves, ``-k`` frames, signals, exits, strings, unknown flag
names, lines over 4 KiB, anything the kernel is unsure of) is left to the Python reader.

The flag, errno and call names come from the tables the Python reader uses
(:data:`vmsim.trace.decode.FLAG_VALUES`, :mod:`errno`), handed to the kernel as one hashed
table built here.

Times: the reader's clock (:class:`~vmsim.trace.decode.Timestamps`) carries state from line
to line (``-t``/``-tt`` add a day when the clock runs back; ``-r`` stamps are summed; the
first ``I.F`` stamp decides ``-ttt`` or ``-r``). The scanner runs that clock over every line
of the block, taken or not, from the :class:`Clock` it is given, so ``time`` holds each
line's time as the reader computes it. It is NaN when the line has no stamp, or when the
clock is lost: after a line the reader joins with the next (cut by ``strace: Process N
attached``), after a stamped call line the reader may make a Problem before it reads the
stamp (too few arguments, a result below -2**63), in a block with a ``\\r``. A stamped line
whose time is not known is not taken. The block's clock after its last line is
``ScannedBlock.clock``, for the next block; a lost clock stays lost.

For the driver: the lines not taken go to the Python reader, in order, whose own clock then
misses the taken lines' stamps; an event it yields for a line takes its time from ``time``
at the event's first line (while the clock is not lost; after that, the reader must read
from the start, or the replay does without times).

``-y`` paths: the path of mmap's fd argument (``3</usr/lib/libc.so.6>``) is given as its byte
span in the block (``path_start``, ``path_end``); a path with a byte outside
``[A-Za-z0-9._/+:@%~-]``, an unlinked file's (``>(deleted)``) and a decoration anywhere else
are not taken.
"""

from __future__ import annotations

import errno as errno_mod
import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from vmsim.fastlane import _scan
from vmsim.trace.decode import DECODED_SYSCALLS, FLAG_VALUES, MIN_ARGS, Timestamps
from vmsim.trace.events import Syscall

__all__ = [
    "CALLS",
    "ERRNO_NAMES",
    "Clock",
    "ScannedBlock",
    "call_code",
    "reader_lines",
    "scan_block",
]

CALLS: Final = (
    "",
    "mmap",
    "munmap",
    "mprotect",
    "pkey_mprotect",
    "brk",
    "madvise",
    "mremap",
    "mlock",
    "mlock2",
    "munlock",
    "mlockall",
    "munlockall",
    "mseal",
)
"""The lane's calls: ``call`` holds the index of the name here (0: not taken)."""
assert all(name in DECODED_SYSCALLS for name in CALLS[1:])

# strace's names for the kernel's internal restart codes (include/linux/errno.h), which the
# errno module does not list
_KERNEL_ERRNOS: Final = (
    "ERESTARTSYS",
    "ERESTARTNOINTR",
    "ERESTARTNOHAND",
    "ENOIOCTLCMD",
    "ERESTART_RESTARTBLOCK",
    "EPROBE_DEFER",
    "EOPENSTALE",
    "ENOPARAM",
)
ERRNO_NAMES: Final = (
    "",
    *sorted({n for n in dir(errno_mod) if n[:1] == "E"} | set(_KERNEL_ERRNOS)),
)
"""The errno names the scanner knows: ``errno`` holds the index of the name here (0: none)."""

U64: Final = (1 << 64) - 1


def _key(kind: int, name: bytes) -> tuple[int, int, int]:
    """The kernel's key words of ``name`` (see ``_scan._lookup``) and its unmasked hash."""
    n = len(name)
    w0 = int.from_bytes(name[:8], "little")
    w1 = int.from_bytes(name[-8:], "little") if n >= 8 else 0
    h = ((w0 ^ (w1 * _scan.HASH_K1 & U64) ^ (n << 8 | kind)) * _scan.HASH_K2) & U64
    return w0, w1, h


def _table() -> npt.NDArray[np.int64]:
    """Every name the kernel looks up, hashed, and the calls' MIN_ARGS and fd argument, in
    one int64 array (the layout: ``_scan.TB_*``)."""
    entries: list[tuple[int, bytes, int]] = []
    entries += [(_scan.KIND_FLAG, name.encode(), value) for name, value in FLAG_VALUES.items()]
    entries += [(_scan.KIND_ERRNO, name.encode(), i) for i, name in enumerate(ERRNO_NAMES)][1:]
    entries += [(_scan.KIND_CALL, name.encode(), i) for i, name in enumerate(CALLS)][1:]
    entries += [(_scan.KIND_MIN_ARGS, name.encode(), n) for name, n in MIN_ARGS.items()]
    for kind, name, value in entries:  # the kernel reads values as int64
        assert -(1 << 63) <= value < (1 << 63), (kind, name)
    bits = 1
    while 1 << bits < 4 * len(entries):
        bits += 1
    size = 1 << bits
    slots = [-1] * size
    words: list[int] = []
    names = b""
    for index, (kind, name, value) in enumerate(entries):
        assert name.isascii() and name.replace(b"_", b"").isalnum(), name
        w0, w1, h = _key(kind, name)
        s = h >> (64 - bits)
        while slots[s] >= 0:
            s = (s + 1) & (size - 1)
        slots[s] = index
        entry = [0] * _scan.E_SIZE
        entry[_scan.E_W0] = w0
        entry[_scan.E_W1] = w1
        entry[_scan.E_LEN] = len(name)
        entry[_scan.E_KIND] = kind
        entry[_scan.E_VALUE] = value
        entry[_scan.E_OFFSET] = len(names)
        words += entry
        names += name
    calls: list[int] = []
    for call in CALLS:  # the argument that is an fd, whose -y path is read: mmap's fifth
        calls += [MIN_ARGS.get(call, 0), 4 if call == "mmap" else -1]
    start = _scan.TB_SLOTS
    head = [
        64 - bits,
        size - 1,
        start + size,
        start + size + len(words),
        start + size + len(words) + len(names),
    ]
    assert len(head) == _scan.TB_SLOTS
    return np.array([*head, *slots, *words, *names, *calls], dtype=np.int64)


_TABLE: Final = _table()
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
_CODES: Final = {name: i for i, name in enumerate(CALLS) if name}


def call_code(name: str) -> int:
    """The lane's code for a call name (0: not one of the lane's calls)."""
    return _CODES.get(name, 0)


@dataclass(slots=True)
class Clock:
    """The state of the reader's :class:`~vmsim.trace.decode.Timestamps` as the kernel keeps
    it: ``words`` = [relative (-1 undecided, 0, 1), day, total_ns, lost], ``last``."""

    words: npt.NDArray[np.int64]
    last: npt.NDArray[np.float64]

    @classmethod
    def fresh(cls) -> Clock:
        return cls(np.array([-1, 0, 0, 0], dtype=np.int64), np.zeros(1, dtype=np.float64))

    @classmethod
    def of(cls, ts: Timestamps) -> Clock:
        """The state of ``ts`` (a reader's clock)."""
        rel = -1 if ts.relative is None else int(ts.relative)
        words = np.array([rel, ts._day, ts._total_ns, 0], dtype=np.int64)
        return cls(words, np.array([ts._last], dtype=np.float64))

    @property
    def lost(self) -> bool:
        """A line's effect on the clock was not followed: the state is unknown."""
        return bool(self.words[_scan.CK_LOST])

    def into(self, ts: Timestamps) -> None:
        """Give ``ts`` this state (not when lost)."""
        if self.lost:
            raise ValueError("the scanner lost the clock: its state is unknown")
        rel = int(self.words[_scan.CK_RELATIVE])
        ts.relative = None if rel < 0 else bool(rel)
        ts._day = int(self.words[_scan.CK_DAY])
        ts._total_ns = int(self.words[_scan.CK_TOTAL_NS])
        ts._last = float(self.last[0])

    def copy(self) -> Clock:
        return Clock(self.words.copy(), self.last.copy())


@dataclass(frozen=True, slots=True)
class ScannedBlock:
    """One row per line of a scanned block. Only ``taken`` rows hold a decoded call; ``pid``,
    ``start``, ``end``, ``lineno`` and ``time`` are filled for every line."""

    # int64 rows, in the order of _scan.R_*
    taken: I64
    """1: a complete call of :data:`CALLS` decoded fully; 0: the Python reader's line."""
    pid: I64
    """The line's pid prefix, -1 when it has none (the reader's ``default_pid``)."""
    call: I64
    """Index in :data:`CALLS`."""
    argneg: I64
    """Bit i set: argument i was a negative number in the trace (its int is args - 2**64)."""
    nargs: I64
    ret: I64
    """The return value (-1 with an errno, as the reader sets it); 0 when ``ret_unknown``."""
    ret_unknown: I64
    """1: ``= ?`` (the reader's ``ret`` None)."""
    errno: I64
    """Index in :data:`ERRNO_NAMES` (0: no errno)."""
    start: I64
    """Byte offset of the line in the block."""
    end: I64
    """Byte offset of its end (its newline, or the block's end)."""
    lineno: I64
    path_start: I64
    """Byte span of the ``-y`` path of the fd argument (``3</lib/libc.so.6>``); -1: none.
    The fd is that argument's value (mmap's fifth)."""
    path_end: I64
    # float64 rows, in the order of _scan.F_*
    time: F64
    """Seconds as the reader's clock gives them; NaN: no stamp, or not known here."""
    duration: F64
    """``-T`` seconds; NaN: none."""
    args: npt.NDArray[np.uint64]
    """n x 6: the arguments as 64-bit registers (two's complement), 0 past ``nargs``."""
    clock: Clock
    """The clock after the block's last line."""
    cr: bool
    """The block holds a ``\\r``, a line break to the reader (universal newlines): its line
    numbers past it are not the reader's, and nothing in it is taken."""
    carry: bool
    """The reader joins the block's last line with the next block's first: pass
    ``carry=True`` to the next scan_block() (that line is then not taken)."""

    def __len__(self) -> int:
        return int(self.taken.shape[0])

    def syscall(self, buf: bytes, i: int, default_pid: int | None = None) -> Syscall:
        """Row ``i`` (taken) as the reader's Syscall, without ``-k`` frames (they follow)."""
        if not self.taken[i]:
            raise ValueError(f"line {int(self.lineno[i])} was not taken")
        n = int(self.nargs[i])
        neg = int(self.argneg[i])
        args = tuple(
            int(self.args[i, k]) - (1 << 64) if neg >> k & 1 else int(self.args[i, k])
            for k in range(n)
        )
        fd_paths: dict[int, str] = {}
        if self.path_start[i] >= 0:
            path = buf[int(self.path_start[i]) : int(self.path_end[i])].decode("ascii")
            fd_paths[args[4]] = path
        pid = int(self.pid[i])
        t = float(self.time[i])
        d = float(self.duration[i])
        return Syscall(
            int(self.lineno[i]),
            pid if pid >= 0 else default_pid,
            None if math.isnan(t) else t,
            CALLS[int(self.call[i])],
            args,
            fd_paths,
            None if self.ret_unknown[i] else int(self.ret[i]),
            ERRNO_NAMES[int(self.errno[i])] or None,
            None if math.isnan(d) else d,
            (),
            buf[int(self.start[i]) : int(self.end[i])].decode("ascii"),
        )


def reader_lines(buf: bytes) -> int:
    """How many lines the reader reads in ``buf`` (whole lines): ``\\r\\n``, ``\\r`` and
    ``\\n`` each end one (universal newlines). The first line of the block after ``buf`` is
    line ``first_lineno + reader_lines(buf)``; ``len(block)`` only when ``block.cr`` is
    False."""
    if b"\r" not in buf:
        return buf.count(b"\n") + (1 if buf and not buf.endswith(b"\n") else 0)
    text = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return text.count(b"\n") + (1 if text and not text.endswith(b"\n") else 0)


def scan_block(
    buf: bytes, first_lineno: int, clock: Clock | None = None, carry: bool = False
) -> ScannedBlock:
    """Scan ``buf``, whole strace lines (the last newline optional), the first being line
    ``first_lineno``; ``clock`` is the reader's clock before it (fresh if None; not
    changed), ``carry`` whether the reader joins the first line to the previous block's
    last (ScannedBlock.carry of that block)."""
    data = np.frombuffer(buf, dtype=np.uint8)
    n = buf.count(b"\n") + (1 if buf and not buf.endswith(b"\n") else 0)
    ck = (clock or Clock.fresh()).copy()
    rows = np.empty((_scan.N_ROWS, n), dtype=np.int64)
    floats = np.empty((_scan.N_FLOATS, n), dtype=np.float64)
    args = np.zeros((n, _scan.MAX_ARGS), dtype=np.uint64)
    words = np.frombuffer(buf, dtype=np.uint64, count=len(buf) // 8)
    cr = b"\r" in buf
    carry_out = _scan.scan_lines(
        data, words, first_lineno, carry, cr, _TABLE, ck.words, ck.last,
        np.zeros(_scan.N_SCRATCH, dtype=np.int64), np.zeros(2, dtype=np.uint64),
        rows, floats, args,
    )  # fmt: skip
    r = _scan
    return ScannedBlock(
        rows[r.R_TAKEN], rows[r.R_PID], rows[r.R_CALL], rows[r.R_ARGNEG], rows[r.R_NARGS],
        rows[r.R_RET], rows[r.R_RET_UNKNOWN], rows[r.R_ERRNO], rows[r.R_START], rows[r.R_END],
        rows[r.R_LINENO], rows[r.R_PATH_START], rows[r.R_PATH_END], floats[r.F_TIME],
        floats[r.F_DURATION], args, ck, cr, bool(carry_out),
    )  # fmt: skip
