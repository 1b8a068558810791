"""The compiled byte parsers behind :mod:`vmsim.memtrace.readers` (numba ``@njit``).

Each text parser reads whole lines of a byte block ``buf[pos:end]`` (``end`` is just past a
newline, or the end of the input) into preallocated output arrays, and stops when the output
is full, when the event table is full, at a malformed line, or at ``end``. It returns
``(pos, n, n_events, lines, status)``: where it stopped, the records and events now in the
output, the lines read so far and why it stopped (``STATUS_*``; the error codes name what is
wrong with the line starting at ``pos``). Python turns an error code into a
:class:`~vmsim.memtrace.records.TraceError` with the file name and the 1-based line.

The grammars (the tests hold a slow Python reference of each, fuzzed against these):

lackey (``valgrind --tool=lackey --trace-mem=yes``; lackey prints ``"I  %08lx,%lu"``,
``" L %08lx,%lu"``, ``" S ..."``, ``" M ..."``)::

    record  := ("I  " | " L " | " S " | " M ") HEX{1,16} "," DEC{1,5}     (value <= 65535)
    comment := "==" DIGITS "==" ANY* | "--" DIGITS "--" ANY* | "**" DIGITS "**" ANY*
    syscall := "SYSCALL[" ANY* | " --> " ANY*
               (valgrind --trace-syscalls=yes, as vmsim record asks; a call whose message
               holds a newline ends on a " --> " line)

pinatrace (Pin's ``ManualExamples/pinatrace.cpp``: ``"%p: R %p"``, ``"%p: W %p"``, ``#eof``;
glibc prints a null pointer as ``(nil)``)::

    record  := PTR ": " ("R" | "W") " " PTR          PTR := "0x" HEX{1,16} | "(nil)"
    end     := "#eof"                                 (the last line: nothing may follow it)

HEX is ``[0-9a-fA-F]``, DEC and DIGITS ``[0-9]``; a line ends at ``\\n`` (no ``\\r``).
Comment and syscall lines are events: their byte span, the line number and the number of
records before them are stored so that Python can read them (the header, the guest's system
calls at their place among the accesses).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

__all__ = [
    "STATUS_AFTER_EOF",
    "STATUS_BAD_ADDRESS",
    "STATUS_BAD_PTR",
    "STATUS_BAD_SIZE",
    "STATUS_DONE",
    "STATUS_EVENTS_FULL",
    "STATUS_LONG_ADDRESS",
    "STATUS_NOT_RECORD",
    "STATUS_OUTPUT_FULL",
    "STATUS_SIZE_RANGE",
    "STATUS_TRAILING",
    "decode_champsim",
    "last_newline",
    "parse_lackey",
    "parse_pinatrace",
]

STATUS_DONE = 0  # reached end
STATUS_OUTPUT_FULL = 1  # the record arrays are full: hand them out, continue at pos
STATUS_EVENTS_FULL = 2  # the event table is full: read it, continue at pos
STATUS_NOT_RECORD = 10  # the line is not a record (nor a comment / end line)
STATUS_BAD_ADDRESS = 11  # no hex digits where the address should be
STATUS_LONG_ADDRESS = 12  # more than 16 hex digits
STATUS_BAD_SIZE = 13  # no decimal size after the comma, or more than 5 digits
STATUS_SIZE_RANGE = 14  # size above 65535
STATUS_TRAILING = 15  # something after the record on its line
STATUS_BAD_PTR = 16  # pinatrace: neither 0x... nor (nil)
STATUS_AFTER_EOF = 17  # pinatrace: a line after #eof

_NL = 10
_SP = 32


@njit(cache=True, nogil=True)
def last_newline(buf: Any, filled: int) -> int:
    """Index just past the last ``\\n`` in ``buf[:filled]``, 0 if there is none."""
    i = filled - 1
    while i >= 0:
        if buf[i] == 10:
            return i + 1
        i -= 1
    return 0


_HEX_VALUE = np.full(256, 255, np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX_VALUE[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX_VALUE[_c] = 10 + _i


_KIND_OF_SECOND = np.full(256, 255, np.uint8)
_KIND_OF_SECOND[ord(" ")] = 0  # "I  "
_KIND_OF_SECOND[ord("L")] = 1
_KIND_OF_SECOND[ord("S")] = 2
_KIND_OF_SECOND[ord("M")] = 3
_FIRST_OF_KIND = np.array([ord("I"), ord(" "), ord(" "), ord(" ")], np.uint8)


@njit(cache=True, nogil=True, inline="always")
def _hex(buf: Any, p: int, end: int) -> tuple[int, np.uint64, int]:
    """Hex digits at ``p``: (position after them, value, digit count). A table lookup, not
    comparisons: the digits of addresses are random, and mispredicted branches cost."""
    a = np.uint64(0)
    start = p
    while p < end:
        v = _HEX_VALUE[buf[p]]
        if v == 255:
            break
        a = (a << np.uint64(4)) | np.uint64(v)
        p += 1
    return p, a, p - start


@njit(cache=True, nogil=True, inline="always")
def _skip_line(buf: Any, p: int, end: int) -> int:
    """Position of the ``\\n`` ending the line that holds ``p`` (``end`` if none)."""
    while p < end and buf[p] != 10:
        p += 1
    return p


@njit(cache=True, nogil=True)
def parse_lackey(
    buf: Any,
    pos: int,
    end: int,
    addr: Any,
    kind: Any,
    size: Any,
    n: int,
    ev_start: Any,
    ev_end: Any,
    ev_rec: Any,
    ev_line: Any,
    n_ev: int,
    lines: int,
) -> tuple[int, int, int, int, int]:
    cap = addr.shape[0]
    ev_cap = ev_start.shape[0]
    while pos < end:
        c0 = buf[pos]
        k = -1
        if pos + 2 < end and buf[pos + 2] == _SP:
            # "I  ", " L ", " S ", " M ": the second byte names the kind (a table, not
            # branches: kinds come in no predictable order), the first must match it
            k = _KIND_OF_SECOND[buf[pos + 1]]
            if k != 255 and c0 != _FIRST_OF_KIND[k]:
                k = 255
            if k == 255:
                k = -1
        if k >= 0:
            if n == cap:
                return pos, n, n_ev, lines, STATUS_OUTPUT_FULL
            p, a, d = _hex(buf, pos + 3, end)
            if d == 0:
                return pos, n, n_ev, lines, STATUS_BAD_ADDRESS
            if d > 16:
                return pos, n, n_ev, lines, STATUS_LONG_ADDRESS
            if p >= end or buf[p] != 44:  # ","
                return pos, n, n_ev, lines, STATUS_BAD_ADDRESS
            p += 1
            s = 0
            d = 0
            while p < end and 48 <= buf[p] <= 57 and d <= 5:
                s = s * 10 + (buf[p] - 48)
                d += 1
                p += 1
            if d == 0 or d > 5:
                return pos, n, n_ev, lines, STATUS_BAD_SIZE
            if s > 65535:
                return pos, n, n_ev, lines, STATUS_SIZE_RANGE
            if p < end and buf[p] != _NL:
                return pos, n, n_ev, lines, STATUS_TRAILING
            addr[n] = a
            kind[n] = k
            size[n] = s
            n += 1
            lines += 1
            pos = p + 1
            continue
        # a comment (==PID==, --PID--, **PID**) or a SYSCALL[ line: an event
        ok = False
        if c0 == 61 or c0 == 45 or c0 == 42:  # "=", "-", "*"
            if pos + 1 < end and buf[pos + 1] == c0:
                p = pos + 2
                d = 0
                while p < end and 48 <= buf[p] <= 57:
                    d += 1
                    p += 1
                if d > 0 and p + 1 < end and buf[p] == c0 and buf[p + 1] == c0:
                    ok = True
        elif (
            c0 == 83  # "SYSCALL["
            and pos + 7 < end
            and buf[pos + 1] == 89
            and buf[pos + 2] == 83
            and buf[pos + 3] == 67
            and buf[pos + 4] == 65
            and buf[pos + 5] == 76
            and buf[pos + 6] == 76
            and buf[pos + 7] == 91
        ) or (
            c0 == _SP  # " --> ": the rest of a SYSCALL line that valgrind broke in two
            and pos + 4 < end
            and buf[pos + 1] == 45
            and buf[pos + 2] == 45
            and buf[pos + 3] == 62
            and buf[pos + 4] == _SP
        ):
            ok = True
        if not ok:
            return pos, n, n_ev, lines, STATUS_NOT_RECORD
        if n_ev == ev_cap:
            return pos, n, n_ev, lines, STATUS_EVENTS_FULL
        e = _skip_line(buf, pos, end)
        ev_start[n_ev] = pos
        ev_end[n_ev] = e
        ev_rec[n_ev] = n
        ev_line[n_ev] = lines + 1
        n_ev += 1
        lines += 1
        pos = e + 1
    return pos, n, n_ev, lines, STATUS_DONE


@njit(cache=True, nogil=True, inline="always")
def _ptr(buf: Any, p: int, end: int) -> tuple[int, np.uint64, int]:
    """A ``%p`` pointer at ``p``: (position after it, value, status: 0 ok or an error)."""
    if p + 4 < end and buf[p] == 40:  # "(nil)"
        if buf[p + 1] == 110 and buf[p + 2] == 105 and buf[p + 3] == 108 and buf[p + 4] == 41:
            return p + 5, np.uint64(0), 0
        return p, np.uint64(0), STATUS_BAD_PTR
    if p + 1 < end and buf[p] == 48 and buf[p + 1] == 120:  # "0x"
        q, a, d = _hex(buf, p + 2, end)
        if d == 0:
            return p, a, STATUS_BAD_ADDRESS
        if d > 16:
            return p, a, STATUS_LONG_ADDRESS
        return q, a, 0
    return p, np.uint64(0), STATUS_BAD_PTR


@njit(cache=True, nogil=True)
def parse_pinatrace(
    buf: Any,
    pos: int,
    end: int,
    addr: Any,
    kind: Any,
    size: Any,
    n: int,
    ev_start: Any,
    ev_end: Any,
    ev_rec: Any,
    ev_line: Any,
    n_ev: int,
    lines: int,
) -> tuple[int, int, int, int, int]:
    """Pinatrace lines; ``#eof`` is stored as an event (the caller checks nothing follows)."""
    cap = addr.shape[0]
    ev_cap = ev_start.shape[0]
    while pos < end:
        if n_ev > 0:  # #eof was read: no line may follow it
            return pos, n, n_ev, lines, STATUS_AFTER_EOF
        if buf[pos] == 35:  # "#eof"
            if (
                pos + 3 < end
                and buf[pos + 1] == 101
                and buf[pos + 2] == 111
                and buf[pos + 3] == 102
                and (pos + 4 == end or buf[pos + 4] == _NL)
            ):
                if n_ev == ev_cap:
                    return pos, n, n_ev, lines, STATUS_EVENTS_FULL
                ev_start[n_ev] = pos
                ev_end[n_ev] = pos + 4
                ev_rec[n_ev] = n
                ev_line[n_ev] = lines + 1
                n_ev += 1
                lines += 1
                pos = pos + 5
                continue
            return pos, n, n_ev, lines, STATUS_NOT_RECORD
        if n == cap:
            return pos, n, n_ev, lines, STATUS_OUTPUT_FULL
        p, _ip, st = _ptr(buf, pos, end)
        if st == STATUS_BAD_PTR:  # the line does not start like a record
            return pos, n, n_ev, lines, STATUS_NOT_RECORD
        if st != 0:
            return pos, n, n_ev, lines, st
        if not (p + 4 < end and buf[p] == 58 and buf[p + 1] == _SP and buf[p + 3] == _SP):
            return pos, n, n_ev, lines, STATUS_NOT_RECORD
        c = buf[p + 2]
        if c == 82:  # R
            k = 1
        elif c == 87:  # W
            k = 2
        else:
            return pos, n, n_ev, lines, STATUS_NOT_RECORD
        p, a, st = _ptr(buf, p + 4, end)
        if st != 0:
            return pos, n, n_ev, lines, st
        if p < end and buf[p] != _NL:
            return pos, n, n_ev, lines, STATUS_TRAILING
        addr[n] = a
        kind[n] = k
        size[n] = 0
        n += 1
        lines += 1
        pos = p + 1
    return pos, n, n_ev, lines, STATUS_DONE


@njit(cache=True, nogil=True)
def decode_champsim(words: Any, first: int, addr: Any, kind: Any, rec: Any) -> int:
    """ChampSim ``input_instr`` records, seen as rows of 8 little-endian u64 words (word 0 the
    ip, word 1 the branch and register bytes, words 2-3 ``destination_memory``, 4-7
    ``source_memory``), into accesses: the fetch of the ip, then each nonzero source (a load),
    then each nonzero destination (a store). ``rec`` gets the 1-based record number of each
    access (``first`` is that of row 0). Returns the number of accesses (at most 7 a row)."""
    n = 0
    for r in range(words.shape[0]):
        addr[n] = words[r, 0]
        kind[n] = 0
        rec[n] = first + r
        n += 1
        for j in range(4, 8):
            a = words[r, j]
            if a != 0:
                addr[n] = a
                kind[n] = 1
                rec[n] = first + r
                n += 1
        for j in range(2, 4):
            a = words[r, j]
            if a != 0:
                addr[n] = a
                kind[n] = 2
                rec[n] = first + r
                n += 1
    return n
