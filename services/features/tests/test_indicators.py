"""Candle and indicator features against from-definition references over the full history
(numpy slices, closed-form EMA weights, explicit Wilder averages) - written independently
of the incremental code."""

from __future__ import annotations

import math

import numpy as np
import pytest

from depthflow.features.candles import Candle, CandleFeatures
from depthflow.features.indicators import IndicatorState
from depthflow.features.names import CHANNELS, FEATURE_SET_V1

CANDLE_NAMES = FEATURE_SET_V1[CHANNELS["candle"]]
IND_NAMES = FEATURE_SET_V1[CHANNELS["indicator"]]


def make_candles(n: int, seed: int = 1) -> list[Candle]:
    rng = np.random.default_rng(seed)
    out: list[Candle] = []
    c = 100.0
    for i in range(n):
        if rng.random() < 0.07:  # a quiet minute: flat at the previous close, no volume
            out.append(Candle(i, c, c, c, c, 0.0, 0.0, 0))
            continue
        o = c * math.exp(rng.normal(0, 0.0005)) if rng.random() < 0.5 else c
        cl = o * math.exp(rng.normal(0, 0.002))
        h = max(o, cl) * math.exp(abs(rng.normal(0, 0.001)))
        lo = min(o, cl) * math.exp(-abs(rng.normal(0, 0.001)))
        v = float(rng.exponential(5.0))
        vw = lo + (h - lo) * float(rng.random())
        out.append(Candle(i, o, h, lo, cl, v, vw * v, int(rng.integers(1, 50))))
        c = cl
    return out


def ema_series(x: np.ndarray, n: int) -> np.ndarray:
    """SMA-seeded EMA via closed-form weights: (1-a)^(t-n+1) * SMA_n + sum a(1-a)^(t-j) x_j."""
    a = 2.0 / (n + 1)
    out = np.full(len(x), np.nan)
    seed = x[:n].mean()
    for t in range(n - 1, len(x)):
        j = np.arange(n, t + 1)
        out[t] = (1 - a) ** (t - n + 1) * seed + np.sum(a * (1 - a) ** (t - j) * x[j])
    return out


def wilder(x: np.ndarray, n: int) -> np.ndarray:
    """Wilder's average: mean of the first n, then (prev * (n - 1) + x) / n."""
    out = np.full(len(x), np.nan)
    out[n - 1] = x[:n].mean()
    for t in range(n, len(x)):
        out[t] = (out[t - 1] * (n - 1) + x[t]) / n
    return out


