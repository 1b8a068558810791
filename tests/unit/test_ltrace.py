"""The ltrace -S reader: hand-written lines and traces recorded with ltrace 0.7.3 on this machine.

Expected values are read off the line text by hand.
"""

from __future__ import annotations

from pathlib import Path

from vmsim.trace import Exit, Problem, Signal, Syscall, detect_format, read_ltrace, sniff_and_read

TRACES = Path(__file__).parent.parent / "fixtures" / "traces"


def calls(events: list[object]) -> list[Syscall]:
    return [e for e in events if isinstance(e, Syscall)]


def test_syscalls_with_raw_numbers():
    lines = [
        "SYS_mmap(0x7f2290bdb000, 0x3ae0, 3, 50) = 0x7f2290bdb000",
        "SYS_munmap(0x7f2290de4000, 137990) = 0",
        "SYS_brk(0) = 0x55eb2abba000",
        'SYS_access("/etc/ld.so.preload", 04) = -2',
    ]
    mmap, munmap, brk, access = calls(list(read_ltrace(lines)))
    # prot 3 = PROT_READ|PROT_WRITE, flags 50 = 0x32 = MAP_PRIVATE|MAP_FIXED|MAP_ANONYMOUS
    assert (mmap.name, mmap.args, mmap.ret) == (
        "mmap",
        (0x7F2290BDB000, 0x3AE0, 3, 50),
        0x7F2290BDB000,
    )
    assert (munmap.args, munmap.ret) == ((0x7F2290DE4000, 137990), 0)
    assert (brk.args, brk.ret) == ((0,), 0x55EB2ABBA000)
    # a raw -2 is -ENOENT; undecoded calls keep their text
    assert (access.ret, access.errno, access.args) == (-1, "ENOENT", ('"/etc/ld.so.preload", 04',))
    assert all(c.lineno == i for i, c in enumerate([mmap, munmap, brk, access], 1))


def test_errors_as_negative_or_wrapped_values():
    lines = [
        "SYS_mprotect(0x7f314c6e2000, 4096, 3) = -12",
        "SYS_mmap(0, 4096, 3, 34) = 0xfffffffffffffff4",
    ]
    mprotect, mmap = calls(list(read_ltrace(lines)))
    assert (mprotect.ret, mprotect.errno) == (-1, "ENOMEM")
    assert (mmap.ret, mmap.errno) == (-1, "ENOMEM")


def test_prefixes_times_and_durations():
    lines = [
        "[pid 22337] SYS_mmap(0, 0x3000, 3, 34)           = 0x7fc17defb000",
        "22267 16:15:20.424516 SYS_brk(0)                 = 0x5632679e8000 <0.000037>",
    ]
    mmap, brk = calls(list(read_ltrace(lines)))
    assert (mmap.pid, mmap.time, mmap.duration) == (22337, None, None)
    assert (brk.pid, brk.time, brk.duration) == (22267, 16 * 3600 + 15 * 60 + 20.424516, 0.000037)


def test_library_calls_are_skipped_and_unknown_numbers_named():
    lines = [
        "malloc(100 <unfinished ...>",
        "SYS_brk(0) = 0x55eb2abba000",
        "<... malloc resumed> ) = 0x55eb2abba2a0",
        "mprotect(0x7fc17defc000, 4096, 0, 0x7fc17de149b3 <unfinished ...>",
        "SYS_mprotect(0x7fc17defc000, 4096, 0) = 0",
        "<... mprotect resumed> ) = 0",
        "SYS_435(0x7fff31aeb020, 88, 0x7f26eb2e8ef0, 8) = 0x5aea",
        "SYS_999(1) = 0",
    ]
    brk, mprotect, clone3, unknown = calls(list(read_ltrace(lines)))
    assert (brk.lineno, mprotect.lineno, mprotect.args) == (2, 5, (0x7FC17DEFC000, 4096, 0))
    # 435 is clone3 on x86-64; ltrace shows the struct pointer, not the flags
    assert (clone3.name, clone3.args, clone3.ret) == (
        "clone3",
        (0x7FFF31AEB020, 88, 0x7F26EB2E8EF0, 8),
        23274,
    )
    assert unknown.name == "syscall_999"


