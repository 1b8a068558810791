"""``vmsim exporter``'s collector: map_count equal to ``wc -l /proc/PID/maps`` minus [vsyscall]
on live processes, VMAs by kind, the least-squares growth and the time to the limit, the refresh
interval, and faults (processes exiting mid-scrape, PID reuse, unreadable and garbled entries)
on live processes and on fake /proc trees (``--proc-root``)."""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from exporter_child import Child, wc_map_count
from prometheus_client.parser import text_string_to_metric_families

from vmsim.cli.main import build_parser, main
from vmsim.exporter import ExporterConfig, History, ProcessId, VmaCollector, render
from vmsim.exporter.growth import Sample, least_squares_slope, seconds_to_limit
from vmsim.exporter.procscan import (
    ScanErrors,
    open_process,
    parse_cgroup,
    parse_stat,
    read_at,
    read_process,
)

PROC = Path("/proc")
PR_SET_DUMPABLE = 4  # include/uapi/linux/prctl.h


# --- helpers ------------------------------------------------------------------------------


@pytest.fixture
def child() -> Iterator[Child]:
    c = Child()
    yield c
    c.close()


def metrics(collector: VmaCollector) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The served text, parsed back by prometheus_client's parser: name -> labels -> value."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(render(collector).decode()):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def by_pid(m: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str) -> dict[int, float]:
    return {int(dict(labels)["pid"]): v for labels, v in m.get(name, {}).items()}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def stat_line(pid: int, comm: str, starttime: int, threads: int = 1, state: str = "S") -> str:
    # fields 1..22 of /proc/PID/stat as fs/proc/array.c prints them (then a few more)
    fields = [str(pid), f"({comm})", state, "1", str(pid), str(pid), "0", "-1", "4194560"]
    fields += ["0"] * 10 + [str(threads), "0", str(starttime), "1000000", "100", "0"]
    return " ".join(fields) + "\n"


def maps_text(vmas: int, vsyscall: bool = True) -> str:
    """``vmas`` separate anonymous VMAs (a page each, a page apart), then [vsyscall]."""
    lines = [
        f"{0x10000000 + 2 * i * 4096:012x}-{0x10000000 + (2 * i + 1) * 4096:012x} rw-p 00000000 00:00 0"
        for i in range(vmas)
    ]
    if vsyscall:
        lines.append("ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0   [vsyscall]")
    return "\n".join(lines) + "\n"


class FakeProc:
    """A directory laid out like /proc, for the collector's ``proc_root``."""

    def __init__(self, root: Path, limit: int = 1000) -> None:
        self.root = root
        (root / "sys/vm").mkdir(parents=True, exist_ok=True)
        (root / "sys/vm/max_map_count").write_text(f"{limit}\n")
        (root / "self").mkdir(exist_ok=True)  # not a PID: ignored

    def add(
        self,
        pid: int,
        comm: str,
        vmas: int,
        starttime: int = 100,
        cgroup: str = "0::/\n",
        threads: int = 1,
    ) -> Path:
        d = self.root / str(pid)
        d.mkdir(exist_ok=True)
        (d / "stat").write_text(stat_line(pid, comm, starttime, threads))
        (d / "maps").write_text(maps_text(vmas))
        (d / "cgroup").write_text(cgroup)
        return d

    def set_vmas(self, pid: int, vmas: int) -> None:
        (self.root / str(pid) / "maps").write_text(maps_text(vmas))

    def remove(self, pid: int) -> None:
        d = self.root / str(pid)
        for f in d.iterdir():
            f.unlink()
        d.rmdir()


@pytest.fixture
def fake(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path / "proc")


def collector_for(fake: FakeProc, clock: Clock | None = None, **kw: object) -> VmaCollector:
    return VmaCollector(
        ExporterConfig(proc_root=fake.root, clock=clock or Clock(), **kw)  # type: ignore[arg-type]
    )


# --- live processes: the kernel is the judge -------------------------------------------------


