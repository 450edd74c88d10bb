"""SymbolPipeline: whatever the interleaving of the two topics on arrival, the merged stream
equals the canonical replay; replays (offsets, seqs) change nothing; state round-trips."""

from __future__ import annotations

import itertools
import json
import random

import numpy as np

from depthflow.features import FeatureState
from depthflow.features.pipeline import SymbolPipeline
from depthflow.features.synthetic import generate

from .conftest import replay

HOLD = 3_600_000_000


def _feed(pipe: SymbolPipeline, arrivals: list[tuple], out: list) -> None:
    for topic, off, e in arrivals:
        if topic == "b":
            pipe.add_book(off, e[5], e[3], e[4], e[1], e[2], f"t{e[5]}")
        else:
            pipe.add_trade(off, e[1], e[2], e[3], e[4])
        pipe.release(out, [], [], [])


def _arrivals(events: list[tuple], seed: int) -> list[tuple]:
    """The two topics' messages, each in order, randomly interleaved."""
    books = [("b", i, e) for i, e in enumerate(x for x in events if x[0] == "b")]
    trades = [("t", i, e) for i, e in enumerate(x for x in events if x[0] == "t")]
    rng = random.Random(seed)
    out = []
    while books or trades:
        src = books if (books and (not trades or rng.random() < 0.5)) else trades
        out.append(src.pop(0))
    return out


