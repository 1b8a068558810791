"""The strace reader: hand-written lines of every shape, and traces recorded on this machine.

Expected values are worked out by hand from the line text and the kernel's constants
(include/uapi/asm-generic/mman-common.h, include/uapi/linux/sched.h), never read back from
the reader.
"""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmsim.trace import (
    Exit,
    Problem,
    Signal,
    Syscall,
    detect_format,
    open_trace,
    read_strace,
    read_strace_files,
    read_strace_stream,
    sniff_and_read,
    split_args,
)
from vmsim.trace import strace as strace_module
from vmsim.trace.events import mutable_twin

FIXTURES = Path(__file__).parent.parent / "fixtures"
TRACES = FIXTURES / "traces"
LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"


def one(line: str) -> Syscall:
    events = list(read_strace([line]))
    assert len(events) == 1, events
    event = events[0]
    assert isinstance(event, Syscall), event
    return event


def calls(events: list[object]) -> list[Syscall]:
    return [e for e in events if isinstance(e, Syscall)]


# --- arguments -------------------------------------------------------------------------------


def test_mmap_anonymous():
    c = one(
        "mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7fbba42cd000"
    )
    assert c.name == "mmap"
    assert c.args == (0, 8192, 0x3, 0x22, -1, 0)
    assert c.ret == 0x7FBBA42CD000
    assert (c.pid, c.time, c.errno, c.duration, c.stack, c.fd_paths) == (
        None,
        None,
        None,
        None,
        (),
        {},
    )


def test_mmap_file_with_y_path_and_hex_offset():
    c = one(
        f"mmap(0x7fbba42a8000, 102400, PROT_READ|PROT_EXEC, MAP_PRIVATE|MAP_FIXED|MAP_DENYWRITE, "
        f"3<{LIBC}>, 0x6000) = 0x7fbba42a8000"
    )
    # PROT_READ|PROT_EXEC = 1|4; MAP_PRIVATE|MAP_FIXED|MAP_DENYWRITE = 0x2|0x10|0x800
    assert c.args == (0x7FBBA42A8000, 102400, 5, 0x812, 3, 0x6000)
    assert c.fd_paths == {3: LIBC}


def test_yy_socket_path_with_arrow_and_comma_in_path():
    c = one(
        "mmap(NULL, 4096, PROT_READ, MAP_SHARED, 7<TCP:[127.0.0.1:22->10.0.0.1:5000]>, 0) = 0x1000"
    )
    assert c.args == (0, 4096, 1, 1, 7, 0)
    assert c.fd_paths == {7: "TCP:[127.0.0.1:22->10.0.0.1:5000]"}
    c = one("mmap(NULL, 4096, PROT_READ, MAP_SHARED, 4</tmp/a, b>, 0) = 0x2000")
    assert c.args == (0, 4096, 1, 1, 4, 0)
    assert c.fd_paths == {4: "/tmp/a, b"}


def test_map_huge_shift():
    c = one(
        "mmap(NULL, 2097152, PROT_READ|PROT_WRITE, "
        "MAP_PRIVATE|MAP_ANONYMOUS|MAP_HUGETLB|21<<MAP_HUGE_SHIFT, -1, 0) = 0x7f0000200000"
    )
    # 0x2|0x20|0x40000|(21 << 26 = 0x54000000)
    assert c.args[3] == 0x54040022


def test_mprotect_munmap_brk_madvise_mremap():
    assert one("mprotect(0x7fbba42a8000, 135168, PROT_NONE) = 0").args == (
        0x7FBBA42A8000,
        135168,
        0,
    )
    assert one("munmap(0x7fb1c7da9000, 36101) = 0").args == (0x7FB1C7DA9000, 36101)
    brk = one("brk(NULL) = 0x55c7140c1000")
    assert (brk.args, brk.ret) == ((0,), 0x55C7140C1000)
    assert one("brk(0x55c7140e2000) = 0x55c7140e2000").args == (0x55C7140E2000,)
    assert one("madvise(0x7f0000000000, 4096, MADV_DONTNEED) = 0").args[2] == 4
    assert one("madvise(0x7f0000000000, 4096, MADV_GUARD_INSTALL) = 0").args[2] == 102
    assert one("madvise(0x7f0000000000, 4096, 0x1a /* MADV_??? */) = -1 EINVAL (x)").args[2] == 26
    c = one(
        "mremap(0x7f0000000000, 4096, 8192, MREMAP_MAYMOVE|MREMAP_FIXED, 0x7f0000100000) "
        "= 0x7f0000100000"
    )
    assert c.args == (0x7F0000000000, 4096, 8192, 3, 0x7F0000100000)
    assert one("pkey_mprotect(0x7f0000000000, 4096, PROT_READ, 1) = 0").args[2:] == (1, 1)