def test_map_count_equals_wc_l_minus_vsyscall(child: Child) -> None:
    child.send("holes 25")
    child.send("threads 3")
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        # Popen returns once the child is forked, maybe before its execve has loaded sleep
        # (a one-VMA address space was seen under load): wait for the exec'd sleep, its
        # map_count the same twice in a row
        deadline = time.monotonic() + 10
        comm = Path(f"/proc/{sleeper.pid}/comm")
        last = -1
        while time.monotonic() < deadline:
            now = wc_map_count(sleeper.pid) if comm.read_text().strip() == "sleep" else -1
            if now > 1 and now == last:
                break
            last = now
            time.sleep(0.05)
        pids = [child.pid, sleeper.pid, os.getppid()]
        pattern = "|".join(map(str, pids))
        c = VmaCollector(ExporterConfig(pid_filter=re.compile(pattern), top=10))
        served = by_pid(metrics(c), "vmsim_process_map_count")
        expected = {pid: wc_map_count(pid) for pid in pids}
        assert served == expected
        assert expected[child.pid] > 50  # 25 holes: 50 more VMAs than a bare python
    finally:
        sleeper.kill()
        sleeper.wait()


def test_every_live_process_counted_like_wc(child: Child) -> None:
    # the whole machine (static processes: the children of this test and PID 1's tree can
    # change meanwhile, so only processes whose count is the same before and after compare;
    # one that changes and changes back in between (A-B-A) can still differ, so a pid that
    # differs is read again, and fails only if it is stable and differs in all three rounds)
    c = VmaCollector(ExporterConfig(top=10_000))
    suspects: set[int] | None = None
    stable_seen: set[int] = set()
    for _ in range(3):
        before = {p.pid: wc_map_count(p.pid) for p in c.view().exported if p.pid != os.getpid()}
        served = {p.pid: p.map_count for p in c.refresh().exported}
        after = {pid: wc_map_count(pid) for pid in before}
        stable = {pid for pid in before if before[pid] == after[pid] and pid in served}
        stable_seen |= stable
        differ = {pid for pid in stable if served[pid] != after[pid]}
        if suspects is None:
            assert child.pid in stable
            assert len(stable) >= 3
            suspects = differ
        else:
            suspects &= differ  # a pid that churned this round cannot be judged: dropped
        if not suspects:
            break
    assert child.pid in stable_seen
    assert suspects == set(), {pid: (served.get(pid), after.get(pid)) for pid in suspects}


def test_vmas_by_kind_name_thread_stacks_and_decommit_holes(child: Child) -> None:
    # glibc's pthread_create maps a stack with a PROT_NONE guard page below it: 4 threads are
    # 4 thread stacks and 4 guards; 20 holes in the read-write region make 41 alternating
    # pieces, plus its two PROT_NONE end pages: a run of 43 (classify.py's decommit rule).
    child.send("threads 4")
    child.send("holes 20")
    c = VmaCollector(ExporterConfig(pid_filter=re.compile(str(child.pid))))
    m = metrics(c)
    kinds = {
        dict(labels)["kind"]: v
        for labels, v in m["vmsim_process_vmas"].items()
        if dict(labels)["pid"] == str(child.pid)
    }
    assert kinds["thread_stack"] == 4
    assert kinds["thread_guard"] == 4
    assert kinds["decommit_run"] == 43
    assert sum(kinds.values()) == wc_map_count(child.pid)
    assert by_pid(m, "vmsim_process_threads") == {child.pid: 5}


def test_growth_of_a_live_process(child: Child) -> None:
    clock = Clock()
    c = VmaCollector(ExporterConfig(pid_filter=re.compile(str(child.pid)), clock=clock))
    for _ in range(4):
        c.refresh()
        child.send("holes 5")  # +10 VMAs per (fake) second
        clock.t += 1.0
    view = c.refresh()
    (p,) = view.exported
    assert p.growth_per_second == pytest.approx(10.0)
    assert view.max_map_count == int(Path("/proc/sys/vm/max_map_count").read_text())
    assert p.seconds_to_limit == pytest.approx((view.max_map_count - p.map_count) / 10.0)


