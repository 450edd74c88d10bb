"""A PostgreSQL outage while the collector runs: bounded buffering, nothing lost.

The shared server is never touched: the collector writes to a private throwaway cluster
(``infra.sh start-pg`` on its own port), which is stopped for ~10 s while the collector
keeps collecting from the simulator, then started again. During the outage the collector
keeps publishing md.book (Kafka holds the backlog), the sink holds at most one consumer
batch (back-pressure: it stops consuming instead of buffering without bound) and its
offsets do not advance; afterwards orderbook_data holds exactly one row per tob_changed
md.book message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import orjson
from pydantic import SecretStr

from depthflow.collector.app import CollectorService
from depthflow.common.settings import KafkaSettings, PostgresSettings
from depthflow.common.testing import eventually_async

from .conftest import read_topic
from .test_collector_kill import rows_in
from .test_collector_sim import SYMBOLS, collector_settings

OUTAGE_S = 10.0
CONSUMER_BATCH = 5000  # BookSink's ConsumerLoop max_batch: the most the sink ever holds


async def test_postgres_outage_buffers_boundedly_and_loses_nothing(
    sim_factory: Callable[..., str],
    kafka_settings: KafkaSettings,
    topic_factory: Callable[..., str],
    private_postgres: tuple[str, Callable[[str], None]],
) -> None:
    dsn, infra = private_postgres
    url = sim_factory("--symbols", SYMBOLS, "--rate", "150", "--seed", "5")
    settings = collector_settings(
        "binance", url, "collector", topic_factory, db_batch_size=200, db_max_buffered=1000
    )
    service = CollectorService(
        settings, kafka_settings, PostgresSettings(dsn=SecretStr(dsn), pool_max_size=2)
    )
    await service.start()
    stop = asyncio.Event()
    runner = asyncio.create_task(service.run(stop))
    try:
        feed, sink = service.feed, service.sink
        assert feed is not None and sink is not None

        async def rows_at_least(n: int) -> int:
            assert not runner.done(), runner
            total, _ = await asyncio.to_thread(rows_in, dsn, "collector")
            return total if total >= n else 0

        await eventually_async(
            lambda: rows_at_least(100), timeout=60, interval=0.1, what="rows before the outage"
        )

        await asyncio.to_thread(infra, "stop-pg")
        books_before = feed.stats.books_published
        handled_before = sink.loop.stats.handled
        peak = 0
        down_since = time.monotonic()

        async def outage_over() -> bool:
            # samples the sink while PostgreSQL is down; the outage lasts OUTAGE_S by design
            nonlocal peak
            assert not runner.done(), runner
            peak = max(peak, sink.rows.buffered)
            return time.monotonic() - down_since >= OUTAGE_S

        await eventually_async(outage_over, timeout=OUTAGE_S + 5, interval=0.05, what="the outage")
        books_during = feed.stats.books_published - books_before
        handled_during = sink.loop.stats.handled - handled_before
        await asyncio.to_thread(infra, "start-pg")

        # the sink catches up by itself once the server is back
        target = books_before + books_during // 2
        await eventually_async(
            lambda: asyncio.sleep(0, sink.loop.stats.handled >= target),
            timeout=180,
            interval=0.1,
            what="the sink caught up after the outage",
        )
    finally:
        stop.set()
        await runner
        await service.drain_db()
        retries = service.sink.rows.retries if service.sink else 0
        await service.stop()

    # the collector kept collecting while the sink waited: Kafka held the backlog
    assert books_during > 150
    # ... and the sink stopped consuming: at most the one batch it was writing
    assert handled_during < books_during // 2
    # bounded: the sink never held more than one consumer batch of rows
    assert 0 < peak <= CONSUMER_BATCH
    assert retries > 0
    books = [orjson.loads(v) for _, v in read_topic(kafka_settings, settings.topic_book)]
    changed = {
        (b["exchange"], b["symbol"], b["exchange_ts_us"], b["seq"])
        for b in books
        if b["tob_changed"]
    }
    total, distinct = rows_in(dsn, "collector")
    assert total == distinct == len(changed) == sum(1 for b in books if b["tob_changed"])
