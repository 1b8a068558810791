"""Trace readers: strace and ltrace output as a stream of syscall, signal and exit events.

>>> from vmsim.trace import read_strace
>>> [e.args for e in read_strace(["mprotect(0x7f0000001000, 4096, PROT_NONE) = 0"])]
[(139637976731648, 4096, 0)]
"""

from vmsim.trace.decode import DECODED_SYSCALLS, split_args
from vmsim.trace.events import Arg, Event, Exit, Problem, Signal, Syscall
from vmsim.trace.ltrace import read_ltrace
from vmsim.trace.sniff import detect_format, sniff_and_read
from vmsim.trace.strace import open_trace, read_strace, read_strace_files, read_strace_stream

__all__ = [
    "DECODED_SYSCALLS",
    "Arg",
    "Event",
    "Exit",
    "Problem",
    "Signal",
    "Syscall",
    "detect_format",
    "open_trace",
    "read_ltrace",
    "read_strace",
    "read_strace_files",
    "read_strace_stream",
    "sniff_and_read",
    "split_args",
]
