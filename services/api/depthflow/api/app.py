"""The gateway: ``ApiService`` (lifecycle) and ``create_app`` (the FastAPI app factory).

``ApiService.start`` applies the api's migrations, opens the PostgreSQL pool (search_path =
the api schema), the Kafka producer and the topic feed, bootstraps the first admin user from
``APP_USERNAME``/``APP_PASSWORD``, and builds ``ApiDeps``; ``create_app(settings, deps)``
wires routers, CORS, error handlers and the request-metrics middleware around them; ``run``
serves it with uvicorn until the stop event is set (or a signal arrives).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg
import uvicorn
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from depthflow.api.auth import IpThrottle, Passwords, TokenService
from depthflow.api.config import Settings
from depthflow.api.control import ControlWriter
from depthflow.api.deps import ApiDeps, UserCache
from depthflow.api.feed import TopicFeed, Views, api_topics
from depthflow.api.metrics import ApiMetrics
from depthflow.api.readmodel import ExecutorReadModel
from depthflow.api.routers import auth, bot, data, ops, trading, ws
from depthflow.api.store import ControlStore, UserStore
from depthflow.common.db import create_pool
from depthflow.common.errors import KafkaError
from depthflow.common.kafka import AsyncProducer, create_topics
from depthflow.common.lifecycle import Service
from depthflow.common.logging import new_trace_id, set_trace_id
from depthflow.common.migrations import load_migrations, migrate

log = logging.getLogger(__name__)
TRACE_HEADER = "x-trace-id"


class RequestMetrics:
    """Pure ASGI middleware: a trace id per request (``X-Trace-Id`` in and out) and latency
    per route template (never per raw path, so metric cardinality stays bounded)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trace = ""
        for name, value in scope.get("headers", ()):
            if name == b"x-trace-id":
                candidate = value.decode("latin-1")
                if candidate.isalnum() and len(candidate) <= 64:
                    trace = candidate
                break
        trace = trace or new_trace_id()
        set_trace_id(trace)  # each request runs in its own task: the context ends with it
        status = 500
        started = time.perf_counter()

        async def send_with_trace(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-trace-id", trace.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_trace)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(scope["method"], path, f"{status // 100}xx").observe(
                time.perf_counter() - started
            )


def create_app(settings: Settings, deps: ApiDeps) -> FastAPI:
    """The FastAPI app over already started dependencies (no module-level app)."""
    app = FastAPI(
        title="depthflow API",
        version="1.0.0",
        description="Authenticated control of the depthflow bot, market data and trading "
        "views, and a live WebSocket (`/ws`). Obtain a token at `POST /auth/login`.",
    )
    app.state.deps = deps
    app.state.api_metrics = deps.metrics
    for router in (auth.router, bot.router, data.router, trading.router, ws.router, ops.router):
        app.include_router(router)

    @app.exception_handler(KafkaError)
    async def kafka_unavailable(_: Request, exc: KafkaError) -> JSONResponse:
        log.error("kafka unavailable", extra={"error": str(exc)[:300]})
        return JSONResponse({"detail": "Kafka unavailable; nothing changed"}, status_code=503)

    @app.exception_handler(asyncpg.PostgresError)
    async def postgres_error(_: Request, exc: asyncpg.PostgresError) -> JSONResponse:
        log.error("postgres error", extra={"error": type(exc).__name__})
        return JSONResponse({"detail": "database unavailable"}, status_code=503)

    @app.exception_handler(OSError)
    async def connection_error(_: Request, exc: OSError) -> JSONResponse:
        log.error("connection error", extra={"error": type(exc).__name__})
        return JSONResponse({"detail": "a backing service is unavailable"}, status_code=503)

    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.api.cors_origins),
        allow_credentials=False,
        allow_methods=["GET", "POST", "PUT"],
        allow_headers=["Authorization", "Content-Type", "X-Trace-Id"],
        expose_headers=["X-Trace-Id", "Retry-After"],
        max_age=600,
    )
    app.add_middleware(RequestMetrics, metrics=deps.metrics)
    return app


class ApiService(Service):
    """The gateway's lifecycle: build → start → run → stop."""

    name = "api"

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.deps: ApiDeps | None = None
        self.app: FastAPI | None = None
        self.port: int | None = None
        self._server: uvicorn.Server | None = None

    async def on_start(self) -> None:
        s = self.settings
        schema = s.api.db_schema
        await asyncio.to_thread(
            migrate, s.postgres.dsn.get_secret_value(), schema, load_migrations("depthflow.api")
        )
        pool = await create_pool(s.postgres, server_settings={"search_path": schema})
        self.exit_stack.push_async_callback(pool.close)
        topics = api_topics(s.api)
        await asyncio.to_thread(create_topics, s.kafka, topics.values())
        producer = AsyncProducer(s.kafka, client_id="api")
        await producer.start()
        self.exit_stack.push_async_callback(producer.stop)
        metrics = ApiMetrics()
        views = Views.build(s.api)
        feed = TopicFeed(s.kafka, s.api, views, metrics)
        await feed.start()
        self.exit_stack.push_async_callback(feed.stop)
        users = UserStore(pool)
        passwords = Passwords(s.api)
        await self._bootstrap_admin(users, passwords)
        self.deps = ApiDeps(
            settings=s,
            pool=pool,
            producer=producer,
            views=views,
            feed=feed,
            tokens=TokenService(s.security.secret_key.get_secret_value(), s.api),
            passwords=passwords,
            users=users,
            user_cache=UserCache(users),
            controls=ControlStore(pool),
            control_writer=ControlWriter(
                pool, producer, topics["control"], views.status, on_change=metrics.control_changes
            ),
            executor=ExecutorReadModel(pool),
            throttle=IpThrottle(s.api.login_ip_max_failures, s.api.login_window_s),
            metrics=metrics,
        )
        self.app = create_app(s, self.deps)
        metrics.up.set(1)

    async def _bootstrap_admin(self, users: UserStore, passwords: Passwords) -> None:
        sec = self.settings.security
        if await users.get(sec.app_username) is not None:
            return
        created = await users.create(
            sec.app_username, await passwords.hash(sec.app_password.get_secret_value()), "admin"
        )
        if created:
            log.info("created the first admin user", extra={"username": sec.app_username})

    async def run(
        self,
        stop: asyncio.Event | None = None,
        max_messages: int | None = None,
        idle_timeout: float | None = None,
    ) -> int:
        """Serve HTTP/WebSocket until ``stop`` is set or a signal arrives (``max_messages``
        and ``idle_timeout`` do not apply to a server and are ignored)."""
        assert self.app is not None, "start() first"
        stop = stop or asyncio.Event()
        config = uvicorn.Config(
            self.app,
            host=self.settings.api.host,
            port=self.settings.api.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            ws_max_size=64 * 1024,
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        self._server = server

        async def watch() -> None:
            await stop.wait()
            server.should_exit = True

        watcher = asyncio.create_task(watch())
        serving = asyncio.create_task(server.serve())
        try:
            # uvicorn exposes only a `started` flag, no event to await
            while not server.started and not serving.done():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            if server.started:
                sockets = [s for srv in server.servers for s in srv.sockets]
                self.port = sockets[0].getsockname()[1] if sockets else config.port
                log.info("api listening", extra={"host": config.host, "port": self.port})
            await serving
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        return 0

    async def on_stop(self) -> None:
        if self.deps is not None:
            self.deps.metrics.up.set(0)
