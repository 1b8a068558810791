"""The fast lane's compiled strace scanner (numba ``@njit(cache=True)``); see :mod:`.scan`.

One file on purpose: numba keys its on-disk cache by each compiled function's source file,
so everything ``scan_lines`` calls lives beside it.

``scan_lines`` reads a block of whole lines and, for each, either decodes it completely (a
"taken" line: a complete memory call on one line in the grammar below, decoded to exactly
what :func:`vmsim.trace.strace.read_strace_stream` gives for it) or leaves it to the Python
reader. It also runs the reader's clock (:class:`vmsim.trace.decode.Timestamps`) over every
line of the block, since a line's time depends on the stamps of the lines before it.

The grammar of a taken line (strace ``printleader()`` and ``syscall_exiting_trace()``; the
regexes it must agree with are ``_CALL``/``_RESULT`` in ``vmsim.trace.strace`` and
``TASK_AND_TIME`` in ``vmsim.trace.decode``)::

    line   := " "* [pid] [stamp] NAME "(" [arg (", " arg)*] ")" " "* "= " RET [tail]
    pid    := "[pid" " "+ DEC{1,10} "] "  |  DEC{1,10} " "+
    stamp  := (DEC{1,12} ":" D D ":" D D ["." DEC{1,12}] | DEC{1,20} "." DEC{1,12}) " "+
    NAME   := one of the lane's calls (table kind 2)
    arg    := expr [" "* "/*" COMMENT "*/"]  |  FD "<" PATH ">"
    expr   := part ("|" part)*      part := " "* atom " "*
    atom   := FLAG | NUMBER | NUMBER "<<" (FLAG | NUMBER)       (FLAG: table kind 0)
    NUMBER := ["-"] ("0x" HEX{1,16} | DEC{1,20})              (a leading 0: octal)
    RET    := "0x" hex{1,16} | ["-"] DEC{1,19} | "?"     then " " or the end of the line
    tail   := " <" DUR ">"  |  " " ERRNO [" (" MSG ")"] [" <" DUR ">"]

with the values of ``vmsim.trace.decode.decode_value`` (``_to_int``, ``_decode_expression``),
64-bit range checks as there, every byte printable ASCII. Anything else is not taken.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from numba import njit

# numba's on-disk cache (cache=True) per file; no reference counting needed: nothing here
# allocates (see vmsim.memtrace._core for why _nrt=False matters).
_OPTS: dict[str, Any] = {"cache": True, "nogil": True, "_nrt": False}
_F = TypeVar("_F", bound=Callable[..., Any])
_jit: Callable[[_F], _F] = njit(**_OPTS)

KIND_FLAG = 0
KIND_ERRNO = 1
KIND_CALL = 2

# clock state: int64 words, then the float64 word (the last -t/-tt time)
CK_RELATIVE = 0  # -1 undecided, 0 absolute (-ttt), 1 relative (-r): Timestamps.relative
CK_DAY = 1  # Timestamps._day
CK_TOTAL_NS = 2  # Timestamps._total_ns
CK_LOST = 3  # 1: a line's effect on the clock is unknown; no time after it is known

MAX_LINE = 4096  # longer lines are never taken
MAX_ARGS = 6

_FNV_OFFSET = np.uint64(14695981039346656037)
_FNV_PRIME = np.uint64(1099511628211)
_U64_MAX = np.uint64(18446744073709551615)
_EXACT = 9007199254740992  # 2**53: integers up to it are exact doubles
_POW10 = np.array([10.0**k for k in range(23)], dtype=np.float64)  # each exact
_MARKER = np.frombuffer(b"strace: Process ", dtype=np.uint8).copy()


@_jit
def sym_hash(kind: int, buf: Any, a: int, b: int) -> Any:
    """FNV-1a of the kind byte and ``buf[a:b]``, as an int64 (scan.py hashes the same way)."""
    h = _FNV_OFFSET
    h = (h ^ np.uint64(kind)) * _FNV_PRIME
    for i in range(a, b):
        h = (h ^ np.uint64(buf[i])) * _FNV_PRIME
    return np.int64(h)


@_jit
def _lookup(
    kind: int, buf: Any, a: int, b: int, tb_bytes: Any, tb_off: Any, tb_kind: Any, slots: Any
) -> Any:
    """Index of the table entry (kind, ``buf[a:b]``), -1 if there is none."""
    mask = slots.shape[0] - 1
    s = sym_hash(kind, buf, a, b) & mask
    n = b - a
    while True:
        e = slots[s]
        if e < 0:
            return -1
        if tb_kind[e] == kind and tb_off[e + 1] - tb_off[e] == n:
            o = tb_off[e]
            same = True
            for j in range(n):
                if tb_bytes[o + j] != buf[a + j]:
                    same = False
                    break
            if same:
                return e
        s = (s + 1) & mask


@_jit
def _is_digit(c: int) -> bool:
    return 48 <= c <= 57


@_jit
def _hexval(c: int) -> int:
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    if 65 <= c <= 70:
        return c - 55
    return -1


@_jit
def _is_name(c: int) -> bool:
    return (65 <= c <= 90) or (97 <= c <= 122) or (48 <= c <= 57) or c == 95


@_jit
def _number(buf: Any, p: int, e: int, out: Any) -> int:
    """``vmsim.trace.decode._to_int`` of the number at ``buf[p:]``: ``["-"] ("0x" HEX{1,16} |
    DEC{1,20})``, octal with a leading 0, within -2**63 .. 2**64-1. The number is the longest
    such run; the caller checks what follows. Returns its end (-1: no number, or one
    ``_to_int`` refuses), the value (two's complement) in out[0] and 1 in out[1] if negative."""
    neg = False
    if p < e and buf[p] == 45:  # '-'
        neg = True
        p += 1
    if p >= e or not _is_digit(buf[p]):
        return -1
    v = np.uint64(0)
    if buf[p] == 48 and p + 1 < e and buf[p + 1] == 120:  # '0x'
        q = p + 2
        while q < e and _hexval(buf[q]) >= 0:
            q += 1
        n = q - p - 2
        if n < 1 or n > 16:
            return -1
        for i in range(p + 2, q):
            v = (v << np.uint64(4)) | np.uint64(_hexval(buf[i]))
    else:
        q = p
        while q < e and _is_digit(buf[q]):
            q += 1
        n = q - p
        if n > 20:
            return -1
        if n > 1 and buf[p] == 48:  # octal: at most 20 digits, below 2**60
            for i in range(p, q):
                d = buf[i] - 48
                if d > 7:
                    return -1
                v = (v << np.uint64(3)) | np.uint64(d)
        else:
            for i in range(p, q):
                d = np.uint64(buf[i] - 48)
                if v > (_U64_MAX - d) // np.uint64(10):
                    return -1  # past 2**64-1
                v = v * np.uint64(10) + d
    if neg and v != np.uint64(0):
        if v > np.uint64(9223372036854775808):
            return -1  # below -2**63
        v = (_U64_MAX - v) + np.uint64(1)  # two's complement
        out[1] = 1
    else:
        out[1] = 0
    out[0] = v
    return q


@_jit
def _token_end(c: int) -> bool:
    """What may follow an atom and its spaces: '|', ',', ')', '/' (a comment)."""
    return c == 124 or c == 44 or c == 41 or c == 47


@_jit
def _arg(
    buf: Any,
    p: int,
    e: int,
    tb_bytes: Any,
    tb_off: Any,
    tb_kind: Any,
    tb_val: Any,
    slots: Any,
    num: Any,
    res: Any,
) -> int:
    """One argument at ``buf[p:]`` as ``decode_value`` reads it: its end (at ', ' or ')'),
    -1 if not taken. res[0] value (uint64), res[1] negative, res[2..3] a -y path's span."""
    res[2] = -1
    res[3] = -1
    # FD "<" PATH ">": decode_value's -y branch (the whole token)
    if p < e and _is_digit(buf[p]):
        q = p
        while q < e and _is_digit(buf[q]):
            q += 1
        if q + 1 < e and buf[q] == 60 and buf[q + 1] != 60:  # '<', not '<<'
            if q - p > 10 or (buf[p] == 48 and q - p > 1):
                return -1
            fd = 0
            for i in range(p, q):
                fd = fd * 10 + (buf[i] - 48)
            a = q + 1
            r = a
            while r < e:
                c = buf[r]
                if (
                    _is_name(c)
                    or c == 46  # .
                    or c == 47  # /
                    or c == 45  # -
                    or c == 43  # +
                    or c == 58  # :
                    or c == 64  # @
                    or c == 37  # %
                    or c == 126  # ~
                ):
                    r += 1
                else:
                    break
            if r == a or r >= e or buf[r] != 62:  # '>'
                return -1
            if r + 1 >= e or not (buf[r + 1] == 44 or buf[r + 1] == 41):
                return -1
            res[0] = np.uint64(fd)
            res[1] = 0
            res[2] = a
            res[3] = r
            return r + 1
    total = np.uint64(0)
    neg = 0
    while True:
        while p < e and buf[p] == 32:
            p += 1
        if p >= e:
            return -1
        c = buf[p]
        if c == 45 or _is_digit(c):
            q = _number(buf, p, e, num)
            if q < 0:
                return -1
            value = num[0]
            vneg = num[1]
            if q + 1 < e and buf[q] == 60 and buf[q + 1] == 60:  # '<<'
                if vneg:
                    return -1
                s0 = q + 2
                if s0 < e and _is_digit(buf[s0]):
                    q = _number(buf, s0, e, num)
                    if q < 0 or num[1] != 0:
                        return -1
                    shift = num[0]
                else:
                    q = s0
                    while q < e and _is_name(buf[q]):
                        q += 1
                    if q == s0:
                        return -1
                    k = _lookup(KIND_FLAG, buf, s0, q, tb_bytes, tb_off, tb_kind, slots)
                    if k < 0 or tb_val[k] < 0:
                        return -1
                    shift = np.uint64(tb_val[k])
                if shift >= np.uint64(64):
                    return -1
                if shift > np.uint64(0) and (value >> (np.uint64(64) - shift)) != np.uint64(0):
                    return -1  # past 2**64-1
                value = value << shift
            p = q
        elif (65 <= c <= 90) or (97 <= c <= 122) or c == 95:
            q = p
            while q < e and _is_name(buf[q]):
                q += 1
            k = _lookup(KIND_FLAG, buf, p, q, tb_bytes, tb_off, tb_kind, slots)
            if k < 0:
                return -1
            v = tb_val[k]
            value = np.uint64(v)
            vneg = 1 if v < 0 else 0
            p = q
        else:
            return -1
        total = total | value
        if vneg:
            neg = 1
        while p < e and buf[p] == 32:
            p += 1
        if p >= e or not _token_end(buf[p]):
            return -1
        c = buf[p]
        if c == 124:  # '|'
            p += 1
            continue
        if c == 47:  # '/': a -X verbose comment, '/*' to '*/', then the token's end
            if p + 1 >= e or buf[p + 1] != 42:
                return -1
            q = p + 2
            while q < e:
                d = buf[q]
                if _is_name(d) or d == 32 or d == 124 or d == 63:  # alnum _ space | ?
                    q += 1
                else:
                    break
            if q + 1 >= e or buf[q] != 42 or buf[q + 1] != 47:
                return -1
            p = q + 2
            if p >= e or not (buf[p] == 44 or buf[p] == 41):
                return -1
        break  # at ',' or ')'
    res[0] = total
    res[1] = neg
    return p


@_jit
def _leader(buf: Any, s: int, e: int, lead: Any) -> int:
    """``TASK_AND_TIME`` at ``buf[s:e]`` (it always matches, maybe empty): returns its end;
    lead[0] the pid (-1 none), lead[1] the stamp kind (0 none, 1 'H:MM:SS[.f]', 2 'I.F'),
    lead[2..3] the stamp's span, lead[4] its colon or point."""
    lead[0] = -1
    lead[1] = 0
    p = s
    while p < e and buf[p] == 32:
        p += 1
    # [pid +N] | N +
    if (
        p + 4 < e
        and buf[p] == 91
        and buf[p + 1] == 112
        and buf[p + 2] == 105
        and buf[p + 3] == 100
        and buf[p + 4] == 32
    ):
        q = p + 4
        while q < e and buf[q] == 32:
            q += 1
        a = q
        while q < e and _is_digit(buf[q]):
            q += 1
        if 1 <= q - a <= 10 and q + 1 < e and buf[q] == 93 and buf[q + 1] == 32:
            v = 0
            for i in range(a, q):
                v = v * 10 + (buf[i] - 48)
            lead[0] = v
            p = q + 2
    elif p < e and _is_digit(buf[p]):
        q = p
        while q < e and _is_digit(buf[q]):
            q += 1
        if q - p <= 10 and q < e and buf[q] == 32:
            v = 0
            for i in range(p, q):
                v = v * 10 + (buf[i] - 48)
            lead[0] = v
            p = q
            while p < e and buf[p] == 32:
                p += 1
    # the time column
    if p < e and _is_digit(buf[p]):
        q = p
        while q < e and _is_digit(buf[q]):
            q += 1
        d1 = q - p
        end = -1
        kind = 0
        if q < e and buf[q] == 58:  # ':' -t / -tt
            if (
                d1 <= 12
                and q + 5 < e
                and _is_digit(buf[q + 1])
                and _is_digit(buf[q + 2])
                and buf[q + 3] == 58
                and _is_digit(buf[q + 4])
                and _is_digit(buf[q + 5])
            ):
                r = q + 6
                if r < e and buf[r] == 46:  # '.'
                    f = r + 1
                    while f < e and _is_digit(buf[f]):
                        f += 1
                    if 1 <= f - r - 1 <= 12 and f < e and buf[f] == 32:
                        end = f
                elif r < e and buf[r] == 32:
                    end = r
                kind = 1
        elif q < e and buf[q] == 46 and d1 <= 20:  # 'I.F': -ttt or -r
            f = q + 1
            while f < e and _is_digit(buf[f]):
                f += 1
            if 1 <= f - q - 1 <= 12 and f < e and buf[f] == 32:
                end = f
                kind = 2
        if end >= 0:
            lead[1] = kind
            lead[2] = p
            lead[3] = end
            lead[4] = q
            p = end
            while p < e and buf[p] == 32:
                p += 1
    return p


@_jit
def _tick(buf: Any, lead: Any, ck: Any, ckf: Any) -> Any:
    """``Timestamps.parse`` of the stamp ``lead`` found: the time (NaN: not known exactly
    here), the clock ``ck``/``ckf`` advanced; CK_LOST set when its new state is unknown."""
    a = lead[2]
    b = lead[3]
    q = lead[4]
    if ck[CK_LOST]:
        return np.nan
    if lead[1] == 1:
        hours = 0
        for i in range(a, q):
            hours = hours * 10 + (buf[i] - 48)
        base = hours * 3600 + ((buf[q + 1] - 48) * 10 + (buf[q + 2] - 48)) * 60
        # float(text[colon + 4:]): 'SS' or 'SS.f'
        sa = q + 4
        if b > q + 6:
            digits = b - sa - 1
            frac = b - q - 7
            m = 0
            for i in range(sa, b):
                if i != q + 6:
                    m = m * 10 + (buf[i] - 48)
            if digits > 18:
                ck[CK_LOST] = 1
                return np.nan
            sec = np.float64(m) / _POW10[frac]
        else:
            sec = np.float64((buf[sa] - 48) * 10 + (buf[sa + 1] - 48))
        value = (np.float64(base) + sec) + np.float64(ck[CK_DAY])
        if value < ckf[0] - 43200.0:
            ck[CK_DAY] += 86400
            value += 86400.0
        ckf[0] = value
        return value
    # 'I.F': float(text), the point at q
    if ck[CK_RELATIVE] < 0 or ck[CK_RELATIVE] == 0:
        digits_ok = (b - a - 1) <= 18
        value = -1.0
        if digits_ok:
            m = 0
            for i in range(a, b):
                if i != q:
                    m = m * 10 + (buf[i] - 48)
            if m <= _EXACT:
                value = np.float64(m) / _POW10[b - q - 1]
        if ck[CK_RELATIVE] < 0:
            if value < 0.0:
                ck[CK_LOST] = 1
                return np.nan
            ck[CK_RELATIVE] = 1 if value < 1e8 else 0
        if ck[CK_RELATIVE] == 0:
            return value if value >= 0.0 else np.nan
    # relative: total_ns += int(whole) * 10**9 + int(frac[:9].ljust(9, '0'))
    if q - a > 9:  # whole * 10**9 stays far from 2**63
        ck[CK_LOST] = 1
        return np.nan
    whole = 0
    for i in range(a, q):
        whole = whole * 10 + (buf[i] - 48)
    ns = 0
    for j in range(9):
        i = q + 1 + j
        ns = ns * 10 + ((buf[i] - 48) if i < b else 0)
    total = ck[CK_TOTAL_NS] + whole * 1000000000 + ns
    if total > 4611686018427387904:
        ck[CK_LOST] = 1
        return np.nan
    ck[CK_TOTAL_NS] = total
    return np.float64(total) / 1e9


@_jit
def _carries(buf: Any, s: int, e: int) -> bool:
    """Whether the reader may carry the head of ``buf[s:e]`` (not taken) into the next line:
    it holds 'strace: Process ' after something."""
    n = _MARKER.shape[0]
    for i in range(s, e - n + 1):
        if buf[i] == 115:
            ok = True
            for j in range(1, n):
                if buf[i + j] != _MARKER[j]:
                    ok = False
                    break
            if ok:
                # carried only if what comes before it is not blank (line[:cut].strip()):
                # a byte that may be Unicode white space counts as not blank (the
                # cautious side: the next line is then not taken)
                for j in range(s, i):
                    c = buf[j]
                    if not (c == 32 or 9 <= c <= 13 or 28 <= c <= 31):
                        return True
                return False
    return False


@_jit
def scan_lines(
    buf: Any,
    first_lineno: int,
    carry_in: bool,
    tb_bytes: Any,
    tb_off: Any,
    tb_kind: Any,
    tb_val: Any,
    slots: Any,
    min_args: Any,
    fd_arg: Any,
    ck: Any,
    ckf: Any,
    lead: Any,
    num: Any,
    res: Any,
    taken: Any,
    pid: Any,
    call: Any,
    args: Any,
    argneg: Any,
    nargs: Any,
    ret: Any,
    ret_unknown: Any,
    errno: Any,
    start: Any,
    end: Any,
    time: Any,
    duration: Any,
    lineno: Any,
    path_start: Any,
    path_end: Any,
) -> int:
    """Scan every line of ``buf`` into the output arrays (one row per line; sized by the
    caller); ``lead`` (int64[5]), ``num`` (uint64[2]), ``res`` (uint64[4]) are scratch. Returns 1 if the reader would carry the last line's head into the next block
    (a 'strace: Process ' message inside it), else 0."""
    n_buf = buf.shape[0]
    has_cr = False
    for i in range(n_buf):
        if buf[i] == 13:
            has_cr = True
            break
    if has_cr or carry_in:
        ck[CK_LOST] = 1
    carry = carry_in
    row = 0
    s = 0
    while s < n_buf:
        e = s
        while e < n_buf and buf[e] != 10:
            e += 1
        taken[row] = 0
        pid[row] = -1
        call[row] = 0
        nargs[row] = 0
        argneg[row] = 0
        ret[row] = 0
        ret_unknown[row] = 0
        errno[row] = 0
        start[row] = s
        end[row] = e
        time[row] = np.nan
        duration[row] = np.nan
        lineno[row] = first_lineno + row
        path_start[row] = -1
        path_end[row] = -1
        for k in range(MAX_ARGS):
            args[row, k] = 0
        joined = carry
        carry = False
        p = _leader(buf, s, e, lead)
        pid[row] = lead[0]
        stamp_ok = True
        if lead[1] != 0:
            if joined:
                ck[CK_LOST] = 1
            t = _tick(buf, lead, ck, ckf)
            time[row] = t
            stamp_ok = not np.isnan(t)
        ok = not joined and not has_cr and stamp_ok and e - s <= MAX_LINE
        row_taken = False
        if ok:
            row_taken = _call(
                buf, p, e, row, tb_bytes, tb_off, tb_kind, tb_val, slots, min_args, fd_arg, num, res,
                call, args, argneg, nargs, ret, ret_unknown, errno, duration, path_start,
                path_end,
            )  # fmt: skip
        if row_taken:
            taken[row] = 1
        else:
            call[row] = 0
            nargs[row] = 0
            argneg[row] = 0
            ret[row] = 0
            ret_unknown[row] = 0
            errno[row] = 0
            duration[row] = np.nan
            path_start[row] = -1
            path_end[row] = -1
            for k in range(MAX_ARGS):
                args[row, k] = 0
            if _carries(buf, s, e):
                # the reader carries this line's head into the next one, joined: which
                # stamp that reads is not followed here
                carry = True
                ck[CK_LOST] = 1
                time[row] = np.nan
        row += 1
        s = e + 1
    return 1 if carry else 0


@_jit
def _call(
    buf: Any,
    p: int,
    e: int,
    row: int,
    tb_bytes: Any,
    tb_off: Any,
    tb_kind: Any,
    tb_val: Any,
    slots: Any,
    min_args: Any,
    fd_arg: Any,
    num: Any,
    res: Any,
    call: Any,
    args: Any,
    argneg: Any,
    nargs: Any,
    ret: Any,
    ret_unknown: Any,
    errno: Any,
    duration: Any,
    path_start: Any,
    path_end: Any,
) -> bool:
    """The call after the leader, ``buf[p:e]``: True if taken (fields written)."""
    # NAME "("
    if p >= e or not ((97 <= buf[p] <= 122) or buf[p] == 95):
        return False
    q = p
    while q < e and (97 <= buf[q] <= 122 or _is_digit(buf[q]) or buf[q] == 95):
        q += 1
    if q >= e or buf[q] != 40:
        return False
    k = _lookup(KIND_CALL, buf, p, q, tb_bytes, tb_off, tb_kind, slots)
    if k < 0:
        return False
    code = tb_val[k]
    call[row] = code
    p = q + 1
    # the arguments
    n = 0
    mask = 0
    paths = 0
    if p < e and buf[p] != 41:
        while True:
            if n >= MAX_ARGS:
                return False
            q = _arg(buf, p, e, tb_bytes, tb_off, tb_kind, tb_val, slots, num, res)
            if q < 0:
                return False
            args[row, n] = res[0]
            if res[1]:
                mask |= 1 << n
            if np.int64(res[2]) >= 0:
                if n != fd_arg[code]:
                    return False  # a -y path only on the call's fd argument
                paths += 1
                path_start[row] = np.int64(res[2])
                path_end[row] = np.int64(res[3])
            n += 1
            if buf[q] == 41:
                p = q
                break
            # ',' then exactly one space: decode_args splits at ', ' (split_args too)
            if q + 2 >= e or buf[q + 1] != 32:
                return False
            p = q + 2
    if p >= e or buf[p] != 41:
        return False
    if paths > 1 or n < min_args[code]:
        return False
    nargs[row] = n
    argneg[row] = mask
    p += 1
    # " "* "= " RET
    while p < e and buf[p] == 32:
        p += 1
    if p + 2 >= e or buf[p] != 61 or buf[p + 1] != 32:
        return False
    p += 2
    if buf[p] == 63:  # '?'
        ret_unknown[row] = 1
        p += 1
    elif buf[p] == 48 and p + 1 < e and buf[p + 1] == 120:  # 0x + lower-case hex
        q = p + 2
        v = 0
        while q < e and (_is_digit(buf[q]) or 97 <= buf[q] <= 102):
            q += 1
        if q - p - 2 < 1 or q - p - 2 > 16:
            return False
        if q - p - 2 == 16 and buf[p + 2] > 55:  # '7': >= 2**63 does not fit
            return False
        for i in range(p + 2, q):
            v = v * 16 + _hexval(buf[i])
        ret[row] = v
        p = q
    else:
        neg = buf[p] == 45
        a = p + 1 if neg else p
        q = a
        while q < e and _is_digit(buf[q]):
            q += 1
        if q - a < 1 or q - a > 18:  # 19 digits may pass a long: left to the reader
            return False
        v = 0
        for i in range(a, q):
            v = v * 10 + (buf[i] - 48)
        ret[row] = -v if neg else v
        p = q
    # (?=[ <]|$), then the tail
    if p < e:
        if buf[p] != 32:
            return False
        if p + 1 < e and buf[p + 1] == 60:  # ' <' DUR '>' at the end
            return _duration(buf, p + 2, e, row, duration)
        # ' ' ERRNO
        a = p + 1
        q = a
        if q >= e or buf[q] != 69:  # 'E'
            return False
        q += 1
        while q < e and (65 <= buf[q] <= 90 or _is_digit(buf[q]) or buf[q] == 95):
            q += 1
        if q - a < 2:
            return False
        k = _lookup(KIND_ERRNO, buf, a, q, tb_bytes, tb_off, tb_kind, slots)
        if k < 0:
            return False
        errno[row] = tb_val[k]
        if not ret_unknown[row]:
            ret[row] = -1
        p = q
        if p < e and p + 1 < e and buf[p] == 32 and buf[p + 1] == 40:  # ' (' MSG ')'
            q = p + 2
            while q < e:
                c = buf[q]
                if 32 <= c <= 126 and c != 40 and c != 41 and c != 60 and c != 62 and c != 61:
                    q += 1
                else:
                    break
            if q >= e or buf[q] != 41:
                return False
            p = q + 1
        if p < e:
            if p + 1 >= e or buf[p] != 32 or buf[p + 1] != 60:
                return False
            if not _duration(buf, p + 2, e, row, duration):
                return False
    return True


@_jit
def _duration(buf: Any, a: int, e: int, row: int, duration: Any) -> bool:
    """DEC '.' DEC '>' at the end of the line: float() of it, exact or not taken."""
    q = a
    while q < e and _is_digit(buf[q]):
        q += 1
    if q == a or q >= e or buf[q] != 46:
        return False
    r = q + 1
    while r < e and _is_digit(buf[r]):
        r += 1
    if r == q + 1 or r != e - 1 or buf[r] != 62:
        return False
    if r - a - 1 > 18:
        return False
    m = 0
    for i in range(a, r):
        if i != q:
            m = m * 10 + (buf[i] - 48)
    if m > _EXACT or r - q - 1 > 22:
        return False
    duration[row] = np.float64(m) / _POW10[r - q - 1]
    return True
