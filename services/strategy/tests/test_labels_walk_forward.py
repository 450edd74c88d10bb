"""Labelling and walk-forward validation, and the no-look-ahead guarantees:

- a label at t uses only the mid-price at its ``label_end`` (the first vector >= t + horizon);
- no fold trains on a row whose features or label come from its validation window or later:
  changing every row's market data from the validation start on changes nothing in that
  fold's training set (features, labels, required features);
- the features the strategy sees at t never change when the market after t changes.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from depthflow.features import FeatureState
from depthflow.features.names import INDEX, N_FEATURES
from depthflow.features.synthetic import generate
from depthflow.strategy.labels import (
    NO_LABEL_END,
    classification_metrics,
    label_future_mid,
    walk_forward,
)
from depthflow.strategy.synthetic import vector_series
from depthflow.strategy.train import Dataset, TrainParams, fold_sets, prepare


def dataset(vectors: list[dict]) -> Dataset:
    vectors = sorted(vectors, key=lambda v: (v["exchange_ts_us"], v["symbol"]))
    return Dataset(
        np.asarray([f"{v['exchange']}:{v['symbol']}" for v in vectors], dtype=object),
        np.asarray([v["book_seq"] for v in vectors], dtype=np.int64),
        np.asarray([v["exchange_ts_us"] for v in vectors], dtype=np.int64),
        np.asarray([v["values"] for v in vectors]),
        np.asarray([v["normalized"] for v in vectors]),
        np.asarray([v["valid"] for v in vectors]),
        np.asarray([v["scaler_version"] for v in vectors], dtype=object),
    )


def test_labels_from_future_mid() -> None:
    keys = np.array(["b:X"] * 5, dtype=object)
    ts = np.array([0, 1, 2, 3, 4], dtype=np.int64) * 1_000_000
    mid = np.array([100.0, 100.0, 101.0, 99.0, 99.0])
    lab = label_future_mid(keys, ts, mid, horizon_us=2_000_000, threshold_bps=10)
    assert lab.y.tolist() == [1, -1, -1, 0, 0]
    assert lab.labelled.tolist() == [True, True, True, False, False]
    assert lab.label_end_us.tolist()[:3] == [2_000_000, 3_000_000, 4_000_000]
    assert lab.label_end_us[3] == NO_LABEL_END


def test_labels_stay_within_their_symbol() -> None:
    keys = np.array(["b:X", "b:Y", "b:X", "b:Y"], dtype=object)
    ts = np.array([0, 0, 5, 5], dtype=np.int64)
    mid = np.array([100.0, 50.0, 110.0, 40.0])
    lab = label_future_mid(keys, ts, mid, horizon_us=5, threshold_bps=1)
    assert lab.y[:2].tolist() == [1, -1]


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(5, 200),
    horizon=st.integers(1, 50),
    seed=st.integers(0, 10_000),
    cut=st.integers(0, 199),
)
def test_a_label_never_reads_past_its_label_end(n: int, horizon: int, seed: int, cut: int) -> None:
    rng = np.random.default_rng(seed)
    keys = rng.choice(np.array(["b:X", "b:Y"], dtype=object), n)
    ts = np.sort(rng.integers(0, 300, n)).astype(np.int64)
    mid = 100 + rng.normal(0, 1, n)
    a = label_future_mid(keys, ts, mid, horizon, 5.0)
    changed = mid.copy()
    t_cut = ts[min(cut, n - 1)]
    changed[ts > t_cut] += rng.normal(0, 5, int((ts > t_cut).sum()))
    b = label_future_mid(keys, ts, changed, horizon, 5.0)
    known = a.label_end_us <= t_cut
    assert np.array_equal(a.y[known], b.y[known])


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 300),
    folds=st.integers(1, 6),
    horizon=st.integers(0, 40),
    seed=st.integers(0, 10_000),
)
def test_no_fold_trains_on_its_validation_window_or_later(
    n: int, folds: int, horizon: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    keys = rng.choice(np.array(["b:X", "b:Y", "y:Z"], dtype=object), n)
    ts = np.sort(rng.integers(0, 1000, n)).astype(np.int64)
    lab = label_future_mid(keys, ts, 100 + rng.normal(0, 1, n), horizon, 1.0)
    for f in walk_forward(ts, lab.label_end_us, folds):
        assert len(f.train) and len(f.val)
        assert ts[f.train].max() < f.val_start_us
        assert lab.label_end_us[f.train].max() < f.val_start_us
        assert ts[f.val].min() >= f.val_start_us and ts[f.val].max() < f.val_end_us
        assert not set(f.train.tolist()) & set(f.val.tolist())


def test_walk_forward_expands_and_covers_in_order() -> None:
    ts = np.arange(100, dtype=np.int64)
    folds = walk_forward(ts, ts + 3, 4)
    assert [f.val_start_us for f in folds] == [20, 40, 60, 80]
    assert [len(f.train) for f in folds] == [17, 37, 57, 77]  # purged: label_end < start
    assert folds[-1].val.tolist() == list(range(80, 100))


def test_changing_data_after_a_validation_start_changes_nothing_the_fold_trains_on() -> None:
    vectors = vector_series(600, symbol="BTCUSDT", seed=3) + vector_series(
        600, symbol="ETHUSDT", seed=4, mid0=3000.0
    )
    for v in vectors[::7]:  # some rows have a feature in warm-up
        v["valid"] = list(v["valid"])
        v["valid"][INDEX["rsi_14"]] = False
    params = TrainParams(
        model="sklearn",
        symbols=("BTCUSDT", "ETHUSDT"),
        since_us=0,
        until_us=2**62,
        horizon_s=2.0,
        threshold_bps=1.0,
        folds=4,
    )
    base = prepare(dataset(vectors), params.horizon_s, params.threshold_bps)
    base_sets = fold_sets(params, base)
    assert len(base_sets) == 4
    rng = np.random.default_rng(0)
    for fs in base_sets:
        start = fs.fold.val_start_us
        changed = []
        for v in vectors:
            v = dict(v)
            if v["exchange_ts_us"] >= start:
                noise = rng.normal(0, 1, N_FEATURES)
                v["values"] = list(np.asarray(v["values"]) * (1 + 0.01 * noise))
                v["normalized"] = v["values"]
                v["valid"] = list(rng.random(N_FEATURES) > 0.5)
                v["valid"][INDEX["mid_price"]] = True
            changed.append(v)
        other = prepare(dataset(changed), params.horizon_s, params.threshold_bps)
        twin = next(o for o in fold_sets(params, other) if o.fold.index == fs.fold.index)
        assert twin.fold.val_start_us == start
        assert np.array_equal(base.data.book_seq[fs.train], other.data.book_seq[twin.train])
        assert np.array_equal(base.x[fs.train], other.x[twin.train])
        assert np.array_equal(base.labels.y[fs.train], other.labels.y[twin.train])
        assert np.array_equal(fs.required, twin.required)


def test_features_at_t_never_change_when_later_market_data_changes() -> None:
    """The features service's streaming engine (what the strategy sees): the vector at t is
    the same whatever happens after t."""
    series = generate(400, seed=5, mean_gap_us=500_000)
    cut = 250
    books_seen = 0
    cut_event = 0
    for i, e in enumerate(series.events):
        if e[0] == "b":
            books_seen += 1
            if books_seen == cut:
                cut_event = i
                break
    other = generate(400, seed=99, mean_gap_us=500_000)
    t_cut = series.events[cut_event][3]
    later = [e for e in other.events if (e[4] if e[0] == "t" else e[3]) > t_cut + 1]
    a = _replay(series.events)
    b = _replay(series.events[: cut_event + 1] + later)
    assert len(a) >= cut and len(b) >= cut
    for i in range(cut):
        assert np.array_equal(a[i][0], b[i][0]) and np.array_equal(a[i][1], b[i][1])


def _replay(events: list[tuple]) -> list[tuple[np.ndarray, np.ndarray]]:
    state = FeatureState()
    out = []
    for e in events:
        if e[0] == "t":
            state.on_trade(e[1], e[2], e[3], e[4])
        else:
            v, ok = state.on_book(e[1], e[2], e[3], e[4], e[5])
            out.append((np.array(v), np.array(ok)))
    return out


def test_classification_metrics() -> None:
    m = classification_metrics(np.array([1, 1, 0, -1]), np.array([1, 0, 0, 1]))
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["coverage"] == pytest.approx(0.5)
    assert m["directional_precision"] == pytest.approx(0.5)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 0) / 3)
