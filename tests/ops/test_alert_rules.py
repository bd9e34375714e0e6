"""The Prometheus alert rules (ops/prometheus/alerts.yml) are valid and fire on the series they are for:
Prometheus's own `promtool` (Debian's `prometheus` package, installed by `make test`)."""

from __future__ import annotations

import shutil
import subprocess

from core.settings import ROOT

RULES = ROOT / "ops" / "prometheus"


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: `make tools` installs Debian's prometheus package"
    return path


def test_rules_are_valid_and_each_alert_has_a_runbook():
    out = subprocess.run(
        [promtool(), "check", "rules", str(RULES / "alerts.yml")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    import yaml

    rules = [r for g in yaml.safe_load((RULES / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    ops = (ROOT / "docs" / "operations.md").read_text().lower()
    for r in rules:
        assert r["annotations"]["runbook"] == f"docs/operations.md#{r['alert'].lower()}"
        assert f"### {r['alert'].lower()}" in ops, f"docs/operations.md has no runbook for {r['alert']}"


def test_promtool_unit_tests_pass_and_cover_every_alert():
    import yaml

    out = subprocess.run(
        [promtool(), "test", "rules", "alerts_test.yml"], cwd=RULES, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    alerts = {
        r["alert"] for g in yaml.safe_load((RULES / "alerts.yml").read_text())["groups"] for r in g["rules"]
    }
    tests = yaml.safe_load((RULES / "alerts_test.yml").read_text())["tests"]
    fired = {t["alertname"] for case in tests for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert fired == alerts  # every alert is shown firing at least once