def test_mlock_mseal_shm():
    assert one("mlockall(MCL_CURRENT|MCL_FUTURE) = 0").args == (3,)
    assert one("mlock2(0x7f0000000000, 8192, MLOCK_ONFAULT) = 0").args == (0x7F0000000000, 8192, 1)
    assert one("munlockall() = 0").args == ()
    assert one("mseal(0x7f0000000000, 4096, 0) = 0").args == (0x7F0000000000, 4096, 0)
    # SHM_RDONLY is 010000 (octal) in include/uapi/linux/shm.h
    assert one("shmat(32769, NULL, SHM_RDONLY) = 0x7f0000000000").args == (32769, 0, 0o10000)
    assert one("shmdt(0x7f0000000000) = 0").args == (0x7F0000000000,)


def test_clone_keyword_flags_include_exit_signal():
    c = one(
        "clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, "
        "child_tidptr=0x7f3c5b1f1a10) = 23456"
    )
    # 0x200000 | 0x1000000 | SIGCHLD (17)
    assert c.args == (0, 0x1200011, 0x7F3C5B1F1A10)
    assert c.ret == 23456


def test_clone3_struct_becomes_its_flags():
    c = one(
        "clone3({flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM|"
        "CLONE_SETTLS|CLONE_PARENT_SETTID|CLONE_CHILD_CLEARTID, child_tid=0x7f2755af3990, "
        "parent_tid=0x7f2755af3990, exit_signal=0, stack=0x7f27552f3000, stack_size=0x7fff80, "
        "tls=0x7f2755af36c0} => {parent_tid=[21948]}, 88) = 21948"
    )
    # VM|FS|FILES|SIGHAND = 0xf00; THREAD|SYSVSEM|SETTLS = 0xd0000; PARENT_SETTID|CHILD_CLEARTID
    # = 0x300000
    assert c.args == (0x3D0F00, 88)
    raw = one("clone3({flags=0x3d0f00, child_tid=0x7f, exit_signal=0} => {parent_tid=[7]}, 88) = 7")
    assert raw.args == (0x3D0F00, 88)


def test_execve_strings_and_truncation():
    c = one('execve("/bin/true", ["/bin/true"], 0x7ffe26c23c98 /* 39 vars */) = 0')
    assert c.args == ("/bin/true", '["/bin/true"]', 0x7FFE26C23C98)
    c = one(r'execve("/tmp/a\"b\\c\n", ["x", ...], NULL) = -1 ENOENT (No such file or directory)')
    assert c.args[0] == '/tmp/a"b\\c\n'
    assert c.args[1] == '["x", ...]'
    assert (c.ret, c.errno) == (-1, "ENOENT")
    cut = one('execve("/usr/lib/jvm/java-17-openjdk-amd64/bin/j"..., ["java"], NULL) = 0')
    assert cut.args[0] == '"/usr/lib/jvm/java-17-openjdk-amd64/bin/j"...'  # cut: kept raw


def test_other_calls_keep_their_argument_text():
    c = one('openat(AT_FDCWD, "/etc/ld.so.cache", O_RDONLY|O_CLOEXEC) = 3</etc/ld.so.cache>')
    assert c.args == ('AT_FDCWD, "/etc/ld.so.cache", O_RDONLY|O_CLOEXEC',)
    assert (c.ret, c.fd_paths) == (3, {3: "/etc/ld.so.cache"})
    c = one('write(1, "a) = b, c"..., 4096) = 4096')
    assert (c.args, c.ret) == (('1, "a) = b, c"..., 4096',), 4096)
    assert split_args(c.args[0]) == ["1", '"a) = b, c"...', "4096"]
    c = one(f"fstat(3<{LIBC}>, {{st_mode=S_IFREG|0755, st_size=1922136, ...}}) = 0")
    assert c.fd_paths == {3: LIBC}
    assert one("getpid() = 77").args == ()


