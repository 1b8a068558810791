"""Decoding strace argument text into numbers: flag names, -y fd paths, -X verbose comments.

strace prints arguments the way ``src/mem.c`` and ``src/clone.c`` format them: addresses in hex
or ``NULL``, lengths in decimal, flags as ``|``-joined names (``MAP_PRIVATE|MAP_ANONYMOUS``,
``21<<MAP_HUGE_SHIFT`` for the huge page size, unknown bits as hex), fds with ``-y`` as
``3</usr/lib/libc.so.6>``; ``-X raw`` prints every flag as a number and ``-X verbose`` prints
the number followed by ``/* NAMES */``. This module turns all of these into the ints the kernel
saw. Only the syscalls in :data:`DECODED_SYSCALLS` are decoded; the readers keep the argument
text of the others as is, since a VMA replay never looks at it.
"""

from __future__ import annotations

import codecs
import re
import warnings
from typing import Final

from vmsim import constants
from vmsim.trace.events import Arg

__all__ = [
    "DECODED_SYSCALLS",
    "FLAG_VALUES",
    "MIN_ARGS",
    "TASK_AND_TIME",
    "Timestamps",
    "decode_args",
    "decode_value",
    "split_args",
    "too_few_args",
]

# The memory and process syscalls whose arguments a VMA replay reads.
DECODED_SYSCALLS: Final = frozenset(
    {
        "mmap", "munmap", "mprotect", "pkey_mprotect", "mremap", "madvise", "brk",
        "mlock", "mlock2", "munlock", "mlockall", "munlockall", "mseal",
        "clone", "clone3", "fork", "vfork", "execve", "execveat", "exit", "exit_group",
        "shmat", "shmdt", "shmget", "shmctl", "remap_file_pages", "process_madvise",
    }
)  # fmt: skip

# The fewest arguments strace (or ltrace, whose SYS_mmap shows four) prints for each decoded
# call: a line with fewer was cut or corrupted, and is a Problem, not a call.
MIN_ARGS: Final = {
    "mmap": 4, "munmap": 2, "mprotect": 3, "pkey_mprotect": 3, "mremap": 4, "madvise": 3,
    "brk": 1, "mlock": 2, "mlock2": 2, "munlock": 2, "mlockall": 1, "mseal": 2,
    "execve": 1, "execveat": 2, "exit": 1, "exit_group": 1, "shmat": 2, "shmdt": 1,
    "remap_file_pages": 5, "process_madvise": 4,
}  # fmt: skip


def too_few_args(name: str, args: tuple[Arg, ...]) -> str | None:
    """Why a decoded call cannot be what strace printed (None: it can)."""
    want = MIN_ARGS.get(name, 0)
    if len(args) < want:
        return f"{name}() with {len(args)} of its {want}+ arguments (cut or corrupted?)"
    return None


# include/uapi/linux/sched.h
_CLONE_FLAGS: Final = {
    "CLONE_NEWTIME": 0x80,
    "CLONE_VM": 0x100,
    "CLONE_FS": 0x200,
    "CLONE_FILES": 0x400,
    "CLONE_SIGHAND": 0x800,
    "CLONE_PIDFD": 0x1000,
    "CLONE_PTRACE": 0x2000,
    "CLONE_VFORK": 0x4000,
    "CLONE_PARENT": 0x8000,
    "CLONE_THREAD": 0x10000,
    "CLONE_NEWNS": 0x20000,
    "CLONE_SYSVSEM": 0x40000,
    "CLONE_SETTLS": 0x80000,
    "CLONE_PARENT_SETTID": 0x100000,
    "CLONE_CHILD_CLEARTID": 0x200000,
    "CLONE_DETACHED": 0x400000,
    "CLONE_UNTRACED": 0x800000,
    "CLONE_CHILD_SETTID": 0x1000000,
    "CLONE_NEWCGROUP": 0x2000000,
    "CLONE_NEWUTS": 0x4000000,
    "CLONE_NEWIPC": 0x8000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
    "CLONE_IO": 0x80000000,
    "CLONE_CLEAR_SIGHAND": 0x100000000,
    "CLONE_INTO_CGROUP": 0x200000000,
}

