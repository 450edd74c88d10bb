"""Feature names (seed order), describe text, and 1-minute candle building."""

from __future__ import annotations

import numpy as np

from depthflow.features import FEATURE_SET_V1, FeatureState
from depthflow.features.candles import Candle, CandleBuilder
from depthflow.features.describe import describe, describe_names
from depthflow.features.names import CHANNELS, INDEX, SPECS

SEED_GROUPS = [  # the seed's listing, group by group
    "bid_ask_spread_abs bid_ask_spread_rel mid_price micro_price vwap_bid_5 vwap_ask_5 "
    "vwap_bid_10 vwap_ask_10 depth_bid_5 depth_ask_5 depth_bid_10 depth_ask_10 "
    "total_bid_volume total_ask_volume book_depth_ratio",
    "imbalance_5 imbalance_10 imbalance_total price_pressure volume_delta_5 "
    "order_flow_imbalance bid_intensity ask_intensity buy_sell_ratio smart_money_index",
    "largest_bid_cluster_price largest_bid_cluster_volume largest_ask_cluster_price "
    "largest_ask_cluster_volume num_bid_clusters num_ask_clusters support_level_1 "
    "resistance_level_1 distance_to_support distance_to_resistance",
    "liquidity_bid_5 liquidity_ask_5 liquidity_asymmetry effective_spread kyle_lambda "
    "amihud_illiquidity roll_spread depth_imbalance_ratio",
    "level_ttl_avg level_ttl_std orderbook_volatility update_frequency quote_intensity "
    "trade_arrival_rate spread_volatility",
    "open high low close volume typical_price",
    "returns log_returns high_low_range close_open_diff upper_shadow lower_shadow body_size",
    "realized_volatility parkinson_volatility garman_klass_volatility",
    "volume_ma_ratio volume_change_rate price_volume_trend volume_weighted_price money_flow",
    "doji_strength hammer_strength engulfing_strength gap_size",
    "sma_10 sma_20 sma_50 ema_10 ema_20 ema_50 macd macd_signal macd_histogram adx plus_di "
    "minus_di",
    "rsi_14 rsi_28 stochastic_k stochastic_d williams_r cci momentum_10 roc mfi",
    "bollinger_upper bollinger_middle bollinger_lower bollinger_width bollinger_pct atr_14 "
    "keltner_upper keltner_lower",
    "obv vwap ad_line cmf vpt nvi",
]


def test_names_are_the_seeds_in_order() -> None:
    want = [n for g in SEED_GROUPS for n in g.split()]
    assert list(FEATURE_SET_V1) == want
    assert len(set(want)) == 110
    assert [len(FEATURE_SET_V1[s]) for s in CHANNELS.values()] == [50, 25, 35]
    assert all(SPECS[INDEX[n]].name == n for n in want)


def test_describe_one_line_each() -> None:
    assert describe_names().splitlines() == list(FEATURE_SET_V1)
    lines = describe().splitlines()
    assert len(lines) == 111
    for name, line in zip(FEATURE_SET_V1, lines[1:], strict=True):
        assert f" {name} [" in line and "default" in line and "unit" in line


M = 60_000_000
T0 = M * 28_333_334


def test_candles_from_trades_mid_minutes_and_gaps() -> None:
    b = CandleBuilder()
    out: list[Candle] = []
    b.on_book(None, T0 // M, out)  # one-sided book before any price: clock not started
    assert b.minute is None
    for p, q, dt in ((100.0, 1.0, 1), (102.0, 2.0, 2), (99.0, 0.5, 3), (101.0, 1.0, 4)):
        b.on_trade(p, q, (T0 + dt) // M, out)
    b.on_book(100.5, T0 // M, out)  # a mid in a minute with trades: ignored
    b.on_book(100.4, (T0 + M) // M, out)  # closes minute 0
    assert out == [Candle(T0 // M, 100.0, 102.0, 99.0, 101.0, 4.5, 100 + 204 + 49.5 + 101, 4)]
    b.on_book(100.9, (T0 + M + 5) // M, out)
    b.on_book(100.2, (T0 + M + 9) // M, out)
    b.on_trade(100.0, 1.0, (T0 + 4 * M) // M, out)  # closes minute 1, fills 2 and 3
    assert out[1:] == [
        Candle(T0 // M + 1, 100.4, 100.9, 100.2, 100.2, 0.0, 0.0, 0),
        Candle(T0 // M + 2, 100.2, 100.2, 100.2, 100.2, 0.0, 0.0, 0),
        Candle(T0 // M + 3, 100.2, 100.2, 100.2, 100.2, 0.0, 0.0, 0),
    ]
    n = len(out)
    b.on_trade(100.0, 1.0, (T0 + 3 * M) // M, out)  # late: not counted
    assert len(out) == n and b.late_events == 1
    assert CandleBuilder.from_state(b.to_state()).to_state() == b.to_state()


def test_engine_candle_channel_uses_last_closed_minute() -> None:
    f = FeatureState()
    f.on_trade(100.0, 2.0, True, T0 + 10)
    v, ok = f.on_book([(99.0, 1.0)], [(101.0, 1.0)], T0 + 20, T0 + 20, 1)
    assert not ok[CHANNELS["candle"]].any()
    v, ok = f.on_book([(99.0, 1.0)], [(101.0, 1.0)], T0 + M, T0 + M, 2)
    c = dict(zip(FEATURE_SET_V1, v, strict=True))
    assert (c["open"], c["close"], c["volume"]) == (100.0, 100.0, 2.0)
    assert np.isfinite(v).all()
