"""Real Kafka, real PostgreSQL and the real simulator (a subprocess) for the executor."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
import pytest_asyncio
from confluent_kafka import Consumer
from confluent_kafka import Producer as CProducer

from depthflow.common.schemas import BOOK, CONTROL, SIGNALS, Book, Control, Signal
from depthflow.common.settings import HttpSettings, KafkaSettings, PostgresSettings
from depthflow.common.testing import eventually
from depthflow.common.testing.processes import free_port
from depthflow.executor.app import ExecutorService
from depthflow.executor.config import ExecutorSettings

VENV_BIN = Path(sys.executable).parent
SIM_KEY = "depthflow-sim-key"
SIM_SECRET = "depthflow-sim-secret"


class Sim:
    """A simulator subprocess and a few calls against it."""

    def __init__(self, port: int, proc: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"

    async def faults(self, **faults: Any) -> None:
        async with (
            aiohttp.ClientSession() as http,
            http.post(self.url + "/sim/faults", json=faults) as r,
        ):
            assert r.status == 200, await r.text()

    async def depth(self, symbol: str, limit: int = 20) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.url + f"/fapi/v1/depth?symbol={symbol}&limit={limit}") as r,
        ):
            return await r.json()

    async def venue_orders(self, client_order_id: str) -> list[dict[str, Any]]:
        """The simulator's own view (not slowed by faults): orders with this client id."""
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.url + "/sim/orders", params={"client_order_id": client_order_id}) as r,
        ):
            assert r.status == 200, await r.text()
            return await r.json()

    async def bybit_orders(self, link_id: str) -> list[dict[str, Any]]:
        """Every order the account holds with this client id (open or done)."""
        import hashlib
        import hmac

        q = f"category=linear&orderLinkId={link_id}"
        ts = str(int(time.time() * 1000))
        sig = hmac.new(
            SIM_SECRET.encode(), (ts + SIM_KEY + "5000" + q).encode(), hashlib.sha256
        ).hexdigest()
        headers = {
            "X-BAPI-API-KEY": SIM_KEY,
            "X-BAPI-TIMESTAMP": ts,
            "X-BAPI-SIGN": sig,
            "X-BAPI-RECV-WINDOW": "5000",
        }
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.url + "/v5/order/realtime?" + q, headers=headers) as r,
        ):
            body = await r.json()
        assert body["retCode"] == 0, body
        return list(body["result"]["list"])

    async def position(self, symbol: str) -> float:
        import hashlib
        import hmac
        from urllib.parse import urlencode

        q = urlencode({"symbol": symbol, "timestamp": int(time.time() * 1000)})
        sig = hmac.new(SIM_SECRET.encode(), q.encode(), hashlib.sha256).hexdigest()
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                self.url + f"/fapi/v2/positionRisk?{q}&signature={sig}",
                headers={"X-MBX-APIKEY": SIM_KEY},
            ) as r,
        ):
            return float((await r.json())[0]["positionAmt"])


