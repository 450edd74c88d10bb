"""The imbalance strategy: the seed's thresholds, the cluster rule, hysteresis, cooldown,
refusals, and decisions that never depend on later vectors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from depthflow.common.schemas import FeatureVector
from depthflow.features.names import INDEX, N_FEATURES
from depthflow.strategy.config import RuntimeConfig, StrategySettings
from depthflow.strategy.imbalance import ImbalanceStrategy
from depthflow.strategy.synthetic import vector_series
from depthflow.strategy.vectors import (
    INVALID_FEATURE,
    NON_FINITE,
    WRONG_FEATURE_SET,
    WRONG_SHAPE,
    VectorInput,
)

T0 = 1_700_000_000_000_000


def vec(
    share: float,
    ts_s: float = 0.0,
    *,
    bid_cluster: float = 20_000.0,
    ask_cluster: float = 20_000.0,
    seq: int = 1,
    symbol: str = "BTCUSDT",
) -> VectorInput:
    """A vector with bid share ``share`` and cluster notionals (quote) as given."""
    x = np.zeros(N_FEATURES)
    mid = 100.0
    x[INDEX["mid_price"]] = mid
    x[INDEX["imbalance_5"]] = 2 * share - 1
    x[INDEX["largest_bid_cluster_price"]] = mid
    x[INDEX["largest_bid_cluster_volume"]] = bid_cluster / mid
    x[INDEX["largest_ask_cluster_price"]] = mid
    x[INDEX["largest_ask_cluster_volume"]] = ask_cluster / mid
    return VectorInput(
        "binance", symbol, "v1", seq, T0 + int(ts_s * 1e6), x, x.copy(), np.ones(N_FEATURES, bool)
    )


def sides(strategy: ImbalanceStrategy, vectors: list[VectorInput]) -> list[str | None]:
    return [d.side if d else None for d in strategy.decide(vectors)]


def test_seed_settings_are_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = StrategySettings().runtime()
    assert (cfg.imbalance_buy_threshold, cfg.imbalance_sell_threshold, cfg.min_cluster_volume) == (
        0.75,
        0.25,
        10_000,
    )
    monkeypatch.setenv("IMBALANCE_BUY_THRESHOLD", "0.8")
    monkeypatch.setenv("MIN_CLUSTER_VOLUME", "5000")
    cfg = StrategySettings().runtime()
    assert cfg.imbalance_buy_threshold == 0.8 and cfg.min_cluster_volume == 5000


def test_thresholds_and_cluster_rule() -> None:
    s = ImbalanceStrategy(RuntimeConfig(cooldown_s=0))
    assert sides(s, [vec(0.74, 0)]) == [None]  # below the buy threshold: nothing new
    assert sides(s, [vec(0.80, 1, bid_cluster=9_999)]) == [None]  # cluster too small
    assert sides(s, [vec(0.80, 2, bid_cluster=10_000)]) == ["buy"]
    d = s.decide([vec(0.30, 3)])[0]
    assert d is not None and d.side == "hold"  # back to neutral
    assert sides(s, [vec(0.20, 4, ask_cluster=5_000)]) == [None]
    d = s.decide([vec(0.20, 5)])[0]
    assert d is not None and d.side == "sell"
    assert 0 <= d.strength <= 1 and 0 <= d.confidence <= 1
    assert d.features["imbalance_5"] == pytest.approx(-0.6)


def test_hysteresis_does_not_flap() -> None:
    s = ImbalanceStrategy(RuntimeConfig(cooldown_s=0, hysteresis=0.05))
    shares = [0.76, 0.74, 0.755, 0.71, 0.76, 0.69]
    out = sides(s, [vec(sh, i) for i, sh in enumerate(shares)])
    # buy at 0.76; 0.74/0.755/0.71 stay above 0.70 (buy - hysteresis); 0.69 exits
    assert out == ["buy", None, None, None, None, "hold"]


def test_cooldown_in_exchange_time() -> None:
    s = ImbalanceStrategy(RuntimeConfig(cooldown_s=5, hysteresis=0.0))
    out = sides(s, [vec(0.8, 0), vec(0.5, 1), vec(0.5, 4.9), vec(0.5, 5.0), vec(0.8, 6)])
    assert out == ["buy", None, None, "hold", None]  # the next buy waits for 10 s
    assert sides(s, [vec(0.8, 10.0)]) == ["buy"]


def test_symbols_have_their_own_state() -> None:
    s = ImbalanceStrategy(RuntimeConfig(cooldown_s=60))
    out = sides(s, [vec(0.9, 0, symbol="BTCUSDT"), vec(0.9, 1, symbol="ETHUSDT")])
    assert out == ["buy", "buy"]


def test_refusals() -> None:
    s = ImbalanceStrategy(RuntimeConfig())
    good = vec(0.9)
    assert s.check(good) is None
    wrong = VectorInput("binance", "BTCUSDT", "v2", 1, T0, good.values, good.normalized, good.valid)
    assert s.check(wrong).reason == WRONG_FEATURE_SET  # type: ignore[union-attr]
    short = VectorInput(
        "binance", "BTCUSDT", "v1", 1, T0, good.values[:50], good.normalized[:50], good.valid[:50]
    )
    assert s.check(short).reason == WRONG_SHAPE  # type: ignore[union-attr]
    bad = good.values.copy()
    bad[INDEX["imbalance_5"]] = np.nan
    nan = VectorInput("binance", "BTCUSDT", "v1", 1, T0, bad, good.normalized, good.valid)
    assert s.check(nan).reason == NON_FINITE  # type: ignore[union-attr]
    mask = good.valid.copy()
    mask[INDEX["largest_bid_cluster_volume"]] = False
    invalid = VectorInput("binance", "BTCUSDT", "v1", 1, T0, good.values, good.normalized, mask)
    refusal = s.check(invalid)
    assert refusal is not None and refusal.reason == INVALID_FEATURE
    assert "largest_bid_cluster_volume" in refusal.detail
    # a feature the rule does not use may be invalid (indicator warm-up)
    mask = good.valid.copy()
    mask[INDEX["rsi_14"]] = False
    ok = VectorInput("binance", "BTCUSDT", "v1", 1, T0, good.values, good.normalized, mask)
    assert s.check(ok) is None


def test_from_message_roundtrip() -> None:
    raw = vector_series(3)[1]
    v = VectorInput.from_message(FeatureVector.model_validate(raw))
    assert v.values.shape == (N_FEATURES,) and v.book_seq == raw["book_seq"]


@settings(max_examples=40, deadline=None)
@given(
    shares=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=40),
    cut=st.integers(0, 39),
    replacement=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40),
)
def test_decisions_never_depend_on_later_vectors(
    shares: list[float], cut: int, replacement: list[float]
) -> None:
    """Changing every vector after t changes no decision at or before t."""
    cut = min(cut, len(shares) - 1)
    first = [vec(sh, i * 0.7) for i, sh in enumerate(shares)]
    changed = first[: cut + 1] + [vec(sh, (cut + 1 + i) * 0.7) for i, sh in enumerate(replacement)]
    cfg = RuntimeConfig(cooldown_s=1.0)
    a = ImbalanceStrategy(cfg).decide(first)
    b = ImbalanceStrategy(cfg).decide(changed)
    assert a[: cut + 1] == b[: cut + 1]
