"""The batch mode's packing and walk on books the synthetic generator rarely makes: ragged
sides (fewer than 20 levels) and empty sides, mixed with full books — the general packing
path, the marks a one-sided book leaves — byte-identical to the stream mode."""

from __future__ import annotations

import numpy as np
import pytest

from depthflow.backtest.engine import SymbolState, _mark, _marks
from depthflow.backtest.events import SymbolStreams, finalize
from depthflow.backtest.synthetic import synthetic_streams
from depthflow.backtest.vectors import (
    _pack,
    batch_symbol_vectors,
    stream_symbol_vectors,
)
from depthflow.executor.fills import FillSimulator
from depthflow.executor.positions import Position

from .test_features_modes import STRATEGIES, assert_same_bytes, run_mode


def ragged() -> list[SymbolStreams]:
    """One symbol with books cut to 0..20 levels per side (a fifth of them), one full."""
    s = synthetic_streams("BTCUSDT", 1500, seed=31)
    rng = np.random.default_rng(31)
    for b in s.books:
        if rng.random() < 0.2:
            b.bids = list(b.bids[: rng.integers(0, 21)])
            b.asks = list(b.asks[: rng.integers(0, 21)])
    return [
        finalize(SymbolStreams(s.key, s.books, s.trades, [])),
        synthetic_streams("ETHUSDT", 900),
    ]


@pytest.mark.parametrize("strategy", ["imbalance", "every-book"])
def test_ragged_books_give_the_same_bytes(strategy: str) -> None:
    a, ra, _ = run_mode(ragged, STRATEGIES[strategy], "stream")
    b, _, eb = run_mode(ragged, STRATEGIES[strategy], "batch")
    assert_same_bytes(a, b)
    assert eb.streamed_symbols == []
    assert ra.counters["vectors"] > 2000


def test_ragged_vectors_bit_for_bit() -> None:
    st = ragged()[0]
    arrays, ok = _pack(st.books)
    assert ok.all() and not (arrays.n_bid == 20).all()  # the general packing path
    want = stream_symbol_vectors(st, 0)
    got = batch_symbol_vectors(st, 0)
    assert not got.streamed
    assert got.book_code == want.book_code
    assert np.array_equal(got.values.view(np.int64), want.values.view(np.int64))
    assert np.array_equal(got.valid, want.valid)
    assert np.array_equal(got.ts, want.ts)
    assert np.array_equal(got.top, want.top, equal_nan=True)


def test_marks_are_the_sequential_marks() -> None:
    st = ragged()[0]
    st.books[0].bids = []  # a first book without bids: the bid stays 0.0, no mid yet
    sv = batch_symbol_vectors(st, 0)
    s = SymbolState(st.key, "binance", "BTCUSDT", None, FillSimulator(), Position("BTCUSDT"))
    for b, code, mark in zip(st.books, sv.book_code, _marks(sv), strict=True):
        if code >= -1:  # accepted
            _mark(s, b.bids, b.asks)
        assert mark == (s.bid, s.ask, s.mid)
