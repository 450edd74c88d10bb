"""Feature set v1 throughput: streaming vectors/s on one core with per-update latency
p50/p99, and batch vectors/s, over the same generated series.

The ceiling measured in the same run is a bare loop that only walks the books' levels
(summing quantities) - the least any per-update Python code must spend.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from depthflow.features import FeatureState
from depthflow.features.batch import compute_batch
from depthflow.features.synthetic import generate


def run(n_books: int = 20_000, seed: int = 42) -> dict[str, Any]:
    """Measure streaming and batch; returns plain figures (vectors/s, µs)."""
    series = generate(n_books, seed=seed, mean_gap_us=300_000, one_sided_every=1000)
    events = series.events
    state = FeatureState()
    lat = np.empty(n_books, np.float64)
    k = 0
    clock = time.perf_counter_ns
    t0 = time.perf_counter()
    for e in events:
        if e[0] == "t":
            state.on_trade(e[1], e[2], e[3], e[4])
        else:
            s = clock()
            state.on_book(e[1], e[2], e[3], e[4], e[5])
            lat[k] = clock() - s
            k += 1
    stream_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for e in events:
        if e[0] == "b":
            x = 0.0
            for _, q in e[1]:
                x += q
            for _, q in e[2]:
                x += q
    floor_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compute_batch(series.books, series.trades)
    batch_s = time.perf_counter() - t0
    state_bytes = len(json.dumps(state.to_state()))
    stream_rate = n_books / stream_s
    return {
        "books": n_books,
        "trades": len(series.trades.ts),
        "streaming_vectors_per_s": round(stream_rate),
        "streaming_incl_trades_s": round(stream_s, 3),
        "latency_us_p50": round(float(np.percentile(lat, 50)) / 1e3, 2),
        "latency_us_p99": round(float(np.percentile(lat, 99)) / 1e3, 2),
        "latency_us_max": round(float(lat.max()) / 1e3, 2),
        "ceiling_level_walk_per_s": round(n_books / floor_s),
        "streaming_vs_ceiling": round(stream_rate / (n_books / floor_s), 4),
        "batch_vectors_per_s": round(n_books / batch_s),
        "state_json_bytes": state_bytes,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