def test_any_interleaving_equals_the_canonical_replay_and_replays_are_skipped() -> None:
    series = generate(1500, seed=3, mean_gap_us=300_000)
    events = [*series.events, ("t", 100_000.0, 0.001, True, 10**18)]
    expected, expected_ok = replay(FeatureState(), series.events)
    arrivals = _arrivals(events, seed=1)
    half = len(arrivals) // 2
    pipe = SymbolPipeline("binance", "BTCUSDT", HOLD)
    out: list = []
    _feed(pipe, arrivals[:half], out)
    # checkpoint, "crash", restore, and replay from an earlier offset
    restored = SymbolPipeline.from_state(json.loads(json.dumps(pipe.to_state())), HOLD, 0)
    _feed(restored, arrivals[half // 2 :], out)
    assert [v.book_seq for v in out] == [e[5] for e in series.events if e[0] == "b"]
    np.testing.assert_allclose(np.array([v.values for v in out]), expected, rtol=1e-12)
    assert (np.array([v.valid for v in out]) == expected_ok).all()
    assert out[0].trace_id == f"t{out[0].book_seq}"


def test_min_emit_interval_thins_the_output_but_not_the_state() -> None:
    series = generate(300, seed=4, mean_gap_us=100_000)
    pipe = SymbolPipeline("binance", "BTCUSDT", 0, min_interval_us=1_000_000)
    out: list = []
    _feed(pipe, [("b" if e[0] == "b" else "t", i, e) for i, e in enumerate(series.events)], out)
    emitted = [v for v in out if v.emit]
    assert len(out) == 300 and 0 < len(emitted) < 100
    gaps = np.diff([v.exchange_ts_us for v in emitted])
    assert (gaps >= 1_000_000).all()


def _stamped(events: list[tuple], feed: str = "f1") -> list[tuple]:
    """The two topics' messages as the collector stamps them (events in receive order)."""
    books, trades, n = [], [], 0
    for e in events:
        if e[0] == "t":
            n += 1
            trades.append(("t", len(trades), e, feed, n))
        else:
            books.append(("b", len(books), e, feed, n))
    return books + trades


def _feed_stamped(pipe: SymbolPipeline, arrivals: list[tuple], out: list) -> None:
    for topic, off, e, feed, n in arrivals:
        if topic == "b":
            pipe.add_book(off, e[5], e[3], e[4], e[1], e[2], "", feed, n)
        else:
            pipe.add_trade(off, e[1], e[2], e[3], e[4], feed, n)
        pipe.release(out, [], [], [])


def test_stamped_books_are_released_once_their_trades_are_taken_without_waiting() -> None:
    series = generate(800, seed=5, mean_gap_us=300_000)
    expected, _ = replay(FeatureState(), series.events)
    stamped = _stamped(series.events)
    books = [m for m in stamped if m[0] == "b"]
    trades = [m for m in stamped if m[0] == "t"]
    rng = random.Random(2)
    pipe = SymbolPipeline("binance", "BTCUSDT", HOLD)
    out: list = []
    taken = 0  # trades fed so far
    for b in books:
        # a random share of the trades the book needs arrive before it, the rest after
        need = b[4]
        early = rng.randint(taken, need)
        _feed_stamped(pipe, trades[taken:early], out)
        taken = early
        before = len(out)
        _feed_stamped(pipe, [b], out)
        if taken >= need:
            assert len(out) == before + 1, "a book whose trades are all taken must not wait"
        _feed_stamped(pipe, trades[taken:need], out)
        taken = need
        assert out[-1].book_seq == b[2][5]  # released as soon as its last trade came
    assert len(out) == len(books)
    np.testing.assert_allclose(np.array([v.values for v in out]), expected, rtol=1e-12)
    assert pipe.late_trades == 0


def test_a_trade_received_after_a_newer_book_is_counted_late() -> None:
    series = generate(200, seed=6, mean_gap_us=300_000)
    stamped = _stamped(series.events)
    books = [m for m in stamped if m[0] == "b"]
    trades = [m for m in stamped if m[0] == "t"]
    pipe = SymbolPipeline("binance", "BTCUSDT", HOLD)
    out: list = []
    # the first book claims no trade before it, but a trade older than it comes afterwards
    first = books[0]
    _feed_stamped(pipe, [("b", 0, first[2], "f1", 0)], out)
    assert len(out) == 1
    older = ("t", 0, ("t", 1.0, 1.0, True, first[2][3] - 1), "f1", 1)
    _feed_stamped(pipe, [older], out)
    assert pipe.late_trades == 0  # counted when it enters, before the next book
    _feed_stamped(pipe, [("b", 1, books[1][2], "f1", 1)], out)
    assert len(out) == 2 and pipe.late_trades == 1
    # an unstamped book still waits for the trade feed to pass it (or the hold)
    plain = SymbolPipeline("binance", "BTCUSDT", HOLD)
    plain.add_book(0, first[2][5], first[2][3], first[2][4], first[2][1], first[2][2], "")
    plain.release(out := [], [], [], [])
    assert out == [] and len(trades) > 0


def _received_late(events: list[tuple], share: float, seed: int) -> list[tuple]:
    """The events in the order a collector receives them when the exchange delivers a share
    of the trades just after the next book (older than it, but received after it)."""
    rng = random.Random(seed)
    out = list(events)
    i = 0
    while i < len(out) - 1:
        if out[i][0] == "t" and out[i + 1][0] == "b" and rng.random() < share:
            out[i], out[i + 1] = out[i + 1], out[i]
            i += 2
        else:
            i += 1
    return out


def test_stamped_output_never_depends_on_arrival_or_batches_even_with_late_trades() -> None:
    """A replay after a crash must republish identical vectors: which trades precede a book
    is the collector's receive order (the stamps), never what happened to be here already."""
    series = generate(900, seed=8, mean_gap_us=300_000)
    received = _received_late(series.events, share=0.3, seed=1)
    assert received != series.events
    # the canonical stream: each trade enters after the books the collector received first
    expected, expected_ok = replay(FeatureState(), received)
    stamped = _stamped(received)
    books = [m for m in stamped if m[0] == "b"]
    trades = [m for m in stamped if m[0] == "t"]
    n_late = sum(
        1 for a, b in itertools.pairwise(received) if a[0] == "b" and b[0] == "t" and b[4] <= a[3]
    )
    assert n_late > 20
    for seed in range(4):
        rng = random.Random(seed)
        arrivals: list[tuple] = []
        bi = ti = 0
        while bi < len(books) or ti < len(trades):  # the topics interleave at random
            if ti == len(trades) or (bi < len(books) and rng.random() < 0.5):
                arrivals.append(books[bi])
                bi += 1
            else:
                arrivals.append(trades[ti])
                ti += 1
        pipe = SymbolPipeline("binance", "BTCUSDT", HOLD)
        out: list = []
        cut = rng.randrange(len(arrivals) // 4, len(arrivals) // 2)
        pos = 0
        while pos < cut:  # batches of random size: events are queued, then released
            n = rng.randint(1, 40)
            for topic, off, e, feed, k in arrivals[pos : min(cut, pos + n)]:
                if topic == "b":
                    pipe.add_book(off, e[5], e[3], e[4], e[1], e[2], "", feed, k)
                else:
                    pipe.add_trade(off, e[1], e[2], e[3], e[4], feed, k)
            pipe.release(out, [], [], [])
            pos += n
        # checkpoint, "crash", restore, replay from earlier offsets in one batch
        restored = SymbolPipeline.from_state(json.loads(json.dumps(pipe.to_state())), HOLD, 0)
        for topic, off, e, feed, k in arrivals[cut // 2 :]:
            if topic == "b":
                restored.add_book(off, e[5], e[3], e[4], e[1], e[2], "", feed, k)
            else:
                restored.add_trade(off, e[1], e[2], e[3], e[4], feed, k)
        restored.release(out, [], [], [])
        assert [v.book_seq for v in out] == [b[2][5] for b in books]
        np.testing.assert_array_equal(np.array([v.values for v in out]), expected)
        assert (np.array([v.valid for v in out]) == expected_ok).all()
        assert pipe.late_trades + restored.late_trades >= n_late


def test_books_of_a_crashed_feed_wait_only_until_the_next_feed() -> None:
    series = generate(60, seed=9, mean_gap_us=300_000)
    stamped = _stamped(series.events, feed="f1")
    books = [m for m in stamped if m[0] == "b" and m[4] > 0]
    first, second = books[0][2], books[1][2]
    pipe = SymbolPipeline("binance", "BTCUSDT", HOLD)
    out: list = []
    # a book counts trades that never arrived (the collector died before sending them)
    _feed_stamped(pipe, [books[0]], out)
    assert out == []
    # a trade of another feed alone proves nothing (it may be an older feed's)
    _feed_stamped(pipe, [("t", 0, ("t", 1.0, 1.0, True, second[3] - 1), "f2", 1)], out)
    assert out == []
    # the restarted collector's first book: the old feed is over, its book goes first
    _feed_stamped(pipe, [("b", 1, second, "f2", 1)], out)
    assert [v.book_seq for v in out] == [first[5], second[5]]


def test_state_version_1_still_restores() -> None:
    series = generate(50, seed=10, mean_gap_us=300_000)
    pipe = SymbolPipeline("binance", "BTCUSDT", HOLD)
    _feed(pipe, [("t", i, e) for i, e in enumerate(x for x in series.events if x[0] == "t")], [])
    state = pipe.to_state()
    old = {k: v for k, v in state.items() if k != "trade_feeds"}
    old.update(v=1, trades=[t[:4] for t in state["trades"]], trade_feed="")
    restored = SymbolPipeline.from_state(json.loads(json.dumps(old)), HOLD, 0)
    assert list(restored.trades) == [[*t[:4], "", 0] for t in state["trades"]]
