"""Synthetic feature-vector series for tests and benchmarks (numpy, seeded).

The order-book imbalance follows an AR(1) process and drives the next mid-price move a
little, so a model has something real to learn; the other features are noise around
plausible levels. ``normalized`` equals ``values`` (no scaler, ``scaler_version`` "").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from depthflow.features.names import FEATURE_SET_VERSION, INDEX, N_FEATURES, defaults


def vector_series(
    n: int,
    *,
    exchange: str = "binance",
    symbol: str = "BTCUSDT",
    seed: int = 0,
    start_us: int = 1_700_000_000_000_000,
    step_us: int = 100_000,
    start_seq: int = 1,
    mid0: float = 100_000.0,
    drift_bps: float = 3.0,
    noise_bps: float = 1.0,
) -> list[dict[str, Any]]:
    """``n`` ``FeatureVector``-shaped dicts in time order."""
    rng = np.random.default_rng(seed)
    imb = np.empty(n)
    level = 0.0
    for i in range(n):
        level = 0.9 * level + rng.normal(0.0, 0.35)
        imb[i] = np.tanh(level)
    out: list[dict[str, Any]] = []
    mid = mid0
    base = defaults()
    for i in range(n):
        x = base.copy()
        x += rng.normal(0.0, 1.0, N_FEATURES) * 0.01
        spread = 0.1
        x[INDEX["bid_ask_spread_abs"]] = spread
        x[INDEX["bid_ask_spread_rel"]] = spread / mid * 1e4
        x[INDEX["mid_price"]] = mid
        x[INDEX["micro_price"]] = mid + imb[i] * spread / 2
        for name in ("imbalance_5", "imbalance_10", "imbalance_total"):
            x[INDEX[name]] = float(np.clip(imb[i] + rng.normal(0, 0.02), -1, 1))
        x[INDEX["largest_bid_cluster_price"]] = mid - 2.0
        x[INDEX["largest_ask_cluster_price"]] = mid + 2.0
        x[INDEX["largest_bid_cluster_volume"]] = 0.5 + 0.5 * (1 + imb[i])
        x[INDEX["largest_ask_cluster_volume"]] = 0.5 + 0.5 * (1 - imb[i])
        values = [float(v) for v in x]
        out.append(
            {
                "schema_version": 1,
                "exchange": exchange,
                "symbol": symbol,
                "feature_set": FEATURE_SET_VERSION,
                "values": values,
                "normalized": values,
                "valid": [True] * N_FEATURES,
                "scaler_version": "",
                "book_seq": start_seq + i,
                "exchange_ts_us": start_us + i * step_us,
                "local_ts_us": start_us + i * step_us + 500,
                "trace_id": "",
            }
        )
        mid *= 1.0 + (drift_bps * imb[i] + rng.normal(0.0, noise_bps)) * 1e-4
    return out


def vector_row(v: dict[str, Any], computed_ts_us: int | None = None) -> tuple[Any, ...]:
    """A ``features.vectors`` row for a vector dict (column order of ``VECTOR_COLUMNS``)."""
    return (
        v["exchange"],
        v["symbol"],
        v["feature_set"],
        v["book_seq"],
        v["exchange_ts_us"],
        v["local_ts_us"],
        computed_ts_us or v["local_ts_us"] + 100,
        v["values"],
        v["normalized"],
        v["valid"],
        v["scaler_version"],
    )


VECTOR_COLUMNS = (
    "exchange",
    "symbol",
    "feature_set",
    "book_seq",
    "exchange_ts_us",
    "local_ts_us",
    "computed_ts_us",
    "values",
    "normalized",
    "valid",
    "scaler_version",
)