def test_unknown_syscall_and_x_verbose():
    c = one("syscall_0x1c8(0x1, 0x2, 0, 0, 0, 0) = -1 ENOSYS (Function not implemented)")
    assert (c.name, c.ret, c.errno) == ("syscall_0x1c8", -1, "ENOSYS")
    c = one(
        "mmap(NULL, 12288, 0x3 /* PROT_READ|PROT_WRITE */, 0x22 /* MAP_PRIVATE|MAP_ANONYMOUS */, "
        "-1, 0) = 0x7f88c4a57000"
    )
    assert c.args == (0, 12288, 3, 0x22, -1, 0)
    assert one("mprotect(0x7f88c4a58000, 4096, 0 /* PROT_NONE */) = 0").args[2] == 0


def test_x_raw():
    c = one("21869 mmap(0x7f6478fd5000, 1400832, 0x5, 0x812, 3, 0x26000) = 0x7f6478fd5000")
    assert c.args == (0x7F6478FD5000, 1400832, 5, 0x812, 3, 0x26000)
    assert c.pid == 21869


def test_split_args_nesting():
    text = '{a=1, b=[2, 3]}, "x, \\"y", f(1, 2), 3</a, b>, 21<<MAP_HUGE_SHIFT, 0x1 /* a, b */'
    assert split_args(text) == [
        "{a=1, b=[2, 3]}",
        '"x, \\"y"',
        "f(1, 2)",
        "3</a, b>",
        "21<<MAP_HUGE_SHIFT",
        "0x1 /* a, b */",
    ]
    assert split_args("") == []


# --- results ---------------------------------------------------------------------------------


def test_errors_and_unreturned():
    c = one("munmap(0x7f9a9af4a000, 4096)      = -1 ENOMEM (Cannot allocate memory) <0.000007>")
    assert (c.ret, c.errno, c.duration) == (-1, "ENOMEM", 0.000007)
    c = one("exit_group(0)                           = ?")
    assert (c.ret, c.errno) == (None, None)
    c = one("wait4(-1, 0x7ffd, 0, NULL) = ? ERESTARTSYS (To be restarted if SA_RESTART is set)")
    assert (c.ret, c.errno) == (None, "ERESTARTSYS")
    c = one("poll([{fd=3, events=POLLIN}], 1, 100) = 0 (Timeout) <0.100123>")
    assert (c.ret, c.errno, c.duration) == (0, None, 0.100123)
    c = one("fcntl(3, F_GETFD) = 0x1 (flags FD_CLOEXEC)")
    assert c.ret == 1


# --- prefixes and timestamps -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "pid", "time"),
    [
        ("munmap(0x1000, 4096) = 0", None, None),
        ("[pid 19406] munmap(0x1000, 4096) = 0", 19406, None),
        ("[pid  1234] munmap(0x1000, 4096) = 0", 1234, None),
        ("12345 munmap(0x1000, 4096) = 0", 12345, None),
        ("123   munmap(0x1000, 4096) = 0", 123, None),
        ("10:20:30 munmap(0x1000, 4096) = 0", None, 37230.0),
        ("10:20:30.123456 munmap(0x1000, 4096) = 0", None, 37230.123456),
        ("12345 10:20:30.123456 munmap(0x1000, 4096) = 0", 12345, 37230.123456),
        ("[pid 42] 10:20:30.5 munmap(0x1000, 4096) = 0", 42, 37230.5),
        ("1700000000.123456 munmap(0x1000, 4096) = 0", None, 1700000000.123456),
        ("12345 1700000000.123456 munmap(0x1000, 4096) = 0", 12345, 1700000000.123456),
        ("     0.000123 munmap(0x1000, 4096) = 0", None, 0.000123),
        ("12345      0.000123 munmap(0x1000, 4096) = 0", 12345, 0.000123),
        ("[00007f1f74af0000] munmap(0x1000, 4096) = 0", None, None),
    ],
)
def test_prefixes(line: str, pid: int | None, time: float | None):
    c = one(line)
    assert (c.name, c.args, c.ret) == ("munmap", (0x1000, 4096), 0)
    assert c.pid == pid
    assert c.time == (pytest.approx(time) if time is not None else None)


def test_default_pid_for_unprefixed_lines():
    assert next(read_strace(["munmap(0x1000, 4096) = 0"], pid=99)).pid == 99  # type: ignore[union-attr]
    assert next(read_strace(["7 munmap(0x1000, 4096) = 0"], pid=99)).pid == 7  # type: ignore[union-attr]


