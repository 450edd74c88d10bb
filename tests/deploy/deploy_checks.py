"""Checks shared by the deployment tests: the tools (promtool, prometheus, kustomize), the
metric names the code exports, and the settings the code reads.

No Docker engine is needed: compose and Kubernetes files are checked against their schemas
and against the code; Prometheus is Debian's package, run for real.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TOOLS_SCRIPT = ROOT / "deploy" / "tools.sh"
KUSTOMIZE = ROOT / ".local" / "bin" / "kustomize"

# Series Prometheus itself adds to every scrape; not exported by the code.
PROMETHEUS_BUILTINS = {
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
}


def _tools_present() -> bool:
    return bool(shutil.which("promtool") and shutil.which("prometheus") and KUSTOMIZE.exists())


def ensure_tools() -> dict[str, str]:
    """promtool, prometheus and kustomize; installed by deploy/tools.sh when missing (a fresh
    machine), and a loud failure when that cannot be done."""
    if (
        not _tools_present()
        or subprocess.run(
            [str(TOOLS_SCRIPT), "--check"], capture_output=True, check=False
        ).returncode
    ):
        done = subprocess.run([str(TOOLS_SCRIPT)], capture_output=True, text=True, check=False)
        if done.returncode:
            pytest.fail(
                f"deploy/tools.sh could not install the deployment tools:\n{done.stderr[-3000:]}",
                pytrace=False,
            )
    found = {
        "promtool": shutil.which("promtool"),
        "prometheus": shutil.which("prometheus"),
        "kustomize": str(KUSTOMIZE) if KUSTOMIZE.exists() else None,
    }
    missing = [name for name, path in found.items() if not path]
    if missing:
        pytest.fail(f"missing after deploy/tools.sh: {missing}", pytrace=False)
    return {k: str(v) for k, v in found.items()}


def load_yaml(path: Path) -> object:
    return yaml.safe_load(path.read_text())


# ------------------------------------------------------------------ metrics the code exports
_METRIC_CALL = {"counter", "gauge", "histogram"}


def _constants(tree: ast.AST) -> dict[str, str]:
    """Module-level ``NAME = "literal"`` assignments (``SERVICE = "features"``)."""
    found = {}
    for node in getattr(tree, "body", []):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value.value
    return found


def _literal_args(node: ast.Call, constants: dict[str, str] | None = None) -> str | None:
    if not node.args:
        return None
    arg = node.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.Name) and constants and arg.id in constants:
        return constants[arg.id]
    return None


def _service_names(tree: ast.AST) -> set[str]:
    """``ServiceMetrics("x")`` and ``super().__init__("x")`` in a ServiceMetrics subclass."""
    names = set()
    constants = _constants(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (isinstance(func, ast.Name) and func.id == "ServiceMetrics") or (
            isinstance(func, ast.Attribute)
            and func.attr == "__init__"
            and isinstance(func.value, ast.Call)
            and isinstance(func.value.func, ast.Name)
            and func.value.func.id == "super"
        ):
            name = _literal_args(node, constants)
        else:
            continue
        if name:
            names.add(name)
    return names


def _metric_defs(tree: ast.AST) -> set[tuple[str, str]]:
    """``<x>.counter("name", ...)`` etc.: (kind, name)."""
    defs = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _METRIC_CALL
        ):
            name = _literal_args(node)
            if name:
                defs.add((node.func.attr, name))
    return defs


def _unscoped_defs(tree: ast.AST) -> set[tuple[str, str]]:
    """``Gauge("name", ...)`` built directly (no per-service subsystem): pipeline-wide
    names such as ``depthflow_consumer_lag``."""
    defs = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"Counter", "Gauge", "Histogram"}
        ):
            name = _literal_args(node)
            if name:
                defs.add((node.func.id.lower(), name))
    return defs


def _custom_histogram_classes(tree: ast.AST) -> set[str]:
    """Classes that are their own Prometheus collectors of a histogram (a ``Collector``
    subclass yielding a ``HistogramMetricFamily``): hot paths observe with plain counters."""
    names = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        is_collector = any(isinstance(b, ast.Name) and b.id == "Collector" for b in node.bases)
        if is_collector and any(
            isinstance(n, ast.Name) and n.id == "HistogramMetricFamily" for n in ast.walk(node)
        ):
            names.add(node.name)
    return names


def _custom_histograms(tree: ast.AST, classes: set[str]) -> set[str]:
    """``SomeHistogramCollector("depthflow_x_y_seconds", ...)``: full names, as literals."""
    found = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in classes
        ):
            name = _literal_args(node)
            if name:
                found |= _exposed("histogram", name)
    return found


def _exposed(kind: str, full: str) -> set[str]:
    if kind == "counter":
        return {f"{full}_total"}
    if kind == "histogram":
        return {f"{full}_bucket", f"{full}_sum", f"{full}_count"}
    return {full}


def exported_metric_names() -> dict[str, set[str]]:
    """Every series name each service exports, from the source: per package, the service
    name given to ``ServiceMetrics`` and the metrics created in that package; the common
    library's metrics (``service_up``, ``service_ready``) belong to every service."""
    common: set[tuple[str, str]] = set()
    unscoped: set[str] = set()
    for path in (ROOT / "libs" / "common" / "depthflow" / "common").rglob("*.py"):
        if "testing" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        common |= _metric_defs(tree)
        for kind, name in _unscoped_defs(tree):
            unscoped |= _exposed(kind, f"depthflow_{name}")
    result: dict[str, set[str]] = {}
    for package in sorted((ROOT / "services").glob("*/depthflow/*")):
        if not package.is_dir():
            continue
        services: set[str] = set()
        defs: set[tuple[str, str]] = set()
        trees = [ast.parse(path.read_text()) for path in package.rglob("*.py")]
        classes = set().union(*(_custom_histogram_classes(t) for t in trees))
        custom: set[str] = set()
        for tree in trees:
            services |= _service_names(tree)
            defs |= _metric_defs(tree)
            custom |= _custom_histograms(tree, classes)
        # a package may run more than one process (the collector's `sink` has its own
        # registry): each of its service names may carry any of the package's metrics
        for service in services:
            names = result.setdefault(service, set())
            for kind, name in defs | common:
                names |= _exposed(kind, f"depthflow_{service}_{name}")
            names |= unscoped | {n for n in custom if n.startswith(f"depthflow_{service}_")}
    return result


