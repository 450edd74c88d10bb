"""LocalBook against a plain-dict model (hypothesis)."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from depthflow.collector.book import LocalBook

prices = st.integers(min_value=1, max_value=60).map(lambda i: i / 4)
qtys = st.sampled_from([0.0, 0.0, 0.5, 1.0, 2.25, 7.0])
levels = st.lists(st.tuples(prices, qtys), max_size=12)


def _model_apply(model: dict[float, float], side: list[tuple[float, float]]) -> None:
    for p, q in side:
        if q == 0:
            model.pop(p, None)
        else:
            model[p] = q


@settings(max_examples=200, deadline=None)
@given(levels, levels, st.lists(st.tuples(levels, levels), max_size=20), st.integers(0, 25))
def test_book_matches_dict_model(snap_b, snap_a, diffs, n) -> None:
    book = LocalBook()
    # a repeated price in a snapshot: the last one wins
    bids = {p: q for p, q in dict(snap_b).items() if q > 0}
    asks = {p: q for p, q in dict(snap_a).items() if q > 0}
    book.load(snap_b, snap_a)
    book.check_invariants()
    for b, a in diffs:
        book.apply(b, a)
        _model_apply(bids, b)
        _model_apply(asks, a)
        book.check_invariants()
        assert book.bids == bids and book.asks == asks
        assert book.top_bids(n) == sorted(bids.items(), reverse=True)[:n]
        assert book.top_asks(n) == sorted(asks.items())[:n]
        # the rendering md.book carries: each level's cached JSON, joined
        assert book.top_bids_json(n) == orjson.dumps(book.top_bids(n))
        assert book.top_asks_json(n) == orjson.dumps(book.top_asks(n))
        best_b = max(bids) if bids else None
        best_a = min(asks) if asks else None
        assert book.best_bid() == ((best_b, bids[best_b]) if bids else None)
        assert book.best_ask() == ((best_a, asks[best_a]) if asks else None)
        assert book.crossed() == (bool(bids and asks) and best_b >= best_a)
        if bids and asks:
            assert book.top_of_book() == (best_b, bids[best_b], best_a, asks[best_a])
        else:
            assert book.top_of_book() is None


def test_removing_an_absent_level_is_a_no_op() -> None:
    book = LocalBook()
    book.load([(1.0, 1.0)], [(2.0, 1.0)])
    book.apply([(0.5, 0.0)], [(3.0, 0.0)])
    assert book.top_of_book() == (1.0, 1.0, 2.0, 1.0)
    assert len(book) == 2
    book.clear()
    assert len(book) == 0 and book.top_of_book() is None
