"""``vmsim estimate``: KSM and zswap savings from the real contents of a process's pages.

Hand-made pages with answers counted by hand from the rules of Linux 6.18: a page of zeros
is a bit in the swap zeromap and never reaches zswap, every other page is stored, compressed
(same-filled pages included) or, not compressing below a page, as is (a whole 4096-byte
object); the pool is the zsmalloc size classes of its objects (16 bytes apart, 32 at least)
summed and rounded up to pages. The zswap figures are diffed against the model's own swap
core and zswap pool (:mod:`vmsim.mm.swapfile`, :class:`vmsim.mm.zswap.Zswap`); a live child
process whose anonymous mapping is laid out page by page (``LAYOUT``), Linux deciding which
pages are present and which map the zero page; and the command end to end through ``main()``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import vmsim.cli.main as cli_main
from vmsim.analysis.estimate import (
    STAGE_PAGEMAP,
    STAGE_PAGES,
    EstimateResult,
    ProcessExitedError,
    estimate,
    parse_range,
    parse_smaps,
)
from vmsim.analysis.savings import estimate_pages
from vmsim.cli import estimate as cli_estimate
from vmsim.cli.errors import CliError, UsageError
from vmsim.mm.swapfile import SwapDevice, SwapSpace
from vmsim.mm.zswap import COMPRESSORS, STAT_NAMES, PoolMemory, Zswap

PAGE = 4096


def page(text: str) -> bytes:
    """A compressible page: ``text`` repeated."""
    raw = text.encode()
    return (raw * (PAGE // len(raw) + 1))[:PAGE]


A, B, C = page("contents A "), page("contents B, a little longer "), page("C is unique ")
ZERO = bytes(PAGE)


# ------------------------------------------------------------------ estimate_pages
def test_ksm_counts_on_known_pages() -> None:
    # 10 pages: A x4, B x2, C x1, zero x3
    pages = [A, ZERO, B, A, C, ZERO, A, B, A, ZERO]
    stats = estimate_pages(pages, ("lz4",))
    assert stats.pages == 10
    assert stats.zero_pages == 3
    k = stats.ksm
    assert k.nonzero_pages == 7
    assert k.distinct == 3  # A, B, C
    assert k.pages_sharing == 4  # A: 3 mappings merged away, B: 1
    assert k.pages_shared == 2  # one KSM page for A, one for B
    assert k.pages_unshared == 1  # C
    assert k.zero_pages == 3
    assert k.saved_bytes == 4 * PAGE
    assert k.zero_saved_bytes == 3 * PAGE  # use_zero_pages: every zero page freed
    assert k.zero_saved_bytes_merged == 2 * PAGE  # else they merge into one KSM page


def test_zero_pages_go_to_the_zeromap_and_same_filled_pages_are_compressed() -> None:
    word = bytes(range(1, 9))
    same = [ZERO, ZERO, b"\xab" * PAGE, word * (PAGE // 8), word * (PAGE // 8)]
    almost = bytearray(b"\xab" * PAGE)
    almost[-1] = 0xAC  # one byte off
    stats = estimate_pages([*same, bytes(almost)], COMPRESSORS)
    assert stats.pages == 6
    assert stats.zero_pages == 2
    assert stats.ksm.distinct == 3  # 0xab.., the word page, the almost page
    assert stats.ksm.pages_sharing == 1  # the two word pages
    for z in stats.zswap:
        assert z.pages == 6
        assert z.zero_pages == 2  # never offered to zswap: no pool space
        assert z.stored_pages == 4  # 0xab.., the word page twice, the almost page
        assert z.compressed_pages == 4
        assert z.stored_incompressible_pages == 0
        # four small objects, each in a size class of 32 to 64 bytes
        assert 4 * 32 <= z.stored_bytes <= 4 * 64, z.compressor
        assert z.stored_bytes % 16 == 0
        assert z.raw_compressed_bytes <= z.stored_bytes
        assert z.pool_pages == 1
        assert z.pool_total_size == PAGE
        assert z.saved_bytes == (2 + 4 - 1) * PAGE  # zeromap and stored pages, less the pool
        assert z.ratio is not None and z.ratio >= 4 * PAGE / (4 * 64)


def test_random_page_is_stored_as_is_by_every_compressor() -> None:
    stats = estimate_pages([os.urandom(PAGE), A], COMPRESSORS)
    assert [z.compressor for z in stats.zswap] == list(COMPRESSORS)
    for z in stats.zswap:
        assert z.stored_pages == 2, z.compressor
        assert z.stored_incompressible_pages == 1, z.compressor
        assert z.compressed_pages == 1
        assert z.zero_pages == 0
        # the random page a whole 4096-byte object, A's page one size class of 32 to 64
        assert PAGE + 32 <= z.stored_bytes <= PAGE + 64, z.compressor
        small = z.stored_bytes - PAGE
        assert small == max(32, -(-z.raw_compressed_bytes // 16) * 16)  # A's object only
        assert z.pool_pages == 2
        assert z.saved_bytes == 0  # two pages stored in two pool pages
        assert z.ratio is not None and 2 * PAGE / (PAGE + 64) <= z.ratio < 2
        assert "reject_compress_poor" not in z.as_dict()
    assert stats.ksm.pages_unshared == 2


def test_nothing_scanned() -> None:
    stats = estimate_pages([], COMPRESSORS)
    assert stats.pages == stats.ksm.distinct == stats.ksm.pages_sharing == 0
    assert all(z.ratio is None and z.pool_pages == 0 for z in stats.zswap)
    assert all(z.saved_bytes == 0 for z in stats.zswap)
    json.dumps(stats.as_dict())


def test_json_keys_name_the_6_18_behaviour() -> None:
    data = estimate_pages([ZERO, A, os.urandom(PAGE)], ("zstd",)).as_dict()
    assert "same_filled_pages" not in data
    assert data["zero_pages"] == 1
    (z,) = data["zswap"]
    assert "same_filled_pages" not in z and "reject_compress_poor" not in z
    assert (z["pages"], z["zero_pages"], z["stored_pages"]) == (3, 1, 2)
    assert (z["compressed_pages"], z["stored_incompressible_pages"]) == (1, 1)
    assert z["pool_pages"] == 2 and z["pool_total_size"] == 2 * PAGE
    assert z["saved_bytes"] == (1 + 2 - 2) * PAGE


def test_zswap_figures_match_the_models_pool() -> None:
    """The twin: the same pages swapped out one by one through the model's swap core (6.18:
    the zeromap first) into its zswap pool."""
    rng = random.Random(7)
    pages = [
        ZERO,
        os.urandom(PAGE),
        A,
        B,
        A,
        b"\x07" * PAGE,
        ZERO,
        os.urandom(PAGE),
        *(bytes(rng.choice(b"abcd") for _ in range(PAGE)) for _ in range(5)),
        *(page(f"page {i} of some text ") for i in range(20)),
    ]
    stats = estimate_pages(pages, COMPRESSORS)
    for z in stats.zswap:
        space = SwapSpace()
        space.devices.append(SwapDevice(0, len(pages) + 1))
        pool = Zswap(
            z.compressor,
            ram_pages=10**6,
            memory=PoolMemory(itertools.count().__next__, lambda _pfn: None),
            writeback=space.writeback,
            max_pool_percent=100,
        )
        space.zswap = pool
        for data in pages:
            key = space.alloc()
            assert key is not None
            space.write(key, data)
        assert z.zero_pages == space.swpout_zero == 2
        assert space.pswpout == 0  # nothing went to the device
        debugfs = pool.stats()
        assert set(debugfs) == set(STAT_NAMES)
        assert z.stored_pages == debugfs["stored_pages"] == len(pages) - 2
        assert z.stored_incompressible_pages == debugfs["stored_incompressible_pages"] == 2
        assert debugfs["reject_compress_poor"] == 0
        assert z.stored_bytes == pool.memory.bytes
        assert z.pool_pages == pool.memory.pages
        assert z.pool_total_size == debugfs["pool_total_size"]


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="4096 bytes"):
        estimate_pages([b"short"], COMPRESSORS)
    with pytest.raises(ValueError, match="unknown compressor 'lzo'"):
        estimate_pages([A], ("lzo",))


# ------------------------------------------------------------------ parsing
SMAPS = """\
55d0c3a00000-55d0c3a21000 rw-p 00000000 00:00 0                          [heap]
Size:                132 kB
Rss:                  12 kB
Anonymous:            12 kB
VmFlags: rd wr mr mw me ac
7f1c2a000000-7f1c2a200000 r--p 00001000 fe:01 1234                       /usr/lib/lib c.so (deleted)
Size:               2048 kB
Rss:                  40 kB
Anonymous:             8 kB
7f1c2b000000-7f1c2b001000 rw-s 00000000 00:01 99                         /dev/zero (deleted)
Rss:                   4 kB
7f1c2c000000-7f1c2c004000 rw-p 00000000 00:00 0
Rss:                  16 kB
7f1c2d000000-7f1c2d001000 rw-p 00000000 00:00 0                          [anon:arena]
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
"""


def test_parse_smaps_kinds_and_sizes() -> None:
    vmas = parse_smaps(SMAPS)
    assert [v.kind for v in vmas] == [
        "anon",
        "file",
        "shared",
        "anon",
        "anon",
        "anon",
        "special",
    ]
    assert vmas[1].name == "/usr/lib/lib c.so (deleted)"
    assert (vmas[1].rss_pages, vmas[1].anon_pages) == (10, 2)
    assert vmas[0].rss_pages == 3
    assert vmas[3].name is None and vmas[3].rss_pages == 4
    assert vmas[4].rss_pages == 0


def test_parse_range() -> None:
    assert parse_range("0x7f0000001000-7f0000003000") == (0x7F0000001000, 0x7F0000003000)
    for bad in ("12", "3000-1000", "1001-2000", "x-y"):
        with pytest.raises(ValueError):
            parse_range(bad)


# ------------------------------------------------------------------ a live process
live = pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0 or not os.access("/proc/self/pagemap", os.R_OK),
    reason="reads another process's memory: needs Linux, root and a readable pagemap",
)

# One page per letter, in the child's private anonymous mapping:
#   P x5, Q x3  copies of two compressible patterns
#   U x2        two different compressible pages
#   R x3        os.urandom(): incompressible (stored as is), all different
#   Z x3        written with zeros: private zero-filled pages (the swap zeromap)
#   S x2        0xab repeated: same-filled (compressed), and identical to each other
#   z x2        only read: the PTE maps the shared zero page
#   . x2        never touched: not present
LAYOUT = "PQP.ZRUPSQzPRZ.QSUPzRZ"
CHILD = textwrap.dedent(
    """
    import ctypes, mmap, os, sys
    layout = sys.argv[1]
    PAGE = 4096
    m = mmap.mmap(-1, len(layout) * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_NOHUGEPAGE)  # no THP or mTHP folio may fill the holes
    def fill(text):
        raw = text.encode()
        return (raw * (PAGE // len(raw) + 1))[:PAGE]
    content = {"P": fill("pattern P "), "Q": fill("pattern Q, another one "),
               "Z": bytes(PAGE), "S": b"\\xab" * PAGE}
    uniques = 0
    for i, c in enumerate(layout):
        off = i * PAGE
        if c == "U":
            uniques += 1
            m[off:off + PAGE] = fill(f"unique page {uniques} ")
        elif c == "R":
            m[off:off + PAGE] = os.urandom(PAGE)
        elif c == "z":
            m[off]  # a read fault maps the zero page
        elif c != ".":
            m[off:off + PAGE] = content[c]
    print(hex(ctypes.addressof(ctypes.c_char.from_buffer(m))), flush=True)
    sys.stdin.read()
    """
)


@pytest.fixture
def child() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A process holding the LAYOUT mapping: (process, address of the mapping)."""
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, LAYOUT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("0x"), f"child said {line!r}"
            yield proc, int(line, 16)
        finally:
            proc.kill()


def check_layout(r: EstimateResult) -> None:
    s = r.stats
    assert r.vmas == 1
    assert s.pages == 18  # P5 Q3 U2 R3 Z3 S2
    assert r.present_pages == 18
    assert not r.truncated and r.vanished_pages == 0 and r.swapped_pages == 0
    if r.zero_page_detection:
        assert r.zero_page_mapped == 2
        assert s.zero_pages == 3
    else:  # without /proc/kpageflags the z pages read as zero-filled pages
        assert r.zero_page_mapped == 0
        assert s.zero_pages == 5
    k = s.ksm
    assert k.nonzero_pages == 15
    assert k.distinct == 8  # P, Q, U1, U2, R1, R2, R3, S
    assert k.pages_sharing == 7  # P: 4, Q: 2, S: 1
    assert k.pages_shared == 3  # P, Q, S
    assert k.pages_unshared == 5  # U1, U2, R1, R2, R3
    zero = s.zero_pages
    for z in s.zswap:
        assert z.zero_pages == zero, z.compressor  # the swap zeromap
        assert z.stored_pages == 15  # every non-zero page
        assert z.stored_incompressible_pages == 3  # the R pages, stored as is
        assert z.compressed_pages == 12  # P5 Q3 U2 S2
        # three whole pages, and twelve small objects of a 32- to 64-byte size class
        assert 3 * PAGE + 12 * 32 <= z.stored_bytes <= 3 * PAGE + 12 * 64, z.compressor
        assert z.pool_pages == 4
        assert z.saved_bytes == (zero + 15 - 4) * PAGE


@live
@pytest.mark.kernel
def test_live_child_mapping(child: tuple[subprocess.Popen[str], int]) -> None:
    proc, addr = child
    calls: list[tuple[str, int, int]] = []
    r = estimate(
        proc.pid,
        COMPRESSORS,
        ranges=[(addr, addr + len(LAYOUT) * PAGE)],
        progress=lambda *a: calls.append(a),
    )
    with open(f"/proc/{proc.pid}/comm") as f:
        assert r.comm == f.read().rstrip("\n")
    check_layout(r)
    assert calls[-1] == (STAGE_PAGES, 18, 18)
    assert (STAGE_PAGEMAP, len(LAYOUT), len(LAYOUT)) in calls
    json.dumps(r.as_dict())


@live
@pytest.mark.kernel
def test_live_max_pages_and_whole_process(child: tuple[subprocess.Popen[str], int]) -> None:
    proc, addr = child
    region = [(addr, addr + len(LAYOUT) * PAGE)]
    r = estimate(proc.pid, ("lz4",), max_pages=4, ranges=region)
    assert r.truncated and r.present_pages == 18 and r.stats.pages == 4
    # first four present pages in address order: P Q P Z
    assert r.stats.zero_pages == 1 and r.stats.ksm.pages_sharing == 1
    # the whole process: the interpreter's memory on top of the mapping
    whole = estimate(proc.pid, ("lz4",))
    assert whole.stats.pages > 18 and whole.present_pages == whole.stats.pages
    assert whole.stats.zswap[0].stored_incompressible_pages >= 3
    assert whole.file_pages > 0  # the python binary and libraries are resident


@live
@pytest.mark.kernel
def test_live_process_exits_during_the_read(child: tuple[subprocess.Popen[str], int]) -> None:
    proc, _addr = child

    def kill(stage: str, done: int, total: int) -> None:
        proc.kill()
        proc.wait()  # reaped: its mm is gone, every later read of pagemap or mem is empty

    with pytest.raises(ProcessExitedError, match=f"PID {proc.pid} exited"):
        estimate(proc.pid, ("lz4",), progress=kill)


# ------------------------------------------------------------------ the command
def vmsim(argv: list[str]) -> int:
    """main(argv), with ``estimate`` registered if main.py does not register it yet."""
    build = cli_main.build_parser

    def build_parser() -> argparse.ArgumentParser:
        parser = build()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        if "estimate" not in sub.choices:
            cli_estimate.register(sub)
        return parser

    saved = cli_main.build_parser
    cli_main.build_parser = build_parser
    try:
        return cli_main.main(argv)
    finally:
        cli_main.build_parser = saved


def test_register_on_fresh_subparsers() -> None:
    parser = argparse.ArgumentParser(prog="vmsim")
    cli_estimate.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["estimate", "42", "--compressors", "lz4", "--max-pages", "9", "--range", "1000-3000"]
    )
    assert args.handler is cli_estimate.run
    assert (args.pid, args.compressors, args.max_pages, args.ranges) == (
        42,
        "lz4",
        9,
        ["1000-3000"],
    )
    assert not args.json and not args.no_color


def no_such_pid() -> int:
    with open("/proc/sys/kernel/pid_max") as f:
        return int(f.read())  # PIDs are below pid_max


@pytest.mark.skipif(not os.path.exists("/proc/sys/kernel/pid_max"), reason="needs Linux /proc")
def test_bad_pid_is_exit_1_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    pid = no_such_pid()
    assert vmsim(["estimate", str(pid), "--json"]) == cli_main.EXIT_FAILURE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == f"vmsim: no process with PID {pid}"


def run_args(**kw: Any) -> argparse.Namespace:
    base: dict[str, Any] = {
        "pid": 1,
        "compressors": "zstd",
        "max_pages": None,
        "ranges": None,
        "json": True,
        "no_color": True,
    }
    return argparse.Namespace(**{**base, **kw})


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"pid": 0}, "PID must be positive"),
        ({"max_pages": 0}, "--max-pages must be positive"),
        ({"compressors": "zstd,lzo"}, "unknown compressor 'lzo'"),
        ({"compressors": ","}, "at least one"),
        ({"ranges": ["2000-1000"]}, "--range: empty range"),
    ],
)
def test_usage_errors(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        cli_estimate.run(run_args(**kw), None)  # type: ignore[arg-type]


@pytest.mark.skipif(not os.path.exists("/proc/2/stat"), reason="needs Linux /proc")
def test_kernel_thread_has_no_memory(capsys: pytest.CaptureFixture[str]) -> None:
    with open("/proc/2/comm") as f:
        if f.read().strip() != "kthreadd":
            pytest.skip("PID 2 is not kthreadd here (a PID namespace?)")
    assert vmsim(["estimate", "2"]) == cli_main.EXIT_FAILURE
    assert "PID 2 has no user address space" in capsys.readouterr().err


@live
@pytest.mark.kernel
def test_cli_json(
    child: tuple[subprocess.Popen[str], int], capsys: pytest.CaptureFixture[str]
) -> None:
    proc, addr = child
    end = addr + len(LAYOUT) * PAGE
    code = vmsim(["estimate", str(proc.pid), "--json", "--range", f"{addr:#x}-{end:#x}"])
    captured = capsys.readouterr()
    assert code == cli_main.EXIT_OK, captured.err
    assert captured.err == ""  # no progress bar with --json
    data = json.loads(captured.out)
    for key in (
        "pid",
        "comm",
        "pages_scanned",
        "present_pages",
        "truncated",
        "zero_pages",
        "zero_page_mapped",
        "swapped_pages",
        "skipped",
        "ksm",
        "zswap",
    ):
        assert key in data, key
    assert data["pid"] == proc.pid
    assert data["pages_scanned"] == 18
    assert data["ksm"]["pages_sharing"] == 7
    assert data["ksm"]["distinct"] == 8
    assert [z["compressor"] for z in data["zswap"]] == list(COMPRESSORS)
    assert "same_filled_pages" not in data
    zero = 3 if data["zero_page_detection"] else 5  # Z, and z read as zeros without kpageflags
    assert data["zero_pages"] == zero
    for z in data["zswap"]:
        assert "reject_compress_poor" not in z and "same_filled_pages" not in z
        assert (z["zero_pages"], z["stored_pages"]) == (zero, 15)
        assert (z["compressed_pages"], z["stored_incompressible_pages"]) == (12, 3)
        assert z["pool_pages"] == 4 and z["pool_total_size"] == 4 * PAGE
    assert data["ranges"] == [{"start": f"{addr:#x}", "end": f"{end:#x}"}]


@live
@pytest.mark.kernel
def test_cli_tables(
    child: tuple[subprocess.Popen[str], int], capsys: pytest.CaptureFixture[str]
) -> None:
    proc, addr = child
    end = addr + len(LAYOUT) * PAGE
    argv = ["estimate", str(proc.pid), "--no-color", "--max-pages", "4"]
    assert vmsim([*argv, "--range", f"{addr:x}-{end:x}"]) == cli_main.EXIT_OK
    out = capsys.readouterr().out
    assert f"PID {proc.pid}" in out
    assert "truncated: --max-pages 4" in out
    for title in ("Pages", "KSM", "zswap", "pages_sharing", "zeromap", "stored as is", "zstd"):
        assert title in out
    assert "same-filled" not in out and "rejected" not in out


@live
@pytest.mark.kernel
def test_cli_process_exits_during_the_read(
    child: tuple[subprocess.Popen[str], int],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proc, _addr = child
    real: Callable[..., EstimateResult] = estimate

    def killing(pid: int, *args: Any) -> EstimateResult:
        def kill(stage: str, done: int, total: int) -> None:
            proc.kill()
            proc.wait()

        return real(pid, args[0], args[1], kill, *args[3:])

    monkeypatch.setattr(cli_estimate, "estimate", killing)
    assert vmsim(["estimate", str(proc.pid), "--json"]) == cli_main.EXIT_FAILURE
    captured = capsys.readouterr()
    assert captured.err.strip() == f"vmsim: PID {proc.pid} exited while its memory was being read"
    assert "Traceback" not in captured.err


@live
@pytest.mark.kernel
def test_permission_denied_for_an_unprivileged_user(
    child: tuple[subprocess.Popen[str], int],
) -> None:
    """Linux is the oracle: a process of another user cannot be read without root."""
    proc, _addr = child
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child drops to nobody and runs the command
        code = 3
        try:
            os.close(rfd)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                code = cli_estimate.run(run_args(pid=proc.pid), None)  # type: ignore[arg-type]
                message = "no error"
            except CliError as exc:
                message = str(exc)
                code = cli_main.exit_code(exc)
            os.write(wfd, message.encode())
        finally:
            os._exit(code)
    os.close(wfd)
    with open(rfd, "rb") as f:
        message = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == cli_main.EXIT_FAILURE, message
    assert message.startswith(f"permission denied reading /proc/{proc.pid}/smaps"), message
