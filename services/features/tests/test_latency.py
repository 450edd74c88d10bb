"""UpdateLatency: bulk observations give the same Prometheus histogram as one observe() per
value, and exact recent percentiles."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from depthflow.features.latency import UpdateLatency

BUCKETS = (5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 1e-3)


def _samples(registry: CollectorRegistry, name: str) -> dict[str, float]:
    out = {}
    for metric in registry.collect():
        for s in metric.samples:
            if s.name.startswith(name):
                out[f"{s.name}{sorted(s.labels.items())}"] = s.value
    return out


def test_bulk_histogram_equals_one_observe_per_value() -> None:
    rng = np.random.default_rng(3)
    ns = [int(x) for x in rng.lognormal(np.log(30_000), 0.8, 5000)] + [5_000, 10_000, 10**9]
    bulk_reg, ref_reg = CollectorRegistry(), CollectorRegistry()
    bulk = UpdateLatency("x_seconds", "doc", BUCKETS, bulk_reg, window=1000)
    ref = Histogram("x_seconds", "doc", buckets=BUCKETS, registry=ref_reg)
    for i in range(0, len(ns), 700):
        bulk.observe_ns(ns[i : i + 700])
    for v in ns:
        ref.observe(v / 1e9)
    got, want = _samples(bulk_reg, "x_seconds"), _samples(ref_reg, "x_seconds")
    assert got.keys() >= {k for k in want if "_created" not in k}
    for k, v in want.items():
        if "_created" in k:
            continue
        assert abs(got[k] - v) <= 1e-9 * max(1.0, abs(v)), k
    assert b"x_seconds_bucket" in generate_latest(bulk_reg)
    # the window holds the last 1000 values
    p50, p99 = bulk.percentiles_us(50, 99)
    recent = np.asarray(ns[-1000:], np.float64) / 1e3
    assert p50 == round(float(np.percentile(recent, 50)), 2)
    assert p99 == round(float(np.percentile(recent, 99)), 2)


def test_empty_window_reports_zeros() -> None:
    lat = UpdateLatency("y_seconds", "doc", BUCKETS, None)
    lat.observe_ns([])
    assert lat.percentiles_us(50, 99) == [0.0, 0.0]
