"""Fixtures of the deployment tests; the checks themselves live in deploy_checks.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# pytest runs with --import-mode=importlib: make this folder's helper module importable
sys.path.insert(0, str(Path(__file__).parent))

from deploy_checks import ensure_tools, exported_metric_names


@pytest.fixture(scope="session")
def tools() -> dict[str, str]:
    """promtool, prometheus and kustomize (installed by deploy/tools.sh when missing)."""
    return ensure_tools()


@pytest.fixture(scope="session")
def exported_metrics() -> dict[str, set[str]]:
    found = exported_metric_names()
    assert {"collector", "api"} <= set(found), f"metric discovery found only {sorted(found)}"
    return found
