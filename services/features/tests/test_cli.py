"""``depthflow features describe``: every feature on one line; ``--names``: the 110 names."""

from __future__ import annotations

from typer.testing import CliRunner

from depthflow.common.cli import build_app
from depthflow.features.names import FEATURE_SET_V1


def test_describe_names_prints_the_110_names_in_order() -> None:
    result = CliRunner().invoke(build_app(), ["features", "describe", "--names"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == list(FEATURE_SET_V1)
    assert len(result.output.splitlines()) == 110


def test_describe_prints_formula_unit_window_default_per_feature() -> None:
    result = CliRunner().invoke(build_app(), ["features", "describe"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()[1:]
    assert len(lines) == 110
    for name, line in zip(FEATURE_SET_V1, lines, strict=True):
        assert f" {name} [" in line and "; unit " in line and "; window " in line
        assert "; default " in line
