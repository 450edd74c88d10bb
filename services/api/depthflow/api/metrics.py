"""The gateway's Prometheus metrics (a private registry, served at ``/metrics``)."""

from __future__ import annotations

from depthflow.common.metrics import ServiceMetrics


class ApiMetrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__("api")
        self.requests = self.histogram(
            "http_request_seconds",
            "HTTP request latency by route and status class",
            ["method", "route", "status"],
        )
        self.ws_clients = self.gauge("ws_clients", "connected WebSocket clients")
        self.ws_sent = self.counter("ws_messages_sent", "WebSocket messages sent")
        self.ws_dropped = self.counter(
            "ws_events_dropped", "signal/order events dropped for slow WebSocket clients"
        )
        self.ws_coalesced = self.counter(
            "ws_books_coalesced",
            "book updates replaced by a newer one before a slow client read them",
        )
        self.control_changes = self.counter(
            "control_changes", "desired-state changes published", ["action"]
        )
