"""kill -9 between "order sent" and "response received", then restart: exactly one venue
order and a consistent local state. Risk limits under a burst of concurrent signals."""

from __future__ import annotations

import os
import signal
import subprocess

import asyncpg

from depthflow.common.testing import eventually_async
from depthflow.executor import app as executor_app
from depthflow.executor.ids import client_order_id

from .conftest import VENV_BIN, Bus, Sim, env_for


async def _true(value: bool) -> bool:
    return value


async def test_kill_9_while_order_in_flight_then_restart(
    sim: Sim,
    bus: Bus,
    make_settings,
    run_executor,
    db: asyncpg.Connection,
    kafka_settings,
    pg_dsn: str,
) -> None:
    settings = make_settings("binance", sim, recv_window_ms=5000)
    bus.control("running", 1)
    proc = subprocess.Popen(  # noqa: ASYNC220 - a plain child, SIGKILLed by pid mid-request
        [str(VENV_BIN / "depthflow"), "executor"],
        env=env_for(settings, kafka_settings, pg_dsn),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await eventually_async(
            lambda: db.fetchval("SELECT to_regclass('orders') IS NOT NULL"),
            timeout=30,
            what="migrated",
        )
        # Orders take effect at once; REST answers and user-stream events come late.
        await sim.faults(slow_response_ms=4000, user_stream_delay_ms=4000)
        sig = bus.signal("BTCUSDT", "buy", exchange="binance")
        coid = client_order_id(sig.signal_id)
        await eventually_async(
            lambda: db.fetchval(
                "SELECT sent_at IS NOT NULL FROM orders WHERE client_order_id=$1", coid
            ),
            timeout=30,
            what="order stored Pending and sent",
        )
        # Kill only once the venue holds the order: the executor has sent it and is still
        # waiting for the answer (killing earlier would test "never sent", a different case).
        await eventually_async(
            lambda: sim.venue_orders(coid), timeout=10, what="the venue received the order"
        )
        os.kill(proc.pid, signal.SIGKILL)  # the response has not arrived yet
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert await db.fetchval("SELECT state FROM orders WHERE client_order_id=$1", coid) == "Pending"
    await sim.faults(slow_response_ms=0, user_stream_delay_ms=0)
    async with run_executor(settings):
        await eventually_async(
            lambda: db.fetchval(
                "SELECT state = 'Filled' FROM orders WHERE client_order_id=$1", coid
            ),
            timeout=30,
            what="restart resolves the in-flight order",
        )
        venue_qty = await sim.position("BTCUSDT")

        async def consistent() -> bool:
            pos = await db.fetchval("SELECT qty FROM positions WHERE symbol='BTCUSDT'")
            return pos is not None and abs(pos - venue_qty) < 1e-9

        await eventually_async(consistent, timeout=15, what="position matches the venue")
    assert len(await sim.bybit_orders(coid)) == 1  # the replayed signal made no second order
    assert await db.fetchval("SELECT count(*) FROM orders") == 1
    qty = await db.fetchval("SELECT qty FROM orders WHERE client_order_id=$1", coid)
    assert abs(await db.fetchval("SELECT sum(qty) FROM fills") - qty) < 1e-9


async def test_risk_limits_hold_under_a_burst_on_many_symbols(
    bus: Bus, make_settings, run_executor, db: asyncpg.Connection, monkeypatch
) -> None:
    # the outbox read in pairs: full reads go round again, concurrent writers' events wait
    # for their own publish call (every event must still be published)
    monkeypatch.setattr(executor_app, "OUTBOX_READ_LIMIT", 2)
    symbols = [f"S{i:02d}USDT" for i in range(12)]
    for s in symbols:
        bus.book(
            s,
            [(99.9 - i * 0.1, 50.0) for i in range(20)],
            [(100.0 + i * 0.1, 50.0) for i in range(20)],
        )
    settings = make_settings(
        "paper",
        None,
        max_open_positions=5,
        max_exposure_usdt=3000,
        order_usdt_at_full_conviction=1000,
        concurrency=32,
    )
    async with run_executor(settings) as svc:
        for s in symbols:
            await svc.venue.wait_for_book(s)  # type: ignore[attr-defined]
        sigs = [bus.signal(s, "buy", strength=1.0) for s in symbols for _ in range(4)]
        await eventually_async(
            lambda: db.fetchval("SELECT count(*) = $1 FROM signals", len(sigs)),
            timeout=60,
            what="all decided",
        )
        await eventually_async(
            lambda: db.fetchval(
                "SELECT count(*) = 0 FROM orders WHERE state IN ('Pending','Placed',"
                "'PartiallyFilled')"
            ),
            timeout=30,
            what="orders done",
        )
        exp = svc.ledger.exposures()
        assert sum(e.worst_case for e in exp.values()) <= 3000 + 1e-6
        await eventually_async(
            lambda: db.fetchval("SELECT count(*) = 0 FROM order_events WHERE published_at IS NULL"),
            timeout=10,
            what="every order event published",
        )
        assert await db.fetchval("SELECT count(*) FROM order_events") > len(symbols)
    rows = await db.fetch("SELECT symbol, qty, avg_entry_price FROM positions WHERE qty <> 0")
    assert 0 < len(rows) <= 5
    assert sum(abs(r["qty"]) * r["avg_entry_price"] for r in rows) <= 3000 + 1e-6
    reasons = {
        r["reason"] for r in await db.fetch("SELECT reason FROM signals WHERE decision='refused'")
    }
    assert reasons & {"max_open_positions", "max_exposure", "no_headroom"}
