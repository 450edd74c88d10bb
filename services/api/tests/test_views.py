"""The in-memory views and the WebSocket hub, without I/O."""

import asyncio

import orjson

from depthflow.api.hub import Client, Hub
from depthflow.api.views import MarketView, OrderView, StatusView, book_metrics
from depthflow.common.schemas import Book, Heartbeat, OrderEvent


def make_book(symbol="BTCUSDT", seq=1, bid=100.0):
    return Book(
        exchange="binance",
        symbol=symbol,
        seq=seq,
        prev_seq=seq - 1,
        exchange_ts_us=1,
        local_ts_us=2,
        bid_price=bid,
        bid_qty=1.0,
        ask_price=bid + 1,
        ask_qty=3.0,
        bids=[(bid, 1.0), (bid - 1, 1.0)],
        asks=[(bid + 1, 3.0), (bid + 2, 1.0)],
    )


def test_book_metrics():
    m = book_metrics(make_book())
    assert m["mid_price"] == 100.5
    assert m["spread_abs"] == 1.0
    assert m["imbalance_5"] == 2.0 / 6.0
    assert m["micro_price"] == (100 * 3 + 101 * 1) / 4


def test_market_view_is_bounded():
    view = MarketView(max_symbols=2)
    for i, sym in enumerate(["AAAUSDT", "BBBUSDT", "CCCUSDT"]):
        view.on_book(make_book(sym, seq=i + 1))
    assert [p["symbol"] for p in view.pairs()] == ["BBBUSDT", "CCCUSDT"]


def test_stale_heartbeat_is_down():
    view = StatusView(stale_s=5)
    view.on_heartbeat(
        Heartbeat(service="collector", instance="a", state="running", ready=True, ts_us=100_000_000)
    )
    assert view.service("collector", now=101_000_000).state == "running"
    stale = view.service("collector", now=110_000_000)
    assert (stale.state, stale.up, stale.ready) == ("down", False, False)
    assert view.service("features").state == "unknown"


def test_collector_instances_of_both_exchanges_aggregate():
    """The collectors beat as one ``collector`` service, one instance per exchange process
    (``<exchange>-<host>-<pid>``); each instance is listed with its own state."""
    view = StatusView(stale_s=5)
    for exchange, ts in (("binance", 100_000_000), ("bybit", 100_000_000)):
        view.on_heartbeat(
            Heartbeat(
                service="collector",
                instance=f"{exchange}-host-1",
                state="running",
                ready=True,
                detail={"exchange": exchange, "synced_books": 3},
                ts_us=ts,
            )
        )
    both = view.service("collector", now=101_000_000)
    assert (both.state, both.ready, both.up) == ("running", True, True)
    assert sorted(i["instance"] for i in both.instances) == ["binance-host-1", "bybit-host-1"]
    view.on_heartbeat(
        Heartbeat(
            service="collector",
            instance="binance-host-1",
            state="running",
            ready=True,
            ts_us=109_000_000,
        )
    )
    one_stale = view.service("collector", now=110_000_000)
    states = {i["instance"]: i["state"] for i in one_stale.instances}
    assert states == {"binance-host-1": "running", "bybit-host-1": "down"}
    # the service-level state is the best live instance's (the api's rule for every service)
    assert one_stale.state == "running"


def _fill(side, qty, price, n):
    return OrderEvent(
        event_id=f"e{n}",
        event_type="fill",
        venue="paper",
        exchange="binance",
        symbol="BTCUSDT",
        client_order_id=f"o{n}",
        side=side,
        order_type="market",
        status="filled",
        qty=qty,
        price=price,
        fee=0.1,
        ts_us=n,
    )


def test_positions_from_fills():
    view = OrderView(kept=10, max_symbols=10)
    view.on_order(_fill("buy", 2, 100, 1))
    view.on_order(_fill("buy", 2, 110, 2))
    view.on_order(_fill("sell", 1, 120, 3))
    (pos,) = view.positions.values()
    assert pos.qty == 3 and pos.avg_price == 105
    assert pos.realized_pnl == 15
    assert round(pos.fees_paid, 6) == 0.3


def test_slow_client_coalesces_books_and_bounds_events():
    hub = Hub()
    slow, fast = Client(event_buffer=5), Client(event_buffer=5)
    for c in (slow, fast):
        c.subscribe(["books"], ["BTCUSDT"])
        hub.add(c)
    got_fast = []
    for seq in range(1, 101):
        hub.publish_book(make_book(seq=seq))
        got_fast.extend(asyncio.run(fast.next_batch()))
    assert len(got_fast) == 100
    (only,) = asyncio.run(slow.next_batch())
    assert orjson.loads(only)["data"]["seq"] == 100
    assert slow.coalesced == 99
    slow.subscribe(["signals"], ["*"])
    for i in range(12):
        slow.offer_event(orjson.dumps({"i": i}))
    batch = asyncio.run(slow.next_batch())
    assert orjson.loads(batch[0]) == {"type": "dropped", "count": 7}
    assert [orjson.loads(b)["i"] for b in batch[1:]] == [7, 8, 9, 10, 11]
