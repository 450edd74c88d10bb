"""Executor: signal -> order-acknowledged latency on the paper venue.

An in-process executor (paper venue, real Kafka and PostgreSQL, fresh topics and schema)
gets signals one at a time; the latency is from producing the signal to consuming its
``Placed`` event on ``orders.v1`` (consume, risk, store Pending + audit in one transaction,
ack, store the transition, publish). The ceiling measured in the same run is a bare Kafka
round trip (produce -> consume on one topic), which every signal pays twice.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any

import orjson
import psycopg
from confluent_kafka import Consumer, Producer
from psycopg import sql
from pydantic import SecretStr

from depthflow.common.kafka import create_topics, delete_topics
from depthflow.common.schemas import BOOK, SIGNALS, Book, Signal
from depthflow.common.settings import HttpSettings, KafkaSettings, PostgresSettings
from depthflow.common.testing import infra

N_SIGNALS = 200


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _consumer(bootstrap: str, topic: str) -> Consumer:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"b-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    c.subscribe([topic])
    return c


def _kafka_round_trip(bootstrap: str, topic: str, n: int = 200) -> list[float]:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    c = _consumer(bootstrap, topic)
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        p.produce(topic, str(i).encode())
        p.flush()
        while True:
            m = c.poll(5)
            if m is not None and m.error() is None and m.value() == str(i).encode():
                break
        out.append(time.perf_counter() - t0)
    c.close()
    return out


async def _measure(
    kafka: KafkaSettings, pg: PostgresSettings, topics: dict[str, str], schema: str
) -> list[float]:
    from depthflow.executor.app import ExecutorService
    from depthflow.executor.config import ExecutorSettings

    prod = Producer({"bootstrap.servers": kafka.bootstrap_servers, "linger.ms": 0})
    now = time.time_ns() // 1000
    book = Book(
        exchange="binance",
        symbol="BTCUSDT",
        seq=1,
        prev_seq=0,
        exchange_ts_us=now,
        local_ts_us=now,
        bid_price=99.9,
        bid_qty=100,
        ask_price=100.0,
        ask_qty=100,
        bids=[(99.9 - i * 0.1, 100.0) for i in range(20)],
        asks=[(100.0 + i * 0.1, 100.0) for i in range(20)],
    )
    prod.produce(topics["book"], BOOK.encode(book), b"binance:BTCUSDT")
    prod.flush()
    settings = ExecutorSettings(
        venue="paper",
        db_schema=schema,
        group_id=f"bench-{uuid.uuid4().hex[:8]}",
        topic_signals=topics["signals"],
        topic_book=topics["book"],
        topic_orders=topics["orders"],
        topic_control=topics["control"],
        topic_status=topics["status"],
        max_exposure_usdt=1e12,
        max_symbol_exposure_usdt=1e12,
        order_usdt_at_full_conviction=10,
        daily_loss_limit_usdt=1e12,
    )
    svc = ExecutorService(settings, kafka, pg, HttpSettings(port=0))
    await svc.start()
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    consumer = _consumer(kafka.bootstrap_servers, topics["orders"])
    latencies: list[float] = []
    try:
        await svc.venue.wait_for_book("BTCUSDT")  # type: ignore[attr-defined]
        for _ in range(N_SIGNALS):
            sig = Signal(
                signal_id=uuid.uuid4().hex,
                exchange="binance",
                symbol="BTCUSDT",
                side="buy",
                strength=1.0,
                confidence=1.0,
                strategy="bench",
                feature_set="bench",
                book_seq=1,
                ts_us=now,
                source_ts_us=now,
            )
            t0 = time.perf_counter()
            prod.produce(topics["signals"], SIGNALS.encode(sig), b"binance:BTCUSDT")
            prod.flush()
            while True:
                m = await asyncio.to_thread(consumer.poll, 0.5)
                if m is None or m.error() is not None:
                    continue
                ev = orjson.loads(m.value())
                if (
                    ev["signal_id"] == sig.signal_id
                    and ev["event_type"] == "order"
                    and ev["status"] != "Pending"
                ):
                    latencies.append(time.perf_counter() - t0)
                    break
    finally:
        consumer.close()
        stop.set()
        await asyncio.wait_for(task, 30)
        await svc.stop()
    return latencies


def run() -> dict[str, Any]:
    bootstrap = infra.kafka_bootstrap()
    dsn = infra.postgres_dsn()
    kafka = KafkaSettings(bootstrap_servers=bootstrap, default_partitions=1)
    pg = PostgresSettings(dsn=SecretStr(dsn))
    tag = uuid.uuid4().hex[:8]
    topics = {
        n: f"bench.executor.{n}.{tag}"
        for n in ("signals", "book", "orders", "control", "status", "rt")
    }
    create_topics(kafka, list(topics.values()), partitions=1)
    schema = f"bench_executor_{tag}"
    try:
        ceiling = _kafka_round_trip(bootstrap, topics["rt"])
        lat = asyncio.run(_measure(kafka, pg, topics, schema))
    finally:
        delete_topics(kafka, list(topics.values()))
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    p50, p99 = _pct(lat, 0.5), _pct(lat, 0.99)
    rt50 = statistics.median(ceiling)
    return {
        "signals": len(lat),
        "signal_to_ack_ms": {
            "p50": round(p50 * 1000, 2),
            "p99": round(p99 * 1000, 2),
            "max": round(max(lat) * 1000, 2),
        },
        "ceiling_kafka_round_trip_ms": {
            "p50": round(rt50 * 1000, 2),
            "p99": round(_pct(ceiling, 0.99) * 1000, 2),
        },
        "p50_vs_two_round_trips": round(p50 / (2 * rt50), 2),
    }


if __name__ == "__main__":
    print(orjson.dumps(run(), option=orjson.OPT_INDENT_2).decode())
