"""WebSocket connections to the exchanges: subscribe, reconnect, ping, roll, watch for silence.

``WsConnection`` is one socket's life, reconnected with jittered exponential backoff
(tenacity) that resets after every session that delivered data. Binance answers the
server's ping frames (websockets does that); Bybit gets ``{"op":"ping"}`` every 20 s as it asks.
A connection that stays silent for ``stale_after_s`` is closed and reopened.

``ConnectionGroup`` keeps one stream group connected and rolls it before the 24-hour limit,
make-before-break: the new socket must deliver data before the old one is closed. During the
overlap both deliver the same events; the sync machines ignore the repeats (``u <= last u``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Sequence

import orjson
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

log = logging.getLogger(__name__)

OnFrame = Callable[[str | bytes, str, int], object]  # (frame, conn_id, recv_us); result unused
OnEvent = Callable[[str, str], None]  # (conn_id, what: "connected" | "disconnected:<why>")
_ids = itertools.count(1)


class Disconnected(Exception):
    """The socket went away or went silent; reconnect."""


RECONNECTABLE = (OSError, ConnectionClosed, InvalidHandshake, asyncio.TimeoutError, Disconnected)


class WsConnection:
    """One exchange WebSocket, reconnected until ``close()``."""

    def __init__(
        self,
        name: str,
        url: str,
        on_frame: OnFrame,
        on_event: OnEvent,
        *,
        subscribe: Sequence[dict[str, object]] = (),
        app_ping_s: float | None = None,
        stale_after_s: float = 10.0,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.name = name
        self.url = url
        self.on_frame = on_frame
        self.on_event = on_event
        self.subscribe = list(subscribe)
        self.app_ping_s = app_ping_s
        self.stale_after_s = stale_after_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.conn_id = f"{name}#{next(_ids)}"
        self.first_data = asyncio.Event()
        self.sessions = 0
        self.frames = 0
        self.last_frame_monotonic = time.monotonic()
        self._ws: ClientConnection | None = None
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"ws-{self.conn_id}")

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 2)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def send(self, message: dict[str, object]) -> bool:
        """Send a JSON request (Bybit subscribe/unsubscribe); False when not connected."""
        ws = self._ws
        if ws is None:
            return False
        try:
            await ws.send(orjson.dumps(message).decode())
            return True
        except ConnectionClosed:
            return False

    async def _run(self) -> None:
        while not self._closing:
            try:
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception_type(RECONNECTABLE),
                    wait=wait_exponential_jitter(
                        multiplier=self.backoff_initial_s,
                        max=self.backoff_max_s,
                        jitter=self.backoff_initial_s,
                    ),
                    reraise=True,
                ):
                    with attempt:
                        if self._closing:
                            return
                        await self._session()
            except RECONNECTABLE:  # only reached when tenacity gives up (it does not)
                continue
            except InvalidURI:
                log.error("invalid WebSocket URL", extra={"url": self.url})
                raise

    async def _session(self) -> None:
        """Connect and consume until the socket ends; returns (→ fresh backoff) only when
        this session delivered data, else raises to back off."""
        delivered = False
        try:
            async with connect(
                self.url,
                ping_interval=20,
                ping_timeout=20,
                close_timeout=2,
                max_size=8 * 1024 * 1024,
                max_queue=4096,
                compression=None,
            ) as ws:
                self._ws = ws
                self.sessions += 1
                self.last_frame_monotonic = time.monotonic()
                for request in self.subscribe:
                    await ws.send(orjson.dumps(request).decode())
                self.on_event(self.conn_id, "connected")
                pinger = asyncio.create_task(self._app_ping(ws)) if self.app_ping_s else None
                watchdog = asyncio.create_task(self._watch_silence(ws))
                try:
                    on_frame = self.on_frame
                    conn_id = self.conn_id
                    async for frame in ws:
                        recv_us = time.time_ns() // 1000
                        self.last_frame_monotonic = time.monotonic()
                        self.frames += 1
                        on_frame(frame, conn_id, recv_us)
                        if not delivered:
                            delivered = True
                            self.first_data.set()
                finally:
                    watchdog.cancel()
                    if pinger is not None:
                        pinger.cancel()
                    self._ws = None
        except RECONNECTABLE as exc:
            if self._closing:
                return
            self.on_event(self.conn_id, f"disconnected:{type(exc).__name__}")
            if not delivered:
                raise
            return
        if not self._closing:
            self.on_event(self.conn_id, "disconnected:closed")
            if not delivered:
                raise Disconnected("closed before any data")

    async def _app_ping(self, ws: ClientConnection) -> None:
        assert self.app_ping_s is not None
        with contextlib.suppress(ConnectionClosed, asyncio.CancelledError):
            while True:
                await asyncio.sleep(self.app_ping_s)
                await ws.send('{"op":"ping"}')

    async def _watch_silence(self, ws: ClientConnection) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(min(1.0, self.stale_after_s / 4))
                silent = time.monotonic() - self.last_frame_monotonic
                if silent >= self.stale_after_s:
                    log.warning(
                        "connection silent; reconnecting",
                        extra={"conn_id": self.conn_id, "silent_s": round(silent, 2)},
                    )
                    await ws.close(code=4000, reason="silent")
                    return


class ConnectionGroup:
    """Keeps one set of streams connected; rolls the socket before ``roll_after_s``."""

    def __init__(
        self,
        make: Callable[[], WsConnection],
        roll_after_s: float,
        first_data_timeout_s: float = 30.0,
    ) -> None:
        self._make = make
        self.roll_after_s = roll_after_s
        self.first_data_timeout_s = first_data_timeout_s
        self.current: WsConnection | None = None
        self.rolls = 0

    async def run(self, stop: asyncio.Event) -> None:
        self.current = self._make()
        self.current.start()
        try:
            while not stop.is_set():
                started = time.monotonic()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.roll_after_s)
                    break
                new = self._make()
                new.start()
                try:
                    await asyncio.wait_for(new.first_data.wait(), self.first_data_timeout_s)
                except TimeoutError:
                    log.warning(
                        "roll: new connection delivered nothing; keeping the old one",
                        extra={"conn_id": new.conn_id},
                    )
                    await new.close()
                    continue
                old, self.current = self.current, new
                self.rolls += 1
                log.info(
                    "connection rolled",
                    extra={
                        "old": old.conn_id,
                        "new": new.conn_id,
                        "age_s": round(time.monotonic() - started),
                    },
                )
                await old.close()
        finally:
            if self.current is not None:
                await self.current.close()