def reference(cs: list[Candle]) -> tuple[dict[str, float], dict[str, float]]:
    """The 25 candle and 35 indicator values after the last candle of ``cs``."""
    o = np.array([c.open for c in cs])
    h = np.array([c.high for c in cs])
    lo = np.array([c.low for c in cs])
    c = np.array([c.close for c in cs])
    v = np.array([k.volume for k in cs])
    nt = np.array([k.notional for k in cs])
    tp = (h + lo + c) / 3
    t = len(cs) - 1
    rng = h[t] - lo[t]
    body = abs(c[t] - o[t])
    up = h[t] - max(o[t], c[t])
    dn = min(o[t], c[t]) - lo[t]
    lr = np.log(c[1:] / c[:-1])
    hl = np.log(h / lo)
    co = np.log(c / o)
    po, pc = o[t - 1], c[t - 1]
    engulf = 0.0
    if (
        (pc - po) * (c[t] - o[t]) < 0
        and min(o[t], c[t]) <= min(po, pc)
        and max(o[t], c[t]) >= max(po, pc)
    ):
        engulf = np.sign(c[t] - o[t]) * (1 - abs(pc - po) / body)
    cand = {
        "open": o[t],
        "high": h[t],
        "low": lo[t],
        "close": c[t],
        "volume": v[t],
        "typical_price": tp[t],
        "returns": c[t] / pc - 1,
        "log_returns": math.log(c[t] / pc),
        "high_low_range": rng,
        "close_open_diff": c[t] - o[t],
        "upper_shadow": up,
        "lower_shadow": dn,
        "body_size": body,
        "realized_volatility": math.sqrt(np.sum(lr[-20:] ** 2)),
        "parkinson_volatility": math.sqrt(np.sum(hl[-20:] ** 2) / (4 * math.log(2) * 20)),
        "garman_klass_volatility": math.sqrt(
            max(0.0, np.mean(0.5 * hl[-20:] ** 2 - (2 * math.log(2) - 1) * co[-20:] ** 2))
        ),
        "volume_ma_ratio": v[t] / v[-20:].mean() if v[-20:].mean() > 0 else 1.0,
        "volume_change_rate": v[t] / v[t - 1] - 1 if v[t - 1] > 0 else 0.0,
        "price_volume_trend": (c[t] / pc - 1) * v[t],
        "volume_weighted_price": nt[t] / v[t] if v[t] > 0 else 0.0,
        "money_flow": tp[t] * v[t],
        "doji_strength": 1 - body / rng if rng > 0 else 0.0,
        "hammer_strength": (dn / rng if dn >= 2 * body and up <= body else 0.0) if rng > 0 else 0.0,
        "engulfing_strength": engulf,
        "gap_size": (o[t] - pc) / pc * 1e4,
    }
    # indicators
    macd = ema_series(c, 12) - ema_series(c, 26)
    m = macd[25:]
    sig = ema_series(m, 9)[-1]
    tr = np.maximum(h[1:], c[:-1]) - np.minimum(lo[1:], c[:-1])
    upm = h[1:] - h[:-1]
    dnm = lo[:-1] - lo[1:]
    pdm = np.where((upm > dnm) & (upm > 0), upm, 0.0)
    mdm = np.where((dnm > upm) & (dnm > 0), dnm, 0.0)
    atr = wilder(tr, 14)
    pdi = 100 * wilder(pdm, 14) / atr
    mdi = 100 * wilder(mdm, 14) / atr
    dx = np.where(
        pdi + mdi > 0, 100 * np.abs(pdi - mdi) / np.where(pdi + mdi > 0, pdi + mdi, 1), 0.0
    )
    adx = wilder(dx[13:], 14)[-1]
    ch = np.diff(c)

    def rsi(n: int) -> float:
        g = wilder(np.where(ch > 0, ch, 0.0), n)[-1]
        ls = wilder(np.where(ch < 0, -ch, 0.0), n)[-1]
        return 100 - 100 / (1 + g / ls) if ls > 0 else (100.0 if g > 0 else 50.0)

    def stoch_k(k: int) -> float:
        hh, ll = h[k - 13 : k + 1].max(), lo[k - 13 : k + 1].min()
        return 100 * (c[k] - ll) / (hh - ll) if hh > ll else 50.0

    hh, ll = h[-14:].max(), lo[-14:].min()
    sma20 = c[-20:].mean()
    sd = c[-20:].std()
    md = np.mean(np.abs(tp[-20:] - tp[-20:].mean()))
    pos = sum(tp[k] * v[k] for k in range(t - 13, t + 1) if tp[k] > tp[k - 1])
    neg = sum(tp[k] * v[k] for k in range(t - 13, t + 1) if tp[k] < tp[k - 1])
    mfm = np.where(h > lo, ((c - lo) - (h - c)) / np.where(h > lo, h - lo, 1), 0.0)
    e20 = ema_series(c, 20)[-1]
    nvi = 1000.0 * np.prod([c[k] / c[k - 1] for k in range(1, t + 1) if v[k] < v[k - 1]])
    ind = {
        "sma_10": c[-10:].mean(),
        "sma_20": sma20,
        "sma_50": c[-50:].mean(),
        "ema_10": ema_series(c, 10)[-1],
        "ema_20": e20,
        "ema_50": ema_series(c, 50)[-1],
        "macd": macd[-1],
        "macd_signal": sig,
        "macd_histogram": macd[-1] - sig,
        "adx": adx,
        "plus_di": pdi[-1],
        "minus_di": mdi[-1],
        "rsi_14": rsi(14),
        "rsi_28": rsi(28),
        "stochastic_k": stoch_k(t),
        "stochastic_d": (stoch_k(t) + stoch_k(t - 1) + stoch_k(t - 2)) / 3,
        "williams_r": -100 * (hh - c[t]) / (hh - ll) if hh > ll else -50.0,
        "cci": (tp[t] - tp[-20:].mean()) / (0.015 * md) if md > 0 else 0.0,
        "momentum_10": c[t] - c[t - 10],
        "roc": 100 * (c[t] / c[t - 12] - 1),
        "mfi": 100 - 100 / (1 + pos / neg) if neg > 0 else (100.0 if pos > 0 else 50.0),
        "bollinger_upper": sma20 + 2 * sd,
        "bollinger_middle": sma20,
        "bollinger_lower": sma20 - 2 * sd,
        "bollinger_width": 4 * sd / sma20,
        "bollinger_pct": (c[t] - (sma20 - 2 * sd)) / (4 * sd) if sd > 0 else 0.5,
        "atr_14": atr[-1],
        "keltner_upper": e20 + 2 * atr[-1],
        "keltner_lower": e20 - 2 * atr[-1],
        "obv": float(np.sum(np.sign(ch) * v[1:])),
        "vwap": nt[-50:].sum() / v[-50:].sum(),
        "ad_line": float(np.sum(mfm * v)),
        "cmf": float(np.sum(mfm[-20:] * v[-20:]) / v[-20:].sum()),
        "vpt": float(np.sum(v[1:] * (c[1:] / c[:-1] - 1))),
        "nvi": nvi,
    }
    return cand, ind


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_candle_and_indicator_features_match_definitions(seed: int) -> None:
    cs = make_candles(140, seed)
    cf = CandleFeatures()
    ind = IndicatorState()
    for i, c in enumerate(cs):
        cf.on_candle(c)
        ind.on_candle(c)
        n = i + 1
        if n < 50:
            assert not any(ind.valid)
        if n < 50 or n % 9:
            continue
        want_c, want_i = reference(cs[:n])
        for name, got, ok in zip(CANDLE_NAMES, cf.values, cf.valid, strict=False):
            assert ok or got == want_c[name] == 0.0 or name in ("volume_ma_ratio",), name
            assert got == pytest.approx(want_c[name], rel=1e-9, abs=1e-9), (n, name)
        for name, got, ok in zip(IND_NAMES, ind.values, ind.valid, strict=False):
            assert ok, (n, name)
            assert got == pytest.approx(want_i[name], rel=1e-9, abs=1e-9), (n, name)


