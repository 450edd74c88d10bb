"""``CollectorService``: exchange WebSockets → synchronised books → Kafka (→ PostgreSQL).

Lifecycle (``depthflow.common.lifecycle.Service``):
- ``start``: topics, the idempotent producer, metrics + /healthz /readyz /metrics, the HTTP
  session for REST snapshots, and — with ``write_db`` — migrations, the asyncpg pool, the
  day partitions and the md.book/md.health → PostgreSQL sink.
- ``run(stop, max_messages, idle_timeout)``: the connection groups (several symbols per
  socket, within the exchange's per-connection limits), snapshot fetches/resubscriptions on
  demand, the stale-stream watch and the sink, until a stop condition holds.
- ``stop``: close the sockets, flush the producer, drain the sink, release everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import logging
import time
from typing import Any

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from depthflow.collector.config import CollectorSettings
from depthflow.collector.connection import ConnectionGroup, WsConnection
from depthflow.collector.feed import FeedProcessor, TopicNames, now_us
from depthflow.collector.metrics import CollectorMetrics
from depthflow.common.kafka import AsyncProducer, Producer, create_topics
from depthflow.common.lifecycle import Service
from depthflow.common.metrics import HealthServer, ServiceMetrics
from depthflow.common.schemas import BOOK, DEPTH_RAW, HEALTH, TRADES, Topic, dlq_topic
from depthflow.common.settings import HttpSettings, KafkaSettings, PostgresSettings

log = logging.getLogger(__name__)


class SnapshotUnavailable(Exception):
    """A REST snapshot request failed; retried with backoff."""


async def open_sink(
    exit_stack: contextlib.AsyncExitStack,
    settings: CollectorSettings,
    kafka: KafkaSettings,
    postgres: PostgresSettings,
    metrics: CollectorMetrics,
) -> tuple[Any, Any]:
    """Migrations, the asyncpg pool, the day partitions and a started ``BookSink``; every
    resource's release is pushed on ``exit_stack``. Returns (pool, sink)."""
    from depthflow.collector.sink import BookSink, ensure_partitions
    from depthflow.common.db import create_pool
    from depthflow.common.migrations import load_migrations, migrate

    s = settings
    await asyncio.to_thread(
        migrate,
        postgres.dsn.get_secret_value(),
        s.db_schema,
        load_migrations("depthflow.collector"),
    )
    pool = await create_pool(postgres)
    exit_stack.push_async_callback(pool.close)
    today = dt.datetime.now(dt.UTC).date()
    await ensure_partitions(
        pool, s.db_schema, today - dt.timedelta(days=1), s.partitions_ahead_days + 1
    )
    dlq = AsyncProducer(kafka, client_id="collector-dlq")
    await dlq.start()
    exit_stack.push_async_callback(dlq.stop)
    sink = BookSink(
        kafka,
        pool,
        schema=s.db_schema,
        book_topic=s.topic_book,
        health_topic=s.topic_health,
        group_id=s.db_group_id,
        dlq_producer=dlq,
        metrics=metrics,
        batch_size=s.db_batch_size,
        max_buffered=s.db_max_buffered,
        session_timeout_ms=s.db_session_timeout_ms,
    )
    await sink.start()
    exit_stack.push_async_callback(sink.stop)
    return pool, sink


def make_producer(kafka: KafkaSettings, client_id: str) -> Producer:
    """The collector's producer: the common idempotent one, with delivery reports only for
    failures — two messages per depth update would otherwise mean two Python callbacks per
    update just to count successes (failures are still raised by the next produce/flush)."""
    return Producer(kafka, client_id=client_id, delivery_report_only_error=True)


