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
# numba-IR inlined into callers: the small predicates, and what scan_lines calls once a line
# (a call that passes the output arrays cost ~12% of the time)
_inline: Callable[[_F], _F] = njit(inline="always", **_OPTS)

KIND_FLAG = 0
KIND_ERRNO = 1
KIND_CALL = 2
KIND_MIN_ARGS = 3  # every name in vmsim.trace.decode.MIN_ARGS, with its minimum

# clock state: int64 words, then the float64 word (the last -t/-tt time)
CK_RELATIVE = 0  # -1 undecided, 0 absolute (-ttt), 1 relative (-r): Timestamps.relative
CK_DAY = 1  # Timestamps._day
CK_TOTAL_NS = 2  # Timestamps._total_ns
CK_LOST = 3  # 1: a line's effect on the clock is unknown; no time after it is known

MAX_LINE = 4096  # longer lines are never taken
MAX_ARGS = 6

# The name table, one int64 array ``tb`` (scan.py builds it): tb[TB_SHIFT] and tb[TB_MASK]
# for the hash slots (entry index or -1) from TB_SLOTS; entry i's words (E_*) from
# tb[TB_ENTRIES] + E_SIZE * i; the names' bytes (one a word) from tb[TB_BYTES]; per call
# code, its MIN_ARGS and its fd argument (-1: none) from tb[TB_CALLS] + 2 * code. A name is
# keyed by its length and two little-endian words: its first 8 bytes and its last 8 (0 when
# shorter than 8), which hold all of it up to 16 bytes; longer names compare the rest.
TB_SHIFT = 0
TB_MASK = 1
TB_ENTRIES = 2
TB_BYTES = 3
TB_CALLS = 4
TB_SLOTS = 5
E_W0 = 0
E_W1 = 1
E_LEN = 2
E_KIND = 3
E_VALUE = 4
E_OFFSET = 5
E_SIZE = 6
HASH_K1 = 0x9E3779B97F4A7C15
HASH_K2 = 0xC2B2AE3D27D4EB4F

# The int64 outputs, one row each: rows[R_..., line]
R_TAKEN = 0
R_PID = 1
R_CALL = 2
R_ARGNEG = 3
R_NARGS = 4
R_RET = 5
R_RET_UNKNOWN = 6
R_ERRNO = 7
R_START = 8
R_END = 9
R_LINENO = 10
R_PATH_START = 11
R_PATH_END = 12
N_ROWS = 13
# the float64 outputs: floats[F_..., line]
F_TIME = 0
F_DURATION = 1
N_FLOATS = 2

# scratch words (sc, int64): the leader, then an argument's results
S_PID = 0
S_STAMP = 1  # 0 none, 1 'H:MM:SS[.f]', 2 'I.F'
S_STAMP_A = 2
S_STAMP_B = 3
S_STAMP_SEP = 4  # the stamp's first ':' or its '.'
S_NEG = 5  # the number or argument is negative
S_PATH_A = 6  # an argument's -y path span (-1: none)
S_PATH_B = 7
N_SCRATCH = 8

_K1 = np.uint64(HASH_K1)
_K2 = np.uint64(HASH_K2)
_U64_MAX = np.uint64(18446744073709551615)
_NL8 = np.uint64(0x0A0A0A0A0A0A0A0A)
_ONE8 = np.uint64(0x0101010101010101)
_HIGH8 = np.uint64(0x8080808080808080)
_EXACT = 9007199254740992  # 2**53: integers up to it are exact doubles
_POW10 = np.array([10.0**k for k in range(23)], dtype=np.float64)  # each exact
_HEX = np.full(256, -1, dtype=np.int64)  # a hex digit's value, else -1
for _c, _v in zip(b"0123456789abcdefABCDEF", [*range(16), *range(10, 16)], strict=True):
    _HEX[_c] = _v
_MARKER = np.frombuffer(b"strace: Process ", dtype=np.uint8).copy()