def test_zero_volume_window_flags_vwap_and_cmf() -> None:
    cs = [Candle(i, 100.0, 100.0, 100.0, 100.0, 0.0, 0.0, 0) for i in range(60)]
    ind = IndicatorState()
    cf = CandleFeatures()
    for c in cs:
        ind.on_candle(c)
        cf.on_candle(c)
    got = dict(zip(IND_NAMES, zip(ind.values, ind.valid, strict=False), strict=False))
    assert got["vwap"] == (0.0, False)
    assert got["cmf"] == (0.0, False)
    assert got["rsi_14"] == (50.0, True)
    assert got["bollinger_pct"] == (0.5, True)
    assert got["nvi"] == (1000.0, True)
    cgot = dict(zip(CANDLE_NAMES, zip(cf.values, cf.valid, strict=False), strict=False))
    assert cgot["doji_strength"] == (0.0, False)
    assert cgot["volume_weighted_price"] == (0.0, False)
    assert cgot["volume_ma_ratio"] == (1.0, False)


def test_patterns_hand_worked() -> None:
    cf = CandleFeatures()
    cf.on_candle(Candle(0, 101.0, 101.5, 99.5, 100.0, 1.0, 100.0, 1))  # bearish body 1
    cf.on_candle(Candle(1, 99.8, 102.5, 99.8, 102.0, 2.0, 200.0, 1))  # bullish body 2.2
    got = dict(zip(CANDLE_NAMES, cf.values, strict=False))
    assert got["engulfing_strength"] == pytest.approx(1 - 1.0 / 2.2)
    assert got["gap_size"] == pytest.approx(-0.2 / 100.0 * 1e4)
    assert got["doji_strength"] == pytest.approx(1 - 2.2 / 2.7)
    cf.on_candle(Candle(2, 100.0, 100.1, 97.0, 99.9, 1.0, 100.0, 1))  # hammer: long lower tail
    got = dict(zip(CANDLE_NAMES, cf.values, strict=False))
    assert got["hammer_strength"] == pytest.approx(2.9 / 3.1)
