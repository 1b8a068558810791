"""The guest's system calls of a lackey trace (valgrind ``--trace-syscalls=yes`` lines, as
valgrind 3.19 prints them on this machine) turned into strace lines, and read back by vmsim's
strace reader."""

from __future__ import annotations

from pathlib import Path

from vmsim.memtrace.reader_valgrind import parse_args, strace_lines
from vmsim.memtrace.readers import TraceEvent, open_memtrace
from vmsim.trace.events import Syscall
from vmsim.trace.strace import read_strace

# copied from recordings of small programs under valgrind 3.19.0 (lackey, --trace-syscalls)
VALGRIND = [
    "SYSCALL[19446,1](12) sys_brk ( 0x0 ) --> [pre-success] Success(0x4035000) ",
    "SYSCALL[19446,1](257) sys_openat ( 4294967196, 0x4034bb0(/usr/libexec/valgrind/"
    "vgpreload_core-amd64-linux.so), 524288 ) --> [async] ... ",
    "SYSCALL[19446,1](257) ... [async] --> Success(0x4) ",
    "SYSCALL[19446,1](9) sys_mmap ( 0x0, 8192, 3, 34, 4294967295, 0 ) --> [pre-success] "
    "Success(0x4835000) ",
    "SYSCALL[19446,1](9) sys_mmap ( 0x4838000, 4096, 5, 2066, 4, 4096 ) --> [pre-success] "
    "Success(0x4838000) ",
    "SYSCALL[19446,1](21) sys_access ( 0x402a2a0(/etc/ld.so.preload), 4 )[sync] --> Failure(0x2) ",
    "SYSCALL[19446,1](334) unimplemented (by the kernel) syscall: 334! (ni_syscall)",
    " --> [pre-fail] Failure(0x26) ",
    "SYSCALL[19446,1](10) sys_mprotect ( 0x4a14000, 16384, 1 )[sync] --> Success(0x0) ",
    "SYSCALL[19446,1](11) sys_munmap ( 0x4a2a000, 1048576 )[sync] --> Success(0x0) ",
    "SYSCALL[25542,1](56) sys_clone ( 1200011, 0x0, 0x0, 0x4a27a10, 0x0 )   clone(fork): "
    "process 25542 created child 25559",
    " --> [pre-success] Success(0x63d7) ",
    "SYSCALL[19446,1](231) exit_group( 0 ) --> [pre-success] Success(0x0) ",
]

# what strace -f -o prints for the same calls (memory calls: flags by name, NULL; errno name
# and text)
STRACE = [
    "19446 brk(NULL) = 0x4035000",
    # calls other than the memory ones: numbers in hex, as valgrind printed them (its dirfd
    # is AT_FDCWD, -100, printed as an unsigned 32-bit number), strings quoted
    '19446 openat(0xffffff9c, "/usr/libexec/valgrind/vgpreload_core-amd64-linux.so", 0x80000) = 4',
    "19446 mmap(NULL, 0x2000, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x4835000",
    "19446 mmap(0x4838000, 0x1000, PROT_READ|PROT_EXEC, MAP_PRIVATE|MAP_FIXED|MAP_DENYWRITE,"
    " 4, 0x1000) = 0x4838000",
    '19446 access("/etc/ld.so.preload", 4) = -1 ENOENT (No such file or directory)',
    "19446 mprotect(0x4a14000, 0x4000, PROT_READ) = 0",
    "19446 munmap(0x4a2a000, 0x100000) = 0",
    "25542 clone(child_stack=NULL, flags=0x1200011, child_tidptr=0x4a27a10) = 25559",
    "19446 exit_group(0) = ?",
    "19446 +++ exited with 0 +++",
]


def events(lines: list[str]) -> list[TraceEvent]:
    return [TraceEvent(0, i + 1, text) for i, text in enumerate(lines)]


def test_valgrind_calls_become_strace_lines() -> None:
    assert list(strace_lines(events(VALGRIND))) == STRACE


def test_strace_reader_reads_them() -> None:
    lines = [line + "\n" for line in strace_lines(events(VALGRIND))]
    syscalls = [e for e in read_strace(lines) if isinstance(e, Syscall)]
    mmap = [e for e in syscalls if e.name == "mmap"]
    assert [e.args for e in mmap] == [(0, 8192, 3, 34, -1, 0), (0x4838000, 4096, 5, 2066, 4, 4096)]
    assert [e.ret for e in mmap] == [0x4835000, 0x4838000]
    access = next(e for e in syscalls if e.name == "access")
    assert (access.ret, access.errno) == (-1, "ENOENT")
    clone = next(e for e in syscalls if e.name == "clone")
    assert clone.args[1] == 0x1200011 and clone.ret == 25559


def test_parse_args_keeps_strings_whole() -> None:
    assert parse_args("4, 0x1(a, b (c)), 7") == ["4", "0x1(a, b (c))", "7"]
    assert parse_args("") == []


def test_events_of_the_recorded_fixture() -> None:
    fixture = Path(__file__).parent.parent / "fixtures" / "memtraces" / "true.excerpt.lackey.zst"
    lines = list(strace_lines(open_memtrace(fixture).events()))
    # the six SYSCALL lines of the excerpt: openat (two lines), read (two lines), newfstatat,
    # mmap (fixtures README)
    assert [line.split("(")[0] for line in lines] == [
        "25253 openat",
        "25253 read",
        "25253 newfstatat",
        "25253 mmap",
    ]
    assert lines[-1] == (
        "25253 mmap(NULL, 0x2000, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0)"
        " = 0x4835000"
    )
