"""The strategy service's Prometheus metrics (private registry)."""

from __future__ import annotations

from depthflow.common.metrics import ServiceMetrics

BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)


class StrategyMetrics:
    def __init__(self, service: ServiceMetrics) -> None:
        self.service = service
        self.vectors = service.counter("vectors", "feature vectors received", ["strategy"])
        self.signals = service.counter("signals", "signals published", ["strategy", "side"])
        self.refusals = service.counter(
            "refusals", "feature vectors refused (never traded on)", ["strategy", "reason"]
        )
        self.inference_latency = service.histogram(
            "inference_latency_seconds",
            "strategy decision time per vector (batch time / batch size)",
            ["strategy"],
        )
        self.batch_size = service.histogram(
            "inference_batch_size",
            "vectors per strategy call",
            ["strategy"],
            buckets=BATCH_BUCKETS,
        )
        self.control_applied = service.counter(
            "control_messages", "control.v1 messages seen", ["outcome"]
        )
        self.model_loads = service.counter(
            "model_loads", "model versions loaded from the registry", ["kind", "outcome"]
        )
        self.paused = service.gauge("paused", "1 while control.v1 says stopped")
