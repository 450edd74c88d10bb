# ruff: noqa: S608 - table names come from ident() (code-chosen schema); values are bind parameters
"""The executor's PostgreSQL state: orders, order events (the ``orders.v1`` outbox), fills,
positions, balances and the append-only audit log, in one schema.

Every change of an order or a position is an ``UPDATE ... WHERE version = $n`` (optimistic
locking): when another writer got there first nothing is updated, and the whole transaction is
re-read and re-decided. Fills are applied from the venue's *cumulative* filled quantity, so a
repeated, late or reordered report adds nothing and a missed one is caught up by the next.
Each order/fill/position change writes its ``OrderEvent`` into ``order_events`` in the same
transaction; the service publishes unpublished events after commit (and at start), so Kafka
never sees a change the database does not have, and no change is left unpublished.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import orjson
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from depthflow.common.db import ident
from depthflow.common.schemas import OrderEvent
from depthflow.executor.fsm import (
    ORDER_TERMINAL_STATES,
    IllegalTransition,
    OrderFsm,
    OrderState,
    PositionFsm,
    PositionFsmEvent,
    PositionState,
    event_for_state,
)
from depthflow.executor.positions import FillKind, Position, PositionFill
from depthflow.executor.venues.base import NewOrder, OrderReport

log = logging.getLogger(__name__)
_EPS = 1e-9


class VersionConflict(Exception):
    """Another writer changed the row first; re-read and retry."""


T = TypeVar("T")
# whole-transaction attempts against concurrent writers before giving up (VersionConflict)
CONFLICT_ATTEMPTS = 20


async def retry_conflicts(
    transaction: Callable[[], Awaitable[T]],
    conflicts: tuple[type[BaseException], ...] = (VersionConflict,),
) -> T:
    """Run ``transaction`` (one whole transaction: it re-reads what it writes) again while
    another writer changed its rows first; the last conflict is raised after
    ``CONFLICT_ATTEMPTS``."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(conflicts),
        stop=stop_after_attempt(CONFLICT_ATTEMPTS),
        reraise=True,
    ):
        with attempt:
            return await transaction()
    raise AssertionError("unreachable: tenacity returns or re-raises")


def _now_us() -> int:
    return time.time_ns() // 1000


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


@dataclass
class Applied:
    """What one report changed (for the risk ledger, metrics and logs)."""

    client_order_id: str
    symbol: str = ""
    side: str = ""
    from_state: OrderState | None = None
    to_state: OrderState | None = None
    fill_qty: float = 0.0
    fill_price: float = 0.0
    fill_fee: float = 0.0
    realized_pnl: float = 0.0
    illegal: dict[str, Any] | None = None
    known: bool = True
    changed: bool = False
    events: list[str] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.to_state in ORDER_TERMINAL_STATES


