"""The collector's Prometheus metrics, on the service's private ``ServiceMetrics`` registry."""

from __future__ import annotations

import time
from typing import Any

from depthflow.common.metrics import ServiceMetrics

EXCHANGE_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class CollectorMetrics:
    """Counters per symbol, latencies per exchange. Children are cached: the hot path only
    pays for ``inc``."""

    def __init__(self, metrics: ServiceMetrics, exchange: str) -> None:
        self.service = metrics
        self.exchange = exchange
        self.received = metrics.counter(
            "messages_received", "exchange messages received", ("exchange", "symbol", "kind")
        )
        self.applied = metrics.counter(
            "messages_applied", "depth updates applied to a valid book", ("exchange", "symbol")
        )
        self.gaps = metrics.counter("gaps", "sequence gaps detected", ("exchange", "symbol"))
        self.resyncs = metrics.counter(
            "resyncs", "book resynchronisations started", ("exchange", "symbol", "reason")
        )
        self.reconnects = metrics.counter(
            "reconnects", "WebSocket (re)connections", ("exchange", "reason")
        )
        self.parse_errors = metrics.counter(
            "parse_errors", "malformed messages (sent to the DLQ)", ("exchange",)
        )
        self.book_age = metrics.gauge(
            "book_age_seconds", "seconds since the last applied update", ("exchange", "symbol")
        )
        self.exchange_latency = metrics.histogram(
            "exchange_latency_seconds",
            "exchange event time to local receive time",
            ("exchange",),
            buckets=EXCHANGE_LATENCY_BUCKETS,
        )
        self.produce_latency = metrics.histogram(
            "produce_seconds",
            "time to hand one message's outputs to the Kafka producer",
            ("exchange",),
        )
        self.db_batch_latency = metrics.histogram(
            "db_batch_seconds", "COPY batch latency", ("table",)
        )
        self.db_rows = metrics.counter("db_rows", "rows written", ("table",))
        self.synced_books = metrics.gauge(
            "synced_books", "symbols whose book is currently valid", ("exchange",)
        )
        self._children: dict[tuple[str, str], Any] = {}
        self._last_applied: dict[str, float] = {}
        self.latency = self.exchange_latency.labels(exchange)
        self.produce = self.produce_latency.labels(exchange)

    def received_for(self, symbol: str, kind: str) -> Any:
        key = (symbol, kind)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.received.labels(self.exchange, symbol, kind)
        return child

    def applied_for(self, symbol: str) -> Any:
        key = (symbol, "\0applied")
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.applied.labels(self.exchange, symbol)
            self._last_applied[symbol] = time.monotonic()
            self.book_age.labels(self.exchange, symbol).set_function(
                lambda s=symbol: time.monotonic() - self._last_applied[s]
            )
        return child

    def touch(self, symbol: str, now: float) -> None:
        self._last_applied[symbol] = now

    def db_flushed(self, table: str) -> Any:
        hist = self.db_batch_latency.labels(table)
        rows = self.db_rows.labels(table)

        def on_flush(n: int, seconds: float) -> None:
            hist.observe(seconds)
            rows.inc(n)

        return on_flush
