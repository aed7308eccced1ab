"""The chart's alerts under Prometheus's own tool: the PrometheusRule that the real helm renders passes `promtool
check rules`, and `promtool test rules` (the unit tests in tests/integration/promtool/) makes each alert fire on
series that should fire it and stay silent on series that should not. promtool is Debian's `prometheus` package,
which `make setup` installs; where it is missing these tests fail, they never skip."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from tools import helm

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "async-image-classifier"
TESTS = Path(__file__).parent / "promtool"
RELEASE, NAMESPACE = "rel", "aic"  # the names the unit tests' series carry
BASE = (
    "-f",
    str(CHART / "ci" / "observability-values.yaml"),
    "--set",
    "metrics.prometheusRule.runbookBaseUrl=https://runbooks.example/aic",
)
# Each unit-test file and the values its rules are rendered with (beyond BASE)
VARIANTS: dict[str, tuple[str, ...]] = {
    "alerts_test.yaml": (),
    "alerts_scale_to_zero_test.yaml": (
        "keda.enabled=true",
        "keda.minReplicaCount=0",
        "metrics.serviceMonitor.enabled=false",
    ),
}
Doc = dict[str, Any]


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: install Debian's prometheus package (`make system-deps` does)")
    return path


@cache
def rule_groups(*sets: str) -> list[Doc]:
    args = [str(helm()), "template", RELEASE, str(CHART), "-n", NAMESPACE, *BASE]
    for item in sets:
        args += ["--set", item]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120).stdout
    [rule] = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "PrometheusRule"]
    groups: list[Doc] = rule["spec"]["groups"]
    return groups


def alerts(groups: list[Doc]) -> dict[str, Doc]:
    return {r["alert"]: r for group in groups for r in group["rules"] if "alert" in r}


def unit_tests(name: str) -> Doc:
    loaded: Doc = yaml.safe_load((TESTS / name).read_text())
    return loaded


def run_promtool(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=directory, capture_output=True, text=True, timeout=120)


def prepared(tmp_path: Path, name: str, tests: Doc | None = None) -> Path:
    """tmp_path holding rules.yaml (the rendered groups) and the unit tests that name it (the file, or `tests`)."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups(*VARIANTS[name])}, sort_keys=False))
    if tests is None:
        shutil.copyfile(TESTS / name, tmp_path / name)
    else:
        (tmp_path / name).write_text(yaml.safe_dump(tests, sort_keys=False))
    return tmp_path


def expectations(tests: Doc) -> list[Doc]:
    return [case for group in tests["tests"] for case in group["alert_rule_test"]]


@pytest.mark.parametrize("name", VARIANTS)
def test_the_rendered_rules_pass_promtool_check_rules(name: str, tmp_path: Path) -> None:
    directory = prepared(tmp_path, name)
    result = run_promtool(directory, "check", "rules", "rules.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts(rule_groups(*VARIANTS[name])))} rules found" in result.stdout


@pytest.mark.parametrize("name", VARIANTS)
def test_each_alert_fires_when_it_should_and_stays_silent_otherwise(name: str, tmp_path: Path) -> None:
    directory = prepared(tmp_path, name)
    result = run_promtool(directory, "test", "rules", name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_silent_case_under_every_expression_it_renders_to() -> None:
    default = alerts(rule_groups())
    for name, sets in VARIANTS.items():
        rendered = alerts(rule_groups(*sets))
        assert rendered.keys() == default.keys(), name
        # the default file covers every alert; another variant's, those whose expression the values change
        must = set(rendered) if not sets else {a for a, rule in rendered.items() if rule["expr"] != default[a]["expr"]}
        assert must, name
        cases = expectations(unit_tests(name))
        firing = {c["alertname"] for c in cases if c["exp_alerts"]}
        silent = {c["alertname"] for c in cases if not c["exp_alerts"]}
        assert must <= firing, (name, must - firing)
        assert must <= silent, (name, must - silent)
        assert firing | silent <= set(rendered), name


@pytest.mark.parametrize("name", VARIANTS)
def test_promtool_fails_each_firing_case_expected_silent(name: str, tmp_path: Path) -> None:
    """The unit tests can fail: with every firing expectation turned into silence, promtool reports every one."""
    tests = copy.deepcopy(unit_tests(name))
    flipped = set()
    for case in expectations(tests):
        if case["exp_alerts"]:
            case["exp_alerts"] = []
            flipped.add((case["alertname"], case["eval_time"]))
    directory = prepared(tmp_path, name, tests)
    result = run_promtool(directory, "test", "rules", name)
    assert result.returncode == 1, result.stdout + result.stderr
    reported = set(re.findall(r"alertname: (\w+), time: (\w+),", result.stdout + result.stderr))
    assert reported == flipped
