"""End to end: a real Prometheus server (Debian's ``prometheus``) on 127.0.0.1 scrapes
``vmsim exporter`` every second and evaluates contrib/prometheus/vmsim-rules.yml every second,
while a test process grows its map_count toward a lowered *model* limit (``--max-map-count``;
the sysctl is never changed). The 80% alert for that process goes from inactive through
pending to firing, read back through Prometheus's HTTP API, with a description that names the
process, the limit and its biggest VMA kind.

The rules are the shipped ones with their ``for:`` durations cut to 3 s (the expressions and
annotations are unchanged); their real durations are covered by promtool's unit tests.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from exporter_child import Child, wc_map_count

RULES = Path(__file__).resolve().parents[2] / "contrib" / "prometheus" / "vmsim-rules.yml"
PROMETHEUS = shutil.which("prometheus")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="prometheus not installed (Debian package 'prometheus'; .ci/run installs it)",
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except (OSError, urllib.error.URLError):
            value = None
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def child() -> Iterator[Child]:
    c = Child(pages=2048)
    yield c
    c.close()


def alert_states(base: str, name: str, pid: int) -> dict[str, Any]:
    """The alerts named ``name`` for ``pid`` from /api/v1/alerts, by state."""
    data = get_json(f"{base}/api/v1/alerts")["data"]["alerts"]
    return {
        a["state"]: a
        for a in data
        if a["labels"].get("alertname") == name and a["labels"].get("pid") == str(pid)
    }


def rule_state(base: str, name: str) -> str | None:
    for group in get_json(f"{base}/api/v1/rules?type=alert")["data"]["groups"]:
        for rule in group["rules"]:
            if rule["name"] == name and rule.get("lastEvaluation", "").startswith("20"):
                state: str = rule["state"]
                return state
    return None


def test_alert_goes_from_inactive_to_firing(child: Child, tmp_path: Path) -> None:
    start = wc_map_count(child.pid)
    assert start is not None
    limit = start + 600  # 80% is reached after ~250 holes (2 VMAs each)
    exporter = subprocess.Popen(
        [
            sys.executable, "-m", "vmsim", "exporter",
            "--listen", "127.0.0.1:0",
            "--interval", "0.5",
            "--window", "10",
            "--pid-filter", str(child.pid),
            "--max-map-count", str(limit),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    prometheus: subprocess.Popen[Any] | None = None
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        assert exporter.stdout is not None
        line = exporter.stdout.readline().strip()
        target = re.fullmatch(r"vmsim exporter: serving http://(127\.0\.0\.1:\d+)/metrics", line)
        assert target, (line, exporter.stderr.read() if exporter.stderr else "")
        rules = re.sub(r"(?m)^(\s+for:) \S+$", r"\1 3s", RULES.read_text())
        (tmp_path / "rules.yml").write_text(rules)
        (tmp_path / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "rule_files: [rules.yml]\n"
            "scrape_configs:\n  - job_name: vmsim\n"
            f"    static_configs: [{{targets: ['{target.group(1)}']}}]\n"
        )
        prometheus = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        query = urllib.parse.quote(f'vmsim_process_map_count{{pid="{child.pid}"}}')
        wait_for(
            "the first scrape of the test process",
            lambda: get_json(f"{base}/api/v1/query?query={query}")["data"]["result"],
            30,
        )
        # evaluated, below 80%: inactive
        assert (
            wait_for("an evaluation", lambda: rule_state(base, "VmsimMapCountHigh"), 15)
            == "inactive"
        )
        assert alert_states(base, "VmsimMapCountHigh", child.pid) == {}

        child.send("grow 280 100")  # 560 VMAs at 200 a second
        seen: list[str] = []

        def firing() -> dict[str, Any] | None:
            states = alert_states(base, "VmsimMapCountHigh", child.pid)
            seen.extend(s for s in states if s not in seen)
            return states.get("firing")

        alert = wait_for("VmsimMapCountHigh to fire", firing, 40)
        assert seen == ["pending", "firing"]
        assert rule_state(base, "VmsimMapCountHigh") == "firing"
        description = alert["annotations"]["description"]
        assert f"(PID {child.pid})" in description
        assert f"vm.max_map_count = {limit}." in description
        # the holes made an alternating rw-p/---p run: the biggest kind by far
        assert "Its biggest VMA kind is decommit_run (" in description
        # and it grew: the time-to-limit rule fired too (its fit spans the growth)
        assert wait_for(
            "VmsimMapCountLimitWithinAnHour",
            lambda: alert_states(base, "VmsimMapCountLimitWithinAnHour", child.pid),
            15,
        )
    finally:
        if prometheus is not None:
            stop(prometheus)
        stop(exporter)
        exporter.communicate()
    # nothing keeps listening on the port
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect(("127.0.0.1", port))