# x86-64 signal numbers (arch/x86/include/uapi/asm/signal.h): clone's flags end with the
# exit signal (``...|SIGCHLD``).
SIGNALS: Final = {
    "SIGHUP": 1, "SIGINT": 2, "SIGQUIT": 3, "SIGILL": 4, "SIGTRAP": 5, "SIGABRT": 6,
    "SIGIOT": 6, "SIGBUS": 7, "SIGFPE": 8, "SIGKILL": 9, "SIGUSR1": 10, "SIGSEGV": 11,
    "SIGUSR2": 12, "SIGPIPE": 13, "SIGALRM": 14, "SIGTERM": 15, "SIGSTKFLT": 16,
    "SIGCHLD": 17, "SIGCONT": 18, "SIGSTOP": 19, "SIGTSTP": 20, "SIGTTIN": 21, "SIGTTOU": 22,
    "SIGURG": 23, "SIGXCPU": 24, "SIGXFSZ": 25, "SIGVTALRM": 26, "SIGPROF": 27,
    "SIGWINCH": 28, "SIGIO": 29, "SIGPOLL": 29, "SIGPWR": 30, "SIGSYS": 31, "SIGRTMIN": 32,
}  # fmt: skip

_OTHER_FLAGS: Final = {
    "NULL": 0,
    "MAP_FILE": 0,
    "MAP_HUGE_2MB": 21 << constants.MAP_HUGE_SHIFT,
    "MAP_HUGE_1GB": 30 << constants.MAP_HUGE_SHIFT,
    # include/uapi/linux/shm.h (octal there)
    "SHM_RDONLY": 0o10000,
    "SHM_RND": 0o20000,
    "SHM_REMAP": 0o40000,
    "SHM_EXEC": 0o100000,
    "SHM_HUGETLB": 0o4000,
    "SHM_NORESERVE": 0o10000,
    # include/uapi/linux/ipc.h
    "IPC_PRIVATE": 0,
    "IPC_CREAT": 0o1000,
    "IPC_EXCL": 0o2000,
    "IPC_NOWAIT": 0o4000,
    "IPC_RMID": 0,
    "IPC_SET": 1,
    "IPC_STAT": 2,
    "IPC_INFO": 3,
    # include/uapi/linux/fcntl.h, for execveat
    "AT_FDCWD": -100,
    "AT_SYMLINK_NOFOLLOW": 0x100,
    "AT_EMPTY_PATH": 0x1000,
    "MAP_HUGE_SHIFT": constants.MAP_HUGE_SHIFT,
}

_PREFIXES: Final = ("PROT_", "MAP_", "MADV_", "MREMAP_", "MLOCK_", "MCL_")

FLAG_VALUES: Final[dict[str, int]] = {
    **{
        name: value
        for name, value in vars(constants).items()
        if name.startswith(_PREFIXES) and isinstance(value, int) and not name.endswith("_NAMES")
    },
    **_CLONE_FLAGS,
    **SIGNALS,
    **_OTHER_FLAGS,
}
"""Every name strace prints in the decoded arguments, with its kernel value."""
del FLAG_VALUES["MAP_FAILED"], FLAG_VALUES["MAP_TYPE"], FLAG_VALUES["MAP_HUGE_MASK"]

# Flag expressions repeat endlessly (``PROT_READ|PROT_WRITE``): decode each spelling once.
_flag_cache: dict[str, Arg] = {"NULL": 0, "0": 0, "-1": -1}
_FLAG_CACHE_LIMIT: Final = 4096

_SPECIAL = re.compile(r'[",\[\]{}()<>]|/\*')
_NESTING = re.compile(r'["\[\]{}()<>]|/\*')
# The end of a -y decoration: '>' followed by what ends an argument. A plain '>' inside the path
# does not end it (-yy: 'TCP:[1.2.3.4:22->5.6.7.8:9]', '/dev/pts/0<char 136:0>'). The path of a
# file that was unlinked is followed by '(deleted)' after the '>' (strace's printfd() prints
# the kernel's d_path() suffix outside the brackets): '4</memfd:java_heap>(deleted)'.
_DECORATION_END = re.compile(r">(\(deleted\))?(?=[,\]})\s]|$)")
DELETED: Final = " (deleted)"
"""What a -y path of an unlinked file ends with in ``fd_paths``: the kernel's maps spelling."""
_OPENERS: Final = {"]": "[", "}": "{", ")": "("}
_CLONE3_FLAGS = re.compile(r"\bflags=([^,}]*)")
_KEYWORD = re.compile(r"[a-z_]+=")


def split_args(text: str) -> list[str]:
    """Split strace's argument text at its top-level commas.

    Commas inside strings, arrays, structs, parentheses, comments and -y decorations do not
    split: ``'{a=1, b=2}, "x, y", 3</a, b>'`` -> ``['{a=1, b=2}', '"x, y"', '3</a, b>']``.
    """
    if not text:
        return []
    if _NESTING.search(text) is None:
        return text.split(", ")
    out: list[str] = []
    stack: list[str] = []
    start = pos = 0
    n = len(text)
    search = _SPECIAL.search
    while True:
        m = search(text, pos)
        if m is None:
            break
        i = m.start()
        c = m.group()
        pos = i + 1
        if c == '"':
            pos = _string_end(text, i)
        elif c == "/*":
            end = text.find("*/", i + 2)
            pos = n if end < 0 else end + 2
        elif c == ",":
            if not stack:
                out.append(text[start:i])
                start = i + 2 if text.startswith(" ", i + 1) else i + 1
        elif c in "[{(":
            stack.append(c)
        elif c in "]})":
            if stack and stack[-1] == _OPENERS[c]:
                stack.pop()
        elif c == "<" and i > 0 and text[i - 1].isdigit() and not text.startswith("<", i + 1):
            # A -y decoration '3</path>': skip the path, whatever it contains.
            end_m = _DECORATION_END.search(text, i + 1)
            pos = n if end_m is None else end_m.end()
    out.append(text[start:])
    return out


