"""WebSocket fan-out that a slow client can never slow down.

Publishing never awaits: the feed hands each message to every interested ``Client`` as a
pre-encoded text (encoded once, shared). Books are coalesced per ``exchange:symbol`` — a
client that falls behind gets the latest book, not a backlog — and signals/orders go into a
bounded per-client buffer that drops its oldest entries (counted and reported to the client
as a ``dropped`` message). Each connection drains its own buffer in its own task.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Literal

import orjson

from depthflow.common.schemas import Book, OrderEvent, Signal

Channel = Literal["books", "signals", "orders"]
CHANNELS: tuple[Channel, ...] = ("books", "signals", "orders")
ALL = "*"


class Client:
    """One connection's subscriptions and pending updates."""

    def __init__(self, event_buffer: int) -> None:
        self.subscriptions: dict[Channel, set[str]] = {}
        self._books: dict[str, bytes] = {}
        self._events: deque[bytes] = deque(maxlen=event_buffer)
        self._replies: list[bytes] = []
        self._wake = asyncio.Event()
        self.dropped = 0
        self.coalesced = 0
        self._unreported_drops = 0

    def subscribe(self, channels: list[Channel], symbols: list[str]) -> None:
        for channel in channels:
            self.subscriptions.setdefault(channel, set()).update(symbols)

    def unsubscribe(self, channels: list[Channel], symbols: list[str] | None) -> None:
        for channel in channels:
            if symbols is None:
                self.subscriptions.pop(channel, None)
            elif channel in self.subscriptions:
                self.subscriptions[channel].difference_update(symbols)
                if not self.subscriptions[channel]:
                    del self.subscriptions[channel]

    def wants(self, channel: Channel, symbol: str) -> bool:
        symbols = self.subscriptions.get(channel)
        return bool(symbols) and (symbol in symbols or ALL in symbols)  # type: ignore[operator]

    def offer_book(self, key: str, text: bytes) -> None:
        if key in self._books:
            self.coalesced += 1
        self._books[key] = text
        self._wake.set()

    def offer_event(self, text: bytes) -> None:
        if len(self._events) == self._events.maxlen:
            self.dropped += 1
            self._unreported_drops += 1
        self._events.append(text)
        self._wake.set()

    def offer_control(self, text: bytes) -> None:
        """A message of the connection itself (replies, errors): never dropped."""
        self._replies.append(text)
        self._wake.set()

    async def next_batch(self) -> list[bytes]:
        """Wait for updates and take everything pending (events in order, then books)."""
        await self._wake.wait()
        self._wake.clear()
        batch: list[bytes] = self._replies
        self._replies = []
        if self._unreported_drops:
            batch.append(orjson.dumps({"type": "dropped", "count": self._unreported_drops}))
            self._unreported_drops = 0
        batch.extend(self._events)
        self._events.clear()
        batch.extend(self._books.values())
        self._books.clear()
        return batch


class Hub:
    """Every connected client; the feed publishes here."""

    def __init__(self) -> None:
        self.clients: set[Client] = set()
        self.published = 0

    def add(self, client: Client) -> None:
        self.clients.add(client)

    def remove(self, client: Client) -> None:
        self.clients.discard(client)

    def _targets(self, channel: Channel, symbol: str) -> list[Client]:
        return [c for c in self.clients if c.wants(channel, symbol)]

    def publish_book(self, book: Book) -> None:
        targets = self._targets("books", book.symbol)
        if not targets:
            return
        text = orjson.dumps({"type": "book", "data": book.model_dump(mode="json")})
        key = f"{book.exchange}:{book.symbol}"
        for client in targets:
            client.offer_book(key, text)
        self.published += 1

    def publish_signal(self, signal: Signal) -> None:
        self._publish_event("signals", "signal", signal.symbol, signal)

    def publish_order(self, event: OrderEvent) -> None:
        self._publish_event("orders", "order", event.symbol, event)

    def _publish_event(
        self, channel: Channel, kind: str, symbol: str, value: Signal | OrderEvent
    ) -> None:
        targets = self._targets(channel, symbol)
        if not targets:
            return
        text = orjson.dumps({"type": kind, "data": value.model_dump(mode="json")})
        for client in targets:
            client.offer_event(text)
        self.published += 1
