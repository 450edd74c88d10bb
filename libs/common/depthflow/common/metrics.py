"""Prometheus metrics on a private registry, served with /healthz and /readyz.

Each service builds one ``ServiceMetrics`` (its own ``CollectorRegistry``, so tests and
several services in one process never collide) and one ``HealthServer`` that serves
``/metrics`` (Prometheus text format), ``/healthz`` (the process is alive) and ``/readyz``
(the service says it is ready: connected, caught up, not stopping).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
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


class ServiceMetrics:
    """A service's private registry and a factory for conventionally named metrics."""

    def __init__(self, service: str, namespace: str = "depthflow") -> None:
        self.service = service
        self.namespace = namespace
        self.registry = CollectorRegistry(auto_describe=True)
        self.up = self.gauge("service_up", "1 while the service runs")
        self.ready = self.gauge("service_ready", "1 while the service reports ready")

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        """A counter; Prometheus appends ``_total`` to its exposed name."""
        return Counter(
            name,
            doc,
            labels,
            namespace=self.namespace,
            subsystem=self.service,
            registry=self.registry,
        )

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(
            name,
            doc,
            labels,
            namespace=self.namespace,
            subsystem=self.service,
            registry=self.registry,
        )

    def histogram(
        self,
        name: str,
        doc: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        return Histogram(
            name,
            doc,
            labels,
            namespace=self.namespace,
            subsystem=self.service,
            registry=self.registry,
            buckets=buckets,
        )

    @functools.cached_property
    def consumer_lag(self) -> Gauge:
        """``depthflow_consumer_lag``: one name for every service's consumers, so one
        dashboard panel and one alert cover the pipeline."""
        return Gauge(
            "consumer_lag",
            "records between a partition's end and the group's position (not yet processed)",
            ["service", "group", "topic", "partition"],
            namespace=self.namespace,
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HealthServer:
    """Serves /metrics, /healthz and /readyz for one service on its own port."""

    def __init__(
        self,
        metrics: ServiceMetrics,
        host: str,
        port: int,
        ready: Callable[[], bool],
    ) -> None:
        self._metrics = metrics
        self._host = host
        self._port = port
        self._ready = ready
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        app.router.add_get("/healthz", self._serve_health)
        app.router.add_get("/readyz", self._serve_ready)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port
        log.info("health server listening", extra={"host": self._host, "port": self.port})

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _serve_metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _serve_health(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "alive", "service": self._metrics.service})

    async def _serve_ready(self, _request: web.Request) -> web.Response:
        ready = self._ready()
        self._metrics.ready.set(1 if ready else 0)
        return web.json_response(
            {"status": "ready" if ready else "not ready", "service": self._metrics.service},
            status=200 if ready else 503,
        )