def test_relative_timestamps_are_summed():
    lines = [
        "     0.000000 brk(NULL) = 0x1000",
        "     0.000100 brk(NULL) = 0x1000",
        "     0.000250 brk(NULL) = 0x1000",
        "     1.500000 brk(NULL) = 0x1000",
    ]
    times = [e.time for e in calls(list(read_strace(lines)))]
    assert times == pytest.approx([0.0, 0.0001, 0.00035, 1.50035])


def test_clock_crossing_midnight():
    lines = ["23:59:59.500000 brk(NULL) = 0x1000", "00:00:00.250000 brk(NULL) = 0x1000"]
    assert [e.time for e in calls(list(read_strace(lines)))] == pytest.approx([86399.5, 86400.25])


# --- multi-line shapes -----------------------------------------------------------------------


def test_unfinished_and_resumed_interleaved_between_pids():
    lines = [
        "[pid 19133] nanosleep({tv_sec=0, tv_nsec=10000000},  <unfinished ...>",
        "[pid 19134] madvise(0x7f0000000000, 8368128, MADV_DONTNEED <unfinished ...>",
        "[pid 19135] munmap(0x7f0000800000, 4096) = 0",
        "[pid 19134] <... madvise resumed>) = 0",
        "[pid 19133] <... nanosleep resumed> 0x7fcfe9e15bc0) = 0",
    ]
    events = list(read_strace(lines))
    assert [(e.lineno, e.pid, e.name) for e in calls(events)] == [
        (3, 19135, "munmap"),
        (2, 19134, "madvise"),
        (1, 19133, "nanosleep"),
    ]
    madvise = calls(events)[1]
    assert (madvise.args, madvise.ret) == ((0x7F0000000000, 8368128, 4), 0)
    assert madvise.raw == lines[1] + "\n" + lines[3]
    nanosleep = calls(events)[2]
    assert nanosleep.args == ("{tv_sec=0, tv_nsec=10000000},  0x7fcfe9e15bc0",)


def test_resumed_clone3_keeps_time_of_start_and_duration_of_end():
    lines = [
        "5 10:00:00.000100 clone3({flags=CLONE_VM|CLONE_THREAD, exit_signal=0} <unfinished ...>",
        "6 10:00:00.000200 exit(0)           = ?",
        "5 10:00:00.000300 <... clone3 resumed> => {parent_tid=[7]}, 88) = 7 <0.000200>",
    ]
    clone = next(c for c in calls(list(read_strace(lines))) if c.name == "clone3")
    assert clone.args == (0x100 | 0x10000, 88)
    assert (clone.lineno, clone.time, clone.duration, clone.ret) == (1, 36000.0001, 0.0002, 7)


def test_unfinished_never_resumed():
    lines = [
        "1 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0 <unfinished ...>",
        "2 futex(0x1, FUTEX_WAIT, 0, NULL <unfinished ...>",
        "1 +++ killed by SIGKILL +++",
    ]
    events = list(read_strace(lines))
    assert isinstance(events[0], Syscall)
    assert (events[0].lineno, events[0].name, events[0].ret) == (1, "mmap", None)
    assert events[0].args == (0, 4096, 1, 0x22, -1, 0)
    assert events[1] == Exit(3, 1, None, None, "SIGKILL", lines[2])
    assert isinstance(events[2], Syscall)
    assert (events[2].lineno, events[2].name, events[2].ret) == (2, "futex", None)


def test_resumed_without_start_is_a_problem():
    events = list(read_strace(["7 <... mmap resumed>) = 0x7f0000000000"]))
    assert len(events) == 1
    assert isinstance(events[0], Problem)
    assert events[0].lineno == 1
    assert "without a matching" in events[0].message


def test_stack_frames():
    lines = [
        "1 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000",
        " > /lib64/libc.so.6(mmap64+0x26) [0x7fa2f8b1d0a6]",
        " > ./a.out() [0x40063d]",
        "1 munmap(0x7f0000000000, 8192) = 0",
    ]
    first, second = calls(list(read_strace(lines)))
    assert first.stack == ("/lib64/libc.so.6(mmap64+0x26) [0x7fa2f8b1d0a6]", "./a.out() [0x40063d]")
    assert second.stack == ()