def _string_end(text: str, i: int) -> int:
    """Index just past the string literal that opens at ``text[i]`` (a double quote)."""
    j = i + 1
    while True:
        j = text.find('"', j)
        if j < 0:
            return len(text)
        k = j - 1
        while text[k] == "\\":
            k -= 1
        if (j - 1 - k) % 2 == 0:  # an even number of backslashes: the quote is not escaped
            return j + 1
        j += 1


def decode_value(token: str, fd_paths: dict[int, str] | None = None) -> Arg:
    """Decode one argument as strace printed it; the raw text when it is not a value.

    Numbers (decimal, hex, octal with a leading 0) -> int; ``NULL`` and flag expressions
    (``PROT_READ|PROT_WRITE``, ``MAP_PRIVATE|MAP_ANONYMOUS|21<<MAP_HUGE_SHIFT``,
    ``MADV_DONTNEED``, ``CLONE_VM|SIGCHLD``, ``0x3 /* PROT_READ|PROT_WRITE */``) -> int;
    ``3</usr/lib/libc.so.6>`` -> 3, recording the path in ``fd_paths``; a complete string
    literal -> its text; anything else (arrays, structs, strings strace cut with ``...``) ->
    the token itself.
    """
    c = token[:1]
    if c == "0" or c == "-" or "1" <= c <= "9":
        number = _to_int(token)
        if number is not None:
            return number
    elif c == '"':
        return _decode_string(token)
    cached = _flag_cache.get(token)
    if cached is not None:
        return cached
    if "<" in token and token.endswith((">", ">(deleted)")):
        fd_text, _, rest = token.partition("<")
        fd = _to_int(fd_text)
        if fd is not None:
            if fd_paths is not None:
                fd_paths[fd] = (
                    rest[:-1] if rest.endswith(">") else rest[: -len(">(deleted)")] + DELETED
                )
            return fd
    value = _decode_expression(token)
    if isinstance(value, int) and len(_flag_cache) < _FLAG_CACHE_LIMIT:
        _flag_cache[token] = value
    return value


def _decode_expression(token: str) -> Arg:
    text = token
    if text.endswith("*/"):  # -X verbose: '0x3 /* PROT_READ|PROT_WRITE */', '0x7ff.. /* 39 vars */'
        text = text[: text.find("/*")].rstrip()
    total = 0
    for part in text.split("|"):
        part = part.strip()
        value = FLAG_VALUES.get(part)
        if value is None:
            number = _to_int(part)
            if number is None:
                shift_base, sep, shift_name = part.partition("<<")
                base = _to_int(shift_base)
                shift = FLAG_VALUES.get(shift_name, _to_int(shift_name))
                if not sep or base is None or shift is None or not 0 <= shift < _MAX_SHIFT:
                    return token
                number = base << shift
                if not _REG_MIN <= number <= _REG_MAX:
                    return token
            value = number
        total |= value
    return total


_NUMBER = re.compile(r"-?(?:0x[0-9a-fA-F]{1,16}|[0-9]{1,20})")
_MAX_SHIFT = 64
# what one 64-bit register holds, read as signed or unsigned: every value strace prints
_REG_MIN = -(1 << 63)
_REG_MAX = (1 << 64) - 1


def _to_int(text: str) -> int | None:
    """A number as strace prints one: decimal, ``0x`` hex, octal with a leading 0, ASCII and
    64 bits at most (else None: the text is not a value strace printed)."""
    if _NUMBER.fullmatch(text) is None:
        return None
    digits = text.lstrip("-")
    if digits.startswith("0x"):
        value = int(text, 16)
    elif len(digits) > 1 and digits[0] == "0":
        if "8" in digits or "9" in digits:
            return None  # not octal
        value = int(text, 8)
    else:
        value = int(text)
    return value if _REG_MIN <= value <= _REG_MAX else None


