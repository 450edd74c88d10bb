"""WS /ws through a real WebSocket client: authentication, subscriptions, and a slow client
that never slows a fast one."""

import json
import time
import uuid

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from depthflow.common.testing import eventually


def _recv_until(ws, predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            msg = json.loads(ws.recv(timeout=max(0.05, deadline - time.monotonic())))
        except TimeoutError:
            break
        seen.append(msg)
        if predicate(msg):
            return msg, seen
    raise AssertionError(f"no matching message within {timeout}s; last: {seen[-3:]}")


def _authenticate(ws, token):
    ws.send(json.dumps({"type": "auth", "token": token}))
    _recv_until(ws, lambda m: m["type"] == "authenticated")


def test_unauthenticated_websocket_is_closed(gateway, admin_token):
    with connect(gateway.ws_url, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "auth", "token": admin_token[:-3] + "xyz"}))
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
    assert info.value.rcvd.code == 4401
    with connect(gateway.ws_url, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "subscribe", "channels": ["books"]}))  # no auth first
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    with pytest.raises(InvalidStatus) as refused:
        connect(
            gateway.ws_url,
            open_timeout=10,
            additional_headers={"Authorization": "Bearer not.a.token"},
        )
    assert refused.value.response.status_code == 403


def test_subscribe_books_signals_orders(gateway, viewer_token, make_book):
    symbol = "W" + uuid.uuid4().hex[:6].upper() + "USDT"
    with connect(
        gateway.ws_url,
        open_timeout=10,
        additional_headers={"Authorization": f"Bearer {viewer_token}"},
    ) as ws:
        _recv_until(ws, lambda m: m["type"] == "authenticated")
        ws.send(
            json.dumps(
                {
                    "type": "subscribe",
                    "channels": ["books", "signals", "orders"],
                    "symbols": [symbol.lower()],
                }
            )
        )
        sub, _ = _recv_until(ws, lambda m: m["type"] == "subscribed")
        assert sub["subscriptions"]["books"] == [symbol]
        ws.send(json.dumps({"type": "subscribe", "channels": ["trades"]}))
        _recv_until(ws, lambda m: m["type"] == "error")
        gateway.publish("book", "binance:OTHERUSDT", make_book("OTHERUSDT", 1))
        gateway.publish("book", f"binance:{symbol}", make_book(symbol, 7))
        gateway.publish(
            "signals",
            f"binance:{symbol}",
            {
                "schema_version": 1,
                "signal_id": "ws1",
                "exchange": "binance",
                "symbol": symbol,
                "side": "buy",
                "strength": 0.9,
                "confidence": 0.8,
                "strategy": "imbalance",
                "feature_set": "ob50",
                "book_seq": 7,
                "ts_us": 1,
                "source_ts_us": 1,
            },
        )
        got = {}  # books and signals travel on different topics: either may come first

        def both(m):
            got.setdefault(m["type"], m)
            return "book" in got and "signal" in got

        _, seen = _recv_until(ws, both)
        assert got["book"]["data"]["symbol"] == symbol and got["book"]["data"]["seq"] == 7
        assert got["signal"]["data"]["signal_id"] == "ws1"
        assert all(m.get("data", {}).get("symbol") != "OTHERUSDT" for m in seen)
        ws.send(json.dumps({"type": "ping"}))
        _recv_until(ws, lambda m: m["type"] == "pong")


def test_slow_client_never_slows_a_fast_one(gateway, viewer_token, make_book):
    symbol = "F" + uuid.uuid4().hex[:6].upper() + "USDT"
    n = 1500
    with (
        connect(gateway.ws_url, open_timeout=10) as slow,
        connect(gateway.ws_url, open_timeout=10) as fast,
    ):
        for ws in (slow, fast):
            _authenticate(ws, viewer_token)
            ws.send(json.dumps({"type": "subscribe", "channels": ["books"], "symbols": [symbol]}))
            _recv_until(ws, lambda m: m["type"] == "subscribed")
        # the slow client reads nothing while the books arrive
        gateway.publish_many(
            "book", f"binance:{symbol}", [make_book(symbol, seq) for seq in range(1, n + 1)]
        )
        _recv_until(fast, lambda m: m["type"] == "book" and m["data"]["seq"] == n, timeout=30)
        _, slow_seen = _recv_until(
            slow, lambda m: m["type"] == "book" and m["data"]["seq"] == n, timeout=30
        )
        seqs = [m["data"]["seq"] for m in slow_seen if m["type"] == "book"]
        assert seqs == sorted(seqs)  # coalesced, never out of order

    def clients_gone():
        with gateway.client() as c:
            return "depthflow_api_ws_clients 0.0" in c.get("/metrics").text

    eventually(clients_gone, timeout=10, what="closed clients leave the hub")