def test_a_zombie_is_skipped_and_a_reaped_process_counted_as_vanished() -> None:
    proc = subprocess.Popen(["true"])
    # wait until it is a zombie (exited, not reaped): no address space, not an error
    for _ in range(1000):
        if parse_stat(Path(f"/proc/{proc.pid}/stat").read_bytes()).state == "Z":
            break
        os.sched_yield()
    errors = ScanErrors()
    assert read_process(PROC, proc.pid, errors) is None
    assert errors.counts == {"vanished": 0, "permission": 0, "parse": 0, "other": 0}
    proc.wait()
    assert read_process(PROC, proc.pid, errors) is None
    assert errors.counts["vanished"] == 1


def test_a_process_that_exits_mid_read_is_never_confused_with_its_pid_successor() -> None:
    # the /proc/PID descriptor stays bound to the process: once it has exited, reading
    # through the descriptor fails; it never reads whatever process takes the PID next
    proc = subprocess.Popen(["sleep", "60"])
    dirfd = open_process(PROC, proc.pid)
    try:
        assert b"sleep" in read_at(dirfd, "stat")
        proc.kill()
        proc.wait()
        with pytest.raises((ProcessLookupError, FileNotFoundError)):
            read_at(dirfd, "maps")
    finally:
        os.close(dirfd)


