"""Prometheus config and rules pass promtool; dashboards and alerts only query metrics the
code exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from deploy_checks import PROMETHEUS_BUILTINS, ROOT, load_yaml, promql_metric_names

PROM_DIR = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCE_UID = "depthflow-prometheus"


def test_promtool_check_config(tools: dict[str, str]) -> None:
    done = subprocess.run(
        [tools["promtool"], "check", "config", str(PROM_DIR / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_check_rules(tools: dict[str, str]) -> None:
    done = subprocess.run(
        [tools["promtool"], "check", "rules", str(PROM_DIR / "alerts.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_rejects_a_broken_rule(tools: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n- name: x\n  rules:\n  - alert: X\n    expr: sum(rate(up[5m])\n")
    done = subprocess.run(
        [tools["promtool"], "check", "rules", str(bad)], capture_output=True, check=False
    )
    assert done.returncode != 0


def _alert_exprs() -> list[tuple[str, str]]:
    doc = load_yaml(PROM_DIR / "alerts.yml")
    assert isinstance(doc, dict)
    return [
        (rule.get("alert") or rule.get("record"), rule["expr"])
        for group in doc["groups"]
        for rule in group["rules"]
    ]


def _dashboard_exprs(path: Path) -> list[tuple[str, str]]:
    dash = json.loads(path.read_text())
    exprs = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            exprs.append((f"{path.name}: {panel['title']}", target["expr"]))
    for var in dash.get("templating", {}).get("list", []):
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        match = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
        assert match, f"{path.name}: variable {var['name']}: unsupported query {query}"
        exprs.append((f"{path.name}: ${var['name']}", match.group(1)))
    return exprs


def _check(exprs: list[tuple[str, str]], exported: dict[str, set[str]]) -> list[str]:
    known = set().union(*exported.values()) | PROMETHEUS_BUILTINS
    problems = []
    for where, expr in exprs:
        names = promql_metric_names(expr)
        if not names:
            problems.append(f"{where}: no metric found in {expr!r}")
        problems += [f"{where}: {n} is not exported by the code" for n in sorted(names - known)]
    return problems


def test_metric_name_parser() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (exchange, le) (rate(depthflow_x_bucket{a="b(c)",'
        'exchange=~"$exchange"}[$__rate_interval]))) > 2 or up{job!="p"} == 0 '
        "or sum without (instance) (increase(depthflow_y_total[5m] offset 1h)) / on (table) "
        "group_left count(depthflow_z)"
    )
    assert promql_metric_names(expr) == {
        "depthflow_x_bucket",
        "up",
        "depthflow_y_total",
        "depthflow_z",
    }


def test_alerts_query_only_exported_metrics(exported_metrics: dict[str, set[str]]) -> None:
    exprs = _alert_exprs()
    assert len(exprs) >= 5
    assert not (problems := _check(exprs, exported_metrics)), "\n".join(problems)


def test_alerts_cover_the_failures_that_matter() -> None:
    exprs = dict(_alert_exprs())
    joined = {name: promql_metric_names(expr) for name, expr in exprs.items()}
    assert "depthflow_collector_book_age_seconds" in joined["DepthflowStaleBook"]
    assert "depthflow_executor_breaker_state" in joined["DepthflowCircuitBreakerOpen"]
    assert "depthflow_executor_rejects_total" in joined["DepthflowKillSwitch"]
    assert "up" in joined["DepthflowServiceDown"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboards_query_only_exported_metrics(
    path: Path, exported_metrics: dict[str, set[str]]
) -> None:
    exprs = _dashboard_exprs(path)
    assert exprs, f"{path.name} has no queries"
    assert not (problems := _check(exprs, exported_metrics)), "\n".join(problems)


def test_the_check_catches_a_misspelt_metric(exported_metrics: dict[str, set[str]]) -> None:
    assert _check([("x", "rate(depthflow_collector_gapz_total[5m])")], exported_metrics)
    assert _check([("x", "depthflow_collector_book_age_seconds_total")], exported_metrics)


def test_grafana_provisioning_pins_the_datasource_uid() -> None:
    assert {p.stem for p in DASHBOARDS} == {
        "pipeline-overview",
        "market-data-health",
        "trading",
        "storage",
    }
    ds = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    assert isinstance(ds, dict)
    [source] = ds["datasources"]
    assert source["uid"] == DATASOURCE_UID and source["type"] == "prometheus"
    providers = load_yaml(GRAFANA / "provisioning" / "dashboards" / "depthflow.yml")
    assert isinstance(providers, dict)
    assert providers["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"
    uids = set()
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        uids.add(dash["uid"])
        for panel in dash["panels"]:
            assert panel["datasource"]["uid"] == DATASOURCE_UID, (path.name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == DATASOURCE_UID
    assert len(uids) == len(DASHBOARDS)
