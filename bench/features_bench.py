"""Feature set v1 throughput: streaming vectors/s on one core with per-update latency
p50/p99, and batch vectors/s, over the same generated series.

The ceiling measured in the same run is a bare loop that only walks the books' levels
(summing quantities) - the least any per-update Python code must spend.

``service`` figures (real Kafka + PostgreSQL): the same input through (a) the faust-streaming
worker (``depthflow features`` subprocess) with ``stream.take`` batches of 500 and of 1, and
(b) a plain aiokafka ``getmany`` loop driving the very same ``FeaturesProcessor.handle``
(decode, merge, compute, COPY, publish, state checkpoint) in-process. Rates are
vectors / (last - first features.v1 CreateTime), so start-up and recovery are excluded; the
ratio plain/faust is faust's overhead.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from depthflow.features import FeatureState
from depthflow.features.batch import compute_batch
from depthflow.features.synthetic import generate


def run_engine(n_books: int = 20_000, seed: int = 42) -> dict[str, Any]:
    """Measure the pure engine: streaming and batch; returns plain figures (vectors/s, µs)."""
    series = generate(n_books, seed=seed, mean_gap_us=300_000, one_sided_every=1000)
    events = series.events
    state = FeatureState()
    lat = np.empty(n_books, np.float64)
    k = 0
    clock = time.perf_counter_ns
    t0 = time.perf_counter()
    for e in events:
        if e[0] == "t":
            state.on_trade(e[1], e[2], e[3], e[4])
        else:
            s = clock()
            state.on_book(e[1], e[2], e[3], e[4], e[5])
            lat[k] = clock() - s
            k += 1
    stream_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for e in events:
        if e[0] == "b":
            x = 0.0
            for _, q in e[1]:
                x += q
            for _, q in e[2]:
                x += q
    floor_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compute_batch(series.books, series.trades)
    batch_s = time.perf_counter() - t0
    state_bytes = len(json.dumps(state.to_state()))
    stream_rate = n_books / stream_s
    return {
        "books": n_books,
        "trades": len(series.trades.ts),
        "streaming_vectors_per_s": round(stream_rate),
        "streaming_incl_trades_s": round(stream_s, 3),
        "latency_us_p50": round(float(np.percentile(lat, 50)) / 1e3, 2),
        "latency_us_p99": round(float(np.percentile(lat, 99)) / 1e3, 2),
        "latency_us_max": round(float(lat.max()) / 1e3, 2),
        "ceiling_level_walk_per_s": round(n_books / floor_s),
        "streaming_vs_ceiling": round(stream_rate / (n_books / floor_s), 4),
        "batch_vectors_per_s": round(n_books / batch_s),
        "state_json_bytes": state_bytes,
    }


# -- the service path over Kafka -----------------------------------------------------------


class _Msg:
    __slots__ = ("headers", "key", "offset", "partition", "topic", "value")

    def __init__(self, r: Any) -> None:
        self.topic, self.partition, self.offset = r.topic, r.partition, r.offset
        self.key, self.value, self.headers = r.key, r.value, r.headers


class _Event:
    __slots__ = ("message",)

    def __init__(self, r: Any) -> None:
        self.message = _Msg(r)


class _PlainProducer:
    """faust's producer interface over a bare AIOKafkaProducer."""

    def __init__(self, producer: Any, changelog: str) -> None:
        self.p = producer
        self.changelog = changelog

    async def send(
        self, topic: str, key: Any, value: Any, partition: Any, ts: Any, headers: Any
    ) -> Any:
        return await self.p.send(topic, value, key=key, partition=partition, headers=headers)

    async def send_and_wait(
        self, topic: str, key: Any, value: Any, partition: Any, ts: Any, headers: Any
    ) -> Any:
        return await self.p.send_and_wait(topic, value, key=key, headers=headers)


class _PlainTable:
    """The faust table interface the processor uses: a dict plus changelog sends."""

    def __init__(self, producer: _PlainProducer) -> None:
        self.data: dict[bytes, bytes] = {}
        self.producer = producer
        self.pending: list[Any] = []

    def send_changelog(self, partition: int, key: bytes, value: bytes) -> None:
        self.pending.append(
            asyncio.ensure_future(
                self.producer.p.send(self.producer.changelog, value, key=key, partition=partition)
            )
        )