# ------------------------------------------------------------------ PromQL metric names
_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "le",
}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (strings, label matchers, ranges,
    grouping clauses, functions and Grafana variables removed)."""
    text = re.sub(r"\$\{[^}]*\}|\$\w+", " ", expr)
    text = re.sub(r'"(?:[^"\\]|\\.)*"' + r"|'(?:[^'\\]|\\.)*'", " ", text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", text):
        word = match.group(0)
        if word.lower() in _PROMQL_WORDS:
            continue
        if re.match(r"\s*\(", text[match.end() :]):
            continue  # a function or aggregation
        names.add(word)
    return names


# ------------------------------------------------------------------ settings the code reads
def settings_env_names() -> set[str]:
    """Environment variables a depthflow settings model reads (prefix + field, and any
    validation alias)."""
    from pydantic import AliasChoices
    from pydantic_settings import BaseSettings

    import depthflow

    for info in pkgutil.walk_packages(depthflow.__path__, "depthflow."):
        if info.name.endswith((".config", ".settings")):
            importlib.import_module(info.name)
    names: set[str] = set()
    todo = list(BaseSettings.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if not cls.__module__.startswith("depthflow."):
            continue
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name, field in cls.model_fields.items():
            names.add((prefix + name).upper())
            alias = field.validation_alias
            choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
            names |= {c.upper() for c in choices if isinstance(c, str)}
    return names


def cli_env_names() -> set[str]:
    """Environment variables the ``depthflow`` CLI's options read (``envvar=``)."""
    import click
    import typer

    from depthflow.common.cli import build_app

    names: set[str] = set()

    def walk(cmd: click.Command) -> None:
        for param in cmd.params:
            env = getattr(param, "envvar", None)
            if isinstance(env, str):
                names.add(env)
            elif env:
                names.update(env)
        if isinstance(cmd, click.Group):
            for sub in cmd.commands.values():
                walk(sub)

    walk(typer.main.get_command(build_app()))
    return names


def documented_env_names() -> set[str]:
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
