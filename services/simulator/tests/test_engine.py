"""Unit tests of the pure market engine: book invariants, determinism, truth history."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from depthflow.sim.book import ASK, BID, Book, RestingOrder
from depthflow.sim.history import BookHistory
from depthflow.sim.instruments import instrument_for
from depthflow.sim.market import Market


def _market(seed: int = 1, symbol: str = "BTCUSDT", **kw: int) -> Market:
    return Market(instrument_for(symbol), seed, rate=1000, **kw)


def test_same_seed_same_market() -> None:
    a, b = _market(7), _market(7)
    a.step(5000, 1)
    b.step(5000, 1)
    ea, eb = a.drain().events, b.drain().events
    assert [(u, list(c)) for u, c, _ in ea] == [(u, list(c)) for u, c, _ in eb]
    assert a.book.bids == b.book.bids and a.book.asks == b.book.asks


def test_different_seed_different_market() -> None:
    a, b = _market(1), _market(2)
    a.step(2000, 1)
    b.step(2000, 1)
    assert a.book.bids != b.book.bids


def test_book_is_deep_sorted_uncrossed_and_on_grid() -> None:
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"):
        m = _market(3, symbol)
        for _ in range(20):
            m.step(1000, 1)
            m.book.check()
        _, bids, asks = m.snapshot(1000)
        assert len(bids) == 1000 and len(asks) == 1000
        assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
        assert [p for p, _ in asks] == sorted(p for p, _ in asks)
        assert bids[0][0] < asks[0][0]
        inst = m.instrument
        for p, q in bids[:50] + asks[:50]:
            assert inst.to_ticks(inst.price_str(p)) == p
            assert inst.to_lots(inst.qty_str(q)) == q and q > 0


def test_trades_come_from_matching() -> None:
    m = _market(5)
    m.step(3000, 1)
    out = m.drain()
    assert out.trades, "marketable flow must trade"
    ids = {u for u, _, _ in out.events}
    assert all(t.update_id in ids for t in out.trades)


def test_update_ids_are_consecutive_and_history_rebuilds_every_book() -> None:
    m = _market(11, retain=20_000, checkpoint_every=1000)
    books = {}
    for _ in range(30):
        m.step(100, 1)
        books[m.update_id] = (dict(m.book.bids), dict(m.book.asks))
    events = m.drain().events
    assert [u for u, _, _ in events] == list(range(1, m.update_id + 1))
    for uid, (bids, asks) in books.items():
        assert m.history.book_at(uid) == (bids, asks)


def test_history_is_bounded() -> None:
    m = _market(2, retain=10_000, checkpoint_every=1000)
    m.step(40_000, 1)
    assert m.update_id - m.history.oldest_id <= 13_000
    assert m.history.oldest_id >= 20_000
    bids, _ = m.history.book_at(m.update_id)
    assert bids == m.book.bids


def test_resting_order_fills_after_queue_ahead() -> None:
    book, ch = Book(), []
    book.add(ASK, 101, 5, ch)
    book.add(BID, 100, 3, ch)
    mine = RestingOrder(1, BID, 100, 4)
    book.add_resting(mine, ch)
    assert mine.ahead == 3 and book.bids[100] == 7
    book.add(BID, 100, 2, ch)  # behind me
    m = book.take(ASK, 5, None, ch)
    assert m[0].maker_fills == [(mine, 2)] and mine.remaining == 2
    book.cancel(BID, 100, 10, ch)  # others can only cancel their own 2 behind me
    assert book.bids[100] == 2
    book.check()


@settings(max_examples=30, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 1), st.integers(90, 110), st.integers(1, 20)),
        max_size=80,
    )
)
def test_book_invariants_hold_for_any_operations(ops: list[tuple[int, int, int, int]]) -> None:
    book, ch = Book(), []
    hist = BookHistory({}, {}, 0, retain=10_000, checkpoint_every=7)
    uid, oid = 0, 0
    states = {}
    for kind, side, price, qty in ops:
        before = len(ch)
        if kind == 0:
            crosses = price >= book.best_ask if side == BID else price <= book.best_bid
            if crosses:
                book.take(side, qty, price, ch)
            else:
                book.add(side, price, qty, ch)
        elif kind == 1:
            book.cancel(side, price, qty, ch)
        elif kind == 2:
            book.take(side, qty, None, ch)
        else:
            crosses = price >= book.best_ask if side == BID else price <= book.best_bid
            if not crosses:
                oid += 1
                book.add_resting(RestingOrder(oid, side, price, qty), ch)
        book.check()
        if len(ch) > before:
            uid += 1
            hist.record(uid, ch[before:], book.bids, book.asks)
            states[uid] = (dict(book.bids), dict(book.asks))
    for u, state in states.items():
        assert hist.book_at(u) == state


def test_the_truth_history_is_a_budget_over_all_symbols() -> None:
    from depthflow.sim.app import MIN_HISTORY_PER_SYMBOL, Simulator
    from depthflow.sim.config import SimSettings

    def retained(n_symbols: int) -> int:
        symbols = [f"S{i:03d}USDT" for i in range(n_symbols)]
        sim = Simulator(SimSettings(symbols=symbols, history=250_000))
        kept = {
            (m.history.max_checkpoints - 2) * m.history.checkpoint_every
            for m in sim.markets.values()
        }
        assert len(kept) == 1
        return kept.pop()  # whole checkpoints kept beyond the two spare

    assert retained(2) == 120_000  # 125,000 each, in whole checkpoints of 10,000
    assert retained(200) == MIN_HISTORY_PER_SYMBOL  # not 250,000 each (gigabytes)
