"""VMA classification and the VMA budget, on snapshots whose answer is known by construction.

Each layout below is written by hand in /proc/PID/maps format, with the kind every line must
get written next to it; the shapes follow the field notes (§0, §4.5) and what glibc, ld.so and
HotSpot do (thread stack = PROT_NONE guard directly below rw-p; arena heap = rw-p + ---p filling
a 64 MiB aligned region; RELRO = r--p right below the data segment; bss = anonymous rw-p right
above it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vmsim.analysis import (
    Kind,
    Level,
    SnapshotInputError,
    analyze,
    classify,
    parse_text,
    read_snapshot,
    verdict,
)
from vmsim.analysis.classify import typical_stack
from vmsim.snapshot import SnapshotError, parse

DATA = Path(__file__).parent / "data"
HS_ERR = DATA / "hs_err_pid31337.log"
KiB = 1024
MiB = 1024 * KiB


def layout(text: str) -> tuple[str, list[Kind]]:
    """Split ``maps line  | kind`` rows into the maps text and the expected kinds."""
    lines, kinds = [], []
    for row in text.strip("\n").splitlines():
        line, kind = row.rsplit("|", 1)
        lines.append(line.rstrip())
        kinds.append(Kind(kind.strip()))
    return "\n".join(lines) + "\n", kinds


def kinds_of(text: str, exe: str | None = None) -> list[Kind]:
    return [v.kind for v in classify(parse(text), exe)]


# A C program with 3 pthreads that each called malloc (glibc 2.36, Linux 6.18), by hand.
GLIBC_THREADS = """
55e31b43e000-55e31b43f000 r--p 00000000 fe:00 27525354   /usr/local/bin/server     | program
55e31b43f000-55e31b440000 r-xp 00001000 fe:00 27525354   /usr/local/bin/server     | program
55e31b440000-55e31b441000 r--p 00002000 fe:00 27525354   /usr/local/bin/server     | program
55e31b441000-55e31b442000 r--p 00002000 fe:00 27525354   /usr/local/bin/server     | program
55e31b442000-55e31b443000 rw-p 00003000 fe:00 27525354   /usr/local/bin/server     | program
55e353568000-55e353589000 rw-p 00000000 00:00 0          [heap]                    | heap
7fa274000000-7fa274021000 rw-p 00000000 00:00 0                                    | malloc_arena
7fa274021000-7fa278000000 ---p 00000000 00:00 0                                    | malloc_arena
7fa27c000000-7fa27c021000 rw-p 00000000 00:00 0                                    | malloc_arena
7fa27c021000-7fa280000000 ---p 00000000 00:00 0                                    | malloc_arena
7fa2831ff000-7fa283200000 ---p 00000000 00:00 0                                    | thread_guard
7fa283200000-7fa283a00000 rw-p 00000000 00:00 0                                    | thread_stack
7fa284000000-7fa288000000 rw-p 00000000 00:00 0                                    | malloc_arena
7fa28ba68000-7fa28ba69000 ---p 00000000 00:00 0                                    | thread_guard
7fa28ba69000-7fa28c269000 rw-p 00000000 00:00 0                                    | thread_stack
7fa28c269000-7fa28c26a000 ---p 00000000 00:00 0                                    | thread_guard
7fa28c26a000-7fa28ca6a000 rw-p 00000000 00:00 0                                    | thread_stack
7fa28ca6a000-7fa28ca6d000 rw-p 00000000 00:00 0                                    | anon
7fa28ca6d000-7fa28ca93000 r--p 00000000 fe:00 339380     /usr/lib/x86_64-linux-gnu/libc.so.6 | library
7fa28ca93000-7fa28cbe9000 r-xp 00026000 fe:00 339380     /usr/lib/x86_64-linux-gnu/libc.so.6 | library
7fa28cbe9000-7fa28cc3c000 r--p 0017c000 fe:00 339380     /usr/lib/x86_64-linux-gnu/libc.so.6 | library
7fa28cc3c000-7fa28cc40000 r--p 001cf000 fe:00 339380     /usr/lib/x86_64-linux-gnu/libc.so.6 | library
7fa28cc40000-7fa28cc42000 rw-p 001d3000 fe:00 339380     /usr/lib/x86_64-linux-gnu/libc.so.6 | library
7fa28cc42000-7fa28cc4f000 rw-p 00000000 00:00 0                                    | library
7fa28cc58000-7fa28cc5a000 rw-p 00000000 00:00 0                                    | anon
7fa28cc5a000-7fa28cc5e000 r--p 00000000 00:00 0          [vvar]                    | special
7fa28cc5e000-7fa28cc60000 r--p 00000000 00:00 0          [vvar_vclock]             | special
7fa28cc60000-7fa28cc62000 r-xp 00000000 00:00 0          [vdso]                    | special
7fa28cc62000-7fa28cc63000 r--p 00000000 fe:00 338944     /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 | library
7fa28cc63000-7fa28cc89000 r-xp 00001000 fe:00 338944     /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 | library
7fa28cc89000-7fa28cc93000 r--p 00027000 fe:00 338944     /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 | library
7fa28cc93000-7fa28cc95000 r--p 00031000 fe:00 338944     /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 | library
7fa28cc95000-7fa28cc97000 rw-p 00033000 fe:00 338944     /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 | library
7ffe019ca000-7ffe019eb000 rw-p 00000000 00:00 0          [stack]                   | main_stack
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0  [vsyscall]                | special
"""


def test_glibc_threads_every_line() -> None:
    text, expected = layout(GLIBC_THREADS)
    assert kinds_of(text) == expected


def test_glibc_threads_units_and_reasons() -> None:
    text, _ = layout(GLIBC_THREADS)
    vmas = classify(parse(text))
    by_line = {v.start: v for v in vmas}
    # The guard and the stack above it are one thread; the two halves of a heap are one arena.
    assert by_line[0x7FA28BA68000].unit == by_line[0x7FA28BA69000].unit
    assert by_line[0x7FA274000000].unit == by_line[0x7FA274021000].unit
    assert by_line[0x7FA274000000].unit != by_line[0x7FA27C000000].unit
    assert "RELRO" in by_line[0x55E31B441000].reason
    assert "bss of libc.so.6" in by_line[0x7FA28CC42000].reason
    assert by_line[0x7FA28CC42000].owner == "/usr/lib/x86_64-linux-gnu/libc.so.6"
    assert "full 64 MiB" in by_line[0x7FA284000000].reason
    assert [v.counted for v in vmas].count(False) == 1  # [vsyscall] only
    assert not by_line[0xFFFFFFFFFF600000].counted


def test_glibc_threads_budget() -> None:
    text, _ = layout(GLIBC_THREADS)
    report = analyze(parse_text(text, "glibc.maps"), max_map_count=1000)
    assert report.lines == 35
    assert report.map_count == 34  # every line but [vsyscall]
    assert report.headroom == 1000 - 34
    assert report.thread_stacks == 3
    assert report.vmas_per_thread == 2
    assert report.more_threads == (1000 - 34) // 2
    assert report.arena_heaps == 3  # two pairs and one full heap
    assert report.more_arena_heaps == (1000 - 34) // 2
    counts = {k.kind: k.vmas for k in report.kinds}
    assert counts == {
        Kind.PROGRAM: 5,
        Kind.LIBRARY: 11,
        Kind.HEAP: 1,
        Kind.MAIN_STACK: 1,
        Kind.THREAD_STACK: 3,
        Kind.THREAD_GUARD: 3,
        Kind.ARENA: 5,
        Kind.SPECIAL: 3,  # [vsyscall] is listed but not counted
        Kind.ANON: 2,
    }
    files = {f.path: f.vmas for f in report.files}
    assert files["/usr/lib/x86_64-linux-gnu/libc.so.6"] == 6  # 5 segments + bss
    assert files["/usr/local/bin/server"] == 5
    assert report.program == "/usr/local/bin/server"
    assert report.verdict.level is Level.OK
    assert report.verdict.text == "OK: 966 VMAs left (3.4% of vm.max_map_count used)"


# jemalloc#1328 (pmap -x: 84K rw / 8K ----- pairs) and bdwgc#324 (4 KiB pieces): decommit runs,
# not thread stacks; a lone guard with nothing stack-like above it is just anonymous.
ALLOCATOR_RUNS = """
7f0000000000-7f0000015000 rw-p 00000000 00:00 0 | decommit_run
7f0000015000-7f0000017000 ---p 00000000 00:00 0 | decommit_run
7f0000017000-7f000002c000 rw-p 00000000 00:00 0 | decommit_run
7f000002c000-7f000002e000 ---p 00000000 00:00 0 | decommit_run
7f000002e000-7f0000043000 rw-p 00000000 00:00 0 | decommit_run
7f0000100000-7f0000101000 rw-p 00000000 00:00 0 | decommit_run
7f0000101000-7f0000102000 ---p 00000000 00:00 0 | decommit_run
7f0000102000-7f0000103000 rw-p 00000000 00:00 0 | decommit_run
7f0000103000-7f0000104000 ---p 00000000 00:00 0 | decommit_run
7f0000200000-7f0000201000 ---p 00000000 00:00 0 | anon
7f0000201000-7f0000203000 r--p 00000000 00:00 0 | anon
7f0000300000-7f0000301000 rw-p 00000000 00:00 0 | anon
7f0000301000-7f0000302000 ---p 00000000 00:00 0 | anon
7f0000400000-7f0040400000 ---p 00000000 00:00 0 | reservation
"""


def test_allocator_decommit_runs() -> None:
    text, expected = layout(ALLOCATOR_RUNS)
    vmas = classify(parse(text))
    assert [v.kind for v in vmas] == expected
    runs = {v.unit for v in vmas if v.kind is Kind.DECOMMIT}
    assert len(runs) == 2


def test_decommit_budget_counts_holes() -> None:
    text, _ = layout(ALLOCATOR_RUNS)
    report = analyze(parse_text(text, "runs.maps"), max_map_count=100)
    holes = next(p for p in report.projections if "hole" in p.what)
    assert holes.now == 4  # 2 + 2 PROT_NONE pieces
    assert holes.vmas_each == 2  # a hole in the middle of a piece splits it in three
    assert holes.more_fit == (100 - 14) // 2


# HotSpot: Java threads have a 16 KiB guard zone (total = -Xss), VM/GC threads glibc's 4 KiB
# guard; -Xss256k threads (corretto-11#308); the CodeHeap is rwx with PROT_NONE between.
JVM = """
7f5fa8c20000-7f5fa8e90000 rwxp 00000000 00:00 0 | jit
7f5fa8e90000-7f5fa91af000 ---p 00000000 00:00 0 | reservation
7f5fa91af000-7f5fa941f000 rwxp 00000000 00:00 0 | jit
7f5fc58f2000-7f5fc58f6000 ---p 00000000 00:00 0 | thread_guard
7f5fc58f6000-7f5fc59f2000 rw-p 00000000 00:00 0 | thread_stack
7f5fc59f2000-7f5fc59f6000 ---p 00000000 00:00 0 | thread_guard
7f5fc59f6000-7f5fc5a32000 rw-p 00000000 00:00 0 | thread_stack
7f5fc74fe000-7f5fc74ff000 ---p 00000000 00:00 0 | thread_guard
7f5fc74ff000-7f5fc7600000 rw-p 00000000 00:00 0 | thread_stack
7f5fc8000000-7f5fc8001000 r-xp 00000000 00:00 0 | jit
"""


def test_jvm_stacks_and_code_cache() -> None:
    text, expected = layout(JVM)
    assert kinds_of(text) == expected


@pytest.mark.parametrize(
    ("guard", "stack", "is_stack"),
    [
        (4 * KiB, 8 * MiB, True),  # glibc default: RLIMIT_STACK 8 MiB + one guard page
        (4 * KiB, 8 * MiB - 4 * KiB, True),  # guard inside the 8 MiB
        (16 * KiB, 1008 * KiB, True),  # HotSpot Java thread, -Xss1m
        (16 * KiB, 240 * KiB, True),  # -Xss256k
        (4 * KiB, 1028 * KiB, True),  # HotSpot VM thread: 1 MiB + glibc's guard page
        (4 * KiB, 124 * KiB, True),  # musl: 128 KiB
        (8 * KiB, 84 * KiB, False),  # jemalloc#1328 pieces: 92 KiB
        (4 * KiB, 4 * KiB, False),  # bdwgc pieces
        (4 * KiB, 40 * KiB, False),  # too small for a stack
        (2 * MiB, 8 * MiB, False),  # a reservation below, not a guard
        (4 * KiB, 3 * MiB + 100 * KiB, False),  # no whole number of 64 KiB units
    ],
)
def test_typical_stack(guard: int, stack: int, is_stack: bool) -> None:
    assert typical_stack(guard, stack) is is_stack


def test_map_stack_flag_vouches_for_odd_sizes() -> None:
    """With smaps, VM_NOHUGEPAGE (``nh``, set by MAP_STACK since 6.7) marks a stack of any
    size; without it the same shape is a small guard and anonymous memory."""
    maps = (
        "7f0000000000-7f0000001000 ---p 00000000 00:00 0\n"
        "7f0000001000-7f0000018000 rw-p 00000000 00:00 0\n"
    )
    smaps = (
        "7f0000000000-7f0000001000 ---p 00000000 00:00 0\nVmFlags: mr mw me nh\n"
        "7f0000001000-7f0000018000 rw-p 00000000 00:00 0\nVmFlags: rd wr mr mw me ac nh\n"
    )
    assert kinds_of(maps) == [Kind.ANON, Kind.ANON]
    assert kinds_of(smaps) == [Kind.THREAD_GUARD, Kind.THREAD_STACK]


def test_arena_needs_64_mib_alignment() -> None:
    # The same rw-p + ---p pair, 4 KiB off the 64 MiB grid: a reservation, not an arena.
    text, expected = layout("""