def test_exit_group_stack_comes_after_the_exit_line():
    lines = [
        "1 exit_group(0)     = ?",
        "2 munmap(0x1000, 4096) = 0",
        "1 +++ exited with 3 +++",
        " > /usr/lib/libc.so.6(_exit+0x29) [0xd4409]",
        "2 brk(NULL) = 0x1000",
    ]
    events = list(read_strace(lines))
    assert [type(e).__name__ for e in events] == ["Syscall", "Syscall", "Exit", "Syscall"]
    _, exit_group, end, _ = events
    assert isinstance(exit_group, Syscall) and exit_group.name == "exit_group"
    assert exit_group.stack == ("/usr/lib/libc.so.6(_exit+0x29) [0xd4409]",)
    assert end == Exit(3, 1, None, 3, None, lines[2])


def test_signals():
    s = next(
        read_strace(
            ["[pid 5] --- SIGSEGV {si_signo=SIGSEGV, si_code=SEGV_MAPERR, si_addr=0x10} ---"]
        )
    )
    assert isinstance(s, Signal)
    assert (s.pid, s.signame, s.si_code, s.si_addr) == (5, "SIGSEGV", "SEGV_MAPERR", 0x10)
    s = next(read_strace(["--- stopped by SIGSTOP ---"]))
    assert isinstance(s, Signal)
    assert (s.signame, s.si_code, s.si_addr) == ("SIGSTOP", None, None)
    s = next(read_strace(["--- SIGBUS {si_signo=SIGBUS, si_code=BUS_ADRERR, si_addr=NULL} ---"]))
    assert isinstance(s, Signal) and s.si_addr == 0


def test_exits():
    lines = [
        "+++ exited with 0 +++",
        "+++ killed by SIGKILL +++",
        "+++ killed by SIGSEGV (core dumped) +++",
        "+++ superseded by execve in pid 12 +++",
    ]
    assert [(e.status, e.killed_by) for e in read_strace(lines) if isinstance(e, Exit)] == [
        (0, None),
        (None, "SIGKILL"),
        (None, "SIGSEGV"),
        (None, None),
    ]


def test_attach_message_in_the_middle_of_a_line():
    lines = [
        "[pid 5] clone3({flags=CLONE_VM, exit_signal=0}strace: Process 6 attached",
        " => {parent_tid=[6]}, 88) = 6",
        "[pid 6] madvise(0x7f0000000000, 8192, MADV_DONTNEEDstrace: Process 7 attached",
        ") = 0",
        "strace: Process 7 detached",
    ]
    clone, madvise = calls(list(read_strace(lines)))
    assert (clone.lineno, clone.args, clone.ret) == (1, (0x100, 88), 6)
    assert (madvise.lineno, madvise.pid, madvise.args) == (3, 6, (0x7F0000000000, 8192, 4))


def test_detached():
    c = one("read(0,  <detached ...>")
    assert (c.name, c.ret) == ("read", None)


# --- bad input -------------------------------------------------------------------------------


def test_malformed_and_cut_lines_are_problems():
    lines = [
        "12345 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x1000\n",
        " > /usr/lib/libc.so.6(mmap64+0x26) [0x7fa2f8b1d0a6]\n",
        "hello world\n",
        "12345 --- SIGSEGV\n",
        "12345 mmap(NULL, 8192, PROT_READ|PROT_WR",
    ]
    events = list(read_strace(lines))
    problems = [e for e in events if isinstance(e, Problem)]
    assert [(p.lineno, p.message) for p in problems] == [
        (3, "not an strace line"),
        (4, "malformed signal line"),
        (5, "syscall line has no ' = ' result (cut short?)"),
    ]
    assert problems[2].line == "12345 mmap(NULL, 8192, PROT_READ|PROT_WR"
    assert calls(events)[0].stack == ("/usr/lib/libc.so.6(mmap64+0x26) [0x7fa2f8b1d0a6]",)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text(
            alphabet=st.sampled_from(list(' ()<>[]{}=,.:"+-?/\\*|x0123456789aNEMOSIGmunpk\n')),
            max_size=80,
        )
    )
)
def test_never_raises(lines: list[str]):
    for event in read_strace(lines):
        assert isinstance(event, Syscall | Signal | Exit | Problem)


def test_every_cut_of_a_real_line_is_handled():
    text = (FIXTURES / "traces" / "threads.strace").read_text().splitlines()
    for line in text[:400]:
        for cut in range(0, len(line), 7):
            list(read_strace([line[:cut]]))


def test_mutable_twin_builds_equal_events():
    built = mutable_twin(Syscall)(1, 2, 3.0, "mmap", (0, 4096), {}, 0, None, None, (), "raw")
    built.__class__ = Syscall
    assert built == Syscall(1, 2, 3.0, "mmap", (0, 4096), {}, 0, None, None, (), "raw")
    with pytest.raises(AttributeError):
        built.ret = 5


