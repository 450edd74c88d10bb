"""``ExecutorService``: signals in, orders out — never lost, never duplicated.

For each ``signals.v1`` message (via ``ConsumerLoop``: handled durably, then committed):

1. refuse ``hold``, other exchanges, a stopped bot (desired state from ``control.v1``) and a
   signal already handled (``executor.signals`` — a replay never makes a second order);
2. size and reserve risk atomically (``RiskLedger.size_and_reserve``);
3. store the order ``Pending`` with its deterministic client id, the signal row and the audit
   row in one transaction — *before* sending;
4. send; the venue's ack, a rejection, or — on a timeout / HTTP 503 "unknown" — the answer of
   a query by client id moves the order through the FSM (optimistic locking in the store).
   A Pending order is declared ``Failed`` only once the venue says it does not know it *and*
   the request can no longer be accepted (sent + recvWindow + grace).

Fills arrive from the user-data stream (or the paper fill model) as cumulative reports; the
store turns increases into fills, positions and balances. Reconciliation runs at start, after
each stream (re)connection and periodically, fixing local state toward the venue's, audited.
Every change is published on ``orders.v1`` from the store's outbox after commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import defaultdict
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from depthflow.common.db import create_pool, until_postgres_answers
from depthflow.common.heartbeat import HeartbeatPublisher
from depthflow.common.kafka import AsyncProducer, Consumed, ConsumerLoop, create_topics
from depthflow.common.lifecycle import Service
from depthflow.common.logging import new_trace_id, set_trace_id, trace_headers
from depthflow.common.metrics import HealthServer, ServiceMetrics
from depthflow.common.schemas import BOOK, CONTROL, ORDERS, SIGNALS, STATUS, Control, dlq_topic
from depthflow.common.settings import HttpSettings, KafkaSettings, PostgresSettings
from depthflow.executor.breaker import BreakerState, BreakerTransition
from depthflow.executor.config import ExecutorSettings
from depthflow.executor.fills import FillModelConfig
from depthflow.executor.fsm import OrderState
from depthflow.executor.ids import client_order_id
from depthflow.executor.reconcile import (
    AdoptOrder,
    OrderView,
    PositionView,
    SetBalance,
    SetPosition,
    UpdateOrder,
    reconcile,
)
from depthflow.executor.risk import (
    OrderIntent,
    RiskLedger,
    RiskState,
    open_positions,
    total_exposure,
)
from depthflow.executor.store import ExecutorStore
from depthflow.executor.venues.base import (
    NewOrder,
    OrderReport,
    Venue,
    VenueError,
    VenueRejected,
    VenueUnavailable,
    VenueUnknown,
)
from depthflow.executor.venues.common import partitions_of

log = logging.getLogger(__name__)
SIGNAL_ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BREAKER_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
# outbox rows read per round trip (publish_outbox)
OUTBOX_READ_LIMIT = 500
SETTLE_STOP_TIMEOUT_S = 10.0  # a graceful stop waits this long for acknowledged orders' writes


class ExecutorMetrics:
    """The executor's Prometheus metrics (private registry)."""

    def __init__(self) -> None:
        self.service = m = ServiceMetrics("executor")
        self.signals = m.counter("signals", "signals consumed, by outcome", ["outcome"])
        self.orders = m.counter("orders", "order state transitions, by new status", ["status"])
        self.fills = m.counter("fills", "fills recorded")
        self.rejects = m.counter("rejects", "refused signals and rejected orders", ["reason"])
        self.breaker = m.gauge("breaker_state", "0 closed, 1 half-open, 2 open", ["endpoint"])
        self.rate_waits = m.counter("rate_limit_waits", "requests that waited for the limiter")
        self.rate_wait_s = m.counter("rate_limit_wait_seconds", "seconds waited for the limiter")
        self.ack_latency = m.histogram(
            "signal_ack_latency_seconds",
            "signal consumed -> order acknowledged by the venue",
            buckets=SIGNAL_ACK_BUCKETS,
        )
        self.e2e_latency = m.histogram(
            "e2e_latency_seconds",
            "exchange event time of the book update a signal acted on -> order acknowledged "
            "(wall clocks: exchange vs this host)",
            buckets=SIGNAL_ACK_BUCKETS,
        )
        self.exposure = m.gauge("exposure_usdt", "worst-case exposure, USDT")
        self.open_positions = m.gauge("open_positions", "symbols with exposure")
        self.unknown = m.counter("unknown_outcomes", "sends whose outcome had to be queried")
        self.reconcile_fixes = m.counter("reconcile_fixes", "corrective actions", ["kind"])


