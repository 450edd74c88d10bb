"""Binance- and Bybit-protocol venues against the simulator: stopped until an explicit
start, then a signal becomes exactly one venue order, fills (from the user-data stream), a
position that matches the venue's, audit rows and orders.v1 events."""

from __future__ import annotations

import asyncpg
import pytest

from depthflow.common.testing import eventually_async
from depthflow.executor.ids import client_order_id

from .conftest import Bus, Sim


async def _order_in(
    db: asyncpg.Connection, coid: str, states: tuple[str, ...]
) -> asyncpg.Record | None:
    row = await db.fetchrow("SELECT * FROM orders WHERE client_order_id=$1", coid)
    return row if row is not None and row["state"] in states else None


@pytest.mark.parametrize("venue", ["binance", "bybit"])
async def test_live_venue_signal_becomes_one_venue_order(
    venue: str, sim: Sim, bus: Bus, make_settings, run_executor, db: asyncpg.Connection
) -> None:
    settings = make_settings(venue, sim)
    async with run_executor(settings) as svc:
        assert not svc.trading  # live venues wait for an explicit start
        early = bus.signal("ETHUSDT", "buy", exchange=venue)
        await eventually_async(
            lambda: db.fetchval("SELECT reason FROM signals WHERE signal_id=$1", early.signal_id),
            timeout=15,
            what="refused while stopped",
        )
        assert (
            await db.fetchval("SELECT reason FROM signals WHERE signal_id=$1", early.signal_id)
            == "stopped"
        )
        bus.control("running", 1)
        await eventually_async(lambda: _true(svc.trading), timeout=10, what="started")
        sig = bus.signal("BTCUSDT", "buy", exchange=venue, strength=0.4)
        coid = client_order_id(sig.signal_id)
        order = await eventually_async(
            lambda: _order_in(db, coid, ("Filled",)), timeout=20, what="order Filled"
        )
        venue_orders = await sim.bybit_orders(coid)  # one account serves both protocols
        assert len(venue_orders) == 1 and venue_orders[0]["orderStatus"] == "Filled"
        assert order["venue_order_id"]
        fills = await db.fetch("SELECT * FROM fills WHERE client_order_id=$1", coid)
        assert abs(sum(f["qty"] for f in fills) - order["qty"]) < 1e-9
        if venue == "binance":  # per-trade ids and fees from ORDER_TRADE_UPDATE
            assert all(not f["venue_trade_id"].startswith("cum:") for f in fills)
        venue_qty = await sim.position("BTCUSDT")
        pos = await db.fetchrow("SELECT * FROM positions WHERE symbol='BTCUSDT'")
        assert pos["state"] == "Open" and abs(pos["qty"] - venue_qty) < 1e-9
        await eventually_async(
            lambda: _true(svc.reconciliations >= 2), timeout=10, what="a periodic reconciliation"
        )
    assert await db.fetchval("SELECT count(*) FROM orders") == 1
    actions = {r["action"] for r in await db.fetch("SELECT action FROM audit_log")}
    assert {"control", "signal_refused", "order_created", "order_state", "fill"} <= actions

    async def lifecycle() -> bool:
        st = [
            e["status"]
            for e in bus.orders()
            if e["client_order_id"] == coid and e["event_type"] == "order"
        ]
        return bool(st) and st[0] == "Pending" and st[-1] == "Filled"

    await eventually_async(lifecycle, timeout=10, what="orders.v1 Pending ... Filled")


async def _true(value: bool) -> bool:
    return value
