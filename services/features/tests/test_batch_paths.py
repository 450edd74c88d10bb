"""``compute_batch`` against ``FeatureState`` on inputs that take its less common paths:
prices off any tick grid and a price range too wide for 16-bit price numbers (the float sort
instead of the radix one), ragged and one-sided books, a side whose quantities are all
equal (no level reaches the mean: streaming's "no cluster" values), and blocks of books so
small that level runs and the level diffs cross many block boundaries."""

from __future__ import annotations

import numpy as np
import pytest

from depthflow.features import FeatureState, batch
from depthflow.features.batch import BookArrays, TradeArrays, _by_price, compute_batch
from depthflow.features.names import INDEX
from depthflow.features.synthetic import generate

from .conftest import replay


def batch_of(events: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
    books = [e for e in events if e[0] == "b"]
    trades = [e for e in events if e[0] == "t"]
    arrays = BookArrays.from_books([b[3] for b in books], [(b[1], b[2]) for b in books])
    t = TradeArrays(
        np.array([x[4] for x in trades], np.int64),
        np.array([x[1] for x in trades], np.float64),
        np.array([x[2] for x in trades], np.float64),
        np.array([x[3] for x in trades], bool),
    )
    return compute_batch(arrays, t)


def assert_bit_equal(events: list[tuple]) -> None:
    sv, sok = replay(FeatureState(), events)
    bv, bok = batch_of(events)
    assert np.array_equal(sok, bok)
    assert np.array_equal(sv.view(np.int64), bv.view(np.int64))


def reprice(events: list[tuple], f: object) -> list[tuple]:
    """Every book's prices through ``f(i, price)`` (i: the book's position)."""
    out = []
    i = 0
    for e in events:
        if e[0] == "b":
            bids = [(f(i, p), q) for p, q in e[1]]  # type: ignore[operator]
            asks = [(f(i, p), q) for p, q in e[2]]  # type: ignore[operator]
            out.append(("b", bids, asks, *e[3:]))
            i += 1
        else:
            out.append(e)
    return out


def test_off_grid_prices_take_the_float_sort() -> None:
    """Every other book shifted by 0.4 tick: two different prices round to one grid number."""
    events = reprice(generate(1500, seed=3).events, lambda i, p: p + 0.04 * (i % 2))
    assert_bit_equal(events)


def test_a_range_too_wide_for_16_bits() -> None:
    events = reprice(generate(1500, seed=4).events, lambda i, p: p * (10.0 if i >= 700 else 1.0))
    assert_bit_equal(events)


def ragged(n: int, seed: int) -> list[tuple]:
    """Books cut to random depths per side (0 to 20 levels), one-sided every 7th."""
    rng = np.random.default_rng(seed)
    cut = rng.integers(0, 21, size=(n, 2))
    events = []
    i = 0
    for e in generate(n, seed=seed, one_sided_every=7).events:
        if e[0] == "b":
            events.append(("b", e[1][: cut[i, 0]], e[2][: cut[i, 1]], *e[3:]))
            i += 1
        else:
            events.append(e)
    return events


def test_ragged_and_one_sided_books() -> None:
    assert_bit_equal(ragged(2000, 5))


@pytest.mark.parametrize("rows", [1, 2, 7, 64])
def test_blocks_of_books_change_nothing(monkeypatch: pytest.MonkeyPatch, rows: int) -> None:
    """The per-book pass runs ``BLOCK_ROWS`` books at a time, each block starting one book
    early and carrying the level ages: any block size gives the streaming numbers."""
    monkeypatch.setattr(batch, "BLOCK_ROWS", rows)
    assert_bit_equal(generate(300, seed=8).events)
    assert_bit_equal(ragged(300, 9))


def test_equal_quantities_leave_no_cluster_as_streaming_does() -> None:
    t0 = 1_700_000_000_000_000
    events: list[tuple] = []
    for i in range(50):
        bids = [(100.0 - 0.1 * k, 0.1) for k in range(3)]  # mean 0.1000...02 > every level
        asks = [(100.5 + 0.1 * k, 1.0 + k) for k in range(4)]
        events.append(("b", bids, asks, t0 + i * 1_000_000, t0 + i * 1_000_000, i + 1))
    sv, _ = replay(FeatureState(), events)
    assert sv[0, INDEX["num_bid_clusters"]] == 0.0
    assert sv[0, INDEX["largest_bid_cluster_volume"]] == -1.0  # streaming's "none" value
    assert_bit_equal(events)


@pytest.mark.parametrize("shift", [0.0, 0.04])
def test_by_price_groups_like_the_stable_float_sort(shift: float) -> None:
    series = generate(800, seed=6)
    p = series.books.bid_p.copy()
    p[1::2] += shift
    mask = np.ones(p.shape, bool)
    order, ps = _by_price(p, mask, p.ravel())
    want = np.argsort(p.ravel(), kind="stable")
    # the same groups of equal prices, each in row order
    assert np.array_equal(ps, p.ravel()[order])
    assert np.all(np.diff(order)[ps[1:] == ps[:-1]] > 0)
    groups = {}
    for k in order.tolist():
        groups.setdefault(p.ravel()[k], []).append(k)
    want_groups = {}
    for k in want.tolist():
        want_groups.setdefault(p.ravel()[k], []).append(k)
    assert groups == want_groups
    assert int(np.count_nonzero(ps[1:] != ps[:-1])) == len(groups) - 1  # each group once