# --- -ff files -------------------------------------------------------------------------------


def test_ff_files_merge_by_time(tmp_path: Path):
    (tmp_path / "out.10").write_text(
        "10:00:00.000001 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x1000\n"
        "10:00:00.000005 munmap(0x1000, 4096) = 0\n"
    )
    (tmp_path / "out.11").write_text("10:00:00.000003 brk(NULL) = 0x5000\n+++ exited with 0 +++\n")
    events = list(read_strace_files([tmp_path / "out.10", tmp_path / "out.11"]))
    assert [(type(e).__name__, e.pid) for e in events] == [  # type: ignore[union-attr]
        ("Syscall", 10),
        ("Syscall", 11),
        ("Exit", 11),
        ("Syscall", 10),
    ]


def test_ff_files_without_time_follow_file_order(tmp_path: Path):
    (tmp_path / "out.2").write_text("brk(NULL) = 0x5000\n")
    (tmp_path / "out.1").write_text("munmap(0x1000, 4096) = 0\n")
    events = list(read_strace_files([tmp_path / "out.2", tmp_path / "out.1"]))
    assert [(e.name, e.pid) for e in calls(events)] == [("brk", 2), ("munmap", 1)]


# --- recorded fixtures -----------------------------------------------------------------------

STRACE_FIXTURES = [
    "python.strace.gz",
    "threads.strace",
    "arenas.strace.gz",
    "fill_map_count.strace.gz",
    "arenas.ttt.strace",
    "arenas.r.strace",
    "threads.raw.strace",
    "threads.stderr.strace",
    "tiny.verbose.strace",
    "threads-ff",
]


@pytest.mark.parametrize("name", STRACE_FIXTURES)
def test_fixture_parses_without_problems(name: str):
    path = TRACES / name
    if path.is_file():
        with open_trace(path) as f:
            assert detect_format([next(f) for _ in range(5)]) == "strace"
    events = list(sniff_and_read(path))
    assert [e for e in events if isinstance(e, Problem)] == []
    assert len(calls(events)) > 10


@pytest.mark.parametrize("block", [1, 64, 4096, 1 << 20])
def test_block_reader_reads_every_fixture_as_the_line_reader(
    block: int, monkeypatch: pytest.MonkeyPatch
):
    """read_strace_stream() (findall over blocks of whole lines, what vmsim replay reads
    with) gives the events read_strace() gives line by line, whatever the block size."""
    monkeypatch.setattr(strace_module, "_BLOCK_CHARS", block)
    paths = [p for p in sorted(TRACES.rglob("*strace*")) if p.is_file()]
    paths += sorted((TRACES / "threads-ff").iterdir())
    assert len(paths) > 20
    for path in paths:
        with open_trace(path) as f:
            by_line = list(read_strace(f))
        with open_trace(path) as f:
            head = [next(f) for _ in range(3)]
            by_block = list(read_strace_stream(f, head))
        assert by_block == by_line, path
        assert by_line, path


def test_block_reader_edge_lines():
    text = (
        "1 mprotect(0x7f0000001000, 4096, PROT_READ) = 0 <0.000008>\n"
        "\n"
        "mmap(NULL, 8192, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000\n"
        "2 munmap(0x7f0000000000, 4096)      = -1 EINVAL (Invalid argument)\n"
        "3 brk(NULL = 0x1000\n"  # cut: a Problem
        "4 munmap(0x7f0000000000) = 0\n"  # too few arguments: a Problem
        "5 getpid() = 5\n"
        " > /usr/lib/libc.so.6(getpid+0x1) [0x1]\n"
        "6 mprotect(0x7f0000001000, 4096, PROT_READ) = 0 \n"  # a trailing space
        "7 mprotect(0x7f0000001000, 4096, PROT_READ) = 0x10000000000000000\n"  # 17 digits
        "8 strace: Process 9 attached\n"
        "mprotect(0x7f0000001000, 4096, PROT_NONE) = 0\n"  # no pid: joined to nothing
        "10 exit_group(0) = ?\n"
        "10 +++ exited with 0 +++"  # no final newline
    )
    by_line = list(read_strace(io.StringIO(text)))
    assert list(read_strace_stream(io.StringIO(text))) == by_line
    assert list(read_strace_stream(io.StringIO(text.replace("\n", "\r\n"), newline="\n"))) == list(
        read_strace(io.StringIO(text.replace("\n", "\r\n"), newline="\n"))
    )
    problems = [e.lineno for e in by_line if isinstance(e, Problem)]
    assert problems == [5, 6, 10]
    getpid = next(e for e in calls(by_line) if e.name == "getpid")
    assert getpid.stack == ("/usr/lib/libc.so.6(getpid+0x1) [0x1]",)
    assert [e.lineno for e in calls(by_line)][:3] == [1, 3, 4]


