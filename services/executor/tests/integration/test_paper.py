"""Paper venue end to end: a signal becomes exactly one order, filled by the fill model
against md.book levels taken from the simulator, a position, audit rows and orders.v1 events."""

from __future__ import annotations

import time

import asyncpg
import pytest
from prometheus_client import generate_latest

from depthflow.common.testing import eventually_async
from depthflow.executor.ids import client_order_id

from .conftest import Bus, Sim


async def test_paper_signal_becomes_one_filled_order(
    sim: Sim, bus: Bus, make_settings, run_executor, db: asyncpg.Connection
) -> None:
    await bus.book_from_sim(sim, "BTCUSDT")
    settings = make_settings("paper", sim)
    async with run_executor(settings) as svc:
        await svc.venue.wait_for_book("BTCUSDT")  # type: ignore[attr-defined]
        hold = bus.signal(side="hold")
        sig = bus.signal(side="buy", strength=0.5, confidence=1.0)
        coid = client_order_id(sig.signal_id)

        async def filled() -> asyncpg.Record | None:
            row = await db.fetchrow("SELECT * FROM orders WHERE client_order_id=$1", coid)
            return row if row is not None and row["state"] == "Filled" else None

        order = await eventually_async(filled, timeout=20, what="order Filled")
        registry = svc.metrics.service.registry
        # exchange event -> acknowledged order: observed once, and no longer than the test
        assert registry.get_sample_value("depthflow_executor_e2e_latency_seconds_count") == 1
        e2e = registry.get_sample_value("depthflow_executor_e2e_latency_seconds_sum")
        assert 0 < e2e < time.time() - sig.source_ts_us / 1e6

        async def lag_reported() -> bool:  # exported about once a second
            text = generate_latest(registry).decode()
            return f'topic="{bus.topics["signals"]}"' in text and "depthflow_consumer_lag{" in text

        await eventually_async(lag_reported, timeout=10, what="consumer lag exported")
        # the exposure gauges are computed when scraped: the open position shows
        assert registry.get_sample_value("depthflow_executor_open_positions") == 1
        held = await db.fetchrow("SELECT qty, avg_entry_price FROM positions")
        exposure = registry.get_sample_value("depthflow_executor_exposure_usdt")
        assert exposure == pytest.approx(held["qty"] * held["avg_entry_price"], rel=0.05)
        bus.signal(side="buy", signal_id=sig.signal_id)  # a replay
        await eventually_async(
            lambda: _count(svc.metrics.signals.labels("duplicate")._value.get() >= 1),
            timeout=15,
            what="replay seen",
        )
    assert order["qty"] > 0 and abs(order["filled_qty"] - order["qty"]) < 1e-9
    assert order["signal_id"] == sig.signal_id and order["trace_id"] == sig.trace_id
    assert await db.fetchval("SELECT count(*) FROM orders") == 1
    assert await db.fetchval("SELECT count(*) FROM signals WHERE signal_id=$1", hold.signal_id) == 0
    fills = await db.fetch("SELECT * FROM fills WHERE client_order_id=$1", coid)
    assert fills and abs(sum(f["qty"] for f in fills) - order["qty"]) < 1e-9
    assert all(f["fee"] > 0 and f["liquidity"] == "taker" for f in fills)
    pos = await db.fetchrow("SELECT * FROM positions WHERE symbol='BTCUSDT'")
    assert pos["state"] == "Open" and abs(pos["qty"] - order["qty"]) < 1e-9
    bal = await db.fetchval("SELECT balance FROM balances WHERE asset='USDT'")
    assert bal < settings.paper_starting_balance  # fees paid
    actions = {r["action"] for r in await db.fetch("SELECT action FROM audit_log")}
    assert {"order_created", "order_state", "fill", "position"} <= actions
    audit = await db.fetchrow("SELECT * FROM audit_log WHERE action='order_created'")
    assert audit["trace_id"] == sig.trace_id and audit["signal"] and audit["market"]

    async def events() -> list[dict]:
        evs = [e for e in bus.orders() if e["client_order_id"] == coid]
        statuses = [e["status"] for e in evs if e["event_type"] == "order"]
        return evs if statuses and statuses[0] == "Pending" and "Filled" in statuses else []

    evs = await eventually_async(events, timeout=10, what="orders.v1 lifecycle")
    assert any(e["event_type"] == "fill" for e in evs)
    assert any(e["event_type"] == "position" and e["symbol"] == "BTCUSDT" for e in bus.orders())


async def _count(value: bool) -> bool:
    return value


async def test_paper_venue_decodes_an_idle_symbols_newest_book_only_when_needed(
    bus: Bus, make_settings, run_executor
) -> None:
    """Books of a symbol with nothing working are kept undecoded; the newest one is what an
    order meets, and garbage after it never replaces a good book."""
    settings = make_settings("paper")
    async with run_executor(settings) as svc:
        venue = svc.venue
        bus.book("ETHUSDT", [(100.0, 1.0)], [(101.0, 1.0)])
        await venue.wait_for_book("ETHUSDT")  # type: ignore[attr-defined]
        bus.book("ETHUSDT", [(200.0, 1.0)], [(201.0, 1.0)])

        async def newest() -> bool:
            return await venue.best_prices("ETHUSDT") == (200.0, 201.0)

        await eventually_async(newest, timeout=10, what="the newest book")
        assert "ETHUSDT" not in venue._raw  # type: ignore[attr-defined]  # decoded on demand
        bus.producer.produce(bus.topics["book"], b"{not json", b"binance:ETHUSDT")
        bus.producer.flush(10)

        async def garbage_kept() -> bool:
            return "ETHUSDT" in venue._raw  # type: ignore[attr-defined]

        await eventually_async(garbage_kept, timeout=10, what="the garbage record consumed")
        assert await venue.best_prices("ETHUSDT") == (200.0, 201.0)
        assert venue.latest_book("ETHUSDT").bid_price == 200.0  # type: ignore[attr-defined]