@_jit
def _lookup(kind: int, buf: Any, a: int, b: int, tb: Any) -> Any:
    """The word index of the table entry (kind, ``buf[a:b]``) (its value at + E_VALUE), -1
    if there is none. ``buf[a:b]`` holds name bytes only (ASCII)."""
    n = b - a
    w0 = 0
    for j in range(min(n, 8)):
        w0 |= int(buf[a + j]) << (8 * j)
    w1 = 0
    if n >= 8:
        for j in range(8):
            w1 |= int(buf[b - 8 + j]) << (8 * j)
    h = (np.uint64(w0) ^ (np.uint64(w1) * _K1) ^ np.uint64((n << 8) | kind)) * _K2
    s = np.int64(h >> np.uint64(tb[TB_SHIFT]))
    mask = tb[TB_MASK]
    entries = tb[TB_ENTRIES]
    while True:
        e = tb[TB_SLOTS + s]
        if e < 0:
            return -1
        w = entries + E_SIZE * e
        if (
            tb[w + E_W0] == w0
            and tb[w + E_W1] == w1
            and tb[w + E_LEN] == n
            and tb[w + E_KIND] == kind
        ):
            same = True
            o = tb[TB_BYTES] + tb[w + E_OFFSET]
            for j in range(8, n - 8):  # the bytes the two words leave out
                if tb[o + j] != buf[a + j]:
                    same = False
                    break
            if same:
                return w
        s = (s + 1) & mask


@_inline
def _is_digit(c: int) -> bool:
    return 48 <= c <= 57


@_inline
def _is_name(c: int) -> bool:
    return (65 <= c <= 90) or (97 <= c <= 122) or (48 <= c <= 57) or c == 95


@_jit
def _number(buf: Any, p: int, e: int, u: Any, sc: Any) -> int:
    """``vmsim.trace.decode._to_int`` of the number at ``buf[p:]``: ``["-"] ("0x" HEX{1,16} |
    DEC{1,20})``, octal with a leading 0, within -2**63 .. 2**64-1. The number is the longest
    such run; the caller checks what follows. Returns its end (-1: no number, or one
    ``_to_int`` refuses), the value (two's complement) in u[0], sc[S_NEG] 1 if negative."""
    neg = False
    if p < e and buf[p] == 45:  # '-'
        neg = True
        p += 1
    if p >= e or not _is_digit(buf[p]):
        return -1
    v = np.uint64(0)
    if buf[p] == 48 and p + 1 < e and buf[p + 1] == 120:  # '0x'
        q = p + 2
        while q < e:
            h = _HEX[buf[q]]
            if h < 0:
                break
            v = (v << np.uint64(4)) | np.uint64(h)
            q += 1
        n = q - p - 2
        if n < 1 or n > 16:
            return -1
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
            last = min(q, p + 19)  # 19 digits stay below 2**64
            for i in range(p, last):
                v = v * np.uint64(10) + np.uint64(buf[i] - 48)
            if q > last:  # the 20th digit
                d = np.uint64(buf[last] - 48)
                if v > (_U64_MAX - d) // np.uint64(10):
                    return -1  # past 2**64-1
                v = v * np.uint64(10) + d
    if neg and v != np.uint64(0):
        if v > np.uint64(9223372036854775808):
            return -1  # below -2**63
        v = (_U64_MAX - v) + np.uint64(1)  # two's complement
        sc[S_NEG] = 1
    else:
        sc[S_NEG] = 0
    u[0] = v
    return q


@_inline
def _token_end(c: int) -> bool:
    """What may follow an atom and its spaces: '|', ',', ')', '/' (a comment)."""
    return c == 124 or c == 44 or c == 41 or c == 47


