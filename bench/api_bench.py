"""API gateway benchmark: authenticated GET requests/s with p50/p99, and WebSocket fan-out.

Runs a real ``python -m depthflow.api`` subprocess on fresh topics and a fresh schema.
- HTTP: ``concurrency`` aiohttp clients for ``duration_s`` on an authenticated
  ``GET /data/orderbook/{symbol}``; the ceiling is the unauthenticated ``GET /healthz`` of the
  same server in the same run (so the ratio is the cost of auth + the view + the model).
- WebSocket: ``ws_clients`` clients subscribed to one symbol's books while ``ws_messages``
  books are published; reports deliveries/s summed over clients and how many updates were
  coalesced for clients that fell behind (the latest book always arrives).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

import aiohttp
import orjson
import psycopg
from psycopg import sql

from depthflow.common.kafka import Producer, create_topics, delete_topics
from depthflow.common.settings import KafkaSettings

KAFKA = os.environ.get("DEPTHFLOW_TEST_KAFKA", "127.0.0.1:9092")
DSN = os.environ.get(
    "DEPTHFLOW_TEST_POSTGRES_DSN", "postgresql://depthflow:depthflow@127.0.0.1:5432/depthflow"
)
SYMBOL = "BTCUSDT"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _book(seq: int) -> bytes:
    now = time.time_ns() // 1000
    bids = [[100.0 - i * 0.5, 1.0 + i] for i in range(20)]
    asks = [[100.5 + i * 0.5, 1.0 + i] for i in range(20)]
    return orjson.dumps(
        {
            "schema_version": 1,
            "exchange": "binance",
            "symbol": SYMBOL,
            "seq": seq,
            "prev_seq": seq - 1,
            "exchange_ts_us": now,
            "local_ts_us": now,
            "bid_price": 100.0,
            "bid_qty": 1.0,
            "ask_price": 100.5,
            "ask_qty": 1.0,
            "bids": bids,
            "asks": asks,
        }
    )


async def _http_load(
    url: str, headers: dict[str, str], concurrency: int, duration_s: float
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration_s
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.get(url) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
        "requests": len(latencies),
        "errors": errors,
    }


async def _ws_fanout(
    ws_url: str,
    token: str,
    producer: Producer,
    topic: str,
    clients: int,
    messages: int,
    rate: int,
) -> dict[str, Any]:
    received = [0] * clients
    done = asyncio.Event()
    finished = [False] * clients
    async with aiohttp.ClientSession() as session:
        sockets = []
        for _ in range(clients):
            ws = await session.ws_connect(ws_url)
            await ws.send_str(orjson.dumps({"type": "auth", "token": token}).decode())
            await ws.receive()
            await ws.send_str(
                orjson.dumps(
                    {"type": "subscribe", "channels": ["books"], "symbols": [SYMBOL]}
                ).decode()
            )
            await ws.receive()
            sockets.append(ws)

        async def reader(i: int, ws: aiohttp.ClientWebSocketResponse) -> None:
            async for msg in ws:
                data = orjson.loads(msg.data)
                if data.get("type") == "book":
                    received[i] += 1
                    if data["data"]["seq"] == messages:
                        finished[i] = True
                        if all(finished):
                            done.set()
                        return

        readers = [asyncio.create_task(reader(i, ws)) for i, ws in enumerate(sockets)]
        started = time.perf_counter()
        key = f"binance:{SYMBOL}".encode()
        batch = max(1, rate // 20)
        for seq in range(1, messages + 1):  # paced: ``rate`` books/s in 50 ms batches
            producer.produce(topic, _book(seq), key)
            if seq % batch == 0:
                producer.poll(0)
                next_at = started + seq / rate
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        await asyncio.to_thread(producer.flush, 30)
        async with asyncio.timeout(120):
            await done.wait()
        elapsed = time.perf_counter() - started
        for task in readers:
            task.cancel()
        for ws in sockets:
            await ws.close()
    delivered = sum(received)
    return {
        "clients": clients,
        "messages_published": messages,
        "target_rate_per_s": rate,
        "deliveries": delivered,
        "deliveries_per_s": round(delivered / elapsed, 1),
        "published_per_s": round(messages / elapsed, 1),
        "coalesced_fraction": round(1 - delivered / (clients * messages), 3),
        "seconds": round(elapsed, 2),
    }


def run(
    concurrency: int = 32,
    duration_s: float = 5.0,
    ws_clients: int = 50,
    ws_messages: int = 2000,
    ws_rate: int = 400,
) -> dict[str, Any]:
    kafka = KafkaSettings(bootstrap_servers=KAFKA)
    suffix = uuid.uuid4().hex[:10]
    topics = {
        k: f"bench.api.{k}.{suffix}"
        for k in ("book", "health", "signals", "orders", "status", "control")
    }
    create_topics(kafka, list(topics.values()), partitions=3)
    schema = f"bench_api_{suffix}"
    port = _free_port()
    secret = uuid.uuid4().hex + uuid.uuid4().hex
    password = "Bench-" + uuid.uuid4().hex[:16]
    env = {
        **os.environ,
        "ENVIRONMENT": "test",
        "SECRET_KEY": secret,
        "APP_PASSWORD": password,
        "KAFKA_BOOTSTRAP_SERVERS": KAFKA,
        "POSTGRES_DSN": DSN,
        "API_PORT": str(port),
        "API_DB_SCHEMA": schema,
        "LOG_LEVEL": "WARNING",
        **{f"API_TOPIC_{k.upper()}": v for k, v in topics.items()},
    }
    workdir = tempfile.mkdtemp(prefix="api-bench-")
    process = subprocess.Popen(
        [sys.executable, "-m", "depthflow.api"],
        env=env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    producer = Producer(kafka, client_id="api-bench")
    try:
        asyncio.run(_wait_ready(base, process))
        producer.produce(topics["book"], _book(0), f"binance:{SYMBOL}".encode())
        producer.flush(10)
        return asyncio.run(
            _measure(
                base,
                password,
                producer,
                topics["book"],
                concurrency,
                duration_s,
                ws_clients,
                ws_messages,
                ws_rate,
            )
        )
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
        delete_topics(kafka, list(topics.values()))
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


async def _wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"gateway exited with {process.returncode}")
            try:
                async with session.get(base + "/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("gateway not ready in time")


async def _measure(
    base: str,
    password: str,
    producer: Producer,
    book_topic: str,
    concurrency: int,
    duration_s: float,
    ws_clients: int,
    ws_messages: int,
    ws_rate: int,
) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            base + "/auth/login", json={"username": "admin", "password": password}
        ) as r:
            token = (await r.json())["access_token"]
        for _ in range(100):  # wait until the book is in the view
            async with session.get(
                f"{base}/data/orderbook/{SYMBOL}", headers={"Authorization": f"Bearer {token}"}
            ) as r:
                if r.status == 200:
                    break
            await asyncio.sleep(0.1)
    auth = {"Authorization": f"Bearer {token}"}
    ceiling = await _http_load(base + "/healthz", {}, concurrency, duration_s)
    orderbook = await _http_load(f"{base}/data/orderbook/{SYMBOL}", auth, concurrency, duration_s)
    ws = await _ws_fanout(
        base.replace("http", "ws") + "/ws",
        token,
        producer,
        book_topic,
        ws_clients,
        ws_messages,
        ws_rate,
    )
    return {
        "http_authenticated_get": orderbook,
        "http_ceiling_healthz": ceiling,
        "http_ratio_to_ceiling": round(
            orderbook["requests_per_s"] / max(ceiling["requests_per_s"], 1e-9), 3
        ),
        "ws_fanout": ws,
        "concurrency": concurrency,
    }


if __name__ == "__main__":
    print(orjson.dumps(run(), option=orjson.OPT_INDENT_2).decode())