class ExecutorStore:
    """Queries of the ``executor`` schema (or a test's fresh schema)."""

    def __init__(self, pool: asyncpg.Pool, schema: str, *, venue: str, actor: str) -> None:
        self.pool = pool
        self.venue = venue
        self.actor = actor
        s = ident(schema)
        self.t = {
            name: f"{s}.{ident(name)}"
            for name in (
                "signals",
                "orders",
                "order_events",
                "fills",
                "positions",
                "balances",
                "audit_log",
            )
        }

    # ---- audit -----------------------------------------------------------------------------
    async def audit(
        self,
        conn: asyncpg.Connection | None,
        action: str,
        *,
        entity: str = "",
        entity_id: str = "",
        reason: str = "",
        detail: dict[str, Any] | None = None,
        signal: dict[str, Any] | None = None,
        market: dict[str, Any] | None = None,
        trace_id: str = "",
        actor: str | None = None,
    ) -> None:
        """Append one audit row (in ``conn``'s transaction when given)."""
        sql = (
            f"INSERT INTO {self.t['audit_log']} (actor, action, entity, entity_id, reason,"
            " detail, signal, market, trace_id) VALUES ($1,$2,$3,$4,$5,$6::jsonb,$7::jsonb,"
            "$8::jsonb,$9)"
        )
        args = (
            actor or self.actor,
            action,
            entity,
            entity_id,
            reason,
            _json(detail or {}),
            _json(signal) if signal is not None else None,
            _json(market) if market is not None else None,
            trace_id,
        )
        if conn is not None:
            await conn.execute(sql, *args)
        else:
            async with self.pool.acquire() as c:
                await c.execute(sql, *args)

    # ---- signals and new orders ------------------------------------------------------------
    async def signal_seen(self, signal_id: str) -> asyncpg.Record | None:
        async with self.pool.acquire() as conn:
            return await conn.fetchrow(
                f"SELECT * FROM {self.t['signals']} WHERE signal_id=$1", signal_id
            )

    async def refuse_signal(
        self,
        sig: dict[str, Any],
        reason: str,
        detail: str,
        *,
        trace_id: str,
        market: dict[str, Any] | None,
        event: OrderEvent | None,
    ) -> bool:
        """Record a refused signal (once) with its audit row and ``reject`` event."""
        async with self.pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                f"INSERT INTO {self.t['signals']} (signal_id, exchange, symbol, side, decision,"
                " reason, trace_id) VALUES ($1,$2,$3,$4,'refused',$5,$6)"
                " ON CONFLICT (signal_id) DO NOTHING RETURNING true",
                sig["signal_id"],
                sig["exchange"],
                sig["symbol"],
                sig["side"],
                reason,
                trace_id,
            )
            if not inserted:
                return False
            await self.audit(
                conn,
                "signal_refused",
                entity="signal",
                entity_id=sig["signal_id"],
                reason=reason,
                detail={"detail": detail},
                signal=sig,
                market=market,
                trace_id=trace_id,
            )
            if event is not None:
                await self._outbox(conn, event, None, None)
            return True

    async def create_order(
        self,
        sig: dict[str, Any],
        order: NewOrder,
        *,
        exchange: str,
        trace_id: str,
        market: dict[str, Any] | None,
        risk: dict[str, Any],
    ) -> bool:
        """Store the order ``Pending`` before it is sent, with its signal, audit row and
        position intent, in one transaction. False if the signal was already handled. The
        position row is written with optimistic locking: a fill applied to the same position
        meanwhile (the venue's reports are handled concurrently) rolls the whole transaction
        back, and it is tried again on the new position."""
        return await retry_conflicts(
            lambda: self._create_order(
                sig, order, exchange=exchange, trace_id=trace_id, market=market, risk=risk
            )
        )

    async def _create_order(
        self,
        sig: dict[str, Any],
        order: NewOrder,
        *,
        exchange: str,
        trace_id: str,
        market: dict[str, Any] | None,
        risk: dict[str, Any],
    ) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                f"INSERT INTO {self.t['signals']} (signal_id, exchange, symbol, side, decision,"
                " client_order_id, trace_id) VALUES ($1,$2,$3,$4,'order',$5,$6)"
                " ON CONFLICT (signal_id) DO NOTHING RETURNING true",
                sig["signal_id"],
                exchange,
                order.symbol,
                order.side,
                order.client_order_id,
                trace_id,
            )
            if not inserted:
                return False
            await conn.execute(
                f"INSERT INTO {self.t['orders']} (client_order_id, venue, exchange, symbol, side,"
                " order_type, time_in_force, qty, price, state, signal_id, trace_id, sent_at)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,'Pending',$10,$11,now())",
                order.client_order_id,
                self.venue,
                exchange,
                order.symbol,
                order.side,
                order.order_type,
                order.time_in_force,
                order.qty,
                order.price,
                sig["signal_id"],
                trace_id,
            )
            await self.audit(
                conn,
                "order_created",
                entity="order",
                entity_id=order.client_order_id,
                reason="signal accepted by risk",
                detail={"qty": order.qty, "price": order.price, "side": order.side, "risk": risk},
                signal=sig,
                market=market,
                trace_id=trace_id,
            )
            ev = self._order_event(
                "order",
                exchange,
                order.symbol,
                order.client_order_id,
                sig["signal_id"],
                order.side,
                order.order_type,
                "Pending",
                order.qty,
                order.price,
                trace_id=trace_id,
            )
            await self._outbox(conn, ev, None, OrderState.PENDING)
            await self._position_intent(conn, exchange, order.symbol, order.side, trace_id)
            return True

    async def mark_sent(self, coid: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(
                f"UPDATE {self.t['orders']} SET sent_at = now(),"
                " version = version + 1 WHERE client_order_id=$1",
                coid,
            )

    # ---- reads --------------------------------------------------------------------------------
    async def order(self, coid: str) -> asyncpg.Record | None:
        async with self.pool.acquire() as conn:
            return await conn.fetchrow(
                f"SELECT * FROM {self.t['orders']} WHERE client_order_id=$1", coid
            )

    async def open_orders(self) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            return list(
                await conn.fetch(
                    f"SELECT *, extract(epoch FROM coalesce(sent_at, created_at)) AS sent_epoch"
                    f" FROM {self.t['orders']} WHERE venue=$1 AND state IN"
                    " ('Pending','Placed','PartiallyFilled') ORDER BY id",
                    self.venue,
                )
            )

    async def positions(self) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            return list(
                await conn.fetch(f"SELECT * FROM {self.t['positions']} WHERE venue=$1", self.venue)
            )

    async def balances(self) -> dict[str, float]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT asset, balance FROM {self.t['balances']} WHERE venue=$1", self.venue
            )
        return {r["asset"]: r["balance"] for r in rows}

    # ---- applying venue reports ----------------------------------------------------------
    async def apply_report(
        self,
        rep: OrderReport,
        *,
        override: bool = False,
        taker_fee_rate: float = 0.0005,
        reason: str = "",
        actor: str | None = None,
    ) -> Applied:
        """Apply a venue's report about one of our orders (retries on version conflicts)."""

        async def once() -> Applied:
            async with self.pool.acquire() as conn, conn.transaction():
                return await self._apply(conn, rep, override, taker_fee_rate, reason, actor)

        return await retry_conflicts(once, (VersionConflict, asyncpg.UniqueViolationError))

    async def _apply(
        self,
        conn: asyncpg.Connection,
        rep: OrderReport,
        override: bool,
        taker_fee_rate: float,
        reason: str,
        actor: str | None,
    ) -> Applied:
        row = await conn.fetchrow(
            f"SELECT * FROM {self.t['orders']} WHERE client_order_id=$1", rep.client_order_id
        )
        if row is None:
            return Applied(rep.client_order_id, rep.symbol, known=False)
        coid, qty = row["client_order_id"], row["qty"]
        cur = OrderState(row["state"])
        out = Applied(coid, row["symbol"], row["side"], cur, cur)
        trace_id = row["trace_id"]
        filled, quote, fee_total = row["filled_qty"], row["filled_quote"], row["fee"]
        delta = rep.filled_qty - filled
        if delta > _EPS * max(1.0, qty):
            dquote = rep.filled_quote - quote
            estimated = False
            if rep.trade_id and abs(rep.last_qty - delta) <= _EPS * max(1.0, qty):
                trade_id, price = rep.trade_id, rep.last_price
                fee = rep.last_fee if rep.last_fee is not None else None
            else:
                # Several executions (or a missed one) at once: one fill for the increase,
                # keyed by the order and its cumulative quantity.
                trade_id = f"cum:{coid}:{rep.filled_qty:.12g}"
                price = dquote / delta if dquote > 0 else (rep.last_price or row["price"])
                fee = None
            if rep.cum_fee is not None:
                fee = max(0.0, rep.cum_fee - fee_total)
            if fee is None:
                fee, estimated = delta * price * taker_fee_rate, True
            ins = await conn.fetchval(
                f"INSERT INTO {self.t['fills']} (venue, venue_trade_id, client_order_id,"
                " exchange, symbol, side, qty, price, fee, fee_estimated, liquidity,"
                " cum_filled_qty) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)"
                " ON CONFLICT (venue, venue_trade_id) DO NOTHING RETURNING id",
                self.venue,
                trade_id,
                coid,
                row["exchange"],
                row["symbol"],
                row["side"],
                delta,
                price,
                fee,
                estimated,
                rep.liquidity,
                rep.filled_qty,
            )
            if ins is not None:
                filled, quote, fee_total = rep.filled_qty, quote + delta * price, fee_total + fee
                out.fill_qty, out.fill_price, out.fill_fee = delta, price, fee
                out.changed = True
                await self.audit(
                    conn,
                    "fill",
                    entity="order",
                    entity_id=coid,
                    reason=f"venue report ({rep.source})",
                    detail={
                        "trade_id": trade_id,
                        "qty": delta,
                        "price": price,
                        "fee": fee,
                        "fee_estimated": estimated,
                        "cum_filled": rep.filled_qty,
                    },
                    trace_id=trace_id,
                    actor=actor,
                )
                fev = self._order_event(
                    "fill",
                    row["exchange"],
                    row["symbol"],
                    coid,
                    row["signal_id"],
                    row["side"],
                    row["order_type"],
                    rep.state.value,
                    delta,
                    price,
                    venue_order_id=rep.venue_order_id or row["venue_order_id"],
                    filled_qty=filled,
                    avg_price=quote / filled if filled else None,
                    fee=fee,
                    detail={
                        "trade_id": trade_id,
                        "liquidity": rep.liquidity,
                        "fee_estimated": estimated,
                    },
                    trace_id=trace_id,
                )
                await self._outbox(conn, fev, None, None)
                out.events.append(fev.event_id)
                out.realized_pnl = await self._position_fill(
                    conn, row["exchange"], row["symbol"], row["side"], delta, price, fee, trace_id
                )
        new = cur
        if rep.state != OrderState.PENDING:
            event = event_for_state(rep.state)
            try:
                new = OrderFsm.transition(cur, event)
            except IllegalTransition as exc:
                out.illegal = exc.audit_detail()
                if override:
                    new = rep.state
                await self.audit(
                    conn,
                    "illegal_transition_overridden" if override else "illegal_transition_refused",
                    entity="order",
                    entity_id=coid,
                    reason=reason or f"report from {rep.source}",
                    detail=exc.audit_detail(),
                    trace_id=trace_id,
                    actor=actor,
                )
        venue_oid = rep.venue_order_id or row["venue_order_id"]
        if new != cur:
            out.changed = True
        if not out.changed and venue_oid == row["venue_order_id"]:
            return out
        status = await conn.execute(
            f"UPDATE {self.t['orders']} SET state=$1, filled_qty=$2, filled_quote=$3, fee=$4,"
            " venue_order_id=$5, version=version+1, updated_at=now(),"
            " acked_at=CASE WHEN $1 <> 'Pending' THEN coalesce(acked_at, now()) END,"
            " reason=CASE WHEN $7 <> '' THEN $7 ELSE reason END"
            " WHERE id=$6 AND version=$8",
            new.value,
            filled,
            quote,
            fee_total,
            venue_oid,
            row["id"],
            reason[:500],
            row["version"],
        )
        if status != "UPDATE 1":
            raise VersionConflict(coid)
        out.to_state = new
        if new != cur:
            await self.audit(
                conn,
                "order_state",
                entity="order",
                entity_id=coid,
                reason=reason or f"venue report ({rep.source})",
                detail={
                    "from": cur.value,
                    "to": new.value,
                    "filled_qty": filled,
                    "venue_order_id": venue_oid,
                },
                trace_id=trace_id,
                actor=actor,
            )
            ev = self._order_event(
                "order",
                row["exchange"],
                row["symbol"],
                coid,
                row["signal_id"],
                row["side"],
                row["order_type"],
                new.value,
                qty,
                row["price"],
                venue_order_id=venue_oid,
                filled_qty=filled,
                avg_price=quote / filled if filled else None,
                fee=fee_total,
                detail={"from": cur.value, "source": rep.source, "reason": reason},
                trace_id=trace_id,
            )
            await self._outbox(conn, ev, cur, new)
            out.events.append(ev.event_id)
            if new in ORDER_TERMINAL_STATES:
                await self._position_order_done(conn, row["exchange"], row["symbol"], trace_id)
        return out

    # ---- positions ------------------------------------------------------------------------
    async def _position_row(
        self, conn: asyncpg.Connection, exchange: str, symbol: str
    ) -> asyncpg.Record | None:
        return await conn.fetchrow(
            f"SELECT * FROM {self.t['positions']} WHERE venue=$1 AND exchange=$2 AND symbol=$3",
            self.venue,
            exchange,
            symbol,
        )

    async def _write_position(
        self,
        conn: asyncpg.Connection,
        row: asyncpg.Record | None,
        exchange: str,
        symbol: str,
        state: PositionState,
        pos: Position,
        generation: int,
        trace_id: str,
        why: str,
    ) -> None:
        if row is None:
            await conn.execute(
                f"INSERT INTO {self.t['positions']} (venue, exchange, symbol, state, generation,"
                " qty, avg_entry_price, realized_pnl, fees_paid) VALUES"
                " ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
                self.venue,
                exchange,
                symbol,
                state.value,
                generation,
                pos.qty,
                pos.avg_entry_price,
                pos.realized_pnl,
                pos.fees_paid,
            )
        else:
            status = await conn.execute(
                f"UPDATE {self.t['positions']} SET state=$1, generation=$2, qty=$3,"
                " avg_entry_price=$4, realized_pnl=$5, fees_paid=$6, version=version+1,"
                " updated_at=now() WHERE venue=$7 AND exchange=$8 AND symbol=$9 AND version=$10",
                state.value,
                generation,
                pos.qty,
                pos.avg_entry_price,
                pos.realized_pnl,
                pos.fees_paid,
                self.venue,
                exchange,
                symbol,
                row["version"],
            )
            if status != "UPDATE 1":
                raise VersionConflict(f"position {symbol}")
        before = row["state"] if row is not None else None
        if before != state.value or row is None or row["qty"] != pos.qty:
            ev = self._order_event(
                "position",
                exchange,
                symbol,
                "",
                "",
                "buy" if pos.qty >= 0 else "sell",
                "",
                state.value,
                abs(pos.qty),
                pos.avg_entry_price or None,
                detail={
                    "signed_qty": pos.qty,
                    "realized_pnl": pos.realized_pnl,
                    "fees_paid": pos.fees_paid,
                    "generation": generation,
                    "why": why,
                    "from": before,
                },
                trace_id=trace_id,
            )
            await self._outbox(conn, ev, None, None)
            await self.audit(
                conn,
                "position",
                entity="position",
                entity_id=f"{exchange}:{symbol}",
                reason=why,
                detail={
                    "from": before,
                    "to": state.value,
                    "qty": pos.qty,
                    "avg": pos.avg_entry_price,
                    "generation": generation,
                },
                trace_id=trace_id,
            )

    def _step(self, state: PositionState, event: PositionFsmEvent) -> PositionState:
        try:
            return PositionFsm.transition(state, event)
        except IllegalTransition:
            log.warning("position transition refused", extra={"state": state, "event": event})
            return state

    async def _position_intent(
        self, conn: asyncpg.Connection, exchange: str, symbol: str, side: str, trace_id: str
    ) -> None:
        row = await self._position_row(conn, exchange, symbol)
        if row is None or row["state"] == PositionState.CLOSED.value:
            gen = (row["generation"] + 1) if row is not None else 1
            pos = Position(symbol, 0.0, 0.0, 0.0, 0.0)
            await self._write_position(
                conn,
                row,
                exchange,
                symbol,
                PositionState.OPENING,
                pos,
                gen,
                trace_id,
                "entry order stored",
            )
            return
        qty = row["qty"]
        if qty and (qty > 0) != (side == "buy"):
            state = self._step(PositionState(row["state"]), PositionFsmEvent.CLOSE_REQUESTED)
            await self._write_position(
                conn,
                row,
                exchange,
                symbol,
                state,
                self._pos(row),
                row["generation"],
                trace_id,
                "reducing order stored",
            )

    @staticmethod
    def _pos(row: asyncpg.Record) -> Position:
        return Position(
            row["symbol"], row["qty"], row["avg_entry_price"], row["realized_pnl"], row["fees_paid"]
        )

    async def _position_fill(
        self,
        conn: asyncpg.Connection,
        exchange: str,
        symbol: str,
        side: str,
        qty: float,
        price: float,
        fee: float,
        trace_id: str,
    ) -> float:
        row = await self._position_row(conn, exchange, symbol)
        gen = row["generation"] if row is not None else 1
        state = PositionState(row["state"]) if row is not None else PositionState.OPENING
        pos = self._pos(row) if row is not None else Position(symbol)
        if state == PositionState.CLOSED:
            state, gen = PositionState.OPENING, gen + 1
            pos = Position(symbol)
        upd = pos.apply(PositionFill(side, qty, price, fee))  # type: ignore[arg-type]
        if upd.kind in (FillKind.OPEN, FillKind.INCREASE):
            state = self._step(state, PositionFsmEvent.ENTRY_FILLED)
        elif upd.kind == FillKind.REDUCE:
            state = self._step(state, PositionFsmEvent.EXIT_PARTIAL)
        elif upd.kind == FillKind.CLOSE:
            state = self._step(state, PositionFsmEvent.FLATTENED)
        else:  # flip: this position closes, a new one opens with the rest
            gen += 1
            state = self._step(PositionState.OPENING, PositionFsmEvent.ENTRY_FILLED)
        await self._write_position(
            conn,
            row,
            exchange,
            symbol,
            state,
            upd.position,
            gen,
            trace_id,
            f"fill {side} {qty}@{price} ({upd.kind.value})",
        )
        await self._adjust_balance(conn, "USDT", upd.realized_pnl - fee)
        return upd.realized_pnl

    async def _position_order_done(
        self, conn: asyncpg.Connection, exchange: str, symbol: str, trace_id: str
    ) -> None:
        open_left = await conn.fetchval(
            f"SELECT count(*) FROM {self.t['orders']} WHERE venue=$1 AND exchange=$2 AND"
            " symbol=$3 AND state IN ('Pending','Placed','PartiallyFilled')",
            self.venue,
            exchange,
            symbol,
        )
        if open_left:
            return
        row = await self._position_row(conn, exchange, symbol)
        if row is None:
            return
        state = PositionState(row["state"])
        if state == PositionState.OPENING and row["qty"] == 0:
            new = self._step(state, PositionFsmEvent.ENTRY_ABORTED)
        elif state == PositionState.CLOSING and row["qty"] != 0:
            new = self._step(state, PositionFsmEvent.EXIT_ABORTED)
        else:
            return
        await self._write_position(
            conn,
            row,
            exchange,
            symbol,
            new,
            self._pos(row),
            row["generation"],
            trace_id,
            "order ended",
        )

    async def set_position(
        self, exchange: str, symbol: str, qty: float, entry: float, reason: str
    ) -> None:
        """Overwrite a position with the venue's (reconciliation), audited."""

        async def once() -> None:
            async with self.pool.acquire() as conn, conn.transaction():
                row = await self._position_row(conn, exchange, symbol)
                pos = self._pos(row) if row is not None else Position(symbol)
                new = Position(symbol, qty, entry if qty else 0.0, pos.realized_pnl, pos.fees_paid)
                state = PositionState.OPEN if qty else PositionState.CLOSED
                gen = row["generation"] if row is not None else 1
                await self.audit(
                    conn,
                    "reconcile_position",
                    entity="position",
                    entity_id=f"{exchange}:{symbol}",
                    reason=reason,
                    detail={"local_qty": pos.qty, "venue_qty": qty, "venue_entry": entry},
                    actor="reconciler",
                )
                await self._write_position(
                    conn, row, exchange, symbol, state, new, gen, "", f"reconciled: {reason}"
                )

        await retry_conflicts(once)

    # ---- balances -------------------------------------------------------------------------
    async def _adjust_balance(self, conn: asyncpg.Connection, asset: str, delta: float) -> None:
        await conn.execute(
            f"INSERT INTO {self.t['balances']} (venue, asset, balance) VALUES ($1,$2,$3)"
            " ON CONFLICT (venue, asset) DO UPDATE SET balance = balances.balance + $3,"
            " version = balances.version + 1, updated_at = now()",
            self.venue,
            asset,
            delta,
        )

    async def set_balance(
        self,
        asset: str,
        value: float,
        reason: str,
        *,
        actor: str = "reconciler",
        only_if_missing: bool = False,
    ) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            old = await conn.fetchval(
                f"SELECT balance FROM {self.t['balances']} WHERE venue=$1 AND asset=$2 FOR UPDATE",
                self.venue,
                asset,
            )
            if only_if_missing and old is not None:
                return
            await conn.execute(
                f"INSERT INTO {self.t['balances']} (venue, asset, balance) VALUES ($1,$2,$3)"
                " ON CONFLICT (venue, asset) DO UPDATE SET balance = $3,"
                " version = balances.version + 1, updated_at = now()",
                self.venue,
                asset,
                value,
            )
            await self.audit(
                conn,
                "set_balance",
                entity="balance",
                entity_id=asset,
                reason=reason,
                detail={"local": old, "venue": value},
                actor=actor,
            )

    # ---- outbox ---------------------------------------------------------------------------
    def _order_event(
        self,
        event_type: str,
        exchange: str,
        symbol: str,
        coid: str,
        signal_id: str,
        side: str,
        order_type: str,
        status: str,
        qty: float,
        price: float | None,
        *,
        venue_order_id: str = "",
        filled_qty: float = 0.0,
        avg_price: float | None = None,
        fee: float = 0.0,
        detail: dict[str, Any] | None = None,
        trace_id: str = "",
    ) -> OrderEvent:
        return OrderEvent(
            event_id=uuid.uuid4().hex,
            event_type=event_type,  # type: ignore[arg-type]
            venue=self.venue,
            exchange=exchange,  # type: ignore[arg-type]
            symbol=symbol,
            client_order_id=coid,
            venue_order_id=venue_order_id,
            signal_id=signal_id,
            side=side,  # type: ignore[arg-type]
            order_type=order_type,
            status=status,
            qty=qty,
            price=price,
            filled_qty=filled_qty,
            avg_price=avg_price,
            fee=fee,
            detail=detail or {},
            ts_us=_now_us(),
            trace_id=trace_id,
        )

    def reject_event(
        self, sig: dict[str, Any], reason: str, detail: str, trace_id: str
    ) -> OrderEvent:
        return self._order_event(
            "reject",
            sig["exchange"],
            sig["symbol"],
            "",
            sig["signal_id"],
            sig["side"] if sig["side"] in ("buy", "sell") else "buy",
            "",
            "Refused",
            0.0,
            None,
            detail={"reason": reason, "detail": detail},
            trace_id=trace_id,
        )

    async def _outbox(
        self,
        conn: asyncpg.Connection,
        ev: OrderEvent,
        from_state: OrderState | None,
        to_state: OrderState | None,
    ) -> None:
        await conn.execute(
            f"INSERT INTO {self.t['order_events']} (event_id, client_order_id, event_type,"
            " from_state, to_state, payload) VALUES ($1,$2,$3,$4,$5,$6::jsonb)",
            ev.event_id,
            ev.client_order_id,
            ev.event_type,
            from_state.value if from_state else None,
            to_state.value if to_state else None,
            _json(ev.model_dump(mode="json")),
        )

    async def unpublished(self, limit: int) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            return list(
                await conn.fetch(
                    f"SELECT id, payload FROM {self.t['order_events']} WHERE published_at IS NULL"
                    " ORDER BY id LIMIT $1",
                    limit,
                )
            )

    async def mark_published(self, ids: list[int]) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(
                f"UPDATE {self.t['order_events']} SET published_at = now()"
                " WHERE id = ANY($1::bigint[])",
                ids,
            )
