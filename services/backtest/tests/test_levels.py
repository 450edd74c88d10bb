"""The level reader (``levels.book_levels``, mypyc-compiled by ``make install``): the books it
packs and the engine checks it makes are exactly ``vectors._pack_general``'s, compiled or not,
on the books that break the conventions too; and the compiled module is its current source."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import depthflow.backtest
from depthflow.backtest import levels
from depthflow.backtest.events import BookEvent
from depthflow.backtest.synthetic import synthetic_streams
from depthflow.backtest.vectors import _pack, _pack_general, _pack_plain
from depthflow.common.testing.native import stale_compiled

PACKAGE = Path(depthflow.backtest.__file__).parent
NAN, INF = math.nan, math.inf


def _pure_levels() -> ModuleType:
    """``levels.py`` itself, uncompiled, whatever the build."""
    spec = importlib.util.spec_from_file_location("_levels_pure", PACKAGE / "levels.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _book(bids: Sequence[Any], asks: Sequence[Any], seq: int = 1) -> BookEvent:
    return BookEvent("x:Y", "x", "Y", seq, seq, seq, seq - 1, bids, asks)


def _ladder(n: int, start: float, step: float) -> list[tuple[float, float]]:
    return [(start + i * step, 1.0 + i) for i in range(n)]


def odd_books() -> list[BookEvent]:
    """Every way a book can fail the checks, each next to good books."""
    good_b, good_a = _ladder(20, 99.0, -0.5), _ladder(20, 100.0, 0.5)
    cases: list[tuple[Sequence[Any], Sequence[Any]]] = [
        (good_b, good_a),
        (good_b[:3], good_a[:7]),  # ragged
        ([], good_a),  # one-sided
        (good_b, []),
        ([], []),
        (_ladder(21, 99.0, -0.5), good_a),  # too many levels: packed empty
        (good_b, _ladder(25, 100.0, 0.5)),
        ([(99.0, NAN), *good_b[1:]], good_a),  # not finite > 0
        (good_b, [*good_a[:5], (INF, 1.0), *good_a[6:]]),
        ([(99.0, 0.0)], good_a),
        ([(-1.0, 1.0)], good_a),
        ([(NAN, 1.0)], good_a),
        ([(99.0, 1.0), (99.0, 2.0)], good_a),  # not strictly monotone
        ([(98.0, 1.0), (99.0, 2.0)], good_a),
        (good_b, [(100.0, 1.0), (100.0, 1.0)]),
        (good_b, [(100.0, 1.0), (99.5, 1.0)]),
        ([(100.0, 1.0)], [(100.0, 1.0)]),  # crossed (touching counts)
        ([(101.0, 1.0)], [(100.0, 1.0)]),
        ([(NAN, 1.0)], [(100.0, 1.0)]),
        ([[99.0, 1.0], [98.0, 2.0]], [[100.0, 1.0]]),  # lists, as decoded from JSON
        ((good_b[0], good_b[1]), (good_a[0],)),  # tuples of levels
    ]
    return [_book(b, a, i + 1) for i, (b, a) in enumerate(cases)]


def _ts(books: Sequence[BookEvent]) -> np.ndarray:
    return np.array([b.ts for b in books], np.int64).reshape(len(books))


def _same(got: Any, want: Any) -> None:
    (ga, gok), (wa, wok) = got, want
    for name in ("ts", "bid_p", "bid_q", "ask_p", "ask_q", "n_bid", "n_ask"):
        g, w = getattr(ga, name), getattr(wa, name)
        assert g.dtype == w.dtype and g.shape == w.shape, name
        assert np.array_equal(g.view(np.int64), w.view(np.int64)), name  # bit for bit
        assert g.flags.c_contiguous, name
    assert gok.dtype == wok.dtype == np.bool_
    assert np.array_equal(gok, wok)


@pytest.mark.parametrize(
    "books",
    [odd_books, lambda: synthetic_streams("BTCUSDT", 400, seed=5).books, list],
    ids=["odd", "synthetic", "none"],
)
def test_plain_packing_is_the_general_packing(books: Callable[[], list[BookEvent]]) -> None:
    bs = books()
    got = _pack_plain(bs, _ts(bs))
    assert got is not None
    _same(got, _pack_general(bs, _ts(bs)))
    _same(_pack(bs), got)


def test_odd_books_checks() -> None:
    arrays, ok = _pack_general(odd_books(), _ts(odd_books()))
    assert ok.tolist() == [True] * 5 + [False] * 14 + [True] * 2
    assert arrays.n_bid[5] == arrays.n_ask[5] == arrays.n_bid[6] == 0  # too many: empty


@pytest.mark.parametrize(
    "level",
    [(100, 1.0), (99.5, True), ("99.5", 1.0), np.array([99.5, 1.0])],
    ids=["int", "bool", "str", "ndarray"],
)
def test_levels_that_are_not_plain_floats_go_the_general_way(level: Any) -> None:
    bs = [*odd_books()[:3], _book([level], [(101.0, 1.0)], 99)]
    assert _pack_plain(bs, _ts(bs)) is None
    try:
        want = _pack_general(bs, _ts(bs))
    except (TypeError, ValueError) as exc:
        with pytest.raises(type(exc)):
            _pack(bs)
    else:
        _same(_pack(bs), want)


@pytest.mark.parametrize("level", [(99.0,), (99.0, 1.0, 2.0)], ids=["short", "long"])
def test_a_level_that_is_not_a_pair_is_an_error(level: Any) -> None:
    bs = [*odd_books()[:3], _book([level], [(101.0, 1.0)], 99)]
    assert _pack_plain(bs, _ts(bs)) is None
    with pytest.raises(ValueError, match="pair"):
        _pack(bs)


def _read(module: ModuleType, books: Sequence[BookEvent]) -> Iterator[Any]:
    n = len(books)
    ok, counts = [True] * n, [0] * (2 * n)
    flat = np.fromiter(module.book_levels(books, ok, counts), np.float64, 80 * n)
    yield flat.view(np.int64)
    yield ok
    yield counts


def test_the_source_and_the_compiled_module_agree() -> None:
    books = odd_books() + synthetic_streams("ETHUSDT", 200, seed=6).books
    pure = _pure_levels()
    assert not pure.COMPILED
    got, want = list(_read(levels, books)), list(_read(pure, books))
    assert np.array_equal(got[0], want[0]) and got[1:] == want[1:]


def test_compiled_module_matches_its_source() -> None:
    """As the collector's ``test_native``: a stale extension would silently run old code."""
    compiled = [p for p in PACKAGE.glob("*.so") if "__mypyc" not in p.name]
    assert any(p.name.startswith("levels.") for p in compiled) == levels.COMPILED
    stale = stale_compiled(PACKAGE)
    assert not stale, f"{', '.join(stale)} changed since compiled: run make install"