def _decode_string(token: str) -> str:
    if len(token) < 2 or not token.endswith('"') or _string_end(token, 0) != len(token):
        return token  # cut by strace ('"/usr/lib/jvm/java-17-openjdk-amd64/bin/j"...')
    body = token[1:-1]
    if "\\" not in body:
        return body
    try:
        with warnings.catch_warnings():
            # '\\403' (an octal escape past \\377) is only a DeprecationWarning to Python
            warnings.simplefilter("error", DeprecationWarning)
            raw, _ = codecs.escape_decode(body.encode("utf-8", "surrogateescape"))
    except (ValueError, DeprecationWarning):  # '\\x' without hex digits, '\\403': not strace's
        return token
    return raw.decode("utf-8", "surrogateescape")


def decode_args(name: str, text: str, fd_paths: dict[int, str]) -> tuple[Arg, ...]:
    """Decode the argument text of syscall ``name``, adding -y paths to ``fd_paths``.

    ``clone(child_stack=NULL, flags=CLONE_VM|SIGCHLD, ...)`` keyword arguments lose their
    keyword; the ``clone3({flags=..., ...} => {...}, 88)`` struct becomes its flags.
    """
    # The fast path, for the arguments of most calls: hex addresses, and tokens seen before
    # (flag expressions, NULL, common lengths). A token it does not know, which may hide a
    # comma inside a string or struct, sends the whole text to the careful path.
    if not text:
        return ()
    out: list[Arg] = []
    get = _flag_cache.get
    for token in text.split(", "):
        value = get(token)
        if value is None:
            if token.startswith("0x") and len(token) <= 18:
                try:
                    value = int(token, 16)
                except ValueError:
                    return _decode_args(name, text, fd_paths)
            elif (
                token.isascii()
                and token.isdigit()
                and token[0] != "0"
                and len(token) <= 20
                and int(token) <= _REG_MAX
            ):
                value = int(token)
                if len(_flag_cache) < _FLAG_CACHE_LIMIT:
                    _flag_cache[token] = value
            else:
                return _decode_args(name, text, fd_paths)
        out.append(value)
    return tuple(out)


def _decode_args(name: str, text: str, fd_paths: dict[int, str]) -> tuple[Arg, ...]:
    tokens = split_args(text)
    if name == "clone":
        tokens = [t[m.end() :] if (m := _KEYWORD.match(t)) else t for t in tokens]
    elif name == "clone3" and tokens and tokens[0].startswith("{"):
        m = _CLONE3_FLAGS.search(tokens[0])
        if m is not None:
            tokens[0] = m.group(1).strip()
    return tuple([decode_value(t, fd_paths) for t in tokens])


# How a line of strace or ltrace starts: the task, ``[pid  123] `` or ``123 `` (-f; groups 1
# and 2), then the time column (-t, -tt, -ttt, -r; group 3). Numbers are ASCII and bounded:
# neither tool prints anything longer, and int() refuses runs of more than 4300 digits.
TASK_AND_TIME: Final = (
    r" *(?:\[pid +([0-9]{1,10})\] |([0-9]{1,10}) +)?"
    r"(?:([0-9]{1,12}:[0-9][0-9]:[0-9][0-9](?:\.[0-9]{1,12})?|[0-9]{1,20}\.[0-9]{1,12}) +)?"
)


class Timestamps:
    """Turns the time column into seconds, with the state the formats need.

    ``-t``/``-tt`` (``HH:MM:SS[.frac]``) give seconds since midnight, adding a day when the clock
    runs backwards by more than 12 hours (a trace that crosses midnight); ``-ttt`` gives epoch
    seconds; ``-r`` gives the time since the previous line, summed here (in integer
    nanoseconds, so long traces do not drift). ``-ttt`` and ``-r`` look alike; the first stamp
    decides: below 1e8 seconds (1973) it is relative.
    """

    __slots__ = ("_day", "_last", "_minutes", "_total_ns", "relative")

    def __init__(self) -> None:
        self.relative: bool | None = None
        self._day = 0
        self._last = 0.0
        self._total_ns = 0
        self._minutes: dict[str, int] = {}

    def parse(self, text: str) -> float:
        colon = 2 if text[2:3] == ":" else text.find(":")
        if colon > 0:
            hhmm = text[: colon + 3]
            base = self._minutes.get(hhmm)
            if base is None:
                base = int(text[:colon]) * 3600 + int(text[colon + 1 : colon + 3]) * 60
                if len(self._minutes) > 4096:
                    self._minutes.clear()
                self._minutes[hhmm] = base
            value = base + float(text[colon + 4 :]) + self._day
            if value < self._last - 43200:
                self._day += 86400
                value += 86400
            self._last = value
            return value
        if self.relative is None:
            self.relative = float(text) < 1e8
        if not self.relative:
            return float(text)
        whole, _, frac = text.partition(".")
        self._total_ns += int(whole) * 1_000_000_000 + int(frac[:9].ljust(9, "0"))
        return self._total_ns / 1e9
