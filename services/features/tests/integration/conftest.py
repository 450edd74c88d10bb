"""Helpers for the features service's integration tests: real Kafka and PostgreSQL, the worker
as a real ``depthflow features`` subprocess, fresh topics, schema and app id per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psycopg
import pytest
from confluent_kafka.admin import AdminClient
from psycopg import sql

from depthflow.common.kafka import Producer, delete_topics
from depthflow.common.logging import trace_headers
from depthflow.common.schemas import BOOK, TRADES, symbol_key
from depthflow.common.settings import KafkaSettings
from depthflow.common.testing.processes import ServiceProcess, free_port

PARTITIONS = 2


@dataclass
class FeaturesEnv:
    """Topics, schema and environment of one test's features worker."""

    kafka: KafkaSettings
    dsn: str
    schema: str
    app_id: str
    book: str
    trades: str
    features: str
    dlq: str
    status: str
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    def worker(self, name: str = "features", **extra: str) -> ServiceProcess:
        port = free_port()
        env = {**self.env, "HTTP_PORT": str(port), **extra}
        return ServiceProcess(
            name, ["features"], env, self.log_dir, health_url=f"http://127.0.0.1:{port}/readyz"
        )

    def stored(self) -> list[tuple[int, list[float], list[float], list[bool], str, str]]:
        """Stored vectors: (book_seq, values, normalized, valid, scaler_version, symbol)."""
        with psycopg.connect(self.dsn) as conn:
            try:
                return conn.execute(
                    sql.SQL(
                        'SELECT book_seq, "values", normalized, valid, scaler_version, symbol'
                        " FROM {}.vectors ORDER BY symbol, book_seq"
                    ).format(sql.Identifier(self.schema))
                ).fetchall()
            except psycopg.errors.UndefinedTable:
                return []

    def count(self, table: str) -> int:
        with psycopg.connect(self.dsn) as conn:
            try:
                row = conn.execute(
                    sql.SQL("SELECT count(*) FROM {}.{}").format(
                        sql.Identifier(self.schema), sql.Identifier(table)
                    )
                ).fetchone()
            except psycopg.errors.UndefinedTable:
                return 0
        return int(row[0]) if row else 0


@pytest.fixture
def features_env(
    kafka_settings: KafkaSettings,
    pg_dsn: str,
    topic_factory: Callable[..., str],
    fresh_schema: str,
    tmp_path: Path,
) -> Iterator[FeaturesEnv]:
    app_id = f"test-features-{uuid.uuid4().hex[:10]}"
    fe = FeaturesEnv(
        kafka=kafka_settings,
        dsn=pg_dsn,
        schema=fresh_schema,
        app_id=app_id,
        book=topic_factory("book", PARTITIONS),
        trades=topic_factory("trades", PARTITIONS),
        features=topic_factory("features", PARTITIONS),
        dlq=topic_factory("dlq", PARTITIONS),
        status=topic_factory("status", 1),
        log_dir=tmp_path,
    )
    fe.env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "POSTGRES_DSN": pg_dsn,
        "FEATURES_APP_ID": app_id,
        "FEATURES_PARTITIONS": str(PARTITIONS),
        "FEATURES_TOPIC_BOOK": fe.book,
        "FEATURES_TOPIC_TRADES": fe.trades,
        "FEATURES_TOPIC_FEATURES": fe.features,
        "FEATURES_TOPIC_DLQ": fe.dlq,
        "FEATURES_TOPIC_STATUS": fe.status,
        "FEATURES_DB_SCHEMA": fresh_schema,
        # effectively "always wait for the trades": the merge is then exactly the batch
        # mode's canonical order however the two topics interleave on arrival
        "FEATURES_MERGE_HOLD_MS": "3600000",
        "FEATURES_BATCH_MAX": "200",
        "FEATURES_COMMIT_INTERVAL_S": "0.5",
        "FEATURES_SESSION_TIMEOUT_S": "6",
        "FEATURES_SCALER_POLL_S": "0.5",
        "FEATURES_HEARTBEAT_INTERVAL_S": "1",
        "LOG_JSON": "false",
    }
    yield fe
    # the worker's own topics (the state changelog)
    names = AdminClient(kafka_settings.confluent_config()).list_topics(timeout=10).topics
    delete_topics(kafka_settings, [n for n in names if n.startswith(app_id)])


def book_value(exchange: str, symbol: str, e: tuple) -> dict:
    _, bids, asks, ts, local_ts, seq = e
    return {
        "schema_version": 1,
        "exchange": exchange,
        "symbol": symbol,
        "seq": seq,
        "prev_seq": seq - 1,
        "exchange_ts_us": ts,
        "local_ts_us": local_ts,
        "bid_price": bids[0][0] if bids else 0.0,
        "bid_qty": bids[0][1] if bids else 0.0,
        "ask_price": asks[0][0] if asks else 0.0,
        "ask_qty": asks[0][1] if asks else 0.0,
        "bids": [list(x) for x in bids],
        "asks": [list(x) for x in asks],
    }


def trade_value(exchange: str, symbol: str, e: tuple, i: int) -> dict:
    """The md.trades value of a generated trade event (the ``i``-th event of its series)."""
    _, price, qty, is_buy, ts = e
    return {
        "schema_version": 1,
        "exchange": exchange,
        "symbol": symbol,
        "trade_id": f"{ts}-{i}",
        "price": price,
        "qty": qty,
        "side": "buy" if is_buy else "sell",
        "exchange_ts_us": ts,
        "local_ts_us": ts + 1000,
    }


def produce_events(
    fe: FeaturesEnv, exchange: str, symbol: str, events: list[tuple], trace_prefix: str = "tr"
) -> None:
    """Produce a canonical-order series: trades to the trades topic, books (with a trace-id
    header) to the book topic, keyed ``{exchange}:{symbol}``."""
    producer = Producer(fe.kafka, client_id="test-features")
    key = symbol_key(exchange, symbol)
    for i, e in enumerate(events):
        if e[0] == "t":
            producer.produce(fe.trades, TRADES.encode(trade_value(exchange, symbol, e, i)), key)
        else:
            producer.produce(
                fe.book,
                BOOK.encode(book_value(exchange, symbol, e)),
                key,
                headers=trace_headers(f"{trace_prefix}-{e[5]}"),
            )
    producer.flush()


def closing_trade(events: list[tuple]) -> tuple:
    """A trade after the last book: releases the books still waiting for the trade feed
    (it cannot change any earlier book's vector)."""
    last_ts = max(e[3] if e[0] == "b" else e[4] for e in events)
    return ("t", 100_000.0, 0.001, True, last_ts + 1_000_000)


def as_arrays(rows: list[tuple]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    return {int(r[0]): (np.asarray(r[1], np.float64), np.asarray(r[3], bool)) for r in rows}
