"""WebSocket connections and topic fan-out. A message is serialised once per topic and
queued to each subscriber; each connection has one writer task, its own fault state and a
bounded backlog (a client that cannot keep up is disconnected, as exchanges do)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
import time
from collections import deque
from collections.abc import Callable

from aiohttp import WSMsgType, web

from depthflow.sim.faults import FaultConfig, StreamFaults

log = logging.getLogger(__name__)

MAX_BACKLOG = 50_000
BATCH_BYTES = 256 * 1024  # payload bytes per batched write
_conn_ids = itertools.count(1)
_TEXT_FIN = 0x81  # FIN + text opcode; server frames are never masked (RFC 6455 5.1)
_pack_len16 = struct.Struct("!BBH").pack
_pack_len64 = struct.Struct("!BBQ").pack


def take_frames(out: deque[bytes], max_bytes: int = BATCH_BYTES) -> bytes:
    """Pop queued messages (at least one, up to ``max_bytes`` of payload) and return them
    as consecutive unmasked text frames, byte for byte what ``send_frame`` writes."""
    parts: list[bytes] = []
    size = 0
    while out and size < max_bytes:
        msg = out.popleft()
        n = len(msg)
        if n < 126:
            parts.append(bytes((_TEXT_FIN, n)))
        elif n < 65536:
            parts.append(_pack_len16(_TEXT_FIN, 126, n))
        else:
            parts.append(_pack_len64(_TEXT_FIN, 127, n))
        parts.append(msg)
        size += n
    return b"".join(parts)


class Connection:
    """One client WebSocket. ``wrap`` turns a topic payload into the wire form for this
    connection (Binance combined streams wrap, raw streams do not).

    Given the request's ``transport`` and no negotiated compression, a backlog of several
    messages goes out as one write of their frames (a tick publishes many at once; one
    send per frame was most of the writer's CPU). While the socket is backed up, frames go
    one by one through aiohttp, whose flow control then holds the backlog here."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        hub: Hub,
        public: bool,
        combined: bool = False,
        transport: asyncio.BaseTransport | None = None,
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
        self._raw = (
            transport if isinstance(transport, asyncio.WriteTransport) and not ws.compress else None
        )
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
        ws, raw = self.ws, self._raw
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                out = self._out
                while out and not self._closing:
                    if (
                        raw is not None
                        and len(out) > 1
                        and not ws.closed
                        and not raw.is_closing()
                        and not raw.get_write_buffer_size()
                    ):
                        raw.write(take_frames(out))
                    else:
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
        # bumped on every (un)subscription: publishers cache which of their topics have
        # subscribers, and the engine knows when every symbol must be looked at again
        self.version = 0

    def register(self, conn: Connection) -> None:
        self.connections.add(conn)

    def subscribe(self, conn: Connection, topic: str) -> None:
        subs = self.subscribers.setdefault(topic, set())
        if not subs and self.on_first_subscriber:
            self.on_first_subscriber(topic)
        subs.add(conn)
        conn.topics.add(topic)
        self.version += 1

    def unsubscribe(self, conn: Connection, topic: str) -> None:
        subs = self.subscribers.get(topic)
        if subs:
            subs.discard(conn)
            if not subs:
                del self.subscribers[topic]
        conn.topics.discard(topic)
        self.version += 1

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
