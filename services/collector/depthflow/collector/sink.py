"""The PostgreSQL side: md.book / md.health from Kafka into ``collector`` tables.

Reading the collector's own topics (instead of writing from the WebSocket loop) is what makes
the tables lossless across a ``kill -9``: the consumer commits its offsets only after the
COPY batch is durable, a restart replays from the last commit, and the natural keys
(``exchange, symbol, timestamp, update_id`` and ``exchange, symbol, ts_us, kind``) absorb the
replay. A PostgreSQL outage stops the commits, not the collector: Kafka is the buffer, and
``CopyWriter`` keeps its batch and retries until the server is back.

Rows: one per ``md.book`` message with ``tob_changed`` — every top-of-book change.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import orjson
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from depthflow.collector.metrics import CollectorMetrics
from depthflow.common.db import RETRYABLE, CopyWriter, ident
from depthflow.common.kafka import AsyncProducer, Consumed, ConsumerLoop
from depthflow.common.schemas import Book, Health, Topic
from depthflow.common.settings import KafkaSettings

log = logging.getLogger(__name__)

ORDERBOOK_COLUMNS = (
    "exchange",
    "symbol",
    "timestamp",
    "local_timestamp",
    "ask_amount",
    "ask_price",
    "bid_price",
    "bid_amount",
    "update_id",
)
ORDERBOOK_KEY = ("exchange", "symbol", "timestamp", "update_id")
HEALTH_COLUMNS = ("exchange", "symbol", "ts_us", "kind", "detail", "conn_id")
HEALTH_KEY = ("exchange", "symbol", "ts_us", "kind")
# Tardis exchange ids (the seed's rows say binance-futures)
TARDIS_EXCHANGE = {"binance": "binance-futures", "bybit": "bybit"}
DAY_US = 86_400_000_000

Offsets = dict[tuple[str, int], int]  # (topic, partition) -> offset


def orderbook_row(book: dict[str, Any]) -> tuple[Any, ...] | None:
    """The orderbook_data row of one md.book value, or None when its top did not change."""
    if not book.get("tob_changed", True):
        return None
    return (
        TARDIS_EXCHANGE.get(book["exchange"], book["exchange"]),
        book["symbol"],
        int(book["exchange_ts_us"]),
        int(book["local_ts_us"]),
        float(book["ask_qty"]),
        float(book["ask_price"]),
        float(book["bid_price"]),
        float(book["bid_qty"]),
        int(book["seq"]),
    )


def health_row(event: dict[str, Any]) -> tuple[Any, ...]:
    return (
        event["exchange"],
        event["symbol"],
        int(event["ts_us"]),
        str(event["kind"]),
        str(event.get("detail", "")),
        str(event.get("conn_id", "")),
    )


async def ensure_partitions(pool: asyncpg.Pool, schema: str, first_day: dt.date, days: int) -> int:
    """Create the daily orderbook_data partitions from ``first_day`` for ``days`` more days."""
    sql = f"SELECT {ident(schema)}.ensure_orderbook_partitions($1, $2, $3)"
    async with pool.acquire() as conn:
        return int(await conn.fetchval(sql, schema, first_day, days) or 0)


def end_offsets(kafka: KafkaSettings, topics: Sequence[str], timeout: float = 5.0) -> Offsets:
    """Each partition's end (last stable offset) of ``topics``, asked of the broker; blocking."""
    from confluent_kafka import IsolationLevel, TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec

    admin = AdminClient(kafka.confluent_config())
    meta = admin.list_topics(timeout=timeout)
    request = {
        TopicPartition(topic, p): OffsetSpec.latest()
        for topic in topics
        if topic in meta.topics
        for p in meta.topics[topic].partitions
    }
    if not request:
        return {}
    futures = admin.list_offsets(
        request, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=timeout
    )
    return {(tp.topic, tp.partition): int(f.result(timeout).offset) for tp, f in futures.items()}