class ExecutorService(Service):
    """The executor: see the module docstring."""

    name = "executor"

    def __init__(
        self,
        settings: ExecutorSettings,
        kafka: KafkaSettings,
        postgres: PostgresSettings,
        http: HttpSettings | None = None,
        venue: Venue | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.kafka = kafka
        self.postgres = postgres
        self.http = http or HttpSettings()
        self.metrics = ExecutorMetrics()
        self.ledger = RiskLedger(settings.risk_limits())
        # computed when scraped, not on every report (every symbol's exposure each time)
        self.metrics.exposure.set_function(lambda: total_exposure(self.ledger.exposures()))
        self.metrics.open_positions.set_function(lambda: open_positions(self.ledger.exposures()))
        self.venue: Venue = venue or self._build_venue()
        self.venue.on_report(self.on_report)
        self.desired_running = settings.running_by_default
        self.kill_switch = False
        self.control_version = -1
        self.pool: asyncpg.Pool | None = None
        self.store: ExecutorStore | None = None
        self.producer: AsyncProducer | None = None
        self.loop: ConsumerLoop | None = None
        self.health: HealthServer | None = None
        self.heartbeat: HeartbeatPublisher | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._publish_lock = asyncio.Lock()
        self._reconcile_lock = asyncio.Lock()
        self._in_flight = 0
        self._outbox_dirty = False  # an event committed whose publish nobody has started
        self._settling: set[asyncio.Task[None]] = set()  # acknowledged sends being applied
        self._daily = (time.gmtime().tm_yday, 0.0)
        self._control_consumer: AIOKafkaConsumer | None = None
        self.reconciliations = 0

    # ------------------------------------------------------------------ construction
    def _on_wait(self, seconds: float) -> None:
        self.metrics.rate_waits.inc()
        self.metrics.rate_wait_s.inc(seconds)

    def _on_breaker(self, t: BreakerTransition) -> None:
        self.metrics.breaker.labels(t.name).set(_BREAKER_VALUE[t.to_state])
        if self.store is not None:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().create_task(
                    self._audit_quietly(
                        "breaker",
                        entity="breaker",
                        entity_id=t.name,
                        reason=t.reason,
                        detail={"from": t.from_state.value, "to": t.to_state.value},
                    )
                )

    async def _audit_quietly(self, action: str, **kw: Any) -> None:
        try:
            assert self.store is not None
            await self.store.audit(None, action, **kw)
        except Exception:
            log.exception("audit row not written", extra={"action": action})

    def _build_venue(self) -> Venue:
        s = self.settings
        if s.venue == "paper":
            from depthflow.executor.venues.paper import PaperVenue

            cfg = FillModelConfig(
                submit_latency_us=int(s.paper_latency_ms * 1000),
                maker_fee_rate=s.paper_maker_fee,
                taker_fee_rate=s.paper_taker_fee,
            )
            return PaperVenue(
                self.kafka,
                book_topic=s.topic_book,
                exchange="binance",
                config=cfg,
                warmup=s.paper_book_warmup,
                max_book_age_s=s.max_book_age_s,
                fetch_min_bytes=s.paper_book_fetch_min_bytes,
                fetch_max_wait_ms=s.paper_book_fetch_max_wait_ms,
            )
        kw: dict[str, Any] = dict(
            base_url=s.rest_url(),
            ws_url=s.stream_url(),
            api_key=s.api_key,
            api_secret=s.api_secret,
            recv_window_ms=s.recv_window_ms,
            timeout_s=s.request_timeout_s,
            order_timeout_s=s.order_timeout_s,
            breaker=s.breaker_config(),
            max_wait_s=s.max_rate_limit_wait_s,
            on_wait=self._on_wait,
            on_breaker=self._on_breaker,
            on_stream_connected=self._on_stream_connected,
        )
        if s.venue == "binance":
            from depthflow.executor.venues.binance import BinanceVenue

            return BinanceVenue(**kw)
        from depthflow.executor.venues.bybit import BybitVenue

        return BybitVenue(**kw)

    # ------------------------------------------------------------------ lifecycle
    async def on_start(self) -> None:
        s = self.settings
        stack = self.exit_stack
        if s.migrate_on_start:
            from depthflow.common.migrations import load_migrations, migrate

            await asyncio.to_thread(
                migrate,
                self.postgres.dsn.get_secret_value(),
                s.db_schema,
                load_migrations("depthflow.executor"),
            )
        await asyncio.to_thread(
            create_topics,
            self.kafka,
            [
                dataclasses.replace(SIGNALS, name=s.topic_signals),
                dataclasses.replace(ORDERS, name=s.topic_orders),
                dataclasses.replace(CONTROL, name=s.topic_control),
                dataclasses.replace(STATUS, name=s.topic_status),
                dataclasses.replace(BOOK, name=s.topic_book),
                dlq_topic(s.service_name),
            ],
        )
        self.pool = await create_pool(self.postgres)
        stack.push_async_callback(self.pool.close)
        from depthflow.common.heartbeat import instance_id

        self.store = ExecutorStore(
            self.pool, s.db_schema, venue=s.venue, actor=f"executor:{instance_id()}"
        )
        if s.venue == "paper":
            await self.store.set_balance(
                "USDT",
                s.paper_starting_balance,
                "paper start",
                actor="executor",
                only_if_missing=True,
            )
        self.producer = AsyncProducer(
            self.kafka, client_id="executor", linger_ms=s.producer_linger_ms
        )
        await self.producer.start()
        stack.push_async_callback(self.producer.stop)
        await self._start_control()
        await self.venue.start()
        stack.push_async_callback(self.venue.stop)
        await self._restore_ledger()
        await self.reconcile_once("start")
        await self.publish_outbox()
        self.loop = ConsumerLoop(
            self.kafka,
            service=s.service_name,
            group_id=s.group_id,
            topics=[dataclasses.replace(SIGNALS, name=s.topic_signals)],
            handler=self._handle_batch,
            dlq_producer=self.producer,
            max_batch=200,
            metrics=self.metrics.service,
        )
        await self.loop.start()
        stack.push_async_callback(self.loop.stop)
        self.health = HealthServer(
            self.metrics.service, self.http.host, self.http.port, lambda: self.ready
        )
        await self.health.start()
        stack.push_async_callback(self.health.stop)
        producer = self.producer

        async def send(topic: str, value: bytes, key: bytes) -> None:
            await producer.send_and_wait(topic, value, key=key)

        self.heartbeat = HeartbeatPublisher(
            send,
            s.service_name,
            self._heartbeat_state,
            s.heartbeat_interval_s,
            topic=s.topic_status,
        )
        await self.heartbeat.start()
        stack.push_async_callback(self.heartbeat.stop)
        self._tasks = [
            asyncio.create_task(self._reconcile_loop(), name="reconcile"),
            asyncio.create_task(self._follow_control(), name="control"),
        ]
        self.metrics.service.up.set(1)

    async def on_stop(self) -> None:
        if self._settling:  # acknowledged orders are stored before the pool closes
            await asyncio.wait(set(self._settling), timeout=SETTLE_STOP_TIMEOUT_S)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._control_consumer is not None:
            await self._control_consumer.stop()
        self.metrics.service.up.set(0)

    async def run(
        self,
        stop: asyncio.Event | None = None,
        max_messages: int | None = None,
        idle_timeout: float | None = None,
    ) -> int:
        assert self.loop is not None, "start() first"
        return await self.loop.run(stop, max_messages, idle_timeout)

    @property
    def trading(self) -> bool:
        """Whether new orders may be sent (desired state running)."""
        return self.desired_running

    def _heartbeat_state(self) -> tuple[str, bool, dict[str, Any]]:
        exp = self.ledger.exposures()
        detail = {
            "venue": self.settings.venue,
            "desired_state": "running" if self.desired_running else "stopped",
            "kill_switch": self.kill_switch,
            "breakers": self.venue.breaker_states(),
            "exposure_usdt": total_exposure(exp),
            "open_positions": open_positions(exp),
        }
        state = (
            self.state.value
            if self.state.value != "running"
            else ("running" if self.desired_running else "paused")
        )
        return state, self.ready, detail

    # ------------------------------------------------------------------ control.v1
    async def _start_control(self) -> None:
        s = self.settings
        c = AIOKafkaConsumer(
            **self.kafka.aiokafka_config(),
            group_id=None,
            enable_auto_commit=False,
            client_id="executor-control",
        )
        await c.start()
        self._control_consumer = c
        parts = await partitions_of(c, s.topic_control)
        tps = [TopicPartition(s.topic_control, p) for p in sorted(parts)]
        c.assign(tps)
        if not tps:
            return
        await c.seek_to_beginning(*tps)
        ends = await c.end_offsets(tps)

        # Read the compacted desired state to its end before the first signal is handled.
        async def behind() -> bool:
            return any([await c.position(tp) < ends[tp] for tp in tps])

        while await behind():
            batch = await c.getmany(timeout_ms=200)
            for records in batch.values():
                for rec in records:
                    await self._apply_control(rec.value)

    async def _follow_control(self) -> None:
        c = self._control_consumer
        if c is None:
            return
        while True:
            batch = await c.getmany(timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    await self._apply_control(rec.value)

    async def _apply_control(self, raw: bytes | None) -> None:
        try:
            ctl: Control = CONTROL.decode(raw)
        except Exception as exc:
            log.warning("bad control.v1 record", extra={"error": str(exc)})
            return
        if ctl.service != self.settings.service_name or ctl.version < self.control_version:
            return
        self.control_version = ctl.version
        before = (self.desired_running, self.kill_switch)
        self.desired_running = ctl.desired_state == "running"
        self.kill_switch = bool(ctl.config.get("kill_switch", False))
        self._refresh_risk_state()
        if before != (self.desired_running, self.kill_switch) and self.store is not None:
            await self._audit_quietly(
                "control",
                entity="control",
                entity_id=ctl.service,
                actor=ctl.updated_by,
                reason=f"desired state {ctl.desired_state}",
                detail={
                    "version": ctl.version,
                    "kill_switch": self.kill_switch,
                    "config": ctl.config,
                },
            )
        log.info(
            "control applied",
            extra={
                "desired_state": ctl.desired_state,
                "kill_switch": self.kill_switch,
                "version": ctl.version,
            },
        )

    def _refresh_risk_state(self) -> None:
        day, pnl = self._daily
        if time.gmtime().tm_yday != day:
            self._daily = (time.gmtime().tm_yday, 0.0)
            pnl = 0.0
        self.ledger.set_state(RiskState(kill_switch=self.kill_switch, daily_pnl=pnl))

    # ------------------------------------------------------------------ signals
    async def _handle_batch(self, messages: list[Consumed]) -> None:
        """Handle one consumer batch. A PostgreSQL outage does not stop the executor: the
        batch is handled again (idempotently — a stored signal is a replay, a Pending order
        is resolved by query) until the database answers; its offsets stay uncommitted."""
        await until_postgres_answers(
            lambda: self._handle_batch_once(messages), "signal batch", signals=len(messages)
        )

    async def _handle_batch_once(self, messages: list[Consumed]) -> None:
        by_key: dict[bytes | None, list[Consumed]] = defaultdict(list)
        for m in messages:
            by_key[m.key].append(m)
        sem = asyncio.Semaphore(self.settings.concurrency)

        async def one_key(msgs: list[Consumed]) -> None:
            async with sem:
                for m in msgs:  # one symbol's signals in order
                    await self.handle_signal(m)

        results = await asyncio.gather(
            *(one_key(v) for v in by_key.values()), return_exceptions=True
        )
        for r in results:
            if isinstance(r, BaseException):
                raise r  # nothing committed: the batch is replayed, idempotently
        return None

    async def handle_signal(self, msg: Consumed) -> None:
        """Turn one signal into at most one order."""
        assert self.store is not None
        sig = msg.value
        received = time.monotonic()
        trace_id = msg.trace_id or sig.trace_id or new_trace_id()
        set_trace_id(trace_id)
        sd = sig.model_dump(mode="json")
        coid = client_order_id(sig.signal_id)
        seen = await self.store.signal_seen(sig.signal_id)
        if seen is not None:
            self.metrics.signals.labels("duplicate").inc()
            self.metrics.rejects.labels("duplicate").inc()
            if seen["decision"] == "order":
                row = await self.store.order(coid)
                if row is not None and row["state"] == OrderState.PENDING.value:
                    await self._resolve_unknown(
                        coid, row["symbol"], (row["sent_at"] or row["created_at"]).timestamp()
                    )
            return
        if sig.side == "hold":
            self.metrics.signals.labels("hold").inc()
            return
        if sig.exchange != self.venue.exchange:
            await self._refuse(
                sd,
                "wrong_exchange",
                f"{sig.exchange} signal, venue trades {self.venue.exchange}",
                trace_id,
                None,
            )
            return
        if not self.trading:
            await self._refuse(sd, "stopped", "desired state is stopped", trace_id, None)
            return
        try:
            bid, ask = await self.venue.best_prices(sig.symbol)
            spec = await self.venue.symbol_spec(sig.symbol)
        except VenueError as exc:
            await self._refuse(sd, "no_market", str(exc), trace_id, None)
            return
        market = self._market_snapshot(sig.symbol, bid, ask)
        self._refresh_risk_state()
        buffer = self.settings.slippage_buffer_bps / 10_000
        ref = ask * (1 + buffer) if sig.side == "buy" else bid * (1 - buffer)
        sizing, decision = self.ledger.size_and_reserve(
            coid,
            symbol=sig.symbol,
            side=sig.side,
            strength=sig.strength,
            confidence=sig.confidence,
            price=ref,
            spec=spec,
        )
        if not decision.accepted:
            reason = decision.reason.value if decision.reason else "refused"
            await self._refuse(sd, reason, decision.detail, trace_id, market)
            return
        order = NewOrder(coid, sig.symbol, sig.side, sizing.qty, sizing.price)
        risk = {
            "exposure_after": decision.exposure_after,
            "open_positions_after": decision.open_positions_after,
            "reference_bid": bid,
            "reference_ask": ask,
        }
        try:
            created = await self.store.create_order(
                sd, order, exchange=sig.exchange, trace_id=trace_id, market=market, risk=risk
            )
        except BaseException:
            self.ledger.release(coid)
            raise
        if not created:
            self.ledger.release(coid)
            self.metrics.signals.labels("duplicate").inc()
            return
        self.metrics.signals.labels("order").inc()
        self.metrics.orders.labels(OrderState.PENDING.value).inc()
        # The order goes to the venue straight after its commit. Its Pending event is durable
        # in the outbox and goes out on orders.v1 with the order's next event (in id order);
        # if no event follows (an unresolved send), the call below publishes it.
        self._outbox_dirty = True
        self._in_flight += 1
        acked: OrderReport | None = None
        try:
            acked = await self._send(order, received, sig.source_ts_us)
        finally:
            if acked is None:
                self._in_flight -= 1
        if acked is not None:
            self._settle(acked)  # it keeps the in-flight count until the ack is stored
        elif self._outbox_dirty:
            await self.publish_outbox()

    def _settle(self, report: OrderReport) -> None:
        """Store and publish an acknowledged send off the signal path, so that the signals
        behind it (the next batch's) are not held by its transaction and outbox publish.
        Nothing waits for it before the signal's offset is committed: the order is durable
        (Pending, sent) from before the send, and a Pending order is resolved by asking the
        venue, on a replayed signal and by reconciliation."""
        task = asyncio.create_task(
            self._settle_now(report), name=f"settle-{report.client_order_id}"
        )
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle_now(self, report: OrderReport) -> None:
        try:
            await until_postgres_answers(
                lambda: self.apply(report),
                "an acknowledged order",
                client_order_id=report.client_order_id,
            )
            if self._outbox_dirty:
                await self.publish_outbox()
        except Exception:
            log.exception(
                "acknowledged order not stored; reconciliation resolves it",
                extra={"client_order_id": report.client_order_id},
            )
        finally:
            self._in_flight -= 1

    def _market_snapshot(self, symbol: str, bid: float, ask: float) -> dict[str, Any]:
        snap: dict[str, Any] = {
            "symbol": symbol,
            "bid": bid,
            "ask": ask,
            "ts_us": time.time_ns() // 1000,
        }
        latest = getattr(self.venue, "latest_book", None)
        book = latest(symbol) if latest else None
        if book is not None:
            snap.update(bids=book.bids[:5], asks=book.asks[:5], seq=book.seq)
        return snap

    async def _refuse(
        self,
        sd: dict[str, Any],
        reason: str,
        detail: str,
        trace_id: str,
        market: dict[str, Any] | None,
    ) -> None:
        assert self.store is not None
        self.metrics.signals.labels("refused").inc()
        self.metrics.rejects.labels(reason).inc()
        ev = self.store.reject_event(sd, reason, detail, trace_id)
        await self.store.refuse_signal(
            sd, reason, detail, trace_id=trace_id, market=market, event=ev
        )
        await self.publish_outbox()

    async def _send(
        self, order: NewOrder, received: float, source_ts_us: int = 0
    ) -> OrderReport | None:
        """Send a stored Pending order: at most once per attempt, never blindly again.
        Returns the venue's acknowledgement for the caller to apply; every other outcome
        (rejected, not sent, unknown, found by a query) is applied here and gives None."""
        assert self.store is not None
        coid = order.client_order_id
        for attempt in range(3):
            if attempt:
                # Never resend blindly: ask the venue first.
                try:
                    found = await self.venue.query_order(order.symbol, coid)
                except VenueError:
                    await self._resolve_unknown(coid, order.symbol, time.time())
                    return None
                if found is not None:
                    await self.apply(found)
                    return None
            if attempt:  # the first send follows the commit that stored sent_at
                await self.store.mark_sent(coid)
            sent_at = time.time()
            try:
                report = await self.venue.place_order(order)
            except VenueRejected as exc:
                self.metrics.rejects.labels(f"venue_{exc.code}").inc()
                await self.apply(
                    dataclasses.replace(self._report(order, OrderState.REJECTED), source="rest"),
                    reason=f"venue rejected: {exc.code} {exc.message}"[:500],
                )
                return None
            except VenueUnavailable as exc:
                banned = "418" in exc.reason or "banned" in exc.reason
                if (
                    not banned
                    and attempt < 2
                    and exc.retry_in_s <= self.settings.max_rate_limit_wait_s
                    and "circuit" not in exc.reason
                ):
                    await asyncio.sleep(max(exc.retry_in_s, 0.05))
                    continue
                self.metrics.rejects.labels("venue_unavailable").inc()
                await self.apply(
                    self._report(order, OrderState.FAILED), reason=f"not sent: {exc.reason}"[:500]
                )
                return None
            except VenueUnknown as exc:
                self.metrics.unknown.inc()
                await self._audit_quietly(
                    "send_outcome_unknown", entity="order", entity_id=coid, reason=str(exc)[:500]
                )
                await self._resolve_unknown(coid, order.symbol, sent_at)
                return None
            self.metrics.ack_latency.observe(time.monotonic() - received)
            if source_ts_us > 0:
                self.metrics.e2e_latency.observe(max(time.time() - source_ts_us / 1e6, 0.0))
            return report
        return None

    @staticmethod
    def _report(order: NewOrder, state: OrderState) -> OrderReport:
        return OrderReport(
            order.client_order_id,
            order.symbol,
            state,
            side=order.side,
            qty=order.qty,
            source="executor",
        )

    async def _resolve_unknown(self, coid: str, symbol: str, sent_epoch: float) -> bool:
        """Query the order by client id until the venue knows it, or it provably never got
        there (unknown after sent + recvWindow + grace). Returns whether it was resolved;
        if not, it stays Pending for the reconciler."""
        s = self.settings
        fail_after = sent_epoch + s.recv_window_ms / 1000 + s.unknown_grace_s
        give_up = fail_after + s.unknown_resolve_s
        delay = 0.1
        while True:
            answered = False
            try:
                found = await self.venue.query_order(symbol, coid)
                answered = True
            except VenueError:
                found = None
            if found is not None:
                await self.apply(found, reason="resolved by query")
                return True
            now = time.time()
            if answered and now > fail_after:
                await self.apply(
                    OrderReport(coid, symbol, OrderState.FAILED, source="query"),
                    reason="venue does not know the order after its recvWindow",
                )
                return True
            if now > give_up:
                await self._audit_quietly(
                    "order_unresolved",
                    entity="order",
                    entity_id=coid,
                    reason="venue unreachable; left to reconciliation",
                )
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    # ------------------------------------------------------------------ reports
    async def on_report(self, report: OrderReport) -> None:
        """A report from the user-data stream or the paper fill model."""
        await self.apply(report)

    async def apply(
        self,
        report: OrderReport,
        *,
        override: bool = False,
        reason: str = "",
        actor: str | None = None,
    ) -> None:
        """Apply a venue report: store (optimistic locking), ledger, metrics, publish."""
        assert self.store is not None
        res = await self.store.apply_report(
            report,
            override=override,
            reason=reason,
            taker_fee_rate=self.venue.taker_fee_rate,
            actor=actor,
        )
        if not res.known:
            return
        if res.fill_qty > 0:
            self.ledger.on_fill(
                res.client_order_id,
                res.symbol,
                res.side,  # type: ignore[arg-type]
                res.fill_qty,
                res.fill_price,
            )
            self.metrics.fills.inc()
            day, pnl = self._daily
            self._daily = (day, pnl + res.realized_pnl - res.fill_fee)
        if res.to_state is not None and res.to_state != res.from_state:
            self.metrics.orders.labels(res.to_state.value).inc()
        if res.terminal:
            self.ledger.release(res.client_order_id)
        if res.changed:
            await self.publish_outbox()

    def _set_breaker_gauges(self) -> None:
        """Every endpoint's breaker state (later changes: ``_on_breaker``)."""
        for name, state in self.venue.breaker_states().items():
            self.metrics.breaker.labels(name).set(_BREAKER_VALUE[BreakerState(state)])

    async def publish_outbox(self) -> int:
        """Publish every unpublished ``orders.v1`` event, in order; returns how many.

        Every writer of an event calls this after its commit (a new order's Pending event:
        after the order is sent, see ``handle_signal``), and the lock serialises the calls, so
        a short read (fewer rows than the limit) is the whole outbox of this call: an event
        committed after that read is published by its writer's own call, which is waiting
        for the lock. No second, empty read per call."""
        assert self.store is not None and self.producer is not None
        sent = 0
        async with self._publish_lock:
            while True:
                # every event committed before this read is in it
                self._outbox_dirty = False
                rows = await self.store.unpublished(OUTBOX_READ_LIMIT)
                if not rows:
                    return sent
                futures = []
                for r in rows:
                    payload = orjson.loads(r["payload"])
                    key = f"{payload['exchange']}:{payload['symbol']}".encode()
                    futures.append(
                        await self.producer.send(
                            self.settings.topic_orders,
                            orjson.dumps(payload),
                            key=key,
                            headers=trace_headers(payload.get("trace_id", "")),
                        )
                    )
                await asyncio.gather(*futures)
                await self.store.mark_published([r["id"] for r in rows])
                sent += len(rows)
                if len(rows) < OUTBOX_READ_LIMIT:
                    return sent

    # ------------------------------------------------------------------ recovery
    async def _restore_ledger(self) -> None:
        assert self.store is not None
        positions = [
            (r["symbol"], r["qty"], r["avg_entry_price"])
            for r in await self.store.positions()
            if r["qty"]
        ]
        working = [
            OrderIntent(
                r["client_order_id"],
                r["symbol"],
                r["side"],
                max(0.0, r["qty"] - r["filled_qty"]),
                r["price"] or 0.0,
            )
            for r in await self.store.open_orders()
        ]
        self.ledger.restore(positions, working)
        self._set_breaker_gauges()

    async def _on_stream_connected(self) -> None:
        if self.state.value in ("running", "starting") and self.store is not None:
            try:
                await self.reconcile_once("stream connected")
            except Exception:
                log.exception("reconciliation after stream connect failed")

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reconcile_interval_s)
            try:
                await self.reconcile_once("periodic")
            except Exception:
                log.exception("periodic reconciliation failed")

    async def reconcile_once(self, why: str) -> int:
        """Compare open orders, positions and balances with the venue; fix toward the venue.
        Returns the number of corrective actions applied."""
        assert self.store is not None
        async with self._reconcile_lock:
            self.reconciliations += 1
            s = self.settings
            local_rows = await self.store.open_orders()
            try:
                venue_open = await self.venue.open_orders()
            except VenueError as exc:
                log.warning("reconciliation skipped", extra={"error": str(exc)})
                return 0
            venue_ids = {o.client_order_id for o in venue_open}
            lookups: dict[str, OrderView | None] = {}
            reports: dict[str, OrderReport] = {o.client_order_id: o for o in venue_open}
            now = time.time()
            for r in local_rows:
                coid = r["client_order_id"]
                if coid in venue_ids:
                    continue
                try:
                    found = await self.venue.query_order(r["symbol"], coid)
                except VenueError:
                    continue
                if found is not None:
                    lookups[coid] = found.view()
                    reports[coid] = found
                elif (
                    r["state"] != OrderState.PENDING.value
                    or now > float(r["sent_epoch"]) + s.recv_window_ms / 1000 + s.unknown_grace_s
                ):
                    lookups[coid] = None
            local_views = [
                OrderView(
                    r["client_order_id"],
                    r["symbol"],
                    r["side"],
                    OrderState(r["state"]),
                    r["qty"],
                    r["filled_qty"],
                    r["venue_order_id"],
                )
                for r in local_rows
            ]
            venue_positions = await self._venue_or_none(self.venue.positions)
            venue_balances = await self._venue_or_none(self.venue.balances)
            actions = reconcile(
                local_orders=local_views,
                venue_open_orders=[o.view() for o in venue_open],
                lookups=lookups,
            )
            applied = 0
            for a in actions:
                if isinstance(a, UpdateOrder):
                    base = reports.get(a.client_order_id)
                    rep = (
                        base
                        if base is not None
                        else OrderReport(
                            a.client_order_id,
                            "",
                            a.to_state,
                            a.venue_order_id,
                            filled_qty=a.venue_filled_qty,
                            source="reconcile",
                        )
                    )
                    lrow = next(r for r in local_rows if r["client_order_id"] == a.client_order_id)
                    rep = dataclasses.replace(
                        rep, symbol=lrow["symbol"], state=a.to_state, source="reconcile"
                    )
                    await self.apply(rep, override=not a.legal, reason=a.reason, actor="reconciler")
                    await self._audit_quietly(
                        "reconcile_order",
                        entity="order",
                        entity_id=a.client_order_id,
                        reason=a.reason,
                        actor="reconciler",
                        detail={"from": a.from_state.value, "to": a.to_state.value, "why": why},
                    )
                    self.metrics.reconcile_fixes.labels("order").inc()
                    applied += 1
                elif isinstance(a, AdoptOrder):
                    await self._audit_quietly(
                        "reconcile_foreign_order",
                        entity="order",
                        entity_id=a.order.client_order_id,
                        reason=a.reason,
                        actor="reconciler",
                        detail={
                            "symbol": a.order.symbol,
                            "state": a.order.state.value,
                            "ours": a.ours,
                        },
                    )
            applied += await self._reconcile_positions(venue_positions, venue_balances, why)
            return applied

    @staticmethod
    async def _venue_or_none(fetch: Any) -> Any:
        try:
            return await fetch()
        except VenueError as exc:
            log.warning("reconciliation fetch failed", extra={"error": str(exc)})
            return None

    async def _reconcile_positions(
        self,
        venue_positions: list[PositionView] | None,
        venue_balances: dict[str, float] | None,
        why: str,
    ) -> int:
        assert self.store is not None
        if venue_positions is None and venue_balances is None:
            return 0
        # Positions move with fills we may not have seen yet: compare only when nothing is
        # working, after the order step caught fills up.
        if self._in_flight or await self.store.open_orders():
            return 0
        rows = await self.store.positions()
        exchange = self.venue.exchange
        local = [
            PositionView(r["symbol"], r["qty"], r["avg_entry_price"])
            for r in rows
            if r["exchange"] == exchange
        ]
        actions = reconcile(
            local_orders=[],
            venue_open_orders=[],
            local_positions=local if venue_positions is not None else [],
            venue_positions=venue_positions or [],
            local_balances=(await self.store.balances() if venue_balances is not None else {}),
            venue_balances=venue_balances or {},
        )
        n = 0
        for a in actions:
            if isinstance(a, SetPosition):
                await self.store.set_position(
                    exchange, a.symbol, a.venue_qty, a.venue_entry_price, f"{a.reason} ({why})"
                )
                self.ledger.set_position(a.symbol, a.venue_qty, a.venue_entry_price)
                self.metrics.reconcile_fixes.labels("position").inc()
                n += 1
            elif isinstance(a, SetBalance):
                await self.store.set_balance(a.asset, a.venue, f"{a.reason} ({why})")
                self.metrics.reconcile_fixes.labels("balance").inc()
                n += 1
        if n:
            await self.publish_outbox()
        return n
