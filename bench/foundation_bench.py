"""Foundation benchmarks: the common producer and COPY writer against their ceilings.

Ceilings are measured in the same run on the same machine: a bare confluent-kafka producer
with identical settings (the common producer should be close to it), and psql's ``\\copy`` of
the same rows from a CSV file (the common writer adds staging + ON CONFLICT for idempotency).
"""

from __future__ import annotations

import asyncio
import csv
import os
import subprocess
import tempfile
import time
import uuid
from typing import Any

import orjson
import psycopg
from confluent_kafka import Producer as CProducer
from pydantic import SecretStr

from depthflow.common.db import CopyWriter, create_pool
from depthflow.common.kafka import Producer, create_topics, delete_topics
from depthflow.common.settings import KafkaSettings, PostgresSettings

KAFKA = os.environ.get("DEPTHFLOW_TEST_KAFKA", "127.0.0.1:9092")
DSN = os.environ.get(
    "DEPTHFLOW_TEST_POSTGRES_DSN", "postgresql://depthflow:depthflow@127.0.0.1:5432/depthflow"
)


def _payloads(n: int) -> list[tuple[bytes, bytes]]:
    symbols = [f"SYM{i}USDT" for i in range(50)]
    out = []
    for i in range(n):
        sym = symbols[i % len(symbols)]
        value = orjson.dumps(
            {
                "schema_version": 1,
                "exchange": "binance",
                "symbol": sym,
                "seq": i,
                "bid_price": 100.0 + i % 7,
                "ask_price": 100.5 + i % 7,
                "bids": [[100.0 - j * 0.1, 1.0 + j] for j in range(5)],
                "asks": [[100.5 + j * 0.1, 1.0 + j] for j in range(5)],
            }
        )
        out.append((f"binance:{sym}".encode(), value))
    return out


def bench_kafka(n: int = 200_000) -> dict[str, Any]:
    settings = KafkaSettings(bootstrap_servers=KAFKA)
    msgs = _payloads(n)
    results: dict[str, Any] = {"messages": n, "bytes_per_message": len(msgs[0][1])}
    for label in ("raw", "common"):
        topic = f"bench.produce.{label}.{uuid.uuid4().hex[:8]}"
        create_topics(settings, [topic], partitions=6)
        if label == "raw":
            raw = CProducer(
                {
                    "bootstrap.servers": KAFKA,
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                    "compression.type": "lz4",
                    "batch.size": 1_000_000,
                    "queue.buffering.max.messages": 500_000,
                    "queue.buffering.max.kbytes": 512 * 1024,
                }
            )
            started = time.perf_counter()
            for key, value in msgs:
                while True:
                    try:
                        raw.produce(topic, value, key)
                        break
                    except BufferError:
                        raw.poll(0.05)
            raw.flush(60)
        else:
            producer = Producer(settings, client_id="bench")
            started = time.perf_counter()
            for key, value in msgs:
                producer.produce(topic, value, key)
            producer.flush(60)
            assert producer.delivered == n
        elapsed = time.perf_counter() - started
        results[f"{label}_msgs_per_s"] = round(n / elapsed)
        delete_topics(settings, [topic])
    results["ratio"] = round(results["common_msgs_per_s"] / results["raw_msgs_per_s"], 3)
    return results


def _rows(n: int) -> list[tuple[Any, ...]]:
    base = 1_760_000_000_000_000
    return [
        (
            "binance",
            f"SYM{i % 50}USDT",
            base + i * 1000,
            base + i * 1000 + 250,
            1.5 + (i % 10),
            100.5 + (i % 7),
            100.0 + (i % 7),
            2.5,
            i,
        )
        for i in range(n)
    ]


_COLS = [
    "exchange",
    "symbol",
    "timestamp",
    "local_timestamp",
    "ask_amount",
    "ask_price",
    "bid_price",
    "bid_amount",
    "seq",
]


def _make_table(schema: str) -> None:
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(
            f'CREATE TABLE "{schema}".quotes (exchange text, symbol text, "timestamp" bigint,'
            " local_timestamp bigint, ask_amount numeric(20,8), ask_price numeric(20,8),"
            " bid_price numeric(20,8), bid_amount numeric(20,8), seq bigint,"
            " PRIMARY KEY (exchange, symbol, seq))"
        )


def _drop(schema: str) -> None:
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def bench_copy(n: int = 200_000) -> dict[str, Any]:
    rows = _rows(n)
    results: dict[str, Any] = {"rows": n}
    # Ceiling: psql \copy from a CSV file of the same rows.
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    _make_table(schema)
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False, newline="") as fh:
        csv.writer(fh).writerows(rows)
        path = fh.name
    try:
        started = time.perf_counter()
        subprocess.run(
            [
                "psql",
                DSN,
                "-v",
                "ON_ERROR_STOP=1",
                "-qc",
                f"\\copy \"{schema}\".quotes ({', '.join(_COLS)}) FROM '{path}' CSV",
            ],
            check=True,
            capture_output=True,
        )
        results["psql_copy_rows_per_s"] = round(n / (time.perf_counter() - started))
    finally:
        os.unlink(path)
        _drop(schema)

    async def through_writer(conflict: list[str] | None) -> float:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        _make_table(schema)
        pool = await create_pool(PostgresSettings(dsn=SecretStr(DSN)))
        writer = CopyWriter(
            pool, "quotes", _COLS, schema=schema, conflict_columns=conflict, batch_size=10_000
        )
        await writer.start()
        try:
            started = time.perf_counter()
            for i in range(0, n, 1000):
                await writer.add_many(rows[i : i + 1000])
            await writer.flush()
            return n / (time.perf_counter() - started)
        finally:
            await writer.close()
            await pool.close()
            _drop(schema)

    results["writer_plain_rows_per_s"] = round(asyncio.run(through_writer(None)))
    results["writer_idempotent_rows_per_s"] = round(
        asyncio.run(through_writer(["exchange", "symbol", "seq"]))
    )
    results["ratio_plain"] = round(
        results["writer_plain_rows_per_s"] / results["psql_copy_rows_per_s"], 3
    )
    results["ratio_idempotent"] = round(
        results["writer_idempotent_rows_per_s"] / results["psql_copy_rows_per_s"], 3
    )
    return results


def run() -> dict[str, Any]:
    return {"kafka_produce": bench_kafka(), "postgres_copy": bench_copy()}


if __name__ == "__main__":
    print(orjson.dumps(run(), option=orjson.OPT_INDENT_2).decode())
