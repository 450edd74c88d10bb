"""Performance measures against hand-worked series."""

from __future__ import annotations

import math

import pytest

from depthflow.backtest.metrics import (
    clean,
    drawdown_series,
    hit_rate,
    max_drawdown,
    periods_per_year,
    sharpe,
    simple_returns,
    sortino,
)


def test_simple_returns() -> None:
    assert simple_returns([100.0, 110.0, 99.0]) == pytest.approx([0.1, -0.1])
    assert simple_returns([100.0]) == []


def test_sharpe_hand_worked() -> None:
    # mean 0.005; deviations ±0.005, ±0.015 -> sample variance 0.0005 / 3
    r = [0.01, -0.01, 0.02, 0.0]
    per_period = 0.005 / math.sqrt(0.0005 / 3)  # 0.3872983...
    assert sharpe(r, 1.0) == pytest.approx(per_period)
    assert sharpe(r, 4.0) == pytest.approx(0.7745966692)  # x sqrt(4)
    assert sharpe(r, periods_per_year(60.0)) == pytest.approx(per_period * math.sqrt(525_600))


def test_sortino_hand_worked() -> None:
    # downside deviation over all 4 periods: sqrt((0.01^2) / 4) = 0.005; mean 0.005
    r = [0.01, -0.01, 0.02, 0.0]
    assert sortino(r, 1.0) == pytest.approx(1.0)
    assert sortino(r, 4.0) == pytest.approx(2.0)
    # two losses: downside sqrt((0.0004 + 0.0001) / 4); mean -0.0025
    r2 = [-0.02, 0.01, -0.01, 0.01]
    assert sortino(r2, 1.0) == pytest.approx(-0.0025 / math.sqrt(0.0005 / 4))


def test_undefined_measures_are_none() -> None:
    assert sharpe([0.01], 1.0) is None
    assert sharpe([0.01, 0.01, 0.01], 1.0) is None  # zero deviation
    assert sortino([0.01, 0.02], 1.0) is None  # no downside
    assert hit_rate([]) is None


def test_max_drawdown_hand_worked() -> None:
    equity = [100.0, 120.0, 90.0, 130.0, 117.0]
    dd = max_drawdown(equity)
    assert dd.max_fraction == pytest.approx(0.25)  # 120 -> 90
    assert dd.max_usdt == pytest.approx(30.0)
    assert (dd.peak_index, dd.trough_index) == (1, 2)
    assert drawdown_series(equity) == pytest.approx([0.0, 0.0, 0.25, 0.0, 0.1])
    assert max_drawdown([100.0, 101.0, 102.0]).max_fraction == 0.0


def test_hit_rate_and_clean() -> None:
    assert hit_rate([1.0, -0.5, 0.0, 2.0]) == pytest.approx(0.5)  # 0 is not a hit
    assert clean(float("nan")) is None and clean(float("inf")) is None and clean(None) is None
    assert clean(0.1 + 0.2) == 0.3
    assert clean(-0.0) == 0.0