def test_unfinished_resumed_and_no_return():
    lines = [
        "23279 SYS_madvise(0x7f26e8257000, 8368128, 4 <unfinished ...>",
        "23280 SYS_madvise(0x7f26e7a56000, 8368128, 4 <unfinished ...>",
        "23279 <... SYS_madvise resumed> ) = 0 <0.000033>",
        "23280 <... SYS_madvise resumed> ) = 0 <0.000034>",
        "23279 SYS_exit(0 <no return ...>",
        "23279 +++ exited (status 0) +++",
        "23278 SYS_set_robust_list(0x7f26e92589a0, 24, 0, 0x53053053 <no return ...>",
        "23278 <... SYS_set_robust_list resumed> ) = 0 <0.000032>",
    ]
    events = list(read_ltrace(lines))
    assert [(type(e).__name__, e.lineno) for e in events if not isinstance(e, Problem)] == [
        ("Syscall", 1),
        ("Syscall", 2),
        ("Syscall", 5),
        ("Exit", 6),
        ("Syscall", 7),
    ]
    first, second, exit_call, end, robust = events
    assert isinstance(first, Syscall) and (first.pid, first.args, first.ret) == (
        23279,
        (0x7F26E8257000, 8368128, 4),
        0,
    )
    assert isinstance(second, Syscall) and second.duration == 0.000034
    assert isinstance(exit_call, Syscall) and (exit_call.name, exit_call.ret) == ("exit", None)
    assert end == Exit(6, 23279, None, 0, None, lines[5])
    assert isinstance(robust, Syscall) and robust.ret == 0


def test_signals_exits_and_problems():
    lines = [
        "--- SIGSEGV (Segmentation fault) ---",
        "+++ killed by SIGSEGV +++",
        "SYS_mmap(0, 4096, 3",
        "<... SYS_munmap resumed> ) = 0",
    ]
    sig, end, cut, orphan = list(read_ltrace(lines))
    assert isinstance(sig, Signal) and sig.signame == "SIGSEGV"
    assert isinstance(end, Exit) and end.killed_by == "SIGSEGV"
    assert isinstance(cut, Problem) and cut.lineno == 3
    assert isinstance(orphan, Problem) and orphan.lineno == 4


def test_detect_format():
    assert detect_format(["SYS_brk(0) = 0x55eb2abba000"]) == "ltrace"
    assert detect_format(["[pid 5] SYS_brk(0) = 0x55eb2abba000"]) == "ltrace"
    assert (
        detect_format(["1 16:00:00.1 __libc_start_main(0x1, 1) = 0", "1 +++ exited (status 0) +++"])
        == "ltrace"
    )
    assert detect_format(["brk(NULL) = 0x55c7140c1000"]) == "strace"


def test_threads_fixture():
    events = list(sniff_and_read(TRACES / "threads.ltrace"))
    assert [e for e in events if isinstance(e, Problem)] == []
    clones = [c for c in calls(events) if c.name == "clone3"]
    assert len(clones) == 20
    assert clones[0].raw.startswith("23273 16:16:16.847785 SYS_435(0x7fff31aeb020, 88,")
    assert [c.ret for c in clones] == list(range(0x5AEA, 0x5AEA + 20))  # 23274...
    first = calls(events)[1]  # line 2
    assert (first.lineno, first.name, first.args, first.ret) == (
        2,
        "mmap",
        (0, 8192, 3, 34),
        0x7F26EB44B000,
    )
    stack = next(c for c in calls(events) if c.lineno == 33)
    assert (stack.name, stack.args, stack.ret) == ("mprotect", (0x7F26EAA5D000, 8388608, 3), 0)
    exits = [e for e in events if isinstance(e, Exit)]
    assert len(exits) == 21 and all(e.status == 0 for e in exits)


def test_tiny_fixture():
    events = list(sniff_and_read(TRACES / "tiny.ltrace"))
    assert [e for e in events if isinstance(e, Problem)] == []
    by_line = {c.lineno: c for c in calls(events)}
    assert (by_line[33].name, by_line[33].args, by_line[33].pid) == (
        "mprotect",
        (0x7F3C711DC000, 4096, 0),
        23296,
    )
    assert (by_line[36].name, by_line[36].args) == ("munmap", (0x7F3C711DB000, 12288))
    assert isinstance(events[-1], Exit) and events[-1].status == 0