def freeze_startup_objects() -> None:
    """Exempt everything built so far (modules, clients, books) from the cyclic GC: the
    hot path allocates many short-lived containers, and each full collection would
    otherwise walk every object the process has ever imported."""
    gc.collect()
    gc.freeze()


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class CollectorService(Service):
    name = "collector"

    def __init__(
        self,
        settings: CollectorSettings,
        kafka: KafkaSettings,
        postgres: PostgresSettings | None = None,
        http: HttpSettings | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.kafka = kafka
        self.postgres = postgres
        self.http = http or HttpSettings()
        self.ws_base, self.rest_base = settings.endpoints()
        self.topics = TopicNames(
            settings.topic_depth_raw,
            settings.topic_book,
            settings.topic_trades,
            settings.topic_health,
            settings.topic_dlq,
        )
        self.metrics = CollectorMetrics(ServiceMetrics("collector"), settings.exchange)
        self.producer: Producer | None = None
        self.feed: FeedProcessor | None = None
        self.health_server: HealthServer | None = None
        self.sink: Any = None
        self.pool: Any = None
        self.groups: list[ConnectionGroup] = []
        self._group_of: dict[str, ConnectionGroup] = {}
        self._symbols_of: dict[ConnectionGroup, list[str]] = {}
        self._http: aiohttp.ClientSession | None = None
        self._inflight: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._crashed: list[asyncio.Task[Any]] = []
        self._snapshot_gate = asyncio.Semaphore(4)
        self._stop = asyncio.Event()
        self.connects = 0

    # ------------------------------------------------------------------ lifecycle

    async def on_start(self) -> None:
        s = self.settings
        names = self.topics
        create_topics(
            self.kafka,
            [
                Topic(names.depth_raw, DEPTH_RAW.model, DEPTH_RAW.key, DEPTH_RAW.retention_ms),
                Topic(names.book, BOOK.model, BOOK.key, BOOK.retention_ms),
                Topic(names.trades, TRADES.model, TRADES.key, TRADES.retention_ms),
                Topic(names.health, HEALTH.model, HEALTH.key, HEALTH.retention_ms),
                Topic(
                    names.dlq,
                    dlq_topic("collector").model,
                    "{source_topic}",
                    dlq_topic("collector").retention_ms,
                ),
            ],
        )
        self.producer = make_producer(self.kafka, f"collector-{s.exchange}")
        self.exit_stack.callback(self._flush_producer)
        self.feed = FeedProcessor(
            s.exchange,
            s.symbols,
            self.producer,
            self.topics,
            book_levels=s.book_levels,
            reorder_window=s.reorder_window,
            metrics=self.metrics,
            request_resync=self._request_resync,
        )
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=s.snapshot_timeout_s)
        )
        self.exit_stack.push_async_callback(self._http.close)
        self.health_server = HealthServer(
            self.metrics.service, self.http.host, self.http.port, lambda: self.ready
        )
        await self.health_server.start()
        self.exit_stack.push_async_callback(self.health_server.stop)
        if s.write_db:
            await self._start_sink()
        freeze_startup_objects()
        self.metrics.service.up.set(1)

    def _flush_producer(self) -> None:
        if self.producer is not None:
            self.producer.flush(30)

    async def _start_sink(self) -> None:
        if self.postgres is None:
            raise ValueError("write_db needs PostgreSQL settings")
        self.pool, self.sink = await open_sink(
            self.exit_stack, self.settings, self.kafka, self.postgres, self.metrics
        )

    async def on_stop(self) -> None:
        self._stop.set()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.metrics.service.up.set(0)

    # ------------------------------------------------------------------ connections

    def _build_groups(self) -> None:
        s = self.settings
        symbols = list(s.symbols)
        if s.exchange == "binance":
            per_symbol = 2 if s.trades else 1
            size = max(1, s.streams_per_connection // per_symbol)
            for n, chunk in enumerate(_chunks(symbols, size)):
                streams = []
                for sym in chunk:
                    streams.append(f"{sym.lower()}@depth@{s.binance_depth_speed}")
                    if s.trades:
                        streams.append(f"{sym.lower()}@aggTrade")
                url = f"{self.ws_base}/stream?streams={'/'.join(streams)}"
                self._add_group(f"binance-{n}", url, chunk, [], None)
        else:
            size = max(1, s.streams_per_connection // (2 if s.trades else 1))
            for n, chunk in enumerate(_chunks(symbols, size)):
                topics = []
                for sym in chunk:
                    topics.append(f"orderbook.{s.bybit_depth}.{sym}")
                    if s.trades:
                        topics.append(f"publicTrade.{sym}")
                requests: list[dict[str, object]] = [
                    {"op": "subscribe", "req_id": f"sub-{n}-{i}", "args": args}
                    for i, args in enumerate(_chunks(topics, s.bybit_args_per_request))
                ]
                url = f"{self.ws_base}/v5/public/linear"
                self._add_group(f"bybit-{n}", url, chunk, requests, s.bybit_ping_interval_s)

    def _add_group(
        self,
        name: str,
        url: str,
        symbols: list[str],
        subscribe: list[dict[str, object]],
        app_ping_s: float | None,
    ) -> None:
        s = self.settings
        assert self.feed is not None
        feed = self.feed

        def make() -> WsConnection:
            return WsConnection(
                name,
                url,
                feed.on_frame,
                self._on_conn_event,
                subscribe=subscribe,
                app_ping_s=app_ping_s,
                stale_after_s=s.stale_after_s,
                backoff_initial_s=s.reconnect_initial_s,
                backoff_max_s=s.reconnect_max_s,
            )

        group = ConnectionGroup(make, s.roll_after_s, first_data_timeout_s=s.stale_after_s * 3)
        self.groups.append(group)
        self._symbols_of[group] = symbols
        for sym in symbols:
            self._group_of[sym] = group

    def _group_by_conn(self, conn_id: str) -> ConnectionGroup | None:
        name = conn_id.split("#", 1)[0]
        for group in self.groups:
            cur = group.current
            if cur is not None and cur.name == name:
                return group
        return None

    def _on_conn_event(self, conn_id: str, what: str) -> None:
        feed = self.feed
        group = self._group_by_conn(conn_id)
        if feed is None or group is None:
            return
        symbols = self._symbols_of[group]
        if what == "connected":
            self.connects += 1
            reason = "initial" if self.connects <= len(self.groups) else "reconnect"
            self.metrics.reconnects.labels(self.settings.exchange, reason).inc()
            for sym in symbols:
                if reason == "reconnect":
                    feed.health(sym, "reconnect", "", conn_id)
                if self.settings.exchange == "binance" and not feed.syncs[sym].synced:
                    self._request_resync(sym, "connected")
        else:
            for sym in symbols:
                feed.health(sym, "disconnect", what.partition(":")[2], conn_id)

    # ------------------------------------------------------------------ resyncs

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # run() raises it: a dead sink or connection group must stop the service,
            # not leave it collecting without them
            self._crashed.append(task)

    def _request_resync(self, symbol: str, reason: str) -> None:
        if symbol in self._inflight or self._stop.is_set():
            return
        self._inflight.add(symbol)
        if self.settings.exchange == "binance":
            self._spawn(self._fetch_snapshot(symbol), f"snapshot-{symbol}")
        else:
            self._spawn(self._resubscribe(symbol), f"resubscribe-{symbol}")

    async def _fetch_snapshot(self, symbol: str) -> None:
        s = self.settings
        url = f"{self.rest_base}/fapi/v1/depth"
        params = {"symbol": symbol, "limit": str(s.snapshot_limit)}
        assert self._http is not None and self.feed is not None
        body = b""
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(
                    (aiohttp.ClientError, asyncio.TimeoutError, SnapshotUnavailable)
                ),
                wait=wait_exponential_jitter(multiplier=0.2, max=10.0, jitter=0.2),
                reraise=True,
            ):
                with attempt:
                    async with self._snapshot_gate, self._http.get(url, params=params) as resp:
                        body = await resp.read()
                        if resp.status in (418, 429) or resp.status >= 500:
                            raise SnapshotUnavailable(f"HTTP {resp.status}")
        finally:
            self._inflight.discard(symbol)
        if not self._stop.is_set():
            self.feed.on_snapshot_body(symbol, body, "rest", now_us())

    async def _resubscribe(self, symbol: str) -> None:
        topic = f"orderbook.{self.settings.bybit_depth}.{symbol}"
        group = self._group_of[symbol]
        try:
            conn = group.current
            if conn is not None:
                await conn.send({"op": "unsubscribe", "req_id": f"unsub-{symbol}", "args": [topic]})
                await conn.send({"op": "subscribe", "req_id": f"resub-{symbol}", "args": [topic]})
            # not connected: the reconnect subscribes again and Bybit sends a snapshot
        finally:
            self._inflight.discard(symbol)

    async def drain_db(self, idle_timeout: float = 2.0) -> int:
        """Write what md.book/md.health still hold for this group (after ``run``)."""
        if self.sink is None:
            return 0
        return int(await self.sink.loop.run(idle_timeout=idle_timeout))

    # ------------------------------------------------------------------ run

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        s = self.settings
        assert self.feed is not None and self.producer is not None
        feed = self.feed
        next_partitions = time.monotonic() + 3600
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
            self.producer.poll(0)
            feed.flush_metrics()
            now = time.monotonic()
            self.metrics.synced_books.labels(s.exchange).set(
                sum(1 for x in feed.syncs.values() if x.synced)
            )
            for symbol in feed.stale_symbols(now, s.stale_after_s):
                if symbol in self._inflight:
                    continue
                silent = now - feed.last_event_monotonic[symbol]
                group = self._group_of[symbol]
                conn_id = group.current.conn_id if group.current else ""
                feed.mark_stale(symbol, silent, conn_id)
            if self.pool is not None and now >= next_partitions:
                from depthflow.collector.sink import ensure_partitions

                next_partitions = now + 3600
                today = dt.datetime.now(dt.UTC).date()
                try:
                    await ensure_partitions(self.pool, s.db_schema, today, s.partitions_ahead_days)
                except Exception:
                    log.exception("cannot create partitions ahead; will retry")
                    next_partitions = now + 60

    async def run(
        self,
        stop: asyncio.Event | None = None,
        max_messages: int | None = None,
        idle_timeout: float | None = None,
    ) -> int:
        """Collect until ``stop`` is set, ``max_messages`` frames arrived, or no frame came
        for ``idle_timeout`` seconds. Returns the number of frames handled."""
        stop = stop or asyncio.Event()
        assert self.feed is not None
        feed = self.feed
        inner = asyncio.Event()
        self._build_groups()
        for group in self.groups:
            self._spawn(group.run(inner), f"group-{id(group)}")
        self._spawn(self._housekeeping(inner), "housekeeping")
        if self.sink is not None:
            self._spawn(self.sink.run(inner), "sink")
        start_frames = feed.stats.frames
        last_frames = start_frames
        last_change = time.monotonic()
        try:
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.05)
                frames = feed.stats.frames
                if max_messages is not None and frames - start_frames >= max_messages:
                    break
                if frames != last_frames:
                    last_frames, last_change = frames, time.monotonic()
                elif idle_timeout is not None and time.monotonic() - last_change >= idle_timeout:
                    break
                if self._crashed:
                    error = self._crashed[0].exception()
                    assert error is not None
                    raise error
        finally:
            inner.set()
            self._stop.set()
            tasks = list(self._tasks)
            _done, pending = await asyncio.wait(tasks, timeout=10) if tasks else (set(), set())
            for task in pending:
                task.cancel()
            assert self.producer is not None
            await asyncio.to_thread(self.producer.flush, 30)
        return feed.stats.frames - start_frames


