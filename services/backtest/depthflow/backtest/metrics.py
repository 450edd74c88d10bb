"""Performance measures of an equity curve and a list of closing fills. Pure functions.

Definitions (documented in docs/backtest.md):

- simple returns per period ``r_i = E_i / E_{i-1} - 1`` on a fixed event-time grid;
- Sharpe = mean(r) / std(r, ddof=1) * sqrt(periods per year), risk-free rate 0;
- Sortino = mean(r) / downside deviation * sqrt(periods per year), downside deviation =
  sqrt(mean(min(r_i, 0)^2)) over *all* periods (target 0);
- max drawdown = max over t of (peak_t - E_t) / peak_t, peak_t = max(E_0..E_t); also in USDT;
- hit rate = closing fills with a positive realised PnL net of their fee / closing fills.

A measure that is undefined (fewer than 2 returns, zero deviation, no closing fill) is None,
never NaN or infinity, so it serialises as JSON ``null``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

SECONDS_PER_YEAR = 365.0 * 24 * 3600  # crypto trades every day


def periods_per_year(interval_s: float) -> float:
    return SECONDS_PER_YEAR / interval_s


def simple_returns(equity: Sequence[float]) -> list[float]:
    return [b / a - 1.0 for a, b in itertools.pairwise(equity) if a != 0.0]


def _mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs)


def sharpe(returns: Sequence[float], per_year: float) -> float | None:
    """Annualised Sharpe ratio (risk-free 0); None when undefined."""
    if len(returns) < 2:
        return None
    m = _mean(returns)
    var = math.fsum((r - m) ** 2 for r in returns) / (len(returns) - 1)
    if var <= 0.0:
        return None
    return m / math.sqrt(var) * math.sqrt(per_year)


def sortino(returns: Sequence[float], per_year: float) -> float | None:
    """Annualised Sortino ratio (target 0); None when undefined (no downside)."""
    if len(returns) < 2:
        return None
    downside = math.fsum(min(r, 0.0) ** 2 for r in returns) / len(returns)
    if downside <= 0.0:
        return None
    return _mean(returns) / math.sqrt(downside) * math.sqrt(per_year)


@dataclass(frozen=True)
class Drawdown:
    max_fraction: float
    max_usdt: float
    peak_index: int
    trough_index: int


def drawdown_series(equity: Sequence[float]) -> list[float]:
    """(peak - E) / peak at every point (0 at new highs)."""
    out = []
    peak = -math.inf
    for e in equity:
        peak = max(peak, e)
        out.append((peak - e) / peak if peak > 0 else 0.0)
    return out


def max_drawdown(equity: Sequence[float]) -> Drawdown:
    """The largest relative fall from a running peak (and the USDT fall at that point)."""
    best = Drawdown(0.0, 0.0, 0, 0)
    peak = -math.inf
    peak_i = 0
    for i, e in enumerate(equity):
        if e > peak:
            peak, peak_i = e, i
        dd = (peak - e) / peak if peak > 0 else 0.0
        if dd > best.max_fraction:
            best = Drawdown(dd, peak - e, peak_i, i)
    return best


def hit_rate(closing_pnls: Sequence[float]) -> float | None:
    """Share of closing fills that made money (net of fee)."""
    if not closing_pnls:
        return None
    return sum(1 for p in closing_pnls if p > 0.0) / len(closing_pnls)


def clean(value: float | None, digits: int = 12) -> float | None:
    """A JSON-safe number with stable formatting: None for non-finite, else rounded to
    ``digits`` significant digits (so the last-bit noise of a platform never shows)."""
    if value is None or not math.isfinite(value):
        return None
    if value == 0.0:
        return 0.0
    return float(f"{value:.{digits}g}")
