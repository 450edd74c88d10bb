"""The gateway under test: a real ``python -m depthflow.api`` subprocess on a free port, with
fresh topics and a fresh schema on the shared Kafka and PostgreSQL, reached through real
HTTP and WebSocket clients."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from depthflow.common.kafka import Producer, create_topics, delete_topics
from depthflow.common.schemas import ALL_TOPICS
from depthflow.common.settings import KafkaSettings
from depthflow.common.testing import eventually
from depthflow.common.testing.processes import free_port

SECRET_KEY = "test-" + uuid.uuid4().hex + uuid.uuid4().hex
ADMIN_PASSWORD = "Adm1n-" + uuid.uuid4().hex[:16]
TOPIC_KINDS = ("book", "health", "signals", "orders", "status", "control")


@dataclass
class Gateway:
    """A running gateway and what a test needs to talk to it."""

    url: str
    ws_url: str
    topics: dict[str, str]
    schema: str
    log_path: Path
    kafka: KafkaSettings
    process: subprocess.Popen[bytes]
    secret_key: str = field(default=SECRET_KEY, repr=False)
    admin_password: str = field(default=ADMIN_PASSWORD, repr=False)
    _producer: Producer | None = field(default=None, repr=False)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def login(self, username: str, password: str) -> dict[str, Any]:
        with self.client() as c:
            r = c.post("/auth/login", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        return r.json()

    def publish(self, kind: str, key: str, value: dict[str, Any]) -> None:
        self.publish_many(kind, key, [value])

    def publish_many(self, kind: str, key: str, values: list[dict[str, Any]]) -> None:
        """Produce values to this gateway's topic of ``kind`` and wait for the broker."""
        if self._producer is None:
            self._producer = Producer(self.kafka, client_id="api-tests")
        topic = next(
            t
            for t in ALL_TOPICS
            if t.name
            == {
                "book": "md.book",
                "health": "md.health",
                "signals": "signals.v1",
                "orders": "orders.v1",
                "status": "status.v1",
                "control": "control.v1",
            }[kind]
        )
        for value in values:
            self._producer.produce(self.topics[kind], topic.encode(value), key.encode())
        self._producer.flush(30)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


def gateway_env(
    topics: dict[str, str], schema: str, kafka: str, dsn: str, port: int, **extra: str
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("API_", "KAFKA_", "POSTGRES_"))
        and k not in ("SECRET_KEY", "APP_USERNAME", "APP_PASSWORD", "ENVIRONMENT", "TRADING_PAIRS")
    }
    env.update(
        {
            "ENVIRONMENT": "test",
            "SECRET_KEY": SECRET_KEY,
            "APP_PASSWORD": ADMIN_PASSWORD,
            "KAFKA_BOOTSTRAP_SERVERS": kafka,
            "KAFKA_DEFAULT_PARTITIONS": "2",
            "POSTGRES_DSN": dsn,
            "API_HOST": "127.0.0.1",
            "API_PORT": str(port),
            "API_DB_SCHEMA": schema,
            "API_ARGON2_TIME_COST": "1",
            "API_ARGON2_MEMORY_KIB": "8192",
            "API_ARGON2_PARALLELISM": "1",
            "API_LOGIN_MAX_FAILURES": "3",
            "API_LOGIN_IP_MAX_FAILURES": "10000",
            "API_HEARTBEAT_STALE_S": "3",
            "API_CORS_ORIGINS": "http://allowed.example",
            "LOG_LEVEL": "INFO",
            **{f"API_TOPIC_{kind.upper()}": name for kind, name in topics.items()},
            **extra,
        }
    )
    return env


def start_gateway(tmp: Path, kafka_settings: KafkaSettings, dsn: str, **extra: str) -> Gateway:
    suffix = uuid.uuid4().hex[:10]
    topics = {kind: f"test.api.{kind}.{suffix}" for kind in TOPIC_KINDS}
    create_topics(kafka_settings, list(topics.values()), partitions=2)
    schema = f"t_api_{suffix}"
    port = free_port()
    log_path = tmp / f"gateway-{suffix}.log"
    env = gateway_env(topics, schema, kafka_settings.bootstrap_servers, dsn, port, **extra)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "depthflow.api"],
            env=env,
            cwd=tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    gateway = Gateway(
        f"http://127.0.0.1:{port}",
        f"ws://127.0.0.1:{port}/ws",
        topics,
        schema,
        log_path,
        kafka_settings,
        process,
    )

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited {process.returncode}:\n{gateway.logs()[-3000:]}")
        try:
            return httpx.get(gateway.url + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        eventually(ready, timeout=60, interval=0.2, what="gateway /readyz")
    except BaseException:
        stop_gateway(gateway, dsn)
        raise
    return gateway


def stop_gateway(gateway: Gateway, dsn: str) -> None:
    gateway.process.terminate()
    try:
        gateway.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        gateway.process.kill()
        gateway.process.wait()
    if gateway._producer is not None:
        gateway._producer.flush(5)
    delete_topics(gateway.kafka, list(gateway.topics.values()))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(gateway.schema))
        )


@pytest.fixture(scope="session")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, kafka_settings: KafkaSettings, pg_dsn: str
) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("api"), kafka_settings, pg_dsn)
    yield gw
    stop_gateway(gw, pg_dsn)


@pytest.fixture(scope="session")
def admin_token(gateway: Gateway) -> str:
    return str(gateway.login("admin", ADMIN_PASSWORD)["access_token"])


@pytest.fixture(scope="session")
def viewer(gateway: Gateway, admin_token: str) -> tuple[str, str]:
    """A viewer user: (username, password)."""
    name, password = f"viewer{uuid.uuid4().hex[:6]}", "Vi3wer-" + uuid.uuid4().hex[:12]
    with gateway.client(admin_token) as c:
        r = c.post("/auth/users", json={"username": name, "password": password, "role": "viewer"})
    assert r.status_code == 201, r.text
    return name, password


@pytest.fixture(scope="session")
def viewer_token(gateway: Gateway, viewer: tuple[str, str]) -> str:
    return str(gateway.login(*viewer)["access_token"])


@pytest.fixture
def make_book() -> Any:
    """Builds an md.book value: ``make_book(symbol, seq, bid=100.0, exchange="binance")``."""
    return book_value


def now_us() -> int:
    return time.time_ns() // 1000


def book_value(
    symbol: str, seq: int, bid: float = 100.0, exchange: str = "binance"
) -> dict[str, Any]:
    bids = [[bid - i * 0.5, 1.0 + i] for i in range(20)]
    asks = [[bid + 0.5 + i * 0.5, 2.0 + i] for i in range(20)]
    return {
        "schema_version": 1,
        "exchange": exchange,
        "symbol": symbol,
        "seq": seq,
        "prev_seq": seq - 1,
        "exchange_ts_us": now_us(),
        "local_ts_us": now_us(),
        "bid_price": bids[0][0],
        "bid_qty": bids[0][1],
        "ask_price": asks[0][0],
        "ask_qty": asks[0][1],
        "bids": bids,
        "asks": asks,
        "trace_id": "",
        "tob_changed": True,
    }