def _as_nobody(config: ExporterConfig) -> dict[str, int]:
    """One refresh with ``config`` in a forked child with the privileges of nobody (when
    root): the processes it saw and its error counts."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(r)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                # a process that changed its uid is not dumpable, and then its own /proc
                # files belong to root: make it readable by itself again
                ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
            c = VmaCollector(config)
            result = {"processes": c.view().processes, **c.errors.counts}
            os.write(w, json.dumps(result).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        text = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    out: dict[str, int] = json.loads(text)
    return out


def test_unreadable_live_processes_are_counted_and_the_rest_served() -> None:
    # without root, another user's /proc/PID/maps is refused (PTRACE_MODE_READ): PID 1 is
    # root's. The child's own process is still read.
    counts = _as_nobody(ExporterConfig())
    assert counts["permission"] >= 1
    assert counts["processes"] >= 1


# --- fake /proc trees: faults on demand ---------------------------------------------------


def test_fake_tree_counts_lines_minus_vsyscall(fake: FakeProc) -> None:
    fake.add(10, "a", 7)
    fake.add(11, "b", 3)
    (fake.root / "11" / "maps").write_text(maps_text(3, vsyscall=False))
    m = metrics(collector_for(fake))
    assert by_pid(m, "vmsim_process_map_count") == {10: 7, 11: 3}
    assert by_pid(m, "vmsim_process_map_count_ratio") == {10: 0.007, 11: 0.003}
    assert m["vmsim_max_map_count"] == {(): 1000}
    assert m["vmsim_processes"] == {(): 2}


def test_limit_from_the_option_not_the_sysctl(fake: FakeProc) -> None:
    fake.add(10, "a", 50)
    m = metrics(collector_for(fake, max_map_count=100))
    assert m["vmsim_max_map_count"] == {(): 100}
    assert by_pid(m, "vmsim_process_map_count_ratio") == {10: 0.5}


def test_refreshes_at_most_every_interval(fake: FakeProc) -> None:
    clock = Clock()
    fake.add(10, "a", 5)
    c = collector_for(fake, clock, interval=10.0)
    for _ in range(5):
        assert by_pid(metrics(c), "vmsim_process_map_count") == {10: 5}
    fake.set_vmas(10, 6)
    clock.t += 9.9
    assert by_pid(metrics(c), "vmsim_process_map_count") == {10: 5}  # served from the cache
    assert metrics(c)["vmsim_refreshes_total"] == {(): 1}
    clock.t += 0.1
    assert by_pid(metrics(c), "vmsim_process_map_count") == {10: 6}
    assert metrics(c)["vmsim_refreshes_total"] == {(): 2}


def test_growth_fit_and_seconds_to_limit(fake: FakeProc) -> None:
    clock = Clock()
    fake.add(10, "grows", 100)
    fake.add(11, "noisy", 100)
    fake.add(12, "static", 100)
    fake.add(13, "shrinks", 100)
    c = collector_for(fake, clock, interval=1.0)
    noisy = [100, 130, 110, 140]  # by hand: slope 50 / 5 = 10 per second
    for step in range(4):
        fake.set_vmas(10, 100 + 10 * step)
        fake.set_vmas(11, noisy[step])
        fake.set_vmas(13, 100 - step)
        m = metrics(c)
        if step < 2:  # fewer than 3 samples: no fit, no series
            assert "vmsim_process_map_count_growth_per_second" not in m
        clock.t += 1.0
    growth = by_pid(m, "vmsim_process_map_count_growth_per_second")
    assert growth == pytest.approx({10: 10.0, 11: 10.0, 12: 0.0, 13: -1.0})
    # (1000 - 130) / 10 and (1000 - 140) / 10; not growing: absent, not +Inf
    assert by_pid(m, "vmsim_process_seconds_to_limit") == pytest.approx({10: 87.0, 11: 86.0})


def test_least_squares_by_hand() -> None:
    s = [Sample(0.0, 10), Sample(2.0, 14), Sample(4.0, 15), Sample(6.0, 21)]
    # t mean 3, y mean 15; sxy = -3*-5 + -1*-1 + 1*0 + 3*6 = 34; sxx = 9 + 1 + 1 + 9 = 20
    assert least_squares_slope(s) == pytest.approx(1.7)
    assert least_squares_slope(s[:2]) is None
    assert least_squares_slope([Sample(1.0, 1), Sample(1.0, 2), Sample(1.0, 3)]) is None
    assert seconds_to_limit(900, 1000, 0.0) is None
    assert seconds_to_limit(900, 1000, -2.0) is None
    assert seconds_to_limit(900, 1000, 4.0) == 25.0
    assert seconds_to_limit(1200, 1000, 4.0) == 0.0


def test_history_keeps_only_the_window() -> None:
    h = History(window=10.0)
    who = ProcessId(5, 1)
    for t in range(30):
        h.add(who, float(t), t)
    assert [s.t for s in h.samples(who)] == [float(t) for t in range(19, 30)]
    h.keep_only([])
    assert len(h) == 0


def test_pid_reuse_starts_a_new_history(fake: FakeProc) -> None:
    clock = Clock()
    fake.add(300, "old", 100, starttime=1000)
    c = collector_for(fake, clock, interval=1.0)
    for step in range(4):
        clock.t += 1.0
        fake.set_vmas(300, 100 + 50 * step)
        c.view()
    assert by_pid(metrics(c), "vmsim_process_map_count_growth_per_second") == {300: 50.0}
    # PID 300 exits and a new process gets the PID: fewer VMAs, a later start time
    fake.add(300, "new", 20, starttime=5000)
    clock.t += 1.0
    m = metrics(c)
    assert m["vmsim_process_map_count"] == {(("comm", "new"), ("pid", "300")): 20}
    assert "vmsim_process_map_count_growth_per_second" not in m  # no -65/s from a stale fit
    assert len(c.history) == 1


def test_pid_reused_between_the_two_passes_is_dropped(fake: FakeProc) -> None:
    # the count pass read one process; when the kinds pass re-reads, the PID names another
    fake.add(300, "old", 100, starttime=1000)
    c = collector_for(fake)
    original = c._details

    def reuse_then_read(who: ProcessId) -> object:
        fake.add(300, "new", 20, starttime=5000)
        return original(who)

    c._details = reuse_then_read  # type: ignore[method-assign]
    m = metrics(c)
    assert "vmsim_process_map_count" not in m or m["vmsim_process_map_count"] == {}
    assert m["vmsim_scrape_errors_total"][(("reason", "vanished"),)] == 1


def test_processes_vanishing_mid_scrape_are_counted(fake: FakeProc) -> None:
    fake.add(10, "stays", 5)
    os.symlink("gone", fake.root / "11")  # listed, then gone when opened
    d = fake.add(12, "half", 5)
    (d / "maps").unlink()  # exited between stat and maps
    fake.add(13, "exiting", 0)  # its mm already gone
    c = collector_for(fake)
    m = metrics(c)
    assert by_pid(m, "vmsim_process_map_count") == {10: 5}
    errors = {dict(k)["reason"]: v for k, v in m["vmsim_scrape_errors_total"].items()}
    assert errors == {"vanished": 3, "permission": 0, "parse": 0, "other": 0}
    metrics(c)  # cached: nothing is read, nothing counted again
    fake.remove(10)
    c.config.clock.t += 100  # type: ignore[attr-defined]
    m = metrics(c)
    assert "vmsim_process_map_count" not in m or m["vmsim_process_map_count"] == {}
    assert m["vmsim_scrape_errors_total"][(("reason", "vanished"),)] == 6


def test_kernel_threads_are_not_processes(fake: FakeProc) -> None:
    d = fake.add(2, "kthreadd", 0)
    (d / "stat").write_text(stat_line(2, "kthreadd", 5).replace(" 4194560 ", " 2129984 "))
    fake.add(10, "a", 5)
    m = metrics(collector_for(fake))
    assert m["vmsim_processes"] == {(): 1}
    assert sum(m["vmsim_scrape_errors_total"].values()) == 0


def test_garbled_entries_are_parse_errors(fake: FakeProc) -> None:
    d = fake.add(10, "garbled stat", 5)
    (d / "stat").write_text("10 garbage\n")
    d = fake.add(11, "garbled maps", 3)
    (d / "maps").write_text(maps_text(3) + "this is not a maps line\n")
    m = metrics(collector_for(fake))
    errors = {dict(k)["reason"]: v for k, v in m["vmsim_scrape_errors_total"].items()}
    assert errors == {"vanished": 0, "permission": 0, "parse": 1 + 1, "other": 0}
    # the count stands (lines minus [vsyscall]); the kinds cannot be told
    assert by_pid(m, "vmsim_process_map_count") == {11: 5}
    assert "vmsim_process_vmas" not in m or m["vmsim_process_vmas"] == {}


def test_comm_with_spaces_and_parentheses() -> None:
    s = parse_stat(stat_line(7, "a) (b c", 42, threads=3).encode())
    assert (s.comm, s.threads, s.starttime, s.state) == ("a) (b c", 3, 42, "S")


def test_unreadable_fake_entries_are_permission_errors() -> None:
    root = Path(tempfile.mkdtemp(prefix="vmsim-fakeproc-"))
    try:
        root.chmod(0o755)
        fake = FakeProc(root / "proc")
        for d in (root / "proc", root / "proc/sys", root / "proc/sys/vm"):
            d.chmod(0o755)
        for f in (root / "proc/sys/vm/max_map_count",):
            f.chmod(0o644)
        for pid in (10, 11):
            d = fake.add(pid, f"p{pid}", 4)
            d.chmod(0o755)
            for f in d.iterdir():
                f.chmod(0o644)
        (root / "proc/11/maps").chmod(0o000)
        counts = _as_nobody(ExporterConfig(proc_root=root / "proc"))
        assert counts == {"vanished": 0, "permission": 1, "parse": 0, "other": 0, "processes": 1}
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=True)


def test_top_bounds_the_series_and_adds_the_soonest_to_the_limit(fake: FakeProc) -> None:
    clock = Clock()
    for pid in range(100, 150):
        fake.add(pid, f"p{pid}", 10 + pid)  # 110 .. 159 VMAs
    c = collector_for(fake, clock, top=5, interval=1.0)
    for step in range(3):
        clock.t += 1.0
        fake.set_vmas(120, 130 + 5 * step)  # small but growing: 5 VMAs a second
        view = c.view()
    exported = [p.pid for p in view.exported]
    assert exported == [149, 148, 147, 146, 145, 120]
    assert by_pid(metrics(c), "vmsim_process_seconds_to_limit") == {120: (1000 - 140) / 5}
    assert view.processes == 50


def test_group_by_comm_and_cgroup(fake: FakeProc) -> None:
    fake.add(10, "java", 300, cgroup="0::/system.slice/elastic.service\n")
    fake.add(11, "java", 200, cgroup="0::/system.slice/kafka.service\n")
    fake.add(12, "bash", 20, cgroup="0::/user.slice\n")
    m = metrics(collector_for(fake, group_by="comm"))
    assert m["vmsim_group_map_count_max"] == {
        (("group", "java"), ("group_by", "comm")): 300,
        (("group", "bash"), ("group_by", "comm")): 20,
    }
    assert m["vmsim_group_map_count_sum"][(("group", "java"), ("group_by", "comm"))] == 500
    assert m["vmsim_group_processes"][(("group", "java"), ("group_by", "comm"))] == 2
    assert m["vmsim_group_map_count_ratio_max"][(("group", "java"), ("group_by", "comm"))] == 0.3
    m = metrics(collector_for(fake, group_by="cgroup"))
    assert m["vmsim_group_map_count_max"] == {
        (("group", "/system.slice/elastic.service"), ("group_by", "cgroup")): 300,
        (("group", "/system.slice/kafka.service"), ("group_by", "cgroup")): 200,
        (("group", "/user.slice"), ("group_by", "cgroup")): 20,
    }
    assert "vmsim_group_map_count_max" not in metrics(collector_for(fake))


def test_cgroup_v1_and_v2_lines() -> None:
    assert parse_cgroup(b"0::/a/b\n") == "/a/b"
    assert parse_cgroup(b"9:name=systemd:/user.slice\n4:memory:/x\n0::/\n") == "/"
    assert parse_cgroup(b"9:name=systemd:/user.slice\n4:memory:/x\n") == "/user.slice"
    assert parse_cgroup(b"4:memory:/x\n") == "/x"
    assert parse_cgroup(b"") == "/"


def test_pid_filter_matches_pid_or_comm_in_full(fake: FakeProc) -> None:
    fake.add(10, "java", 5)
    fake.add(100, "javac", 6)
    fake.add(11, "bash", 7)
    (fake.add(12, "other", 3) / "maps").unlink()  # not wanted: its maps are never opened
    m = metrics(collector_for(fake, pid_filter=re.compile("java|11")))
    assert by_pid(m, "vmsim_process_map_count") == {10: 5, 11: 7}
    assert sum(m["vmsim_scrape_errors_total"].values()) == 0


def test_reads_nothing_but_stat_maps_cgroup_and_the_limit() -> None:
    # an audit hook sees every open(): the collector, over the live /proc, opens only these
    script = (
        "import sys\n"
        "opened = set()\n"
        "def hook(event, args):\n"
        "    if event == 'open' and isinstance(args[0], str):\n"
        "        opened.add(args[0])\n"
        "from vmsim.exporter import ExporterConfig, VmaCollector\n"
        "c = VmaCollector(ExporterConfig(group_by='cgroup', top=5))\n"
        "sys.addaudithook(hook)\n"
        "c.refresh()\n"
        "print('\\n'.join(sorted(opened)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    names = {os.path.basename(p) for p in out}
    assert {"stat", "maps", "cgroup", "max_map_count"} <= names
    dirs = {p for p in out if p.startswith("/proc/") and p.removeprefix("/proc/").isdigit()}
    assert names - {os.path.basename(d) for d in dirs} == {
        "stat",
        "maps",
        "cgroup",
        "max_map_count",
    }


def test_sigterm_free_listen_and_scrape(tmp_path: Path) -> None:
    # the CLI serves on 127.0.0.1 (port 0: any free one), answers scrapes, stops on SIGTERM
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmsim", "exporter", "--listen", "127.0.0.1:0", "--interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("vmsim exporter: serving http://127.0.0.1:")
        url = line.split()[-1]
        for _ in range(2):
            with urllib.request.urlopen(url, timeout=30) as resp:
                text = resp.read().decode()
            names = {f.name for f in text_string_to_metric_families(text)}
            assert {
                "vmsim_max_map_count",
                "vmsim_process_map_count",
                "vmsim_process_map_count_ratio",
                "vmsim_process_vmas",
                "vmsim_process_map_count_growth_per_second",
                "vmsim_process_seconds_to_limit",
                "vmsim_scrape_errors",
            } <= names
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.communicate()


def test_a_maps_file_longer_than_a_read_buffer() -> None:
    # 64 KiB reads: 3,000 holes make ~6,000 lines (~300 KiB) of maps
    big = Child(pages=8192)
    try:
        big.send("holes 3000")
        c = VmaCollector(ExporterConfig(pid_filter=re.compile(str(big.pid))))
        served = by_pid(metrics(c), "vmsim_process_map_count")
        assert served == {big.pid: wc_map_count(big.pid)}
        assert served[big.pid] > 6000
    finally:
        big.close()


@pytest.mark.parametrize("split", [1, 6, 12, 13])
def test_vsyscall_line_split_across_reads(fake: FakeProc, split: int) -> None:
    # the [vsyscall] line's last ``split`` bytes fall in the second 64 KiB read
    d = fake.add(10, "a", 1)
    vsyscall = "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0   [vsyscall]\n"
    head = "00400000-00401000 r--p 00000000 08:01 42   /"
    size = 65536 - len(vsyscall) + split
    text = head + "x" * (size - len(head) - 1) + "\n" + vsyscall
    assert len(text) == 65536 + split
    (d / "maps").write_text(text)
    assert by_pid(metrics(collector_for(fake)), "vmsim_process_map_count") == {10: 1}


# --- the command line ---------------------------------------------------------------------


def vmsim_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vmsim", "exporter", *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_binds_to_localhost_by_default() -> None:
    args = build_parser().parse_args(["exporter"])
    assert args.listen == ("127.0.0.1", 9747)
    assert build_parser().parse_args(["exporter", "--listen", "[::1]:80"]).listen == ("::1", 80)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--listen", "9747"], "--listen"),
        (["--listen", ":9747"], "--listen"),
        (["--listen", "127.0.0.1:99999"], "0..65535"),
        (["--listen", "127.0.0.1:http"], "0..65535"),
        (["--pid-filter", "(unclosed"], "not a regular expression"),
        (["--top", "0"], "--top"),
        (["--interval", "0"], "--interval"),
        (["--window", "nan"], "--window"),
        (["--group-by", "user"], "--group-by"),
        (["--max-map-count", "0"], "1..2147483647"),
    ],
)
def test_bad_options_are_usage_errors(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["exporter", *argv, "--once"]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_bad_proc_root_and_busy_port_are_one_line_errors(tmp_path: Path) -> None:
    res = vmsim_cli("--proc-root", str(tmp_path / "nope"), "--once")
    assert res.returncode == 1
    assert res.stderr.strip() == f"vmsim: --proc-root {tmp_path / 'nope'}: not a directory"
    (tmp_path / "empty").mkdir()
    res = vmsim_cli("--proc-root", str(tmp_path / "empty"), "--once")
    assert res.returncode == 1
    assert "pass --max-map-count N" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = vmsim_cli("--listen", f"127.0.0.1:{port}")
    assert res.returncode == 1
    assert res.stderr.strip() == f"vmsim: --listen 127.0.0.1:{port}: Address already in use"


def test_once_prints_the_metrics_of_a_fake_tree(fake: FakeProc) -> None:
    fake.add(10, "a", 7)
    res = vmsim_cli("--proc-root", str(fake.root), "--once", "--max-map-count", "70")
    assert res.returncode == 0, res.stderr
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(res.stdout)
        for s in f.samples
    }
    assert samples[("vmsim_process_map_count", (("comm", "a"), ("pid", "10")))] == 7
    assert samples[("vmsim_process_map_count_ratio", (("comm", "a"), ("pid", "10")))] == 0.1
    assert samples[("vmsim_max_map_count", ())] == 70