@_jit
def _arg(buf: Any, p: int, e: int, tb: Any, u: Any, sc: Any) -> int:
    """One argument at ``buf[p:]`` as ``decode_value`` reads it: its end (at ', ' or ')'),
    -1 if not taken. u[1] its value, sc[S_NEG] 1 if negative, sc[S_PATH_A:S_PATH_B + 1] the
    span of a -y path (-1: none)."""
    sc[S_PATH_A] = -1
    sc[S_PATH_B] = -1
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
            u[1] = np.uint64(fd)
            sc[S_NEG] = 0
            sc[S_PATH_A] = a
            sc[S_PATH_B] = r
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
            q = _number(buf, p, e, u, sc)
            if q < 0:
                return -1
            value = u[0]
            vneg = sc[S_NEG]
            if q + 1 < e and buf[q] == 60 and buf[q + 1] == 60:  # '<<'
                if vneg:
                    return -1
                s0 = q + 2
                if s0 < e and _is_digit(buf[s0]):
                    q = _number(buf, s0, e, u, sc)
                    if q < 0 or sc[S_NEG] != 0:
                        return -1
                    shift = u[0]
                else:
                    q = s0
                    while q < e and _is_name(buf[q]):
                        q += 1
                    if q == s0:
                        return -1
                    k = _lookup(KIND_FLAG, buf, s0, q, tb)
                    if k < 0 or tb[k + E_VALUE] < 0:
                        return -1
                    shift = np.uint64(tb[k + E_VALUE])
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
            k = _lookup(KIND_FLAG, buf, p, q, tb)
            if k < 0:
                return -1
            v = tb[k + E_VALUE]
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
    u[1] = total
    sc[S_NEG] = neg
    return p


@_inline
def _leader(buf: Any, s: int, e: int, sc: Any) -> int:
    """``TASK_AND_TIME`` at ``buf[s:e]`` (it always matches, maybe empty): returns its end;
    sc[S_PID] the pid (-1 none), sc[S_STAMP] the stamp's kind (0 none, 1 'H:MM:SS[.f]', 2
    'I.F'), sc[S_STAMP_A:S_STAMP_B + 1] its span, sc[S_STAMP_SEP] its first colon or point."""
    sc[S_PID] = -1
    sc[S_STAMP] = 0
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
            sc[S_PID] = v
            p = q + 2
    elif p < e and _is_digit(buf[p]):
        q = p
        while q < e and _is_digit(buf[q]):
            q += 1
        if q - p <= 10 and q < e and buf[q] == 32:
            v = 0
            for i in range(p, q):
                v = v * 10 + (buf[i] - 48)
            sc[S_PID] = v
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
            sc[S_STAMP] = kind
            sc[S_STAMP_A] = p
            sc[S_STAMP_B] = end
            sc[S_STAMP_SEP] = q
            p = end
            while p < e and buf[p] == 32:
                p += 1
    return p


@_jit
def _tick(buf: Any, sc: Any, ck: Any, ckf: Any) -> Any:
    """``Timestamps.parse`` of the stamp _leader() found: the time (NaN: not known exactly
    here), the clock ``ck``/``ckf`` advanced; CK_LOST set when its new state is unknown."""
    a = sc[S_STAMP_A]
    b = sc[S_STAMP_B]
    q = sc[S_STAMP_SEP]
    if ck[CK_LOST]:
        return np.nan
    if sc[S_STAMP] == 1:
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
def _may_skip_tick(buf: Any, p: int, e: int, tb: Any) -> Any:
    """Whether the reader may not read the stamp of this line (not taken; its leader ends at
    ``p``): a complete call on one line that it makes a Problem before it reads the stamp
    (``_read()``: too few arguments for MIN_ARGS, a return value below -2**63). False only
    when that cannot be: no such name, or enough ', ' before anything nested, no 19-digit
    negative number after a '='."""
    q = p
    if q < e and buf[q] == 91:  # -i: '[' ' '* hex+ '] '
        q += 1
        while q < e and buf[q] == 32:
            q += 1
        a = q
        while q < e and (_is_digit(buf[q]) or 97 <= buf[q] <= 102):
            q += 1
        if q == a or q + 1 >= e or buf[q] != 93 or buf[q + 1] != 32:
            return False  # no call on this line to the reader: its stamp is read
        q += 2
    a = q
    if q >= e or not ((97 <= buf[q] <= 122) or buf[q] == 95):
        return False
    while q < e and (97 <= buf[q] <= 122 or _is_digit(buf[q]) or buf[q] == 95):
        q += 1
    if q >= e or buf[q] != 40:
        return False
    for i in range(q, e - 21):  # '= -' and 19 digits: may be below -2**63
        if buf[i] == 61 and buf[i + 1] == 32 and buf[i + 2] == 45:
            digits = 0
            while i + 3 + digits < e and _is_digit(buf[i + 3 + digits]):
                digits += 1
            if digits >= 19:
                return True
    k = _lookup(KIND_MIN_ARGS, buf, a, q, tb)
    if k < 0:
        return False
    want = tb[k + E_VALUE]
    # the fewest arguments either of decode_args()'s splits can give: 1 + the ', ' before
    # anything that nests (a string, bracket, parenthesis, decoration or comment)
    n = 1
    r = q + 1
    if r < e and buf[r] == 41:
        return True  # maybe no arguments at all
    while r < e:
        c = buf[r]
        if c == 34 or c == 91 or c == 93 or c == 123 or c == 125 or c == 40 or c == 41:
            break
        if c == 60 or c == 62 or (c == 47 and r + 1 < e and buf[r + 1] == 42):
            break
        if c == 44 and r + 1 < e and buf[r + 1] == 32:
            n += 1
            if n >= want:
                return False
        r += 1
    return n < want


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


