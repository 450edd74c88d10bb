"""``CollectorService``: exchange WebSockets → synchronised books → Kafka (→ PostgreSQL).

Lifecycle (``depthflow.common.lifecycle.Service``):
- ``start``: topics, the idempotent producer, metrics + /healthz /readyz /metrics, the HTTP
  session for REST snapshots, and — with ``write_db`` — migrations, the asyncpg pool, the
  day partitions and the md.book/md.health → PostgreSQL sink.
- ``run(stop, max_messages, idle_timeout)``: the connection groups (several symbols per
  socket, within the exchange's per-connection limits), snapshot fetches/resubscriptions on
  demand, the stale-stream watch and the sink, until a stop condition holds.
- ``run``'s graceful end (a stop condition or SIGTERM): close the sockets and stop the
  background tasks, flush the producer, then let the sink write and commit md.book/md.health
  up to their end (``drain_timeout_s`` at most) — so a graceful stop leaves nothing to replay.
- ``stop``: final heartbeat, leave the sink's group, release everything (each step bounded).

Heartbeats: ``collector`` (instance ``<exchange>-<host>-<pid>``) on ``status.v1`` every
``heartbeat_interval_s``; the standalone sink process reports as ``collector-sink``.
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
from depthflow.common.errors import ProduceError
from depthflow.common.heartbeat import HeartbeatPublisher
from depthflow.common.kafka import AsyncProducer, Headers, Producer, create_topics
from depthflow.common.lifecycle import Service, State
from depthflow.common.metrics import HealthServer, ServiceMetrics
from depthflow.common.schemas import BOOK, DEPTH_RAW, HEALTH, STATUS, TRADES, Topic, dlq_topic
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
    exit_stack.push_async_callback(close_pool, pool)
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
        fetch_min_bytes=s.db_fetch_min_bytes,
        fetch_max_wait_ms=s.db_fetch_max_wait_ms,
        commit_interval_s=s.db_commit_interval_s,
    )
    await sink.start()
    exit_stack.push_async_callback(sink.stop)
    return pool, sink


async def close_pool(pool: Any, timeout: float = 5.0) -> None:
    """Close the pool gracefully, or terminate its connections when one is not given back
    in time (a cancelled COPY): ``Pool.close`` alone waits for ever."""
    try:
        await asyncio.wait_for(pool.close(), timeout)
    except TimeoutError:
        log.warning("PostgreSQL pool did not close in time; terminating it")
        pool.terminate()


async def start_heartbeat(
    exit_stack: contextlib.AsyncExitStack,
    settings: CollectorSettings,
    kafka: KafkaSettings,
    service: str,
    state: Any,
) -> HeartbeatPublisher:
    """A ``HeartbeatPublisher`` on its own small producer (acknowledged sends, so a beat that
    could not be delivered is logged, and the hot path's producer errors stay its own); the
    instance is prefixed with the exchange, so both collectors are told apart at a glance."""
    producer = AsyncProducer(kafka, client_id=f"{service}-{settings.exchange}-status")
    await producer.start()
    exit_stack.push_async_callback(producer.stop)

    async def send(topic: str, value: bytes, key: bytes) -> None:
        await producer.send_and_wait(topic, value, key)

    heartbeat = HeartbeatPublisher(
        send, service, state, settings.heartbeat_interval_s, settings.topic_status
    )
    heartbeat.instance = f"{settings.exchange}-{heartbeat.instance}"
    await heartbeat.start()
    exit_stack.push_async_callback(heartbeat.stop)  # the final beat, before the producer stops
    return heartbeat


def heartbeat_state(service: Service, drained: bool) -> str:
    """The ``Heartbeat.state`` of a lifecycle state (the final beat of a finished stop says
    ``stopped``)."""
    if service.state is State.BUILT:
        return "starting"
    if service.state is State.STOPPING and drained:
        return "stopped"
    return service.state.value


class Rate:
    """Per-second rate of a growing counter between two reads (heartbeat figures)."""

    def __init__(self) -> None:
        self._mark = (time.monotonic(), 0)

    def __call__(self, count: int) -> float:
        now = time.monotonic()
        then, before = self._mark
        self._mark = (now, count)
        return round((count - before) / max(now - then, 1e-9), 1)


class CollectorProducer:
    """The feed's one ``produce`` over two idempotent producers: md.depth.raw (the archive
    replays read; nobody waits for it) on one with a long linger, everything else on the
    low-latency one. librdkafka sends one produce request per partition per linger, and
    each request costs the broker ~150 µs of CPU: raw depth at the books' 5 ms linger was a
    third of the collector's ~900 requests/s. Both report deliveries only for failures (two
    messages per depth update would otherwise mean two Python callbacks per update just to
    count successes); a failure is raised by the next produce/flush of its producer."""

    def __init__(
        self, kafka: KafkaSettings, client_id: str, raw_topic: str, raw_linger_ms: float
    ) -> None:
        self.fast = Producer(kafka, client_id=client_id, delivery_report_only_error=True)
        self.raw = Producer(
            kafka,
            client_id=f"{client_id}-raw",
            delivery_report_only_error=True,
            linger_ms=raw_linger_ms,
        )
        self.raw_topic = raw_topic

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Headers | None = None,
        timestamp_ms: int = 0,
    ) -> None:
        if topic == self.raw_topic:
            self.raw.produce(topic, value, key, headers, timestamp_ms)
        else:
            self.fast.produce(topic, value, key, headers, timestamp_ms)

    def poll(self, timeout: float = 0.0) -> int:
        return self.fast.poll(timeout) + self.raw.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        """Both producers, each within ``timeout``; the first failure is raised."""
        try:
            self.fast.flush(timeout)
        finally:
            self.raw.flush(timeout)

    def __len__(self) -> int:
        return len(self.fast) + len(self.raw)


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
        self.producer: CollectorProducer | None = None
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
        self.heartbeat: HeartbeatPublisher | None = None
        self.last_error = ""
        self._drained = False
        self._rate = Rate()
        self._sink_task: asyncio.Task[Any] | None = None
        self._sink_stop = asyncio.Event()

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
                Topic(s.topic_status, STATUS.model, STATUS.key, None, compacted=True),
            ],
        )
        self.producer = CollectorProducer(
            self.kafka, f"collector-{s.exchange}", s.topic_depth_raw, s.raw_linger_ms
        )
        self.exit_stack.push_async_callback(self._flush_producer)
        self.heartbeat = await start_heartbeat(
            self.exit_stack, s, self.kafka, "collector", self._heartbeat_state
        )
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

    async def _flush_producer(self, timeout: float = 5.0) -> None:
        """Flush off the event loop (a blocked loop would hold every other shutdown step,
        and the drain timeout could not even fire), bounded, failures logged."""
        if self.producer is None:
            return
        try:
            await asyncio.to_thread(self.producer.flush, timeout)
        except ProduceError as exc:
            self.last_error = str(exc)[:300]
            log.error("producer not flushed at stop", extra={"error": str(exc)})

    async def _start_sink(self) -> None:
        if self.postgres is None:
            raise ValueError("write_db needs PostgreSQL settings")
        self.pool, self.sink = await open_sink(
            self.exit_stack, self.settings, self.kafka, self.postgres, self.metrics
        )

    async def on_stop(self) -> None:
        self._stop.set()
        self._sink_stop.set()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.metrics.service.up.set(0)
        self._drained = True

    def _heartbeat_state(self) -> tuple[str, bool, dict[str, Any]]:
        s = self.settings
        detail: dict[str, Any] = {
            "exchange": s.exchange,
            "source": s.source,
            "symbols": len(s.symbols),
            "connections": len(self.groups),
        }
        feed = self.feed
        if feed is not None:
            stats = feed.stats
            detail.update(
                synced_books=sum(1 for x in feed.syncs.values() if x.synced),
                frames=stats.frames,
                messages_per_s=self._rate(stats.frames),
                books_published=stats.books_published,
                gaps=stats.gaps,
                resyncs=stats.resyncs,
                parse_errors=stats.parse_errors,
                reconnects=max(0, self.connects - len(self.groups)),
            )
        sink = self.sink
        detail["sink"] = sink is not None
        if sink is not None:
            detail.update(
                sink_buffered_rows=sink.buffered,
                sink_rows_written=sink.rows.rows_written,
                sink_db_retries=sink.rows.retries + sink.health.retries,
            )
        detail["last_error"] = self.last_error or (sink.last_error if sink is not None else "")
        return heartbeat_state(self, self._drained), self.ready, detail

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

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # run() raises it: a dead sink or connection group must stop the service,
            # not leave it collecting without them
            self._crashed.append(task)
            error = task.exception()
            self.last_error = f"{task.get_name()}: {type(error).__name__}: {error}"[:300]

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
                except Exception as exc:
                    log.exception("cannot create partitions ahead; will retry")
                    self.last_error = f"partitions: {type(exc).__name__}: {exc}"[:300]
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
            self._sink_task = self._spawn(self.sink.run(self._sink_stop), "sink")
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
            await self._wind_down(inner)
        return feed.stats.frames - start_frames

    async def _wind_down(self, inner: asyncio.Event) -> None:
        """The graceful end of ``run``, in the order that leaves nothing to replay: close
        the sockets and stop the background tasks (nothing new is published), flush the
        producer, then keep the sink going until it has written and committed every
        md.book/md.health partition it owns up to the end, and only then stop it. Every
        step is bounded; what a step leaves undone the next sink replays."""
        inner.set()
        self._stop.set()
        others = [t for t in self._tasks if t is not self._sink_task]
        for task in others:
            if task.get_name().startswith(("snapshot-", "resubscribe-")):
                task.cancel()  # a resync in its retry backoff is of no use any more
        if others:
            # sockets close within their close timeout (2 s); housekeeping within 0.1 s
            _done, pending = await asyncio.wait(others, timeout=5)
            for task in pending:
                task.cancel()
            if pending:
                log.warning(
                    "tasks cancelled at stop", extra={"tasks": [t.get_name() for t in pending]}
                )
                await asyncio.wait(pending, timeout=1)
        await self._flush_producer(timeout=5.0)
        sink_task = self._sink_task
        if sink_task is None or sink_task.done():
            self._sink_stop.set()
            return
        caught_up = False
        try:
            targets = await self.sink.end_offsets()
            caught_up = await self.sink.wait_caught_up(targets, self.settings.drain_timeout_s)
        except Exception as exc:
            log.warning("cannot tell whether the sink caught up", extra={"error": str(exc)})
        self._sink_stop.set()  # the loop finishes (and commits) the batch in hand, then returns
        _done, pending = await asyncio.wait([sink_task], timeout=5)
        if pending:
            sink_task.cancel()
            await asyncio.wait(pending, timeout=1)
        if not caught_up or pending:
            log.warning(
                "sink stopped short of the end of its topics; the next sink replays the rest",
                extra={"drain_timeout_s": self.settings.drain_timeout_s},
            )


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
        self.heartbeat: HeartbeatPublisher | None = None
        self._drained = False
        self._rate = Rate()

    async def on_start(self) -> None:
        s = self.settings
        create_topics(
            self.kafka, [Topic(s.topic_status, STATUS.model, STATUS.key, None, compacted=True)]
        )
        self.heartbeat = await start_heartbeat(
            self.exit_stack, s, self.kafka, "collector-sink", self._heartbeat_state
        )
        health = HealthServer(
            self.metrics.service, self.http.host, self.http.port, lambda: self.ready
        )
        await health.start()
        self.exit_stack.push_async_callback(health.stop)
        self.pool, self.sink = await open_sink(
            self.exit_stack, self.settings, self.kafka, self.postgres, self.metrics
        )
        self.metrics.service.up.set(1)

    async def on_stop(self) -> None:
        self.metrics.service.up.set(0)
        self._drained = True

    def _heartbeat_state(self) -> tuple[str, bool, dict[str, Any]]:
        detail: dict[str, Any] = {"group_id": self.settings.db_group_id}
        sink = self.sink
        if sink is not None:
            stats = sink.loop.stats
            detail.update(
                consumed=stats.consumed,
                messages_per_s=self._rate(stats.consumed),
                dead_lettered=stats.dead_lettered,
                commit_failures=stats.commit_failures,
                sink_buffered_rows=sink.buffered,
                sink_rows_written=sink.rows.rows_written,
                sink_db_retries=sink.rows.retries + sink.health.retries,
            )
        detail["last_error"] = sink.last_error if sink is not None else ""
        return heartbeat_state(self, self._drained), self.ready, detail

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