class SinkService(Service):
    """Only the md.book/md.health → PostgreSQL sink, as its own process
    (``depthflow collector sink``): scale or restart it apart from the WebSockets, or run
    it in burst mode (``idle_timeout``) to drain what the topics still hold."""

    name = "collector-sink"

    def __init__(
        self,
        settings: CollectorSettings,
        kafka: KafkaSettings,
        postgres: PostgresSettings,
        http: HttpSettings | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.kafka = kafka
        self.postgres = postgres
        self.http = http or HttpSettings()
        self.metrics = CollectorMetrics(ServiceMetrics("collector_sink"), settings.exchange)
        self.sink: Any = None
        self.pool: Any = None

    async def on_start(self) -> None:
        health = HealthServer(
            self.metrics.service, self.http.host, self.http.port, lambda: self.ready
        )
        await health.start()
        self.exit_stack.push_async_callback(health.stop)
        self.pool, self.sink = await open_sink(
            self.exit_stack, self.settings, self.kafka, self.postgres, self.metrics
        )
        self.metrics.service.up.set(1)

    async def run(
        self,
        stop: asyncio.Event | None = None,
        max_messages: int | None = None,
        idle_timeout: float | None = None,
    ) -> int:
        """Write until ``stop``, ``max_messages`` consumed, or ``idle_timeout`` silent
        seconds (burst mode: drain and return). ``start`` already waited for the group to
        assign partitions, so the idle clock does not run during the join."""
        assert self.sink is not None
        return int(
            await self.sink.loop.run(stop, max_messages=max_messages, idle_timeout=idle_timeout)
        )