@_inline
def _line_end(buf: Any, words: Any, s: int) -> int:
    """Index of the first newline at or after ``s`` (``len(buf)`` if none), a word at a time
    (a word holds a newline when ``word ^ NL8`` holds a zero byte)."""
    n = buf.shape[0]
    e = s
    while e < n and (e & 7) != 0:
        if buf[e] == 10:
            return e
        e += 1
    nw = words.shape[0]
    while (e >> 3) < nw:
        x = words[e >> 3] ^ _NL8
        if (x - _ONE8) & ~x & _HIGH8:
            break
        e += 8
    while e < n and buf[e] != 10:
        e += 1
    return e


@_jit
def scan_lines(
    buf: Any,
    words: Any,
    first_lineno: int,
    carry_in: bool,
    has_cr: bool,
    tb: Any,
    ck: Any,
    ckf: Any,
    sc: Any,
    u: Any,
    rows: Any,
    floats: Any,
    args: Any,
) -> int:
    """Scan every line of ``buf`` (``words``: its whole 8-byte words, as uint64; ``has_cr``:
    it holds a \\r) into ``rows`` (int64, N_ROWS x lines), ``floats``
    (float64, N_FLOATS x lines) and ``args`` (uint64, lines x MAX_ARGS, zeroed by the
    caller); ``sc`` (int64[N_SCRATCH]) and ``u`` (uint64[2]) are scratch. Returns 1 if the
    reader carries the last line's head into the next block ('strace: Process ' inside it),
    else 0."""
    n_buf = buf.shape[0]
    if has_cr or carry_in:
        ck[CK_LOST] = 1
    carry = carry_in
    row = 0
    s = 0
    while s < n_buf:
        e = _line_end(buf, words, s)
        rows[R_TAKEN, row] = 0
        rows[R_CALL, row] = 0
        rows[R_ARGNEG, row] = 0
        rows[R_NARGS, row] = 0
        rows[R_RET, row] = 0
        rows[R_RET_UNKNOWN, row] = 0
        rows[R_ERRNO, row] = 0
        rows[R_START, row] = s
        rows[R_END, row] = e
        rows[R_LINENO, row] = first_lineno + row
        rows[R_PATH_START, row] = -1
        rows[R_PATH_END, row] = -1
        floats[F_TIME, row] = np.nan
        floats[F_DURATION, row] = np.nan
        joined = carry
        carry = False
        p = _leader(buf, s, e, sc)
        rows[R_PID, row] = sc[S_PID]
        stamp_ok = True
        if sc[S_STAMP] != 0:
            if joined:
                ck[CK_LOST] = 1
            # as if the reader reads this stamp: if the line is not taken and the reader
            # may not read it, the clock is lost below
            t = _tick(buf, sc, ck, ckf)
            floats[F_TIME, row] = t
            stamp_ok = not np.isnan(t)
        if (
            not joined
            and not has_cr
            and stamp_ok
            and e - s <= MAX_LINE
            and _call(buf, p, e, row, tb, sc, u, rows, floats, args)
        ):
            rows[R_TAKEN, row] = 1
        else:
            if sc[S_STAMP] != 0 and not ck[CK_LOST] and _may_skip_tick(buf, p, e, tb):
                ck[CK_LOST] = 1
                floats[F_TIME, row] = np.nan
            if rows[R_CALL, row] != 0:  # a call read in part: its fields back to none
                rows[R_CALL, row] = 0
                rows[R_ARGNEG, row] = 0
                rows[R_NARGS, row] = 0
                rows[R_RET, row] = 0
                rows[R_RET_UNKNOWN, row] = 0
                rows[R_ERRNO, row] = 0
                rows[R_PATH_START, row] = -1
                rows[R_PATH_END, row] = -1
                floats[F_DURATION, row] = np.nan
                for k in range(MAX_ARGS):
                    args[row, k] = 0
            if _carries(buf, s, e):
                # the reader carries this line's head into the next one, joined: which
                # stamp that reads is not followed here
                carry = True
                ck[CK_LOST] = 1
                floats[F_TIME, row] = np.nan
        row += 1
        s = e + 1
    return 1 if carry else 0


