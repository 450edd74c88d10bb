"""WebSocket connections and topic fan-out. A message is serialised once per topic and
queued to each subscriber; each connection has one writer task, its own fault state and a
bounded backlog (a client that cannot keep up is disconnected, as exchanges do)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable

from aiohttp import WSMsgType, web

from depthflow.sim.faults import FaultConfig, StreamFaults

log = logging.getLogger(__name__)

MAX_BACKLOG = 50_000
_conn_ids = itertools.count(1)


class Connection:
    """One client WebSocket. ``wrap`` turns a topic payload into the wire form for this
    connection (Binance combined streams wrap, raw streams do not)."""

    def __init__(
        self, ws: web.WebSocketResponse, hub: Hub, public: bool, combined: bool = False
    ) -> None:
        self.id = next(_conn_ids)
        self.conn_id = f"sim-{self.id:08x}"
        self.ws = ws
        self.hub = hub
        self.public = public
        self.combined = combined
        self.topics: set[str] = set()
        self.faults = StreamFaults(hub.seed * 1_000_003 + self.id, time.monotonic())
        self._out: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._writer = asyncio.create_task(self._write_loop())
        self.account: object | None = None  # set by private streams after auth

    def publish(self, msg: bytes) -> None:
        """Queue a market-data message, through this connection's faults."""
        if self._closing:
            return
        if self.public:
            self.faults.admit(self.hub.faults, msg, self._out, time.monotonic())
        else:
            self._out.append(msg)
        if len(self._out) > MAX_BACKLOG:
            log.warning("slow consumer disconnected", extra={"conn": self.conn_id})
            self.close()
            return
        self._wake.set()

    def send_control(self, msg: bytes) -> None:
        """Queue a reply (subscribe result, pong): never dropped by faults."""
        if not self._closing:
            self._out.append(msg)
            self._wake.set()

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._wake.set()

    async def _write_loop(self) -> None:
        ws = self.ws
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                out = self._out
                while out and not self._closing:
                    await ws.send_frame(out.popleft(), WSMsgType.TEXT)
                if self._closing:
                    break
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass
        finally:
            self._closing = True
            with contextlib.suppress(Exception):
                await ws.close()

    async def finish(self) -> None:
        self.close()
        self.hub.unsubscribe_all(self)
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._writer


class Hub:
    """Topic -> subscribers, shared by both protocols' streams."""

    def __init__(self, seed: int, faults: FaultConfig) -> None:
        self.seed = seed
        self.faults = faults
        self.subscribers: dict[str, set[Connection]] = {}
        self.connections: set[Connection] = set()
        self.on_first_subscriber: Callable[[str], None] | None = None
        self.messages_sent = 0

    def register(self, conn: Connection) -> None:
        self.connections.add(conn)

    def subscribe(self, conn: Connection, topic: str) -> None:
        subs = self.subscribers.setdefault(topic, set())
        if not subs and self.on_first_subscriber:
            self.on_first_subscriber(topic)
        subs.add(conn)
        conn.topics.add(topic)

    def unsubscribe(self, conn: Connection, topic: str) -> None:
        subs = self.subscribers.get(topic)
        if subs:
            subs.discard(conn)
            if not subs:
                del self.subscribers[topic]
        conn.topics.discard(topic)

    def unsubscribe_all(self, conn: Connection) -> None:
        for topic in list(conn.topics):
            self.unsubscribe(conn, topic)
        self.connections.discard(conn)

    def has(self, topic: str) -> bool:
        return topic in self.subscribers

    def publish(self, topic: str, payload: bytes, stream_name: str | None = None) -> None:
        """Send a topic payload to every subscriber; Binance combined-stream subscribers get
        it wrapped as ``{"stream": name, "data": payload}``."""
        subs = self.subscribers.get(topic)
        if not subs:
            return
        wrapped: bytes | None = None
        for conn in subs:
            if conn.combined and stream_name is not None:
                if wrapped is None:
                    wrapped = b'{"stream":"' + stream_name.encode() + b'","data":' + payload + b"}"
                conn.publish(wrapped)
            else:
                conn.publish(payload)
            self.messages_sent += 1

    def apply_connection_faults(self) -> None:
        """Disconnect and stall public connections as the fault config says."""
        faults, now = self.faults, time.monotonic()
        if not (faults.disconnect_every_s or faults.stall_every_s):
            return
        for conn in list(self.connections):
            if not conn.public:
                continue
            if conn.faults.due_disconnect(faults, now):
                conn.close()
            conn.faults.update_stall(faults, now)
