"""Per-update latency of the features worker, observed once per batch.

A ``prometheus_client.Histogram.observe`` per book update takes a lock and walks the bucket
list: at 10,000 updates/s that is a visible share of the budget. ``UpdateLatency`` takes a
whole batch of per-update times at once (numpy bucketing), exposes them as an ordinary
Prometheus histogram on the service's registry, and keeps the most recent raw times so the
heartbeat (and the benchmark) can report exact p50/p99 instead of bucket estimates.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class UpdateLatency(Collector):
    """A Prometheus histogram (seconds) fed in bulk, plus a window of recent raw values."""

    def __init__(
        self,
        name: str,
        doc: str,
        buckets: Sequence[float],
        registry: CollectorRegistry | None,
        window: int = 20_000,
    ) -> None:
        self.name = name
        self.doc = doc
        self.bounds = np.asarray(sorted(buckets), np.float64)
        self.counts = np.zeros(len(self.bounds) + 1, np.int64)  # last: above every bound
        self.sum_s = 0.0
        self._recent = np.zeros(window, np.float64)
        self._filled = 0
        self._pos = 0
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def observe_ns(self, values_ns: Sequence[int]) -> None:
        """Add a batch of durations given in nanoseconds."""
        if not values_ns:
            return
        secs = np.asarray(values_ns, np.float64) / 1e9
        # bucket i counts values <= bounds[i] (Prometheus "le"), the last one the rest
        idx = np.searchsorted(self.bounds, secs, side="left")
        counts = np.bincount(idx, minlength=len(self.counts))
        with self._lock:
            self.counts += counts
            self.sum_s += float(secs.sum())
            size = len(self._recent)
            take = secs[-size:]
            end = self._pos + len(take)
            if end <= size:
                self._recent[self._pos : end] = take
            else:
                first = size - self._pos
                self._recent[self._pos :] = take[:first]
                self._recent[: end - size] = take[first:]
            self._pos = end % size
            self._filled = min(size, self._filled + len(take))

    def percentiles_us(self, *qs: float) -> list[float]:
        """Percentiles (0-100) of the recent window in µs; zeros when nothing was seen."""
        with self._lock:
            recent = self._recent[: self._filled].copy()
        if not len(recent):
            return [0.0 for _ in qs]
        return [round(float(x) * 1e6, 2) for x in np.percentile(recent, qs)]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            cumulative = np.cumsum(self.counts)
            total_s = self.sum_s
        buckets = [
            (floatToGoString(b), float(c))
            for b, c in zip(self.bounds, cumulative[:-1], strict=True)
        ]
        buckets.append(("+Inf", float(cumulative[-1])))
        yield HistogramMetricFamily(self.name, self.doc, buckets=buckets, sum_value=total_s)
