"""The collector's Prometheus metrics, on the service's private ``ServiceMetrics`` registry."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

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


class HotHistogram(Collector):
    """A Prometheus histogram (one label set) observed with plain ints and floats.

    ``observe`` is a bisect and two additions — a ``prometheus_client`` ``Histogram``
    child costs several times that (a lock and a Python loop over the buckets), which shows
    at tens of thousands of observations a second. The registry reads the counts at scrape
    time; the owner and the scrape share one thread (the event loop), so no lock is needed.
    ``FeedProcessor`` inlines ``observe`` (it updates ``counts`` and ``sum`` itself).
    """

    def __init__(
        self,
        name: str,
        doc: str,
        labels: Sequence[str],
        values: Sequence[str],
        buckets: Sequence[float],
    ) -> None:
        self.name = name
        self.doc = doc
        self.labels = list(labels)
        self.values = list(values)
        self.bounds = tuple(float(b) for b in buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bucket i counts bounds[i - 1] < value <= bounds[i] (Prometheus' "le")
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        family.add_metric(self.values, buckets, self.sum)
        yield family


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
        # observed once per depth message: counted in plain ints, read at scrape time
        self.exchange_latency = HotHistogram(
            "depthflow_collector_exchange_latency_seconds",
            "exchange event time to local receive time",
            ("exchange",),
            (exchange,),
            EXCHANGE_LATENCY_BUCKETS,
        )
        metrics.registry.register(self.exchange_latency)
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
        # monotonic time of each symbol's last applied update (book_age reads it)
        self.last_applied: dict[str, float] = {}
        self.latency = self.exchange_latency
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
            last_applied = self.last_applied
            last_applied.setdefault(symbol, time.monotonic())

            def book_age() -> float:
                return time.monotonic() - last_applied[symbol]

            self.book_age.labels(self.exchange, symbol).set_function(book_age)
        return child

    def touch(self, symbol: str, now: float) -> None:
        self.last_applied[symbol] = now

    def db_flushed(self, table: str) -> Any:
        hist = self.db_batch_latency.labels(table)
        rows = self.db_rows.labels(table)

        def on_flush(n: int, seconds: float) -> None:
            hist.observe(seconds)
            rows.inc(n)

        return on_flush