7f0004001000-7f0004022000 rw-p 00000000 00:00 0 | anon
7f0004022000-7f0008001000 ---p 00000000 00:00 0 | reservation
7f000c000000-7f000c022000 rw-p 00000000 00:00 0 | malloc_arena
7f000c022000-7f0010000000 ---p 00000000 00:00 0 | malloc_arena
""")
    assert kinds_of(text) == expected


FILES = """
00400000-00452000 r-xp 00000000 08:02 173521  /usr/bin/memcached                   | program
00651000-00652000 rw-p 00051000 08:02 173521  /usr/bin/memcached                   | program
00652000-00658000 rw-p 00000000 00:00 0                                             | program
7f1000000000-7f1040000000 rw-s 00000000 00:01 4096  /dev/zero (deleted)             | file
7f1040000000-7f1040100000 r-xp 00000000 00:01 2048  /memfd:doublemapper (deleted)   | jit
7f1040100000-7f1040200000 rw-p 00000000 00:01 2048  /memfd:doublemapper (deleted)   | file
7f1040200000-7f1040300000 r--s 00000000 08:02 99    /var/lib/db/shard-0001.sst      | file
7f1040300000-7f1040400000 rw-s 00000000 00:01 32768 /SYSV0000162e (deleted)         | file
7f1040400000-7f1040500000 r--p 00000000 08:02 100   /var/log/old.log (deleted)      | file
7f1040500000-7f1040600000 rw-s 00000000 00:06 5     /dev/nvidia0                    | file
7f1040600000-7f1040700000 rw-p 00000000 00:00 0     [anon:jemalloc]                 | anon
7f1040700000-7f1040701000 ---p 00000000 00:00 0                                     | thread_guard
7f1040701000-7f1040721000 rw-p 00000000 00:00 0     [stack:4242]                    | thread_stack
7f1040800000-7f1040821000 rw-p 00000000 00:00 0     [stack:4243]                    | thread_stack
7f1040900000-7f1040910000 r-xp 00000000 08:02 555   /opt/plugins/libfoo.so          | library
7f1040910000-7f1040911000 rw-s 00000000 08:02 556   /opt/app/data.bin               | file
"""


def test_file_mappings_and_names() -> None:
    text, expected = layout(FILES)
    vmas = classify(parse(text))
    assert [v.kind for v in vmas] == expected
    reasons = [v.reason for v in vmas]
    assert "/dev/zero" in reasons[3] and "MAP_SHARED|MAP_ANONYMOUS" in reasons[3]
    assert ".NET" in reasons[4]
    assert reasons[5].startswith("memfd doublemapper")
    assert "System V" in reasons[7]
    assert "deleted" in reasons[8]
    assert "device" in reasons[9]
    assert "Linux < 4.5" in reasons[12] and "no guard" in reasons[13]
    # memcached is not PIE: the program, then its bss, at 0x400000 (memcached#512).
    assert "bss of the program" in reasons[2]


def test_exe_overrides_the_guess() -> None:
    text = (
        "00400000-00401000 r-xp 00000000 08:02 1  /usr/bin/launcher\n"
        "7f0000000000-7f0000001000 r-xp 00000000 08:02 2  /opt/app/real-binary\n"
    )
    assert kinds_of(text) == [Kind.PROGRAM, Kind.LIBRARY]
    assert kinds_of(text, exe="/opt/app/real-binary") == [Kind.LIBRARY, Kind.PROGRAM]


@pytest.mark.parametrize(
    ("map_count", "limit", "level", "text"),
    [
        (100, 65530, Level.OK, "OK: 65,430 VMAs left (0.2% of vm.max_map_count used)"),
        (75, 100, Level.WARNING, "WARNING: 75% of vm.max_map_count used, 25 VMAs left"),
        (98, 100, Level.DANGER, "DANGER: 98% of vm.max_map_count used, 2 VMAs left"),
        (99, 100, Level.DANGER, "DANGER: 99% of vm.max_map_count used, 1 VMA left"),
        (65400, 65530, Level.DANGER, "DANGER: 99.8% of vm.max_map_count used, 130 VMAs left"),
        (89, 100, Level.WARNING, "WARNING: 89% of vm.max_map_count used, 11 VMAs left"),
        (65530, 65530, Level.AT_LIMIT, "AT LIMIT: 65,530 VMAs = vm.max_map_count"),
        (65531, 65530, Level.AT_LIMIT, "OVER LIMIT: 65,531 VMAs > vm.max_map_count 65,530"),
    ],
)
def test_verdict(map_count: int, limit: int, level: Level, text: str) -> None:
    v = verdict(map_count, limit)
    assert v.level is level
    assert v.text.startswith(text)


# --- JVM hs_err file ------------------------------------------------------------------------


def test_hs_err_fixture() -> None:
    """tests/unit/data/hs_err_pid31337.log: written by hand, JDK 17 layout; 13 threads listed
    (6 Java + VM Thread, 5 GC threads, WatcherThread), each with a stack + guard in the maps;
    a 75-line maps dump; the limit it prints (74) equals its map_count, which is why the JVM
    could not mprotect a guard (JDK-8318302)."""
    snap = read_snapshot(str(HS_ERR))
    assert snap.source_type == "hs_err"
    assert snap.max_map_count == 74
    assert snap.threads == 13
    assert len(snap.entries) == 75
    assert snap.entries[0].lineno == 63  # line numbers are the file's
    report = analyze(snap)
    assert report.max_map_count == 74
    assert report.max_map_count_source == "hs_err file"
    assert report.map_count == 74
    assert report.headroom == 0
    assert report.verdict.level is Level.AT_LIMIT
    assert report.more_threads == 0
    assert report.thread_stacks == 13
    assert report.arena_heaps == 2
    assert report.program == "/usr/lib/jvm/java-17-openjdk-amd64/bin/java"
    assert not report.notes  # 13 threads listed, 13 stacks found
    counts = {k.kind: k.vmas for k in report.kinds}
    assert counts == {
        Kind.PROGRAM: 5,
        Kind.LIBRARY: 22,  # libjvm 5 + bss, libc 5 + bss, libjli 5, ld.so 5
        Kind.HEAP: 1,
        Kind.MAIN_STACK: 1,
        Kind.THREAD_STACK: 13,
        Kind.THREAD_GUARD: 13,
        Kind.ARENA: 4,
        Kind.RESERVATION: 5,  # Java heap, 2 class-space pieces, 2 CodeHeap gaps
        Kind.JIT: 2,  # two rwx CodeHeaps
        Kind.FILE: 3,  # classes.jsa, modules, hsperfdata
        Kind.SPECIAL: 3,
        Kind.ANON: 2,  # committed Java heap and class space
    }


def test_hs_err_override_limit() -> None:
    report = analyze(read_snapshot(str(HS_ERR)), max_map_count=65530)
    assert report.max_map_count_source == "--max-map-count"
    assert report.headroom == 65530 - 74
    assert report.more_threads == (65530 - 74) // 2


def test_hs_err_value_on_the_same_line() -> None:
    text = (
        "Dynamic libraries:\n"
        "00400000-00401000 r-xp 00000000 08:01 5  /opt/jdk/bin/java\n"
        "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0  [vsyscall]\n"
        "\n"
        "/proc/sys/vm/max_map_count (maximum number of memory map areas a process may have): "
        "262144\n"
    )
    snap = parse_text(text, "hs_err_pid1.log")
    assert snap.max_map_count == 262144
    assert len(snap.entries) == 2


def test_hs_err_bad_maps_line_names_file_and_line() -> None:
    lines = HS_ERR.read_text().splitlines()
    assert lines[69].startswith("55d1c3a01000-55d1c3a02000 r-xp")  # line 70 of the file
    lines[69] = lines[69].replace("r-xp", "r-xz")
    with pytest.raises(SnapshotInputError) as info:
        parse_text("\n".join(lines), "hs_err_pid31337.log")
    assert info.value.lineno == 70
    assert str(info.value).startswith("hs_err_pid31337.log: line 70:")
    assert isinstance(info.value, SnapshotError)


def test_hs_err_without_maps() -> None:
    with pytest.raises(SnapshotInputError, match="no /proc/PID/maps lines"):
        parse_text("Dynamic libraries:\n\nVM Arguments:\n", "x.log")


def test_maps_file_error_names_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.maps"
    path.write_text("00400000-00401000 r-xp 00000000 08:01 5  /bin/x\nthis is not a maps line\n")
    with pytest.raises(SnapshotInputError) as info:
        read_snapshot(str(path))
    assert info.value.lineno == 2
    assert str(info.value).startswith(f"{path}: line 2:")
