"""The fill model on hand-worked books."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from depthflow.executor.fills import (
    BookSnapshot,
    Fill,
    FillModelConfig,
    FillSimulator,
    Liquidity,
    OrderType,
    OrderUpdate,
    SimEvent,
    SimOrder,
    TimeInForce,
    TradePrint,
)
from depthflow.executor.fsm import OrderState

CFG = FillModelConfig(
    submit_latency_us=10_000, cancel_latency_us=10_000, maker_fee_rate=0.0002, taker_fee_rate=0.001
)
BIDS = [(99.0, 1.0), (98.0, 2.0), (97.0, 5.0)]
ASKS = [(101.0, 1.0), (102.0, 2.0), (103.0, 5.0)]


def book(
    ts: int, bids: list[tuple[float, float]] = BIDS, asks: list[tuple[float, float]] = ASKS
) -> BookSnapshot:
    return BookSnapshot(ts, bids, asks)


def fills_of(events: list[SimEvent]) -> list[Fill]:
    return [e for e in events if isinstance(e, Fill)]


def last_update(events: list[SimEvent]) -> OrderUpdate:
    return [e for e in events if isinstance(e, OrderUpdate)][-1]


def sim(cfg: FillModelConfig = CFG) -> FillSimulator:
    s = FillSimulator(cfg)
    s.on_book(book(0))
    return s


def market(oid: str, side: str, qty: float, ts: int = 0) -> SimOrder:
    return SimOrder(oid, side, OrderType.MARKET, qty, ts)  # type: ignore[arg-type]


def limit(
    oid: str, side: str, qty: float, price: float, tif: TimeInForce = TimeInForce.GTC, ts: int = 0
) -> SimOrder:
    return SimOrder(oid, side, OrderType.LIMIT, qty, ts, price, tif)  # type: ignore[arg-type]


def test_market_order_walks_the_book_after_latency() -> None:
    s = sim()
    assert s.submit(market("m1", "buy", 2.5)) == []  # still in flight
    ev = s.on_book(book(20_000))  # it arrived at 10ms and met the book of t=0
    f = fills_of(ev)
    assert [(x.price, x.qty, x.liquidity) for x in f] == [
        (101.0, 1.0, Liquidity.TAKER),
        (102.0, 1.5, Liquidity.TAKER),
    ]
    assert all(x.ts_us == 10_000 for x in f)
    assert sum(x.fee for x in f) == pytest.approx((101 + 153) * 0.001)
    u = last_update(ev)
    assert u.state == OrderState.FILLED and u.avg_price == pytest.approx(254 / 2.5)


def test_market_order_larger_than_the_book_is_cancelled_remainder() -> None:
    s = sim()
    s.submit(market("m1", "sell", 10.0))
    u = last_update(s.advance(10_000))
    assert u.state == OrderState.CANCELLED and u.filled_qty == 8.0 and "exhausted" in u.reason


def test_ioc_limit_partial_then_expired() -> None:
    s = sim()
    s.submit(limit("i1", "buy", 4.0, 102.0, TimeInForce.IOC))
    ev = s.advance(10_000)
    assert [(x.price, x.qty) for x in fills_of(ev)] == [(101.0, 1.0), (102.0, 2.0)]
    u = last_update(ev)
    assert u.state == OrderState.CANCELLED and u.filled_qty == 3.0 and "IOC" in u.reason


def test_passive_limit_queue_position() -> None:
    s = sim()
    s.submit(limit("g1", "buy", 2.0, 99.0))
    u = last_update(s.advance(10_000))
    assert u.state == OrderState.PLACED  # 1.0 displayed at 99 is ahead of us
    assert s.on_trade(TradePrint(11_000, 99.0, 0.6, "sell")) == []  # queue 1.0 -> 0.4
    assert s.on_trade(TradePrint(11_500, 99.0, 5.0, "buy")) == []  # a buy taker: not our side
    ev = s.on_trade(TradePrint(12_000, 99.0, 1.0, "sell"))  # 0.4 queue, 0.6 to us
    (f,) = fills_of(ev)
    assert (f.price, f.qty, f.liquidity) == (99.0, pytest.approx(0.6), Liquidity.MAKER)
    assert f.fee == pytest.approx(99 * 0.6 * 0.0002)
    assert last_update(ev).state == OrderState.PARTIALLY_FILLED
    ev = s.on_trade(TradePrint(13_000, 98.0, 5.0, "sell"))  # trades through our price
    (f,) = fills_of(ev)
    assert (f.price, f.qty) == (99.0, pytest.approx(1.4))  # filled at our limit, not 98
    u = last_update(ev)
    assert u.state == OrderState.FILLED and u.avg_price == pytest.approx(99.0)


def test_queue_fraction_and_shrink_on_cancels() -> None:
    s = sim(
        FillModelConfig(
            submit_latency_us=0, queue_ahead_fraction=0.5, shrink_queue_on_level_decrease=True
        )
    )
    s.submit(limit("g1", "sell", 1.0, 103.0))  # half of 5.0 ahead: 2.5
    s.on_book(book(1, asks=[(101.0, 1.0), (102.0, 2.0), (103.0, 1.0)]))  # cancels: <= 0.5 ahead
    (f,) = fills_of(s.on_trade(TradePrint(2, 103.0, 1.0, "buy")))
    assert f.qty == pytest.approx(0.5)


def test_cancel_latency_lets_fills_through() -> None:
    s = sim()
    s.submit(limit("g1", "sell", 1.0, 103.0))
    s.advance(10_000)
    s.cancel("g1", 20_000)  # effective at 30ms
    ev = s.on_trade(TradePrint(25_000, 103.0, 10.0, "buy"))  # 5 ahead, then us
    assert last_update(ev).state == OrderState.FILLED
    assert s.advance(40_000) == []  # the cancel finds nothing to cancel
    s.submit(limit("g2", "sell", 1.0, 103.0, ts=50_000))
    s.advance(60_000)
    s.cancel("g2", 60_000)
    u = last_update(s.advance(70_000))
    assert u.state == OrderState.CANCELLED and u.filled_qty == 0.0


def test_cancel_before_arrival() -> None:
    s = sim()
    s.submit(limit("g1", "buy", 1.0, 99.0))
    s.cancel("g1", 1_000)  # effective at 11ms, after arrival at 10ms
    ev = s.advance(11_000)
    assert [u.state for u in ev if isinstance(u, OrderUpdate)] == [
        OrderState.PLACED,
        OrderState.CANCELLED,
    ]


def test_book_crossing_a_resting_order_fills_it_as_maker() -> None:
    s = sim()
    s.submit(limit("g1", "buy", 1.0, 100.0))  # inside the spread: nobody ahead
    s.advance(10_000)
    ev = s.on_book(book(20_000, asks=[(100.0, 0.4), (101.0, 1.0)]))
    (f,) = fills_of(ev)
    assert (f.price, f.qty, f.liquidity) == (100.0, 0.4, Liquidity.MAKER)


def test_own_taking_consumes_liquidity_until_next_snapshot() -> None:
    s = sim()
    s.submit(market("m1", "buy", 1.0))
    s.submit(market("m2", "buy", 1.0, ts=1_000))
    ev = s.advance(11_000)
    assert [(x.order_id, x.price) for x in fills_of(ev)] == [("m1", 101.0), ("m2", 102.0)]
    s.on_book(book(20_000))
    s.submit(market("m3", "buy", 1.0, ts=20_000))
    assert fills_of(s.advance(30_000))[0].price == 101.0


def test_extra_slippage_is_adverse() -> None:
    s = sim(FillModelConfig(submit_latency_us=0, taker_slippage_bps=10))
    (f,) = fills_of(s.submit(market("m1", "buy", 1.0)))
    assert f.price == pytest.approx(101.0 * 1.001)
    (f,) = fills_of(s.submit(market("m2", "sell", 1.0)))
    assert f.price == pytest.approx(99.0 * 0.999)


def test_waits_for_a_book_and_rejects_bad_orders() -> None:
    s = FillSimulator(CFG)
    s.submit(market("m1", "buy", 1.0))
    assert s.advance(50_000) == []
    assert last_update(s.on_book(book(60_000))).state == OrderState.FILLED
    assert last_update(s.submit(market("bad", "buy", 0.0))).state == OrderState.REJECTED
    assert last_update(s.submit(limit("m1", "buy", 1.0, 1.0))).state == OrderState.REJECTED


def test_config_is_frozen_and_validated() -> None:
    with pytest.raises(AttributeError):
        CFG.taker_fee_rate = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        FillModelConfig(queue_ahead_fraction=1.5)


events = st.lists(
    st.one_of(
        st.tuples(
            st.just("order"),
            st.sampled_from(["buy", "sell"]),
            st.integers(1, 40),
            st.one_of(st.none(), st.integers(95, 105)),
        ),
        st.tuples(
            st.just("trade"),
            st.sampled_from(["buy", "sell"]),
            st.integers(1, 40),
            st.integers(95, 105),
        ),
        st.tuples(st.just("book"), st.integers(-3, 3), st.integers(1, 40), st.just(0)),
        st.tuples(st.just("cancel"), st.integers(0, 30), st.just(0), st.just(0)),
    ),
    max_size=40,
)


def _run(evs: list[tuple]) -> tuple[list[SimEvent], dict[str, SimOrder]]:  # type: ignore[type-arg]
    s = sim()
    out: list[SimEvent] = []
    orders: dict[str, SimOrder] = {}
    for i, (kind, a, b, c) in enumerate(evs):
        ts = (i + 1) * 3_000
        if kind == "order":
            o = (
                market(f"o{i}", a, b / 10, ts)
                if c is None
                else limit(f"o{i}", a, b / 10, float(c), TimeInForce.GTC, ts)
            )
            orders[o.order_id] = o
            out += s.submit(o)
        elif kind == "trade":
            out += s.on_trade(TradePrint(ts, float(c), b / 10, a))
        elif kind == "book":
            mid = 100 + a
            out += s.on_book(
                BookSnapshot(
                    ts,
                    [(mid - 1 - k, b / 10) for k in range(5)],
                    [(mid + 1 + k, b / 10) for k in range(5)],
                )
            )
        elif orders:
            out += s.cancel(sorted(orders)[a % len(orders)], ts)
    out += s.advance(10**9)
    return out, orders


@settings(max_examples=150, deadline=None)
@given(evs=events)
def test_fill_model_invariants(evs: list[tuple]) -> None:  # type: ignore[type-arg]
    out, orders = _run(evs)
    assert out == _run(evs)[0], "deterministic"
    filled: dict[str, float] = {}
    for e in out:
        if isinstance(e, Fill):
            o = orders[e.order_id]
            filled[e.order_id] = filled.get(e.order_id, 0.0) + e.qty
            assert e.qty > 0
            if o.limit_price is not None:
                assert (
                    e.price <= o.limit_price + 1e-9
                    if o.side == "buy"
                    else e.price >= o.limit_price - 1e-9
                )
    for oid, q in filled.items():
        assert q <= orders[oid].qty + 1e-9
    finals = [
        e
        for e in out
        if isinstance(e, OrderUpdate) and e.state in (OrderState.FILLED, OrderState.CANCELLED)
    ]
    assert len({u.order_id for u in finals}) == len(finals), "one terminal update per order"
    for u in finals:
        assert u.filled_qty == pytest.approx(filled.get(u.order_id, 0.0))
