"""FeatureState: streaming vs batch, state round-trip, no NaN/inf, input validation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from depthflow.features import FEATURE_SET_V1, FeatureState, InvalidInputError
from depthflow.features.batch import compute_batch
from depthflow.features.names import defaults
from depthflow.features.synthetic import Series

from .conftest import replay


def test_streaming_and_batch_agree_to_1e9(long_series: Series, long_stream: tuple) -> None:
    sv, sok = long_stream
    bv, bok = compute_batch(long_series.books, long_series.trades)
    assert sv.shape == bv.shape == (len(long_series.books.ts), 110)
    bad = []
    for i, name in enumerate(FEATURE_SET_V1):
        if not np.array_equal(sok[:, i], bok[:, i]):
            bad.append(f"{name}: validity differs")
        err = np.abs(sv[:, i] - bv[:, i]) / np.maximum(1.0, np.abs(sv[:, i]))
        if err.max() > 1e-9:
            bad.append(f"{name}: max rel err {err.max():.3g}")
    assert not bad, bad
    # the series exercises every feature in both states
    never = [n for n, a in zip(FEATURE_SET_V1, sok.any(0), strict=True) if not a]
    assert not never


def test_no_nan_inf_and_invalid_carries_default(long_stream: tuple) -> None:
    v, ok = long_stream
    assert np.isfinite(v).all()
    d = np.broadcast_to(defaults(), v.shape)
    assert np.array_equal(v[~ok], d[~ok])


def test_state_round_trip_continues_identically(long_series: Series, long_stream: tuple) -> None:
    events = long_series.events
    cut = len(events) * 3 // 5
    f = FeatureState()
    replay(f, events[:cut])
    state = f.to_state()
    restored = FeatureState.from_state(json.loads(json.dumps(state)))
    assert restored.to_state() == state
    v2, ok2 = replay(restored, events[cut:])
    v, ok = long_stream
    n_tail = len(v2)
    assert np.array_equal(v[-n_tail:], v2)
    assert np.array_equal(ok[-n_tail:], ok2)


def test_from_state_refuses_other_versions() -> None:
    s = FeatureState().to_state()
    s["feature_set"] = "v2"
    with pytest.raises(ValueError, match="unsupported"):
        FeatureState.from_state(s)


T0 = 1_700_000_000_000_000


@pytest.mark.parametrize(
    ("bids", "asks"),
    [
        ([(100.0, 1.0), (100.0, 1.0)], [(101.0, 1.0)]),  # not strictly decreasing
        ([(100.0, 1.0)], [(101.0, 1.0), (100.5, 1.0)]),  # asks decreasing
        ([(101.0, 1.0)], [(101.0, 1.0)]),  # crossed
        ([(100.0, 0.0)], [(101.0, 1.0)]),  # zero qty
        ([(math.nan, 1.0)], [(101.0, 1.0)]),
        ([(100.0, math.inf)], [(101.0, 1.0)]),
        ([(100.0 - i, 1.0) for i in range(21)], [(101.0, 1.0)]),  # 21 levels
    ],
)
def test_invalid_book_raises_and_changes_nothing(bids: list, asks: list) -> None:
    f = FeatureState()
    f.on_book([(99.0, 1.0)], [(102.0, 1.0)], T0, T0, 1)
    before = f.to_state()
    with pytest.raises(InvalidInputError):
        f.on_book(bids, asks, T0 + 1, T0 + 1, 2)
    assert f.to_state() == before


def test_timestamps_going_back_raise() -> None:
    f = FeatureState()
    f.on_book([(99.0, 1.0)], [(102.0, 1.0)], T0, T0, 1)
    with pytest.raises(InvalidInputError):
        f.on_book([(99.0, 1.0)], [(102.0, 1.0)], T0 - 1, T0, 2)
    f.on_trade(100.0, 1.0, True, T0)
    with pytest.raises(InvalidInputError):
        f.on_trade(100.0, 1.0, True, T0 - 1)
    with pytest.raises(InvalidInputError):
        f.on_trade(-1.0, 1.0, True, T0 + 1)


def test_empty_book_is_all_defaults_where_undefined() -> None:
    v, ok = FeatureState().on_book([], [], T0, T0, 1)
    assert np.isfinite(v).all()
    assert np.array_equal(v[~ok], defaults()[~ok])
    assert not ok[:4].any()


_price = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False)
_qty = st.floats(min_value=1e-9, max_value=1e9, allow_nan=False, allow_infinity=False)


@st.composite
def _books(draw: st.DrawFn) -> tuple[list, list]:
    prices = sorted(set(draw(st.lists(_price, max_size=40))))
    split = draw(st.integers(0, len(prices)))
    bids = [(p, draw(_qty)) for p in reversed(prices[:split])][:20]
    asks = [(p, draw(_qty)) for p in prices[split:]][:20]
    return bids, asks


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            _books(),
            st.integers(0, 90_000_000),
            st.lists(st.tuples(_price, _qty, st.booleans()), max_size=3),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_any_valid_books_give_finite_values_and_round_trip(steps: list) -> None:
    f = FeatureState()
    ts = T0
    for (bids, asks), gap, trades in steps:
        for p, q, b in trades:
            ts += 1
            f.on_trade(p, q, b, ts)
        ts += gap
        v, ok = f.on_book(bids, asks, ts, ts, 1)
        assert np.isfinite(v).all()
        assert np.array_equal(v[~ok], defaults()[~ok])
        s = f.to_state()
        assert FeatureState.from_state(json.loads(json.dumps(s))).to_state() == s
