"""contrib/prometheus/vmsim-rules.yml: promtool's syntax check and unit tests
(vmsim-rules.test.yml); every metric the rules and the Grafana dashboard name is one the
exporter serves."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vmsim.exporter import ExporterConfig, VmaCollector, render

CONTRIB = Path(__file__).resolve().parents[2] / "contrib" / "prometheus"
RULES = CONTRIB / "vmsim-rules.yml"
RULE_TESTS = CONTRIB / "vmsim-rules.test.yml"
DASHBOARD = CONTRIB.parent / "grafana" / "vmsim-dashboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian package 'prometheus'; .ci/run installs it)",
)


@needs_promtool
def test_rules_pass_promtool_check() -> None:
    res = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 4 rules found" in res.stdout


@needs_promtool
def test_rules_pass_promtool_unit_tests() -> None:
    res = subprocess.run(
        [str(PROMTOOL), "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        cwd=CONTRIB,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


@needs_promtool
def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    # the same tests expecting the wrong biggest kind must fail: the annotations are compared
    shutil.copy(RULES, tmp_path / RULES.name)
    wrong = RULE_TESTS.read_text().replace("malloc_arena (60000 VMAs)", "anon (60000 VMAs)")
    (tmp_path / RULE_TESTS.name).write_text(wrong)
    res = subprocess.run(
        [str(PROMTOOL), "test", "rules", RULE_TESTS.name],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert res.returncode != 0
    assert "FAILED" in res.stdout + res.stderr


def served_names(tmp_path: Path) -> set[str]:
    proc = tmp_path / "proc"
    (proc / "sys/vm").mkdir(parents=True)
    (proc / "sys/vm/max_map_count").write_text("65530\n")
    config = ExporterConfig(proc_root=proc, group_by="comm")
    text = render(VmaCollector(config)).decode()
    served = set(re.findall(r"^# TYPE (\S+)", text, re.M))
    return served | {n + "_total" for n in served}


def test_every_metric_the_rules_name_is_served(tmp_path: Path) -> None:
    named = set(re.findall(r"\bvmsim_[a-z_]+", RULES.read_text()))
    assert len(named) >= 6
    assert named <= served_names(tmp_path), named - served_names(tmp_path)


def test_every_metric_the_dashboard_names_is_served(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"]]
    named = {name for e in exprs for name in re.findall(r"\bvmsim_[a-z_]+", e)}
    assert len(named) >= 6
    assert named <= served_names(tmp_path), named - served_names(tmp_path)
