"""A real simulator, in-process on a free port, for the protocol tests."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import pytest_asyncio

from depthflow.sim.app import Simulator
from depthflow.sim.config import DEFAULT_API_KEY, DEFAULT_API_SECRET, SimSettings
from depthflow.sim.faults import FaultConfig

SimFactory = Callable[..., Coroutine[Any, Any, Simulator]]


@pytest_asyncio.fixture
async def start_sim() -> AsyncIterator[SimFactory]:
    started: list[Simulator] = []

    async def start(**overrides: Any) -> Simulator:
        conf: dict[str, Any] = {
            "port": 0,
            "symbols": "BTCUSDT,ETHUSDT",
            "seed": 1,
            "rate": 300.0,
        } | overrides
        sim = Simulator(SimSettings(**conf))
        await sim.start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        await sim.stop()


@pytest_asyncio.fixture
async def sim(start_sim: SimFactory) -> Simulator:
    return await start_sim()


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def base(sim: Simulator, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{sim.port}"


def binance_signed(
    params: dict[str, Any], secret: str = DEFAULT_API_SECRET, timestamp: int | None = None
) -> str:
    """A Binance signed query string (HMAC-SHA256 of the query, hex)."""
    q = dict(params)
    q.setdefault("timestamp", timestamp if timestamp is not None else int(time.time() * 1000))
    query = urlencode(q)
    sig = hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
    return f"{query}&signature={sig}"


def bybit_headers(
    payload: str,
    key: str = DEFAULT_API_KEY,
    secret: str = DEFAULT_API_SECRET,
    ts: int | None = None,
    recv: int = 5000,
) -> dict[str, str]:
    t = str(ts if ts is not None else int(time.time() * 1000))
    sig = hmac.new(
        secret.encode(), (t + key + str(recv) + payload).encode(), hashlib.sha256
    ).hexdigest()
    return {
        "X-BAPI-API-KEY": key,
        "X-BAPI-TIMESTAMP": t,
        "X-BAPI-SIGN": sig,
        "X-BAPI-RECV-WINDOW": str(recv),
        "X-BAPI-SIGN-TYPE": "2",
        "Content-Type": "application/json",
    }


KEY_HEADER = {"X-MBX-APIKEY": DEFAULT_API_KEY}
NO_FAULTS = FaultConfig()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
