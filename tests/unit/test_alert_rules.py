"""The alert rules pass ``promtool check rules``, and their unit tests (``ops/prometheus/tests``) pass
``promtool test rules`` and cover every alert firing and not firing.

promtool comes from Debian's ``prometheus`` package; ``make py-test`` installs it when missing (see the
Makefile's ``promtool`` target). Without it these tests fail rather than skip: they are the only check that
the rules fire on the situations they are written for.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yaml"
RULE_TESTS = ROOT / "ops" / "prometheus" / "tests"
# The name the test files list under `rule_files` (relative to themselves).
RULES_FILE_NAME = "schedsvc-rules.yaml"
# Prose annotations: checked by test_ops_manifests.py (runbook anchors) and by `promtool check rules`
# (template syntax); the unit tests compare only `summary`, which renders the alert's value.
PROSE_ANNOTATIONS = ("description", "runbook")


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install the Debian package 'prometheus' (make py-test does it as root)")
    return promtool


def _rules(*, prose: bool) -> dict[str, Any]:
    """The PrometheusRule's `spec`: a plain Prometheus rule file."""
    spec: dict[str, Any] = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["spec"]
    if not prose:
        for group in spec["groups"]:
            for rule in group["rules"]:
                for key in PROSE_ANNOTATIONS:
                    rule["annotations"].pop(key, None)
    return spec


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=120, check=False)


def _test_files() -> list[Path]:
    files = sorted(RULE_TESTS.glob("*.yaml"))
    assert files, f"no promtool test files in {RULE_TESTS}"
    return files


def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    rules = tmp_path / RULES_FILE_NAME
    rules.write_text(yaml.safe_dump(_rules(prose=True), sort_keys=False), encoding="utf-8")
    result = _run("check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr


def _run_unit_tests(spec: dict[str, Any], workdir: Path) -> subprocess.CompletedProcess[str]:
    """`promtool test rules` over copies of the test files next to `spec` written as their rule file."""
    (workdir / RULES_FILE_NAME).write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    copies = []
    for source in _test_files():
        copies.append(workdir / source.name)
        shutil.copyfile(source, copies[-1])
    return _run("test", "rules", *map(str, copies))


def test_promtool_unit_tests_pass(tmp_path: Path) -> None:
    result = _run_unit_tests(_rules(prose=False), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """A rule that never fires must fail the suite, or a passing run proves nothing."""
    spec = _rules(prose=False)
    spec["groups"][0]["rules"][0]["expr"] = "vector(1) == 0"
    result = _run_unit_tests(spec, tmp_path)
    assert result.returncode != 0
    assert spec["groups"][0]["rules"][0]["alert"] in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    alerts = {rule["alert"] for group in _rules(prose=True)["groups"] for rule in group["rules"]}
    cases: dict[str, set[str]] = defaultdict(set)
    for path in _test_files():
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert document["rule_files"] == [RULES_FILE_NAME], path.name
        for test in document["tests"]:
            for check in test.get("alert_rule_test", []):
                cases[check["alertname"]].add("firing" if check["exp_alerts"] else "quiet")
    assert set(cases) <= alerts, f"tests for unknown alerts: {set(cases) - alerts}"
    missing = {alert: {"firing", "quiet"} - cases[alert] for alert in alerts if cases[alert] != {"firing", "quiet"}}
    assert not missing, f"alerts without a firing or a quiet case: {missing}"