@_inline
def _call(
    buf: Any, p: int, e: int, row: int, tb: Any, sc: Any, u: Any, rows: Any, floats: Any,
    args: Any,
) -> bool:  # fmt: skip
    """The call after the leader, ``buf[p:e]``: True if taken (its fields written)."""
    # NAME "("
    if p >= e or not ((97 <= buf[p] <= 122) or buf[p] == 95):
        return False
    q = p
    while q < e and (97 <= buf[q] <= 122 or _is_digit(buf[q]) or buf[q] == 95):
        q += 1
    if q >= e or buf[q] != 40:
        return False
    k = _lookup(KIND_CALL, buf, p, q, tb)
    if k < 0:
        return False
    code = tb[k + E_VALUE]
    rows[R_CALL, row] = code
    p = q + 1
    # the arguments
    n = 0
    mask = 0
    paths = 0
    if p < e and buf[p] != 41:
        while True:
            if n >= MAX_ARGS:
                return False
            q = _arg(buf, p, e, tb, u, sc)
            if q < 0:
                return False
            args[row, n] = u[1]
            if sc[S_NEG]:
                mask |= 1 << n
            if sc[S_PATH_A] >= 0:
                if n != tb[tb[TB_CALLS] + 2 * code + 1]:
                    return False  # a -y path only on the call's fd argument
                paths += 1
                rows[R_PATH_START, row] = sc[S_PATH_A]
                rows[R_PATH_END, row] = sc[S_PATH_B]
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
    if paths > 1 or n < tb[tb[TB_CALLS] + 2 * code]:
        return False
    rows[R_NARGS, row] = n
    rows[R_ARGNEG, row] = mask
    p += 1
    # " "* "= " RET
    while p < e and buf[p] == 32:
        p += 1
    if p + 2 >= e or buf[p] != 61 or buf[p + 1] != 32:
        return False
    p += 2
    unknown = False
    if buf[p] == 63:  # '?'
        unknown = True
        rows[R_RET_UNKNOWN, row] = 1
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
            v = v * 16 + _HEX[buf[i]]
        rows[R_RET, row] = v
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
        rows[R_RET, row] = -v if neg else v
        p = q
    # (?=[ <]|$), then the tail
    if p < e:
        if buf[p] != 32:
            return False
        if p + 1 < e and buf[p + 1] == 60:  # ' <' DUR '>' at the end
            return _duration(buf, p + 2, e, row, floats)
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
        k = _lookup(KIND_ERRNO, buf, a, q, tb)
        if k < 0:
            return False
        rows[R_ERRNO, row] = tb[k + E_VALUE]
        if not unknown:
            rows[R_RET, row] = -1
        p = q
        if p + 1 < e and buf[p] == 32 and buf[p + 1] == 40:  # ' (' MSG ')'
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
            return _duration(buf, p + 2, e, row, floats)
    return True


@_jit
def _duration(buf: Any, a: int, e: int, row: int, floats: Any) -> bool:
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
    floats[F_DURATION, row] = np.float64(m) / _POW10[r - q - 1]
    return True
