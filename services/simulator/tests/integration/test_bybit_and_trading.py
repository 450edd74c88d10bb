"""Bybit market data, signed endpoints of both protocols, order matching, bad requests."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import aiohttp
import orjson
import websockets

from depthflow.common.testing import eventually_async
from depthflow.sim.app import Simulator

from .conftest import KEY_HEADER, SimFactory, base, binance_signed, bybit_headers


async def test_bybit_snapshot_plus_deltas_equals_truth(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    async with websockets.connect(base(sim, "ws") + "/v5/public/linear") as ws:
        await ws.send(
            orjson.dumps(
                {"op": "subscribe", "req_id": "r1", "args": ["orderbook.50.BTCUSDT"]}
            ).decode()
        )
        ack = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert ack["success"] is True and ack["op"] == "subscribe" and ack["req_id"] == "r1"
        snap = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert snap["type"] == "snapshot" and snap["topic"] == "orderbook.50.BTCUSDT"
        bids = {p: q for p, q in snap["data"]["b"]}
        asks = {p: q for p, q in snap["data"]["a"]}
        u, seq = snap["data"]["u"], snap["data"]["seq"]
        for _ in range(30):
            m = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            assert m["type"] == "delta" and m["data"]["u"] == u + 1
            assert {"topic", "type", "ts", "data", "cts"} <= set(m)
            for side, book in (("b", bids), ("a", asks)):
                for p, q in m["data"][side]:
                    if Decimal(q) == 0:
                        book.pop(p)
                    else:
                        book[p] = q
            u, seq = m["data"]["u"], m["data"]["seq"]
    async with http.get(base(sim) + f"/sim/truth?symbol=BTCUSDT&update_id={seq}&depth=50") as r:
        truth = await r.json()
    assert sorted(bids.items(), key=lambda kv: -Decimal(kv[0])) == [tuple(x) for x in truth["bids"]]
    assert sorted(asks.items(), key=lambda kv: Decimal(kv[0])) == [tuple(x) for x in truth["asks"]]


async def test_bybit_ping_trades_bad_topic_and_restart(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    async with websockets.connect(base(sim, "ws") + "/v5/public/linear") as ws:
        await ws.send('{"op":"ping","req_id":"p"}')
        pong = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert pong["ret_msg"] == "pong" and pong["op"] == "ping"
        await ws.send('{"op":"subscribe","args":["orderbook.7.BTCUSDT"]}')
        bad = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert bad["success"] is False and "orderbook.7.BTCUSDT" in bad["ret_msg"]
        await ws.send('{"op":"subscribe","args":["publicTrade.BTCUSDT","orderbook.1.BTCUSDT"]}')
        kinds: set[str] = set()
        restarted = False
        for _ in range(500):
            m = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            topic = m.get("topic", "")
            if topic.startswith("publicTrade"):
                t = m["data"][0]
                assert t["S"] in ("Buy", "Sell") and isinstance(t["p"], str)
                kinds.add("trade")
            elif topic.startswith("orderbook") and m["type"] == "delta" and not restarted:
                kinds.add("delta")
                async with http.post(base(sim) + "/sim/bybit/restart") as r:
                    assert r.status == 200
                restarted = True
            elif topic.startswith("orderbook") and restarted and m["type"] == "snapshot":
                assert m["data"]["u"] == 1
                kinds.add("restart")
            if kinds == {"trade", "delta", "restart"}:
                break
        assert kinds == {"trade", "delta", "restart"}


async def test_binance_signed_endpoints_reject_with_exchange_codes(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    url = base(sim) + "/fapi/v2/balance?"
    async with http.get(url + binance_signed({})) as r:  # no key
        assert (r.status, (await r.json())["code"]) == (401, -2014)
    async with http.get(url + binance_signed({}), headers={"X-MBX-APIKEY": "nope"}) as r:
        assert (await r.json())["code"] == -2015
    async with http.get(url + binance_signed({}, secret="wrong"), headers=KEY_HEADER) as r:
        assert (r.status, (await r.json())["code"]) == (400, -1022)
    stale = int(time.time() * 1000) - 60_000
    async with http.get(url + binance_signed({}, timestamp=stale), headers=KEY_HEADER) as r:
        assert (await r.json())["code"] == -1021
    async with http.get(url + "recvWindow=5000", headers=KEY_HEADER) as r:
        assert (await r.json())["code"] == -1102
    async with http.get(url + binance_signed({}), headers=KEY_HEADER) as r:
        body = await r.json()
        assert r.status == 200 and body[0]["asset"] == "USDT"
        assert Decimal(body[0]["balance"]) == Decimal(100000)
        assert "X-MBX-USED-WEIGHT-1M" in r.headers


async def test_bybit_signed_endpoints_reject_with_exchange_codes(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    q = "accountType=UNIFIED"
    url = base(sim) + "/v5/account/wallet-balance?" + q
    async with http.get(url, headers=bybit_headers(q, key="nope")) as r:
        assert (await r.json())["retCode"] == 10003
    async with http.get(url, headers=bybit_headers(q, secret="wrong")) as r:
        assert (await r.json())["retCode"] == 10004
    stale = int(time.time() * 1000) - 60_000
    async with http.get(url, headers=bybit_headers(q, ts=stale)) as r:
        assert (await r.json())["retCode"] == 10002
    async with http.get(url, headers=bybit_headers(q)) as r:
        body = await r.json()
        assert body["retCode"] == 0 and body["result"]["list"][0]["coin"][0]["coin"] == "USDT"


async def _post_order(http: aiohttp.ClientSession, sim: Simulator, **params: str) -> dict:
    async with http.post(
        base(sim) + "/fapi/v1/order",
        data=binance_signed({"newOrderRespType": "RESULT", **params}),
        headers={**KEY_HEADER, "Content-Type": "application/x-www-form-urlencoded"},
    ) as r:
        return await r.json()


async def test_market_order_sweeps_levels_with_partial_fills_and_fees(
    start_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await start_sim(rate=1.0)  # a near-still book so the sweep is predictable
    market = sim.markets["BTCUSDT"]
    _, _, asks = market.snapshot(3)
    qty_lots = asks[0][1] + asks[1][1] // 2  # all of level 1, part of level 2
    inst = market.instrument
    async with await _listen(sim, http) as ws:
        order = await _post_order(
            http, sim, symbol="BTCUSDT", side="BUY", type="MARKET", quantity=inst.qty_str(qty_lots)
        )
        trades = []
        while len(trades) < 2:
            ev = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            if ev["e"] == "ORDER_TRADE_UPDATE" and ev["o"]["x"] == "TRADE":
                trades.append(ev["o"])
    assert order["status"] == "FILLED", order
    assert order["executedQty"] == inst.qty_str(qty_lots)
    quote = asks[0][0] * asks[0][1] + asks[1][0] * (qty_lots - asks[0][1])
    assert order["cumQuote"] == inst.quote_str(quote)
    notional = Decimal(inst.quote_str(quote))
    fee = (notional * Decimal("0.0005")).quantize(Decimal("0.00000001"))
    assert [t["L"] for t in trades] == [inst.price_str(asks[0][0]), inst.price_str(asks[1][0])]
    assert trades[0]["X"] == "PARTIALLY_FILLED" and trades[1]["X"] == "FILLED"
    assert sum(Decimal(t["n"]) for t in trades) == fee
    async with http.get(
        base(sim) + "/fapi/v2/positionRisk?" + binance_signed({"symbol": "BTCUSDT"}),
        headers=KEY_HEADER,
    ) as r:
        pos = (await r.json())[0]
    assert Decimal(pos["positionAmt"]) == Decimal(inst.qty_str(qty_lots))
    async with http.get(
        base(sim) + "/fapi/v2/balance?" + binance_signed({}), headers=KEY_HEADER
    ) as r:
        assert Decimal((await r.json())[0]["balance"]) == Decimal(100000) - fee


async def _listen(sim: Simulator, http: aiohttp.ClientSession) -> websockets.connect:
    async with http.post(base(sim) + "/fapi/v1/listenKey", headers=KEY_HEADER) as r:
        key = (await r.json())["listenKey"]
    ws = websockets.connect(base(sim, "ws") + f"/ws/{key}")
    return ws


async def test_limit_orders_rest_duplicates_cancel_and_reduce_only(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    market = sim.markets["ETHUSDT"]
    inst = market.instrument
    far = inst.price_str(market.book.best_bid - 500)
    o = await _post_order(
        http,
        sim,
        symbol="ETHUSDT",
        side="BUY",
        type="LIMIT",
        timeInForce="GTC",
        quantity="0.010",
        price=far,
        newClientOrderId="dup-1",
    )
    assert o["status"] == "NEW"
    dup = await _post_order(
        http,
        sim,
        symbol="ETHUSDT",
        side="BUY",
        type="LIMIT",
        timeInForce="GTC",
        quantity="0.010",
        price=far,
        newClientOrderId="dup-1",
    )
    assert dup["code"] == -4116
    truth = await (await http.get(base(sim) + "/sim/truth?symbol=ETHUSDT&depth=1000")).json()
    assert any(p == far for p, _ in truth["bids"])
    async with http.delete(
        base(sim)
        + "/fapi/v1/order?"
        + binance_signed({"symbol": "ETHUSDT", "origClientOrderId": "dup-1"}),
        headers=KEY_HEADER,
    ) as r:
        assert (await r.json())["status"] == "CANCELED"
    async with http.delete(
        base(sim)
        + "/fapi/v1/order?"
        + binance_signed({"symbol": "ETHUSDT", "orderId": o["orderId"]}),
        headers=KEY_HEADER,
    ) as r:
        assert (await r.json())["code"] == -2011
    ro = await _post_order(
        http, sim, symbol="ETHUSDT", side="SELL", type="MARKET", quantity="0.010", reduceOnly="true"
    )
    assert ro["code"] == -2022
    bad_tick = await _post_order(
        http,
        sim,
        symbol="ETHUSDT",
        side="BUY",
        type="LIMIT",
        timeInForce="GTC",
        quantity="0.010",
        price="100.005",
    )
    assert bad_tick["code"] in (-1111, -4014)
    ioc = await _post_order(
        http,
        sim,
        symbol="ETHUSDT",
        side="BUY",
        type="LIMIT",
        timeInForce="IOC",
        quantity="0.010",
        price=far,
    )
    assert ioc["status"] == "EXPIRED"


async def test_resting_order_fills_from_market_flow(
    start_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await start_sim(rate=2000.0, symbols="BTCUSDT")
    inst = sim.markets["BTCUSDT"].instrument
    price = inst.price_str(sim.markets["BTCUSDT"].book.best_bid)
    o = await _post_order(
        http,
        sim,
        symbol="BTCUSDT",
        side="BUY",
        type="LIMIT",
        timeInForce="GTC",
        quantity="0.001",
        price=price,
    )

    async def filled() -> bool:
        async with http.get(
            base(sim)
            + "/fapi/v1/order?"
            + binance_signed({"symbol": "BTCUSDT", "orderId": o["orderId"]}),
            headers=KEY_HEADER,
        ) as r:
            return (await r.json())["status"] == "FILLED"

    await eventually_async(filled, timeout=15, what="maker fill from the simulated flow")


async def test_bybit_order_create_realtime_and_duplicate(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    body = orjson.dumps(
        {
            "category": "linear",
            "symbol": "BTCUSDT",
            "side": "Buy",
            "orderType": "Market",
            "qty": "0.002",
            "orderLinkId": "by-1",
        }
    ).decode()
    async with http.post(
        base(sim) + "/v5/order/create", data=body, headers=bybit_headers(body)
    ) as r:
        res = await r.json()
    assert res["retCode"] == 0 and res["result"]["orderLinkId"] == "by-1"
    async with http.post(
        base(sim) + "/v5/order/create", data=body, headers=bybit_headers(body)
    ) as r:
        assert (await r.json())["retCode"] == 110072
    q = "category=linear&symbol=BTCUSDT&orderLinkId=by-1"
    async with http.get(base(sim) + "/v5/order/realtime?" + q, headers=bybit_headers(q)) as r:
        order = (await r.json())["result"]["list"][0]
    assert order["orderStatus"] == "Filled" and order["cumExecQty"] == "0.002"
    q = "category=linear&symbol=BTCUSDT"
    async with http.get(base(sim) + "/v5/position/list?" + q, headers=bybit_headers(q)) as r:
        pos = (await r.json())["result"]["list"][0]
    assert pos["side"] == "Buy" and Decimal(pos["size"]) == Decimal("0.002")


async def test_bad_requests_get_exchange_error_shapes(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    b = base(sim)
    cases = [
        ("GET", "/fapi/v1/depth?symbol=NOPEUSDT", -1121),
        ("GET", "/fapi/v1/depth", -1102),
        ("GET", "/fapi/v1/depth?symbol=BTCUSDT&limit=abc", -1100),
        ("GET", "/fapi/v1/depth?symbol=BTCUSDT&limit=7", -1130),
        ("GET", "/fapi/v1/nothing", -5000),
    ]
    for method, path, code in cases:
        async with http.request(method, b + path) as r:
            assert r.status < 500 and (await r.json())["code"] == code, path
    async with http.post(
        b + "/fapi/v1/order",
        data="%%%&&==",
        headers={**KEY_HEADER, "Content-Type": "application/x-www-form-urlencoded"},
    ) as r:
        assert r.status < 500 and "code" in await r.json()
    async with http.get(b + "/v5/market/orderbook?category=linear&symbol=NOPE") as r:
        assert (await r.json())["retCode"] == 10001
    async with http.post(
        b + "/v5/order/create", data="{not json", headers=bybit_headers("{not json")
    ) as r:
        assert r.status == 200 and (await r.json())["retCode"] == 10001
    async with http.post(b + "/sim/faults", data="[1") as r:
        assert r.status == 400
    async with http.get(b + "/sim/truth?symbol=BTCUSDT&update_id=-5") as r:
        assert r.status == 404


async def test_weight_limit_429_then_418(
    start_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await start_sim(weight_limit=10, ban_after=2)
    statuses = []
    for _ in range(12):
        async with http.get(base(sim) + "/fapi/v1/depth?symbol=BTCUSDT&limit=5") as r:
            statuses.append(r.status)
            body = await r.json()
    assert statuses[:5] == [200] * 5 and 429 in statuses and statuses[-1] == 418
    assert body["code"] == -1003


async def test_unknown_503_order_was_placed(sim: Simulator, http: aiohttp.ClientSession) -> None:
    await http.post(base(sim) + "/sim/faults", json={"unknown_503_rate": 1.0})
    try:
        res = await _post_order(
            http,
            sim,
            symbol="BTCUSDT",
            side="BUY",
            type="MARKET",
            quantity="0.001",
            newClientOrderId="maybe-1",
        )
        assert res["code"] == -1007
    finally:
        await http.post(base(sim) + "/sim/faults", json={"unknown_503_rate": 0})
    async with http.get(
        base(sim)
        + "/fapi/v1/order?"
        + binance_signed({"symbol": "BTCUSDT", "origClientOrderId": "maybe-1"}),
        headers=KEY_HEADER,
    ) as r:
        assert (await r.json())["status"] == "FILLED"


async def test_slow_answers_and_late_user_stream_after_the_order_took_effect(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    """``slow_response_ms`` delays the answer, not the order; ``user_stream_delay_ms``
    holds account events back, in order. ``/sim/orders`` sees through both."""
    async with await _listen(sim, http) as ws:
        await http.post(
            base(sim) + "/sim/faults", json={"slow_response_ms": 1500, "user_stream_delay_ms": 2500}
        )
        try:
            started = time.monotonic()
            placing = asyncio.create_task(
                _post_order(
                    http,
                    sim,
                    symbol="BTCUSDT",
                    side="BUY",
                    type="MARKET",
                    quantity="0.001",
                    newClientOrderId="late-1",
                )
            )

            async def on_venue() -> list:
                async with http.get(
                    base(sim) + "/sim/orders", params={"client_order_id": "late-1"}
                ) as r:
                    return await r.json()

            found = await eventually_async(on_venue, timeout=1.0, what="order on the venue")
            assert found[0]["status"] == "FILLED"
            assert time.monotonic() - started < 1.4  # before its answer
            answer = await placing
            assert answer["status"] == "FILLED"
            assert time.monotonic() - started >= 1.5
            while True:  # the first account event is this order's, and it is late
                event = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
                if event.get("e") == "ORDER_TRADE_UPDATE":
                    break
            assert event["o"]["c"] == "late-1"
            assert time.monotonic() - started >= 2.5
        finally:
            await http.post(
                base(sim) + "/sim/faults", json={"slow_response_ms": 0, "user_stream_delay_ms": 0}
            )
    async with http.get(base(sim) + "/sim/orders") as r:
        assert r.status == 400