async def _plain_loop(env: dict[str, str], n_books: int, kafka: Any, pg: Any) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from depthflow.common.settings import HttpSettings
    from depthflow.features.app import FeaturesProcessor, prepare
    from depthflow.features.config import FeaturesSettings

    settings = FeaturesSettings(
        **{k[9:].lower(): v for k, v in env.items() if k.startswith("FEATURES_")}
    )
    prepare(settings, kafka, pg)
    producer = AIOKafkaProducer(
        **kafka.aiokafka_config(),
        acks="all",
        linger_ms=5,
        enable_idempotence=True,
        max_request_size=1_000_000,
    )
    await producer.start()
    plain = _PlainProducer(producer, f"{settings.app_id}-plain-changelog")
    from depthflow.common.kafka import create_topics

    create_topics(kafka, [plain.changelog], partitions=settings.partitions)
    app = type("PlainApp", (), {"producer": plain})()
    table = _PlainTable(plain)
    proc = FeaturesProcessor(app, table, settings, kafka, pg, HttpSettings())
    await proc.start()
    consumer = AIOKafkaConsumer(
        settings.topic_book,
        settings.topic_trades,
        **kafka.aiokafka_config(),
        group_id=f"{settings.app_id}-plain",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        while proc.vectors_total < n_books:
            batch = await consumer.getmany(timeout_ms=200, max_records=settings.batch_max)
            if not batch:
                continue
            await proc.handle([_Event(r) for records in batch.values() for r in records])
            await producer.flush()
            await asyncio.gather(*table.pending)
            table.pending.clear()
            await consumer.commit()
    finally:
        await consumer.stop()
        await proc.stop()
        await producer.stop()


def _output_rate(kafka: Any, topic: str, expected: int, timeout: float) -> dict[str, Any]:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            **kafka.confluent_config(),
            "group.id": f"bench-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    stamps: list[int] = []
    deadline = time.monotonic() + timeout
    try:
        while len(stamps) < expected and time.monotonic() < deadline:
            for m in consumer.consume(1000, timeout=0.5):
                if m.error() is None:
                    stamps.append(m.timestamp()[1])
    finally:
        consumer.close()
    if len(stamps) < expected:
        raise RuntimeError(f"only {len(stamps)}/{expected} vectors on {topic}")
    span_s = max((max(stamps) - min(stamps)) / 1000, 1e-3)
    return {
        "vectors": len(stamps),
        "span_s": round(span_s, 3),
        "vectors_per_s": round(len(stamps) / span_s),
    }


def run_service(n_books: int = 6000, seed: int = 43) -> dict[str, Any]:
    """faust worker (take 500 and take 1) vs a plain aiokafka loop over the same input."""
    import psycopg
    from psycopg import sql

    from depthflow.common.kafka import Producer, create_topics, delete_topics
    from depthflow.common.logging import trace_headers
    from depthflow.common.schemas import BOOK, TRADES, symbol_key
    from depthflow.common.settings import KafkaSettings, PostgresSettings
    from depthflow.common.testing import infra
    from depthflow.common.testing.processes import ServiceProcess, free_port

    kafka = KafkaSettings(bootstrap_servers=infra.kafka_bootstrap())
    dsn = infra.postgres_dsn()
    from pydantic import SecretStr

    pg = PostgresSettings(dsn=SecretStr(dsn))
    run_id = uuid.uuid4().hex[:8]
    book, trades = f"bench.book.{run_id}", f"bench.trades.{run_id}"
    create_topics(kafka, [book, trades], partitions=1)
    series = generate(n_books, seed=seed, mean_gap_us=300_000)
    producer = Producer(kafka, client_id="bench-features")
    key = symbol_key("binance", "BTCUSDT")
    last_ts = 0
    for i, e in enumerate(series.events):
        if e[0] == "t":
            last_ts = max(last_ts, e[4])
            producer.produce(
                trades,
                TRADES.encode(
                    {
                        "schema_version": 1,
                        "exchange": "binance",
                        "symbol": "BTCUSDT",
                        "trade_id": str(i),
                        "price": e[1],
                        "qty": e[2],
                        "side": "buy" if e[3] else "sell",
                        "exchange_ts_us": e[4],
                        "local_ts_us": e[4],
                    }
                ),
                key,
            )
        else:
            _, bids, asks, ts, lts, seq = e
            last_ts = max(last_ts, ts)
            producer.produce(
                book,
                BOOK.encode(
                    {
                        "schema_version": 1,
                        "exchange": "binance",
                        "symbol": "BTCUSDT",
                        "seq": seq,
                        "prev_seq": seq - 1,
                        "exchange_ts_us": ts,
                        "local_ts_us": lts,
                        "bid_price": bids[0][0] if bids else 0.0,
                        "bid_qty": bids[0][1] if bids else 0.0,
                        "ask_price": asks[0][0] if asks else 0.0,
                        "ask_qty": asks[0][1] if asks else 0.0,
                        "bids": bids,
                        "asks": asks,
                    }
                ),
                key,
                headers=trace_headers(f"b{seq}"),
            )
    producer.produce(
        trades,
        TRADES.encode(
            {
                "schema_version": 1,
                "exchange": "binance",
                "symbol": "BTCUSDT",
                "trade_id": "end",
                "price": 100_000.0,
                "qty": 0.001,
                "side": "buy",
                "exchange_ts_us": last_ts + 1_000_000,
                "local_ts_us": last_ts + 1_000_000,
            }
        ),
        key,
    )
    producer.flush()

    out: dict[str, Any] = {"books": n_books, "trades": len(series.trades.ts)}
    made: list[str] = [book, trades]
    schemas: list[str] = []
    log_dir = Path(tempfile.mkdtemp(prefix=f"features-bench-{run_id}-"))

    def env_for(name: str, batch_max: int) -> dict[str, str]:
        schema = f"bench_features_{run_id}_{name}"
        schemas.append(schema)
        feats = f"bench.features.{run_id}.{name}"
        made.extend([feats, f"bench.dlq.{run_id}.{name}", f"bench.status.{run_id}.{name}"])
        return {
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "POSTGRES_DSN": dsn,
            "FEATURES_APP_ID": f"bench-features-{run_id}-{name}",
            "FEATURES_PARTITIONS": "1",
            "FEATURES_TOPIC_BOOK": book,
            "FEATURES_TOPIC_TRADES": trades,
            "FEATURES_TOPIC_FEATURES": feats,
            "FEATURES_TOPIC_DLQ": f"bench.dlq.{run_id}.{name}",
            "FEATURES_TOPIC_STATUS": f"bench.status.{run_id}.{name}",
            "FEATURES_DB_SCHEMA": schema,
            "FEATURES_MERGE_HOLD_MS": "200",
            "FEATURES_BATCH_MAX": str(batch_max),
            "FEATURES_SESSION_TIMEOUT_S": "6",
            "LOG_JSON": "false",
        }

    try:
        for name, batch_max in (("faust_take500", 500), ("faust_take1", 1)):
            env = env_for(name, batch_max)
            port = free_port()
            proc = ServiceProcess(
                name,
                ["features"],
                {**env, "HTTP_PORT": str(port)},
                log_dir,
                health_url=f"http://127.0.0.1:{port}/readyz",
            ).start()
            try:
                proc.wait_healthy(120)
                out[name] = _output_rate(kafka, env["FEATURES_TOPIC_FEATURES"], n_books, 300)
            finally:
                proc.stop()
        env = env_for("plain_aiokafka", 500)
        asyncio.run(_plain_loop(env, n_books, kafka, pg))
        out["plain_aiokafka_take500"] = _output_rate(
            kafka, env["FEATURES_TOPIC_FEATURES"], n_books, 60
        )
        plain = out["plain_aiokafka_take500"]["vectors_per_s"]
        out["faust_take500_vs_plain"] = round(out["faust_take500"]["vectors_per_s"] / plain, 3)
        out["faust_take1_vs_plain"] = round(out["faust_take1"]["vectors_per_s"] / plain, 3)
    finally:
        from confluent_kafka.admin import AdminClient

        names = AdminClient(kafka.confluent_config()).list_topics(timeout=10).topics
        made.extend(n for n in names if n.startswith(f"bench-features-{run_id}"))
        delete_topics(kafka, made)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )
    return out


def run() -> dict[str, Any]:
    """Both sections: the pure engine, then the service path over Kafka."""
    return {"engine": run_engine(), "service": run_service()}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
