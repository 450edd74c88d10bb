"""Feature set v1: the 110 names in order, their channels and per-feature metadata.

Names and order come from the seed's "ML Feature Engineering" section (50 order-book,
25 candle, 35 indicator features). A feature that is not valid (warm-up, empty side, zero
volume, fewer than 50 candles) carries exactly its ``default`` and ``valid=False``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

FEATURE_SET_VERSION: Final = "v1"

# Window constants shared by the streaming and batch code.
RATE_WINDOW_US: Final = 10_000_000  # trailing window of the per-second rate features
EW_SPAN: Final = 100  # span (book updates or trades) of the exponentially weighted features
EW_MIN_OBS: Final = 10  # observations before an exponentially weighted feature is valid
MIN_CANDLES_INDICATORS: Final = 50  # the seed: fewer than 50 candles -> indicator defaults
CANDLE_US: Final = 60_000_000


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """One feature: where it sits, what it means, and what it is when not valid."""

    index: int
    name: str
    channel: str  # "orderbook" | "candle" | "indicator"
    group: str
    unit: str
    window: str
    default: float
    formula: str


# (name, group, unit, window, default, formula); b1/a1 best bid/ask, qb/qa quantities,
# "book" = the top-20 levels received, "candle" = the last closed 1-minute candle.
_OB: tuple[tuple[str, str, str, str, float, str], ...] = (
    ("bid_ask_spread_abs", "microstructure", "quote", "book", 0.0, "a1 - b1"),
    ("bid_ask_spread_rel", "microstructure", "bps", "book", 0.0, "(a1 - b1) / mid * 1e4"),
    ("mid_price", "microstructure", "quote", "book", 0.0, "(a1 + b1) / 2"),
    ("micro_price", "microstructure", "quote", "book", 0.0, "(b1*qa1 + a1*qb1) / (qb1 + qa1)"),
    ("vwap_bid_5", "microstructure", "quote", "top 5 bids", 0.0, "sum(p*q) / sum(q), top 5 bids"),
    ("vwap_ask_5", "microstructure", "quote", "top 5 asks", 0.0, "sum(p*q) / sum(q), top 5 asks"),
    (
        "vwap_bid_10",
        "microstructure",
        "quote",
        "top 10 bids",
        0.0,
        "sum(p*q) / sum(q), top 10 bids",
    ),
    (
        "vwap_ask_10",
        "microstructure",
        "quote",
        "top 10 asks",
        0.0,
        "sum(p*q) / sum(q), top 10 asks",
    ),
    ("depth_bid_5", "microstructure", "base", "top 5 bids", 0.0, "sum(q), top 5 bids"),
    ("depth_ask_5", "microstructure", "base", "top 5 asks", 0.0, "sum(q), top 5 asks"),
    ("depth_bid_10", "microstructure", "base", "top 10 bids", 0.0, "sum(q), top 10 bids"),
    ("depth_ask_10", "microstructure", "base", "top 10 asks", 0.0, "sum(q), top 10 asks"),
    ("total_bid_volume", "microstructure", "base", "book bids", 0.0, "sum(q), all bid levels"),
    ("total_ask_volume", "microstructure", "base", "book asks", 0.0, "sum(q), all ask levels"),
    (
        "book_depth_ratio",
        "microstructure",
        "ratio",
        "book",
        1.0,
        "total_bid_volume / total_ask_volume",
    ),
    ("imbalance_5", "imbalance", "[-1,1]", "top 5", 0.0, "(db5 - da5) / (db5 + da5)"),
    ("imbalance_10", "imbalance", "[-1,1]", "top 10", 0.0, "(db10 - da10) / (db10 + da10)"),
    ("imbalance_total", "imbalance", "[-1,1]", "book", 0.0, "(tb - ta) / (tb + ta)"),
    ("price_pressure", "imbalance", "bps", "book", 0.0, "(micro_price - mid) / mid * 1e4"),
    ("volume_delta_5", "imbalance", "base", "top 5", 0.0, "depth_bid_5 - depth_ask_5"),
    (
        "order_flow_imbalance",
        "imbalance",
        "base",
        "last 2 books",
        0.0,
        "Cont-Kukanov-Stoikov e_n = qb*[b1>=b1'] - qb'*[b1<=b1'] - qa*[a1<=a1'] + qa'*[a1>=a1']",
    ),
    (
        "bid_intensity",
        "imbalance",
        "base/s",
        "10 s",
        0.0,
        "sum over books in window of bid churn (sum |dq| per price, incl. added/removed) / 10",
    ),
    (
        "ask_intensity",
        "imbalance",
        "base/s",
        "10 s",
        0.0,
        "sum over books in window of ask churn (sum |dq| per price, incl. added/removed) / 10",
    ),
    (
        "buy_sell_ratio",
        "imbalance",
        "[0,1]",
        "10 s trades",
        0.5,
        "taker-buy qty / all trade qty in the window (buy share)",
    ),
    (
        "smart_money_index",
        "imbalance",
        "[-1,1]",
        "book",
        0.0,
        "(L_bid - L_ask) / (L_bid + L_ask), L = qty of levels with q >= 2 * mean level q",
    ),
    (
        "largest_bid_cluster_price",
        "clusters",
        "quote",
        "book bids",
        0.0,
        "q-weighted price of the largest run of consecutive bid levels with q >= side mean",
    ),
    ("largest_bid_cluster_volume", "clusters", "base", "book bids", 0.0, "sum(q) of that run"),
    (
        "largest_ask_cluster_price",
        "clusters",
        "quote",
        "book asks",
        0.0,
        "q-weighted price of the largest run of consecutive ask levels with q >= side mean",
    ),
    ("largest_ask_cluster_volume", "clusters", "base", "book asks", 0.0, "sum(q) of that run"),
    (
        "num_bid_clusters",
        "clusters",
        "count",
        "book bids",
        0.0,
        "number of runs of consecutive bid levels with q >= side mean",
    ),
    (
        "num_ask_clusters",
        "clusters",
        "count",
        "book asks",
        0.0,
        "number of runs of consecutive ask levels with q >= side mean",
    ),
    (
        "support_level_1",
        "clusters",
        "quote",
        "book bids",
        0.0,
        "price of the bid level with the largest q (first on ties)",
    ),
    (
        "resistance_level_1",
        "clusters",
        "quote",
        "book asks",
        0.0,
        "price of the ask level with the largest q (first on ties)",
    ),
    ("distance_to_support", "clusters", "bps", "book", 0.0, "(mid - support_level_1) / mid * 1e4"),
    (
        "distance_to_resistance",
        "clusters",
        "bps",
        "book",
        0.0,
        "(resistance_level_1 - mid) / mid * 1e4",
    ),
    ("liquidity_bid_5", "liquidity", "quote", "top 5 bids", 0.0, "sum(p*q), top 5 bids"),
    ("liquidity_ask_5", "liquidity", "quote", "top 5 asks", 0.0, "sum(p*q), top 5 asks"),
    (
        "liquidity_asymmetry",
        "liquidity",
        "[-1,1]",
        "top 5",
        0.0,
        "(liquidity_bid_5 - liquidity_ask_5) / (liquidity_bid_5 + liquidity_ask_5)",
    ),
    (
        "effective_spread",
        "liquidity",
        "bps",
        "last trade",
        0.0,
        "2 * |p_trade - mid_before_trade| / mid_before_trade * 1e4, last trade",
    ),
    (
        "kyle_lambda",
        "liquidity",
        "quote/base",
        "EW span 100 books",
        0.0,
        "EW cov(d mid, signed trade qty between books) / EW var(signed trade qty)",
    ),
    (
        "amihud_illiquidity",
        "liquidity",
        "bps per 1e6 quote",
        "EW span 100 books",
        0.0,
        "1e6 * EW|mid log return, bps| / EW(traded notional between books)",
    ),
    (
        "roll_spread",
        "liquidity",
        "quote",
        "EW span 100 trades",
        0.0,
        "2 * sqrt(-EW cov(dp_t, dp_t-1)) over trade prices, 0 if cov >= 0",
    ),
    (
        "depth_imbalance_ratio",
        "liquidity",
        "log ratio",
        "top 10",
        0.0,
        "ln(depth_bid_10 / depth_ask_10)",
    ),
    (
        "level_ttl_avg",
        "temporal",
        "s",
        "book, 10 s warm-up",
        0.0,
        "mean age of current levels (time since price entered the top 20 on its side)",
    ),
    ("level_ttl_std", "temporal", "s", "book, 10 s warm-up", 0.0, "population std of those ages"),
    (
        "orderbook_volatility",
        "temporal",
        "bps",
        "EW span 100 books",
        0.0,
        "EW std of the mid log return between consecutive books",
    ),
    ("update_frequency", "temporal", "1/s", "10 s", 0.0, "book updates in window / 10"),
    (
        "quote_intensity",
        "temporal",
        "1/s",
        "10 s",
        0.0,
        "level changes (added, removed or re-sized prices, both sides) in window / 10",
    ),
    ("trade_arrival_rate", "temporal", "1/s", "10 s", 0.0, "trades in window / 10"),
    (
        "spread_volatility",
        "temporal",
        "bps",
        "EW span 100 books",
        0.0,
        "EW std of bid_ask_spread_rel",
    ),
)

_CANDLE: tuple[tuple[str, str, str, str, float, str], ...] = (
    ("open", "ohlcv", "quote", "candle", 0.0, "first trade price (first mid if no trade)"),
    ("high", "ohlcv", "quote", "candle", 0.0, "max trade price (max mid if no trade)"),
    ("low", "ohlcv", "quote", "candle", 0.0, "min trade price (min mid if no trade)"),
    ("close", "ohlcv", "quote", "candle", 0.0, "last trade price (last mid if no trade)"),
    ("volume", "ohlcv", "base", "candle", 0.0, "sum of trade qty"),
    ("typical_price", "ohlcv", "quote", "candle", 0.0, "(h + l + c) / 3"),
    ("returns", "derived", "fraction", "2 candles", 0.0, "c / c_prev - 1"),
    ("log_returns", "derived", "log", "2 candles", 0.0, "ln(c / c_prev)"),
    ("high_low_range", "derived", "quote", "candle", 0.0, "h - l"),
    ("close_open_diff", "derived", "quote", "candle", 0.0, "c - o"),
    ("upper_shadow", "derived", "quote", "candle", 0.0, "h - max(o, c)"),
    ("lower_shadow", "derived", "quote", "candle", 0.0, "min(o, c) - l"),
    ("body_size", "derived", "quote", "candle", 0.0, "|c - o|"),
    (
        "realized_volatility",
        "volatility",
        "log",
        "20 candles",
        0.0,
        "sqrt(sum of the last 20 squared log returns)",
    ),
    (
        "parkinson_volatility",
        "volatility",
        "log",
        "20 candles",
        0.0,
        "sqrt(sum(ln(h/l)^2) / (4 ln 2 * 20))",
    ),
    (
        "garman_klass_volatility",
        "volatility",
        "log",
        "20 candles",
        0.0,
        "sqrt(max(0, mean(0.5 ln(h/l)^2 - (2 ln 2 - 1) ln(c/o)^2)))",
    ),
    ("volume_ma_ratio", "volume", "ratio", "20 candles", 1.0, "v / SMA20(v)"),
    ("volume_change_rate", "volume", "fraction", "2 candles", 0.0, "v / v_prev - 1"),
    ("price_volume_trend", "volume", "base", "2 candles", 0.0, "(c / c_prev - 1) * v"),
    (
        "volume_weighted_price",
        "volume",
        "quote",
        "candle",
        0.0,
        "sum(p*q) / sum(q) over the candle's trades",
    ),
    ("money_flow", "volume", "quote", "candle", 0.0, "typical_price * v"),
    ("doji_strength", "patterns", "[0,1]", "candle", 0.0, "1 - |c - o| / (h - l)"),
    (
        "hammer_strength",
        "patterns",
        "[0,1]",
        "candle",
        0.0,
        "lower_shadow / (h - l) if lower_shadow >= 2*body and upper_shadow <= body, else 0",
    ),
    (
        "engulfing_strength",
        "patterns",
        "[-1,1]",
        "2 candles",
        0.0,
        "sign(c - o) * (1 - body_prev / body) if the body engulfs the opposite-colour previous "
        "body, else 0",
    ),
    ("gap_size", "patterns", "bps", "2 candles", 0.0, "(o - c_prev) / c_prev * 1e4"),
)

_IND: tuple[tuple[str, str, str, str, float, str], ...] = (
    ("sma_10", "trend", "quote", "10 candles", 0.0, "mean of the last 10 closes"),
    ("sma_20", "trend", "quote", "20 candles", 0.0, "mean of the last 20 closes"),
    ("sma_50", "trend", "quote", "50 candles", 0.0, "mean of the last 50 closes"),
    ("ema_10", "trend", "quote", "10 candles", 0.0, "EMA a=2/11, seeded with SMA10"),
    ("ema_20", "trend", "quote", "20 candles", 0.0, "EMA a=2/21, seeded with SMA20"),
    ("ema_50", "trend", "quote", "50 candles", 0.0, "EMA a=2/51, seeded with SMA50"),
    ("macd", "trend", "quote", "12/26 candles", 0.0, "EMA12(c) - EMA26(c)"),
    ("macd_signal", "trend", "quote", "9 macd values", 0.0, "EMA9(macd), seeded with SMA9"),
    ("macd_histogram", "trend", "quote", "34 candles", 0.0, "macd - macd_signal"),
    (
        "adx",
        "trend",
        "[0,100]",
        "14 (Wilder)",
        0.0,
        "Wilder average of DX = 100 |+DI - -DI| / (+DI + -DI), seeded with the mean of 14 DX",
    ),
    ("plus_di", "trend", "[0,100]", "14 (Wilder)", 0.0, "100 * Wilder(+DM) / Wilder(TR)"),
    ("minus_di", "trend", "[0,100]", "14 (Wilder)", 0.0, "100 * Wilder(-DM) / Wilder(TR)"),
    (
        "rsi_14",
        "momentum",
        "[0,100]",
        "14 (Wilder)",
        50.0,
        "100 - 100 / (1 + avg_gain / avg_loss), Wilder averages seeded with SMA",
    ),
    ("rsi_28", "momentum", "[0,100]", "28 (Wilder)", 50.0, "as rsi_14 with n = 28"),
    ("stochastic_k", "momentum", "[0,100]", "14 candles", 50.0, "100 * (c - LL14) / (HH14 - LL14)"),
    ("stochastic_d", "momentum", "[0,100]", "3 x %K", 50.0, "SMA3(stochastic_k)"),
    (
        "williams_r",
        "momentum",
        "[-100,0]",
        "14 candles",
        -50.0,
        "-100 * (HH14 - c) / (HH14 - LL14)",
    ),
    (
        "cci",
        "momentum",
        "index",
        "20 candles",
        0.0,
        "(tp - SMA20(tp)) / (0.015 * mean |tp - SMA20(tp)|)",
    ),
    ("momentum_10", "momentum", "quote", "11 candles", 0.0, "c - c[-10]"),
    ("roc", "momentum", "%", "13 candles", 0.0, "100 * (c / c[-12] - 1)"),
    (
        "mfi",
        "momentum",
        "[0,100]",
        "14 candles",
        50.0,
        "100 - 100 / (1 + sum(tp*v, tp up) / sum(tp*v, tp down)), last 14 changes",
    ),
    ("bollinger_upper", "volatility", "quote", "20 candles", 0.0, "SMA20 + 2 * std20 (population)"),
    ("bollinger_middle", "volatility", "quote", "20 candles", 0.0, "SMA20(c)"),
    ("bollinger_lower", "volatility", "quote", "20 candles", 0.0, "SMA20 - 2 * std20 (population)"),
    ("bollinger_width", "volatility", "fraction", "20 candles", 0.0, "(upper - lower) / middle"),
    ("bollinger_pct", "volatility", "fraction", "20 candles", 0.5, "(c - lower) / (upper - lower)"),
    (
        "atr_14",
        "volatility",
        "quote",
        "14 (Wilder)",
        0.0,
        "Wilder average of TR = max(h, c_prev) - min(l, c_prev), seeded with the mean of 14 TR",
    ),
    ("keltner_upper", "volatility", "quote", "20 / 14 candles", 0.0, "ema_20 + 2 * atr_14"),
    ("keltner_lower", "volatility", "quote", "20 / 14 candles", 0.0, "ema_20 - 2 * atr_14"),
    ("obv", "volume", "base", "cumulative", 0.0, "sum of +v if c > c_prev, -v if c < c_prev"),
    (
        "vwap",
        "volume",
        "quote",
        "50 candles",
        0.0,
        "sum(trade notional) / sum(trade qty), last 50 candles",
    ),
    (
        "ad_line",
        "volume",
        "base",
        "cumulative",
        0.0,
        "sum of ((c - l) - (h - c)) / (h - l) * v (0 when h == l)",
    ),
    ("cmf", "volume", "[-1,1]", "20 candles", 0.0, "sum(mfm * v) / sum(v), last 20 candles"),
    ("vpt", "volume", "base", "cumulative", 0.0, "sum of v * (c / c_prev - 1)"),
    (
        "nvi",
        "volume",
        "index",
        "cumulative",
        1000.0,
        "starts at 1000; nvi *= c / c_prev when v < v_prev",
    ),
)


def _build() -> tuple[FeatureSpec, ...]:
    specs: list[FeatureSpec] = []
    for channel, rows in (("orderbook", _OB), ("candle", _CANDLE), ("indicator", _IND)):
        for name, group, unit, window, default, formula in rows:
            specs.append(
                FeatureSpec(len(specs), name, channel, group, unit, window, default, formula)
            )
    return tuple(specs)


SPECS: Final[tuple[FeatureSpec, ...]] = _build()
FEATURE_SET_V1: Final[tuple[str, ...]] = tuple(s.name for s in SPECS)
N_FEATURES: Final = len(FEATURE_SET_V1)
N_ORDERBOOK: Final = len(_OB)
N_CANDLE: Final = len(_CANDLE)
N_INDICATOR: Final = len(_IND)
CHANNELS: Final[dict[str, slice]] = {
    "orderbook": slice(0, N_ORDERBOOK),
    "candle": slice(N_ORDERBOOK, N_ORDERBOOK + N_CANDLE),
    "indicator": slice(N_ORDERBOOK + N_CANDLE, N_FEATURES),
}
INDEX: Final[dict[str, int]] = {n: i for i, n in enumerate(FEATURE_SET_V1)}


def defaults() -> np.ndarray:
    """A fresh float64 array of the 110 defaults, in feature order."""
    return np.array([s.default for s in SPECS], dtype=np.float64)


def channel_defaults(channel: str) -> list[float]:
    """The defaults of one channel as a plain list (the streaming code works in lists)."""
    return [s.default for s in SPECS[CHANNELS[channel]]]


assert N_ORDERBOOK == 50 and N_CANDLE == 25 and N_INDICATOR == 35
