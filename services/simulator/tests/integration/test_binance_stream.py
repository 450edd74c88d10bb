"""Binance market data with real clients: pu continuity, and a book rebuilt from a REST
snapshot + the diff stream (Binance's documented algorithm) equals the truth endpoint."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from itertools import pairwise

import aiohttp
import orjson
import websockets

from depthflow.common.testing import eventually_async
from depthflow.sim.app import Simulator

from .conftest import base


async def _collect(ws: websockets.ClientConnection, n: int) -> list[dict]:
    out = []
    while len(out) < n:
        out.append(orjson.loads(await asyncio.wait_for(ws.recv(), 5)))
    return out


async def test_every_depth_event_pu_equals_previous_u(sim: Simulator) -> None:
    url = base(sim, "ws") + "/stream?streams=btcusdt@depth@0ms/btcusdt@depth@100ms"
    async with websockets.connect(url) as ws:
        msgs = await _collect(ws, 400)
    by_stream: dict[str, list[dict]] = {}
    for m in msgs:
        by_stream.setdefault(m["stream"], []).append(m["data"])
    assert set(by_stream) == {"btcusdt@depth@0ms", "btcusdt@depth@100ms"}
    for events in by_stream.values():
        assert len(events) >= 2
        for prev, ev in pairwise(events):
            assert ev["pu"] == prev["u"], (prev, ev)
            assert ev["U"] == prev["u"] + 1
    ev = by_stream["btcusdt@depth@100ms"][0]
    assert set(ev) == {"e", "E", "T", "s", "U", "u", "pu", "b", "a"}
    assert ev["e"] == "depthUpdate" and ev["s"] == "BTCUSDT"
    assert all(isinstance(x, str) for lvl in ev["b"] + ev["a"] for x in lvl)


def _apply(book: dict[Decimal, Decimal], levels: list[list[str]]) -> None:
    for price, qty in levels:
        if Decimal(qty) == 0:
            book.pop(Decimal(price), None)
        else:
            book[Decimal(price)] = Decimal(qty)


async def test_snapshot_plus_diffs_rebuilds_truth(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    async with websockets.connect(base(sim, "ws") + "/ws/btcusdt@depth@100ms") as ws:
        buffered: list[dict] = []

        async def reader() -> None:
            async for raw in ws:
                buffered.append(orjson.loads(raw))

        task = asyncio.create_task(reader())
        await eventually_async(lambda: _ready(buffered), timeout=5, what="first diff")
        async with http.get(base(sim) + "/fapi/v1/depth?symbol=BTCUSDT&limit=1000") as r:
            snap = await r.json()
        last_id = snap["lastUpdateId"]
        bids = {Decimal(p): Decimal(q) for p, q in snap["bids"]}
        asks = {Decimal(p): Decimal(q) for p, q in snap["asks"]}
        await eventually_async(lambda: _ready(buffered, 15), timeout=10, what="15 diffs")
        task.cancel()
    events = [e for e in buffered if e["u"] >= last_id]  # drop u < lastUpdateId
    first = events[0]
    assert first["U"] <= last_id <= first["u"]
    prev_u = None
    for ev in events:
        if prev_u is not None:
            assert ev["pu"] == prev_u
        _apply(bids, ev["b"])
        _apply(asks, ev["a"])
        prev_u = ev["u"]
    async with http.get(
        base(sim) + f"/sim/truth?symbol=BTCUSDT&update_id={prev_u}&depth=1000"
    ) as r:
        truth = await r.json()
    assert truth["update_id"] == prev_u
    # the snapshot held 1000 levels; compare the levels every diff kept inside that range
    n = 200
    mine_b = sorted(bids.items(), reverse=True)[:n]
    mine_a = sorted(asks.items())[:n]
    assert [(Decimal(p), Decimal(q)) for p, q in truth["bids"][:n]] == mine_b
    assert [(Decimal(p), Decimal(q)) for p, q in truth["asks"][:n]] == mine_a


async def _ready(buf: list[dict], n: int = 1) -> bool:
    return len(buf) >= n


async def test_live_subscribe_unsubscribe_and_errors(sim: Simulator) -> None:
    async with websockets.connect(base(sim, "ws") + "/ws") as ws:
        await ws.send(
            orjson.dumps(
                {
                    "method": "SUBSCRIBE",
                    "params": ["ethusdt@aggTrade", "ethusdt@bookTicker"],
                    "id": 7,
                }
            ).decode()
        )
        seen: set[str] = set()
        reply = None
        while len(seen) < 2 or reply is None:
            m = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            if m.get("id") == 7:
                reply = m
            elif "e" in m:
                seen.add(m["e"])
        assert reply == {"result": None, "id": 7}
        assert seen == {"aggTrade", "bookTicker"}
        await ws.send(
            orjson.dumps({"method": "SUBSCRIBE", "params": ["nope@depth"], "id": 8}).decode()
        )
        await ws.send("{not json")
        await ws.send(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 9}).decode())
        replies = {}
        while len(replies) < 3:
            m = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            if "e" not in m:
                replies[m.get("id")] = m
        assert replies[8]["error"]["code"] == 2
        assert replies[None]["error"]["code"] == 3
        assert replies[9]["result"] == ["ethusdt@aggTrade", "ethusdt@bookTicker"]


async def test_dropped_messages_make_real_pu_gaps(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    async with http.post(base(sim) + "/sim/faults", json={"drop_rate": 0.3}) as r:
        assert (await r.json())["drop_rate"] == 0.3
    try:
        async with websockets.connect(base(sim, "ws") + "/ws/btcusdt@depth@0ms") as ws:
            msgs = [orjson.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(100)]
    finally:
        async with http.post(base(sim) + "/sim/faults", json={"drop_rate": 0}) as r:
            assert r.status == 200
    gaps = sum(1 for a, b in pairwise(msgs) if b["pu"] != a["u"])
    assert gaps > 5


async def test_disconnect_fault_closes_streams(sim: Simulator, http: aiohttp.ClientSession) -> None:
    await http.post(base(sim) + "/sim/faults", json={"disconnect_every_s": 0.3})
    try:
        async with websockets.connect(base(sim, "ws") + "/ws/btcusdt@depth@100ms") as ws:
            closed = False
            try:
                for _ in range(1000):
                    await asyncio.wait_for(ws.recv(), 3)
            except websockets.ConnectionClosed:
                closed = True
            assert closed
    finally:
        await http.post(base(sim) + "/sim/faults", json={"disconnect_every_s": 0})