def _sim_up(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/fapi/v1/ping", timeout=1) as r:  # noqa: S310
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.fixture
def sim() -> Iterator[Sim]:
    port = free_port()
    proc = subprocess.Popen(
        [
            str(VENV_BIN / "depthflow"),
            "sim",
            "--port",
            str(port),
            "--symbols",
            "BTCUSDT,ETHUSDT",
            "--seed",
            "1",
            "--rate",
            "20",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    s = Sim(port, proc)
    try:
        eventually(
            lambda: proc.poll() is None and _sim_up(s.url),
            timeout=30,
            what="simulator answers /fapi/v1/ping",
        )
        yield s
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def topics(topic_factory: Callable[..., str]) -> dict[str, str]:
    return {
        name: topic_factory(name, partitions=3)
        for name in ("signals", "book", "orders", "control", "status")
    }


@pytest.fixture
def make_settings(topics: dict[str, str], fresh_schema: str) -> Callable[..., ExecutorSettings]:
    group = f"executor-{uuid.uuid4().hex[:8]}"

    def make(venue: str = "paper", sim: Sim | None = None, **kw: Any) -> ExecutorSettings:
        base: dict[str, Any] = dict(
            venue=venue,
            db_schema=fresh_schema,
            group_id=group,
            topic_signals=topics["signals"],
            topic_book=topics["book"],
            topic_orders=topics["orders"],
            topic_control=topics["control"],
            topic_status=topics["status"],
            reconcile_interval_s=1.0,
            heartbeat_interval_s=1.0,
            recv_window_ms=3000,
            unknown_grace_s=0.5,
            unknown_resolve_s=3.0,
            breaker_recovery_timeout_s=1.0,
            request_timeout_s=3.0,
            paper_book_warmup=50,
        )
        if sim is not None:
            base["sim_base_url"] = sim.url
        base.update(kw)
        return ExecutorSettings(**base)

    return make


@contextlib.asynccontextmanager
async def running(
    settings: ExecutorSettings, kafka: KafkaSettings, pg: PostgresSettings
) -> AsyncIterator[ExecutorService]:
    """An in-process executor running its real loop until the block ends."""
    svc = ExecutorService(settings, kafka, pg, HttpSettings(port=0))
    await svc.start()
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    try:
        yield svc
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
        await svc.stop()
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


@pytest.fixture
def run_executor(
    kafka_settings: KafkaSettings, pg_settings: PostgresSettings
) -> Callable[[ExecutorSettings], contextlib.AbstractAsyncContextManager[ExecutorService]]:
    return lambda settings: running(settings, kafka_settings, pg_settings)


class Bus:
    """Publish signals/books/control and read orders.v1 on the test's fresh topics."""

    def __init__(self, kafka: KafkaSettings, topics: dict[str, str]) -> None:
        self.kafka = kafka
        self.topics = topics
        self.producer = CProducer(
            {"bootstrap.servers": kafka.bootstrap_servers, "enable.idempotence": True}
        )
        self._orders: list[dict[str, Any]] = []
        self._consumer: Consumer | None = None

    def signal(
        self,
        symbol: str = "BTCUSDT",
        side: str = "buy",
        *,
        exchange: str = "binance",
        signal_id: str | None = None,
        strength: float = 0.5,
        confidence: float = 1.0,
    ) -> Signal:
        now = time.time_ns() // 1000
        sig = Signal(
            signal_id=signal_id or uuid.uuid4().hex,
            exchange=exchange,  # type: ignore[arg-type]
            symbol=symbol,
            side=side,
            strength=strength,  # type: ignore[arg-type]
            confidence=confidence,
            strategy="test",
            feature_set="test",
            book_seq=1,
            ts_us=now,
            source_ts_us=now,
            trace_id=uuid.uuid4().hex,
        )
        self.producer.produce(
            self.topics["signals"],
            SIGNALS.encode(sig),
            f"{exchange}:{symbol}".encode(),
            headers=[("trace-id", sig.trace_id.encode())],
        )
        self.producer.flush(10)
        return sig

    def book(
        self,
        symbol: str,
        bids: list[tuple[float, float]],
        asks: list[tuple[float, float]],
        exchange: str = "binance",
    ) -> None:
        now = time.time_ns() // 1000
        b = Book(
            exchange=exchange,
            symbol=symbol,
            seq=1,
            prev_seq=0,  # type: ignore[arg-type]
            exchange_ts_us=now,
            local_ts_us=now,
            bid_price=bids[0][0],
            bid_qty=bids[0][1],
            ask_price=asks[0][0],
            ask_qty=asks[0][1],
            bids=bids[:20],
            asks=asks[:20],
        )
        self.producer.produce(self.topics["book"], BOOK.encode(b), f"{exchange}:{symbol}".encode())
        self.producer.flush(10)

    async def book_from_sim(self, sim: Sim, symbol: str) -> None:
        d = await sim.depth(symbol)
        self.book(
            symbol,
            [(float(p), float(q)) for p, q in d["bids"]],
            [(float(p), float(q)) for p, q in d["asks"]],
        )

    def control(self, desired: str, version: int, **config: Any) -> None:
        c = Control(
            service="executor",
            desired_state=desired,
            config=config,  # type: ignore[arg-type]
            version=version,
            updated_by="test-operator",
            ts_us=time.time_ns() // 1000,
        )
        self.producer.produce(self.topics["control"], CONTROL.encode(c), b"executor")
        self.producer.flush(10)

    def orders(self) -> list[dict[str, Any]]:
        """Every orders.v1 event so far (polls without blocking long)."""
        if self._consumer is None:
            self._consumer = Consumer(
                {
                    "bootstrap.servers": self.kafka.bootstrap_servers,
                    "group.id": f"t-{uuid.uuid4().hex[:8]}",
                    "auto.offset.reset": "earliest",
                }
            )
            self._consumer.subscribe([self.topics["orders"]])
        while True:
            msg = self._consumer.poll(0.2)
            if msg is None:
                return self._orders
            if msg.error() is None:
                self._orders.append(orjson.loads(msg.value()))

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()


@pytest.fixture
def bus(kafka_settings: KafkaSettings, topics: dict[str, str]) -> Iterator[Bus]:
    b = Bus(kafka_settings, topics)
    yield b
    b.close()


@pytest_asyncio.fixture
async def db(pg_dsn: str, fresh_schema: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(pg_dsn)
    await conn.execute(f'SET search_path TO "{fresh_schema}"')
    yield conn
    await conn.close()


def env_for(settings: ExecutorSettings, kafka: KafkaSettings, pg_dsn: str) -> dict[str, str]:
    """Environment for a subprocess executor with the same settings."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if name in ("api_key", "api_secret") or value is None:
            continue
        if isinstance(value, tuple):
            value = ",".join(value)
        env[f"EXECUTOR_{name.upper()}"] = (
            str(value).lower() if isinstance(value, bool) else str(value)
        )
    env["KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers
    env["POSTGRES_DSN"] = pg_dsn
    env["LOG_JSON"] = "true"
    return env
