"""Fault tests against the simulator: 503 "unknown", timeouts, 429, duplicate signals,
out-of-order and repeated fill reports, the circuit breaker, the append-only audit log."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from depthflow.common.testing import eventually_async
from depthflow.executor.fsm import OrderState
from depthflow.executor.ids import client_order_id
from depthflow.executor.venues.base import OrderReport, VenueUnavailable, VenueUnknown

from .conftest import Bus, Sim


async def _state(db: asyncpg.Connection, coid: str) -> str | None:
    return await db.fetchval("SELECT state FROM orders WHERE client_order_id=$1", coid)


async def _is(db: asyncpg.Connection, coid: str, *states: str) -> bool:
    return (await _state(db, coid)) in states


async def _true(value: bool) -> bool:
    return value


async def test_503_unknown_timeout_and_duplicates_never_duplicate(
    sim: Sim, bus: Bus, make_settings, run_executor, db: asyncpg.Connection
) -> None:
    settings = make_settings("binance", sim, order_timeout_s=0.5, request_timeout_s=5.0)
    bus.control("running", 1)
    async with run_executor(settings) as svc:
        # 503 "unknown": the order is placed, the answer lost -> resolved by query.
        await sim.faults(unknown_503_rate=1.0)
        a = bus.signal("BTCUSDT", "buy", exchange="binance")
        ca = client_order_id(a.signal_id)
        await eventually_async(lambda: _is(db, ca, "Filled"), timeout=20, what="503 resolved")
        assert svc.metrics.unknown._value.get() >= 1
        # Timeouts: the placement answers later than the client waits -> the outcome is
        # unknown and resolved by querying the client id, never by resending.
        await sim.faults(unknown_503_rate=0.0, slow_response_ms=1200)
        b = bus.signal("ETHUSDT", "buy", exchange="binance")
        cb = client_order_id(b.signal_id)
        await eventually_async(
            lambda: db.fetchval(
                "SELECT count(*) FROM audit_log WHERE action='send_outcome_unknown' AND"
                " entity_id=$1",
                cb,
            ),
            timeout=10,
            what="timeout seen",
        )
        await sim.faults(slow_response_ms=0)
        await eventually_async(
            lambda: _is(db, cb, "Filled", "Failed"), timeout=30, what="timeout resolved"
        )
        # Duplicates: the same signal three times, concurrently in one batch.
        c_sig = bus.signal("BTCUSDT", "sell", exchange="binance")
        for _ in range(2):
            bus.signal("BTCUSDT", "sell", exchange="binance", signal_id=c_sig.signal_id)
        cc = client_order_id(c_sig.signal_id)
        await eventually_async(lambda: _is(db, cc, "Filled"), timeout=20, what="dup filled")
    for coid in (ca, cc):
        assert len(await sim.bybit_orders(coid)) == 1
    venue_b = await sim.bybit_orders(cb)
    assert len(venue_b) <= 1
    assert (await _state(db, cb) == "Filled") == (len(venue_b) == 1)
    assert await db.fetchval("SELECT count(*) FROM orders") == 3
    # every filled order's fills add up exactly (no lost, no double-counted fills)
    for coid in (ca, cc):
        qty = await db.fetchval("SELECT qty FROM orders WHERE client_order_id=$1", coid)
        got = await db.fetchval("SELECT sum(qty) FROM fills WHERE client_order_id=$1", coid)
        assert abs(got - qty) < 1e-9


async def test_breaker_opens_and_recovers_and_429_backs_off(
    sim: Sim, bus: Bus, make_settings, run_executor, db: asyncpg.Connection
) -> None:
    settings = make_settings(
        "bybit",
        sim,
        breaker_failure_threshold=2,
        breaker_recovery_timeout_s=1.0,
        max_rate_limit_wait_s=0.5,
    )
    bus.control("running", 1)
    key = "bybit:POST /v5/order/create"
    async with run_executor(settings) as svc:
        # Every placement answers 503 after placing: two failures open the breaker; the
        # two orders are found by query; the third signal is refused by the open breaker.
        await sim.faults(unknown_503_rate=1.0)
        coids = []
        for _ in range(3):
            coids.append(client_order_id(bus.signal("ETHUSDT", "buy", exchange="bybit").signal_id))
        for coid in coids[:2]:
            await eventually_async(
                lambda c=coid: _is(db, c, "Filled"), timeout=20, what="503 order resolved by query"
            )
        await eventually_async(
            lambda: _is(db, coids[2], "Failed"), timeout=20, what="refused by the open breaker"
        )
        reason = await db.fetchval("SELECT reason FROM orders WHERE client_order_id=$1", coids[2])
        assert reason.startswith("not sent: circuit")
        await sim.faults(unknown_503_rate=0.0)
        # After the recovery timeout a probe goes through and closes it.
        await eventually_async(
            lambda: _true(svc.venue.breaker_states()[key] == "half_open"),
            timeout=10,
            what="half-open after the recovery timeout",
        )
        ok = client_order_id(bus.signal("BTCUSDT", "buy", exchange="bybit").signal_id)
        await eventually_async(lambda: _is(db, ok, "Filled"), timeout=20, what="probe filled")
        assert svc.venue.breaker_states()[key] == "closed"
        # 429 on everything: the limiter backs off; nothing reaches the venue.
        await sim.faults(force_status=429)
        s429 = bus.signal("ETHUSDT", "sell", exchange="bybit")
        await eventually_async(
            lambda: db.fetchval("SELECT count(*) FROM signals WHERE signal_id=$1", s429.signal_id),
            timeout=20,
            what="429 signal decided",
        )
        limiter = svc.venue.rest.limiter  # type: ignore[attr-defined]
        assert limiter.state.value in ("backing_off", "ok") and limiter._consecutive_429 >= 1
        await sim.faults(force_status=None)
    assert [len(await sim.bybit_orders(c)) for c in coids] == [1, 1, 0]
    assert len(await sim.bybit_orders(ok)) == 1
    assert await sim.bybit_orders(client_order_id(s429.signal_id)) == []
    moves = [
        r["reason"]
        for r in await db.fetch(
            "SELECT reason FROM audit_log WHERE action='breaker' AND entity_id=$1 ORDER BY id", key
        )
    ]
    assert len(moves) >= 3  # open, half-open, closed


async def test_out_of_order_and_repeated_fill_reports(
    bus: Bus, make_settings, run_executor, db: asyncpg.Connection
) -> None:
    bus.book("XYZUSDT", [(99.0, 100.0)], [(101.0, 100.0)])
    settings = make_settings("paper", None, paper_latency_ms=60_000)  # the model never fills
    async with run_executor(settings) as svc:
        await svc.venue.wait_for_book("XYZUSDT")  # type: ignore[attr-defined]
        sig = bus.signal("XYZUSDT", "buy")
        coid = client_order_id(sig.signal_id)
        await eventually_async(lambda: _is(db, coid, "Placed"), timeout=15, what="placed")
        qty = await db.fetchval("SELECT qty FROM orders WHERE client_order_id=$1", coid)
        third = qty / 3

        def rep(cum: float, tid: str, state: OrderState) -> OrderReport:
            return OrderReport(
                coid,
                "XYZUSDT",
                state,
                "v1",
                "buy",
                qty,
                cum,
                cum * 101.0,
                trade_id=tid,
                last_qty=third,
                last_price=101.0,
                last_fee=0.01,
                source="stream",
            )

        second = rep(2 * third, "t2", OrderState.PARTIALLY_FILLED)
        first = rep(third, "t1", OrderState.PARTIALLY_FILLED)
        last = rep(qty, "t3", OrderState.FILLED)
        for r in (second, first, second, last, first, last):  # reordered and repeated
            await svc.apply(r)
    fills = await db.fetch("SELECT qty, venue_trade_id FROM fills WHERE client_order_id=$1", coid)
    assert abs(sum(f["qty"] for f in fills) - qty) < 1e-9
    assert await _state(db, coid) == "Filled"
    pos = await db.fetchval("SELECT qty FROM positions WHERE symbol='XYZUSDT'")
    assert abs(pos - qty) < 1e-9


async def test_audit_log_refuses_update_and_delete(
    bus: Bus, make_settings, run_executor, db: asyncpg.Connection
) -> None:
    async with run_executor(make_settings("paper")):
        pass
    await db.execute("INSERT INTO audit_log (actor, action) VALUES ('test', 'probe')")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await db.execute("UPDATE audit_log SET reason='tampered'")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await db.execute("DELETE FROM audit_log")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await db.execute("TRUNCATE audit_log")
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE action='probe'") == 1


async def test_pending_event_published_once_when_the_send_stays_unresolved(
    bus: Bus, make_settings, run_executor, db: asyncpg.Connection, monkeypatch
) -> None:
    """An order is sent straight after its commit; its Pending event leaves with the order's
    next event. When no event follows (the answer is lost and the venue cannot be asked:
    the order is left to the reconciler), the Pending event still goes out, exactly once."""
    settings = make_settings("paper", recv_window_ms=500)
    async with run_executor(settings) as svc:
        venue = svc.venue

        async def lost(*_: object) -> None:
            raise VenueUnknown("answer lost")

        async def unreachable(*_: object) -> None:
            raise VenueUnavailable("venue unreachable")

        monkeypatch.setattr(venue, "place_order", lost)
        monkeypatch.setattr(venue, "query_order", unreachable)
        bus.book("BTCUSDT", [(60000.0, 5.0)], [(60001.0, 5.0)])
        await venue.wait_for_book("BTCUSDT")  # type: ignore[attr-defined]
        sig = bus.signal("BTCUSDT", "buy")
        coid = client_order_id(sig.signal_id)
        await eventually_async(
            lambda: db.fetchval(
                "SELECT count(*) FROM audit_log WHERE action='order_unresolved' AND entity_id=$1",
                coid,
            ),
            timeout=30,
            what="the send left to reconciliation",
        )
        assert await _state(db, coid) == "Pending"

        async def published() -> list[str]:
            return [
                e["status"]
                for e in bus.orders()
                if e["client_order_id"] == coid and e["event_type"] == "order"
            ]

        async def marked() -> bool:
            # the outbox marks a row published after Kafka has acknowledged it
            unmarked = await db.fetchval(
                "SELECT count(*) FROM order_events"
                " WHERE client_order_id=$1 AND published_at IS NULL",
                coid,
            )
            return unmarked == 0

        assert await eventually_async(published, timeout=10, what="Pending published") == [
            "Pending"
        ]
        await eventually_async(marked, timeout=10, what="the Pending event marked published")
        # marked, so no later outbox pass sends it again
        await svc.publish_outbox()
        assert await published() == ["Pending"]


async def test_an_acknowledged_orders_writes_do_not_hold_the_next_signal(
    bus: Bus, make_settings, run_executor, db: asyncpg.Connection, monkeypatch
) -> None:
    """An acknowledged send is stored and published off the signal path: while the first
    order's acknowledgement is held before its transaction, the next signal (its own batch)
    still becomes an order; a graceful stop waits for the held acknowledgement to be stored."""
    first = uuid.uuid4().hex
    first_coid = client_order_id(first)
    async with run_executor(make_settings("paper")) as svc:
        for symbol, price in (("BTCUSDT", 60000.0), ("ETHUSDT", 3000.0)):
            bus.book(symbol, [(price, 5.0)], [(price + 1.0, 5.0)])
            await svc.venue.wait_for_book(symbol)  # type: ignore[attr-defined]
        assert svc.store is not None
        gate = asyncio.Event()
        apply_report = svc.store.apply_report

        async def held(report: OrderReport, **kw: object) -> object:
            if report.client_order_id == first_coid:
                await gate.wait()
            return await apply_report(report, **kw)

        monkeypatch.setattr(svc.store, "apply_report", held)
        bus.signal("BTCUSDT", "buy", signal_id=first)
        await eventually_async(
            lambda: db.fetchval(
                "SELECT sent_at IS NOT NULL FROM orders WHERE client_order_id=$1", first_coid
            ),
            timeout=20,
            what="the first order sent",
        )
        second = client_order_id(bus.signal("ETHUSDT", "buy").signal_id)
        await eventually_async(
            lambda: _is(db, second, "Placed", "PartiallyFilled", "Filled"),
            timeout=20,
            what="the second order acknowledged while the first's write is held",
        )
        assert await _state(db, first_coid) == "Pending"
        asyncio.get_running_loop().call_later(0.5, gate.set)
    # the stop waited for the held acknowledgement
    assert await _state(db, first_coid) in ("Placed", "PartiallyFilled", "Filled")