def test_fixtures_are_small():
    for path in TRACES.rglob("*"):
        if path.is_file():
            assert path.stat().st_size < 200_000, path


def test_fill_map_count_fixture():
    events = list(sniff_and_read(TRACES / "fill_map_count.strace.gz"))
    with gzip.open(TRACES / "fill_map_count.strace.gz", "rt") as f:
        n_lines = sum(1 for _ in f)
    assert n_lines == 32773
    by_line = {e.lineno: e for e in calls(events)}
    # line 14: the reservation
    big = by_line[14]
    assert big.name == "mmap"
    assert big.args == (0, 573440000, 1, 0x4022, -1, 0)  # MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE
    assert big.ret == 0x7F9A8AF63000
    assert big.duration == 0.000009
    grows = [c for c in calls(events) if c.name == "mprotect" and c.args[2] == 3]
    assert sum(1 for c in grows if c.ret == 0) == 32753
    # line 32768: the mprotect that would exceed vm.max_map_count
    failed = by_line[32768]
    assert (failed.name, failed.args, failed.ret, failed.errno) == (
        "mprotect",
        (0x7F9A9AF46000, 4096, 3),
        -1,
        "ENOMEM",
    )
    # line 32769: munmap of one page in the middle of a VMA: the split needs one VMA more
    middle = by_line[32769]
    assert (middle.name, middle.args, middle.ret, middle.errno) == (
        "munmap",
        (0x7F9A9AF4A000, 4096),
        -1,
        "ENOMEM",
    )
    # line 32770: munmap of a whole one-page VMA succeeds
    whole = by_line[32770]
    assert (whole.name, whole.args, whole.ret, whole.errno) == (
        "munmap",
        (0x7F9A8AF64000, 4096),
        0,
        None,
    )
    assert all(c.pid == 23163 for c in calls(events))
    assert events[-1] == Exit(32773, 23163, None, 0, None, "23163 +++ exited with 0 +++")


def test_threads_fixture():
    events = list(sniff_and_read(TRACES / "threads.strace"))
    clones = [c for c in calls(events) if c.name == "clone3"]
    assert len(clones) == 20
    assert all(c.args == (0x3D0F00, 88) and c.pid == 23121 for c in clones)
    tids = [c.ret for c in clones]
    assert tids == list(range(23122, 23142))
    exits = [e for e in events if isinstance(e, Exit)]
    assert sorted(e.pid for e in exits) == [23121, *tids]  # type: ignore[comparison-overlap]
    stacks = [c for c in calls(events) if c.lineno == 123]
    # line 123: a thread stack, 8 MiB + a guard page, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_STACK
    assert stacks[0].args == (0, 8392704, 0, 0x20022, -1, 0)
    assert stacks[0].ret == 0x7FA1D8DB2000
    assert stacks[0].time == pytest.approx(16 * 3600 + 16 * 60 + 14.999507)
    assert stacks[0].stack[0].startswith("/usr/lib/x86_64-linux-gnu/libc.so.6(")
    first = next(c for c in calls(events) if c.name == "mmap" and c.fd_paths)
    assert first.fd_paths == {3: "/etc/ld.so.cache"}
    assert first.args[4] == 3
    # line 187: 'exit(0 <unfinished ...>', resumed at 189, its stack after '+++' at 191-192
    exit_call = next(c for c in calls(events) if c.lineno == 187)
    assert (exit_call.pid, exit_call.name, exit_call.args, exit_call.ret) == (
        23122,
        "exit",
        (0,),
        None,
    )
    assert len(exit_call.stack) == 2


def test_same_program_in_every_shape():
    """threads in -X raw and in stderr mode: the same 20 threads, the same stack mappings."""
    for name in ["threads.raw.strace", "threads.stderr.strace", "threads-ff"]:
        events = list(sniff_and_read(TRACES / name))
        clones = [c for c in calls(events) if c.name == "clone3"]
        assert len(clones) == 20, name
        assert all(c.args == (0x3D0F00, 88) for c in clones), name
        stacks = [c for c in calls(events) if c.name == "mmap" and c.args[1] == 8392704]
        assert len(stacks) == 20, name
        assert all(c.args[2:4] == (0, 0x20022) for c in stacks), name
        assert sum(isinstance(e, Exit) for e in events) == 21, name