class BookSink:
    """Consumes md.book and md.health and writes them idempotently."""

    def __init__(
        self,
        kafka: KafkaSettings,
        pool: asyncpg.Pool,
        *,
        schema: str,
        book_topic: str,
        health_topic: str,
        group_id: str,
        dlq_producer: AsyncProducer,
        metrics: CollectorMetrics | None = None,
        batch_size: int = 5000,
        max_buffered: int = 200_000,
        session_timeout_ms: int = 10_000,
        fetch_min_bytes: int,
        fetch_max_wait_ms: int,
        commit_interval_s: float,
    ) -> None:
        self._kafka = kafka
        self._pool = pool
        self._schema = schema
        self._book_topic = book_topic
        self._health_topic = health_topic
        self._days_ready: set[int] = set()
        # per partition, the offset after the last message a finished ``_handle`` wrote (the
        # loop commits it when due, and at stop): how far a stopping collector's sink has got
        self.handled_to: Offsets = {}
        self.last_error = ""
        self.rows = CopyWriter(
            pool,
            "orderbook_data",
            ORDERBOOK_COLUMNS,
            schema=schema,
            conflict_columns=ORDERBOOK_KEY,
            batch_size=batch_size,
            max_buffered=max_buffered,
            on_flush=metrics.db_flushed("orderbook_data") if metrics else None,
        )
        self.health = CopyWriter(
            pool,
            "book_health",
            HEALTH_COLUMNS,
            schema=schema,
            conflict_columns=HEALTH_KEY,
            batch_size=batch_size,
            max_buffered=max_buffered,
            on_flush=metrics.db_flushed("book_health") if metrics else None,
        )
        self.loop = ConsumerLoop(
            kafka,
            service="collector",
            group_id=group_id,
            topics=[
                Topic(book_topic, Book, "{exchange}:{symbol}"),
                Topic(health_topic, Health, "{exchange}:{symbol}"),
            ],
            handler=self._handle,
            dlq_producer=dlq_producer,
            decode=False,
            max_batch=5000,
            commit_interval_s=commit_interval_s,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(100, session_timeout_ms // 4),
            fetch_min_bytes=fetch_min_bytes,
            fetch_max_wait_ms=fetch_max_wait_ms,
        )

    async def start(self) -> None:
        await self.rows.start()
        await self.health.start()
        await self.loop.start()

    @property
    def buffered(self) -> int:
        """Rows held by the COPY writers, not yet durable."""
        return self.rows.buffered + self.health.buffered

    async def stop(self, leave_timeout: float = 5.0) -> None:
        """Leave the group (bounded: a leave that waits on a rebalance must not hold the
        process; the group then expires the member after the session timeout) and write
        what the writers still hold."""
        try:
            await asyncio.wait_for(self.loop.stop(), leave_timeout)
        except TimeoutError:
            log.warning(
                "sink consumer did not leave the group in time",
                extra={"timeout_s": leave_timeout},
            )
        await self.rows.close()
        await self.health.close()

    async def end_offsets(self, timeout: float = 5.0) -> Offsets:
        """md.book/md.health partition ends, from the broker."""
        topics = [self._book_topic, self._health_topic]
        return await asyncio.to_thread(end_offsets, self._kafka, topics, timeout)

    async def caught_up(self, targets: Mapping[tuple[str, int], int]) -> bool:
        """Whether every partition assigned to this sink has been written (and, once the
        running batch returns, committed) up to its offset in ``targets``."""
        for tp in await self.loop.lag():  # the assigned partitions whose end is known
            target = targets.get((tp.topic, tp.partition))
            if not target:  # not asked about, or empty
                continue
            done = self.handled_to.get((tp.topic, tp.partition))
            if done is None or done < target:
                done = await self.loop.committed(tp.topic, tp.partition)
                if done is not None:
                    self.handled_to[(tp.topic, tp.partition)] = max(
                        done, self.handled_to.get((tp.topic, tp.partition), 0)
                    )
            if done is None or done < target:
                return False
        return True

    async def wait_caught_up(
        self, targets: Mapping[tuple[str, int], int], timeout: float, interval: float = 0.05
    ) -> bool:
        """Wait (at most ``timeout`` s) until ``caught_up(targets)``; the loop keeps running."""
        deadline = time.monotonic() + timeout
        while True:
            # a revoked partition, a broker hiccup, a commit lookup held by a rebalance
            with contextlib.suppress(Exception):
                left = max(0.1, deadline - time.monotonic())
                if await asyncio.wait_for(self.caught_up(targets), left):
                    return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(interval)

    async def _ensure_days(self, rows: list[tuple[Any, ...]]) -> None:
        days = {r[2] // DAY_US for r in rows} - self._days_ready
        for day in sorted(days):
            first = dt.date(1970, 1, 1) + dt.timedelta(days=day)
            # like the COPY itself, wait out a PostgreSQL outage instead of failing the sink
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(RETRYABLE),
                wait=wait_exponential_jitter(multiplier=0.05, max=2.0, jitter=0.05),
                reraise=True,
            ):
                with attempt:
                    await ensure_partitions(self._pool, self._schema, first, 0)
            self._days_ready.add(day)

    async def _handle(self, batch: list[Consumed]) -> Sequence[tuple[Consumed, str]]:
        rejects: list[tuple[Consumed, str]] = []
        rows: list[tuple[Any, ...]] = []
        health: list[tuple[Any, ...]] = []
        for message in batch:
            try:
                value = orjson.loads(message.raw or b"")
                if message.topic == self._book_topic:
                    row = orderbook_row(value)
                    if row is not None:
                        rows.append(row)
                else:
                    health.append(health_row(value))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                rejects.append((message, f"{type(exc).__name__}: {exc}"))
        if rows:
            await self._ensure_days(rows)
            await self.rows.add_many(rows)
        if health:
            await self.health.add_many(health)
        # the durability barrier: offsets are committed only after this returns
        try:
            await self.rows.flush()
            await self.health.flush()
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            raise
        for message in batch:
            key = (message.topic, message.partition)
            if message.offset >= self.handled_to.get(key, 0):
                self.handled_to[key] = message.offset + 1
        return rejects

    async def run(self, stop: asyncio.Event) -> int:
        return await self.loop.run(stop)
