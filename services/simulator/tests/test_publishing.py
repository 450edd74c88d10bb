"""The engine's per-tick publishing: skipping idle symbols must not change a single byte,
and batched frames must be exactly what aiohttp writes one by one."""

from __future__ import annotations

import contextlib
import random
from collections import deque
from typing import Any

import pytest
from aiohttp import WSMsgType
from aiohttp._websocket.writer import WebSocketWriter

from depthflow.sim.app import Simulator
from depthflow.sim.book import ASK, BID
from depthflow.sim.config import SimSettings
from depthflow.sim.streams import take_frames
from depthflow.sim.trading import TradingError

SYMBOLS = ("BTCUSDT", "ETHUSDT", "L001USDT")


class _Sink:
    """Stands in for a connection: records what the hub hands it."""

    public = True

    def __init__(self, combined: bool) -> None:
        self.combined = combined
        self.topics: set[str] = set()
        self.msgs: list[bytes] = []

    def publish(self, msg: bytes) -> None:
        self.msgs.append(msg)


def _drive(skip: bool, seed: int, rate: float) -> tuple[list[bytes], list[bytes], list[Any]]:
    """Run the engine tick by tick on a made-up clock, changing subscriptions and placing
    account orders on the way; ``skip`` passes the previous tick's time to ``advance``
    (idle symbols skipped), otherwise every symbol is visited on every tick."""
    sim = Simulator(SimSettings(symbols=",".join(SYMBOLS), seed=seed, rate=rate))
    hub = sim.hub
    a, b = _Sink(combined=True), _Sink(combined=False)
    topics = [
        f"b:{s.lower()}{suffix}"
        for s in SYMBOLS
        for suffix in ("@depth@100ms", "@depth", "@depth@0ms", "@aggTrade", "@bookTicker")
    ]
    books = [(f"y:orderbook.{d}.{s}", d, s) for s in SYMBOLS for d in (1, 50, 200)]
    acct = next(iter(sim.exchange.accounts.values()))
    rng = random.Random(seed)
    now, last, carry = 1_700_000_000_000, None, 0.0
    for tick in range(2500):
        elapsed_ms = rng.choice((10, 10, 10, 11, 12, 17)) if tick % 400 else 300
        now += elapsed_ms
        if rng.random() < 0.03:  # (un)subscribe something between ticks
            sink = rng.choice((a, b))
            topic = rng.choice(topics)
            if topic in sink.topics:
                hub.unsubscribe(sink, topic)  # type: ignore[arg-type]
            else:
                hub.subscribe(sink, topic)  # type: ignore[arg-type]
        if rng.random() < 0.01:
            topic, depth, sym = rng.choice(books)
            if topic in a.topics:
                hub.unsubscribe(a, topic)  # type: ignore[arg-type]
            else:
                a.msgs.append(sim.bybit[sym].snapshot_message(depth, now))
                hub.subscribe(a, topic)  # type: ignore[arg-type]
        if rng.random() < 0.04:  # an account order resting at or near the best
            sym = rng.choice(SYMBOLS)
            market, side = sim.markets[sym], rng.choice((BID, ASK))
            price = market.book.best_bid if side == BID else market.book.best_ask
            price += rng.randint(-2, 0) if side == BID else rng.randint(0, 2)
            qty = rng.randint(1, 20)
            with contextlib.suppress(TradingError):  # e.g. out of margin
                sim.exchange.place(
                    acct, sym, side, "LIMIT", qty, price, "GTC", False, f"t{tick}", "test", now
                )
        due = carry + rate * min(elapsed_ms / 1000, 0.25)
        n = int(due)
        carry = due - n
        if n:
            for market in sim.markets.values():
                market.step(n, now)
        sim.advance(now, last if skip else None)
        last = now
    fills = [(o.order_id, o.status, o.filled) for o in acct.orders.values()]
    return a.msgs, b.msgs, fills


@pytest.mark.parametrize(("seed", "rate"), [(1, 40.0), (2, 5.0), (3, 300.0), (4, 0.3)])
def test_skipping_idle_symbols_changes_nothing(seed: int, rate: float) -> None:
    visited = _drive(False, seed, rate)
    skipped = _drive(True, seed, rate)
    assert len(visited[0]) > 100
    assert skipped == visited


class _Transport:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return False


class _Protocol:
    _paused = False


async def test_batched_frames_are_what_aiohttp_writes() -> None:
    messages = [b"x" * n for n in (0, 1, 125, 126, 127, 4000, 65535, 65536, 70_000)]
    transport = _Transport()
    writer = WebSocketWriter(_Protocol(), transport, use_mask=False, compress=0)  # type: ignore[arg-type]
    for msg in messages:
        await writer.send_frame(msg, WSMsgType.TEXT)
    queued = deque(messages)
    assert take_frames(queued, max_bytes=1 << 30) == bytes(transport.data)
    assert not queued


def test_take_frames_stops_at_the_byte_budget() -> None:
    queued = deque([b"a" * 100, b"b" * 100, b"c" * 100])
    first = take_frames(queued, max_bytes=150)
    assert first == bytes((0x81, 100)) + b"a" * 100 + bytes((0x81, 100)) + b"b" * 100
    assert list(queued) == [b"c" * 100]