def test_ff_fixture_pids_and_order():
    files = sorted((TRACES / "threads-ff").iterdir())
    assert len(files) == 21
    events = list(read_strace_files(files))
    pids = {int(p.name.split(".")[1]) for p in files}
    assert {e.pid for e in events if not isinstance(e, Problem)} == pids
    times = [e.time for e in events if not isinstance(e, Problem)]
    assert times == sorted(times)  # type: ignore[type-var]


def test_ttt_and_r_fixtures():
    ttt = calls(list(sniff_and_read(TRACES / "arenas.ttt.strace")))
    assert ttt[0].time == pytest.approx(1795709776.755996 - 0.0, abs=1e6)  # epoch seconds
    assert ttt[0].name == "execve" and ttt[0].duration == 0.000295
    reservations = [c for c in ttt if c.name == "mmap" and c.args[1] == 134217728]
    # one arena per thread: 128 MiB PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE
    assert len(reservations) == 8
    assert all(c.args[2:4] == (0, 0x4022) and c.ret is not None for c in reservations)
    rel = calls(list(sniff_and_read(TRACES / "arenas.r.strace")))
    # first lines: 0.000000, +0.000302, +0.000266
    assert [c.time for c in rel[:3]] == pytest.approx([0.0, 0.000302, 0.000568])
    # in line order, the running sum only grows (a resumed call keeps its start line and time)
    times = [c.time for c in sorted(rel, key=lambda c: c.lineno)]
    assert times == sorted(times)  # type: ignore[type-var]


def test_python_fixture():
    events = list(sniff_and_read(TRACES / "python.strace.gz"))
    vfork = next(c for c in calls(events) if c.name == "vfork")
    assert (vfork.lineno, vfork.pid, vfork.ret, vfork.duration) == (11408, 23100, 23115, 0.009869)
    execs = [c for c in calls(events) if c.name == "execve"]
    assert [c.args[0] for c in execs] == ["/root/.pyenv/versions/3.11.7/bin/python3", "/bin/true"]
    assert execs[1].pid == 23115
    sigchld = next(e for e in events if isinstance(e, Signal))
    assert (sigchld.lineno, sigchld.signame, sigchld.si_code) == (11601, "SIGCHLD", "CLD_EXITED")
    assert sigchld.stack[0] == "/usr/lib/x86_64-linux-gnu/libc.so.6(wait4+0x13) [0xd3bd3]"
    exits = [e for e in events if isinstance(e, Exit)]
    assert [(e.pid, e.status) for e in exits] == [(23115, 0), (23100, 0)]


# --- live ------------------------------------------------------------------------------------


@pytest.mark.kernel
def test_record_live_and_parse(tmp_path: Path):
    strace = shutil.which("strace")
    gcc = shutil.which("gcc")
    if strace is None or gcc is None:
        pytest.skip(f"needs strace and gcc (strace={strace}, gcc={gcc})")
    subprocess.run(
        [gcc, "-O1", "-o", tmp_path / "tiny", FIXTURES / "programs" / "tiny.c"], check=True
    )
    out = tmp_path / "tiny.strace"
    run = subprocess.run(
        [strace, "-f", "-tt", "-T", "-y", "-e", "trace=%memory,%process", "-o", out, "./tiny"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    if run.returncode != 0 and "ptrace" in run.stderr.lower():
        pytest.skip(f"strace cannot trace here: {run.stderr.strip()}")
    assert run.returncode == 0, run.stderr
    events = list(sniff_and_read(out))
    assert [e for e in events if isinstance(e, Problem)] == []
    # ld.so maps 3 pages the same way for TLS first: tiny's mapping is the last one
    mine = [c for c in calls(events) if c.args[:4] == (0, 12288, 3, 0x22)]
    base = mine[-1].ret
    assert base is not None and base % 4096 == 0
    names = [(c.name, c.args[:3], c.ret) for c in calls(events)]
    assert ("mprotect", (base + 4096, 4096, 0), 0) in names
    assert ("munmap", (base, 12288), 0) in names
    assert isinstance(events[-1], Exit) and events[-1].status == 0
