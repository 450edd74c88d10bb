"""``WS /ws``: authenticated live books, signals and orders for chosen symbols.

Protocol (JSON text frames):

- authenticate with an ``Authorization: Bearer`` header on the handshake, or as the first
  message ``{"type": "auth", "token": "..."}`` within ``API_WS_AUTH_TIMEOUT_S`` (browsers
  cannot set headers; a token in the URL would end up in access logs). A bad token closes
  with code 4401; the same message later re-authenticates before the token expires.
- ``{"type": "subscribe", "channels": ["books", "signals", "orders"], "symbols": ["BTCUSDT"]}``
  (``"*"`` means every symbol), ``{"type": "unsubscribe", ...}``, ``{"type": "ping"}``.
- server messages: ``book``, ``signal``, ``order`` (``data`` is the topic's value),
  ``subscribed``, ``dropped`` (events dropped for this slow client), ``error``, ``pong``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from depthflow.api.deps import ApiDeps, Principal, authenticate
from depthflow.api.hub import ALL, Channel, Client

log = logging.getLogger(__name__)
router = APIRouter(tags=["websocket"])
CLOSE_UNAUTHORIZED = 4401
CLOSE_TRY_AGAIN = 1013


class Subscribe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    channels: list[Channel] = Field(min_length=1, max_length=3)
    symbols: list[str] | None = Field(default=None, max_length=100)


def _error(message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": message})


def _bearer(websocket: WebSocket) -> str | None:
    header = websocket.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def _auth_token(deps: ApiDeps, token: str) -> Principal | None:
    try:
        return await authenticate(deps, token)
    except HTTPException:
        return None


@router.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    deps: ApiDeps = websocket.app.state.deps
    settings = deps.settings.api
    hub = deps.views.hub
    header_token = _bearer(websocket)
    principal: Principal | None = None
    if header_token is not None:
        principal = await _auth_token(deps, header_token)
        if principal is None:
            await websocket.close(code=1008, reason="unauthorized")  # refused handshake: 403
            return
    if len(hub.clients) >= settings.ws_max_clients:
        await websocket.close(code=CLOSE_TRY_AGAIN, reason="too many connections")
        return
    await websocket.accept()
    if principal is None:
        try:
            raw = await asyncio.wait_for(websocket.receive_text(), settings.ws_auth_timeout_s)
            message = orjson.loads(raw)
            token = message.get("token") if isinstance(message, dict) else None
            if not (
                isinstance(message, dict)
                and message.get("type") == "auth"
                and isinstance(token, str)
            ):
                raise ValueError('first message must be {"type": "auth", "token": ...}')
            principal = await _auth_token(deps, token)
        except (TimeoutError, ValueError, orjson.JSONDecodeError, WebSocketDisconnect):
            principal = None
        if principal is None:
            with contextlib.suppress(Exception):
                await websocket.close(code=CLOSE_UNAUTHORIZED, reason="unauthorized")
            return
    client = Client(settings.ws_event_buffer)
    client.offer_control(
        orjson.dumps(
            {
                "type": "authenticated",
                "username": principal.username,
                "role": principal.role,
                "expires_at": principal.expires_at,
            }
        )
    )
    hub.add(client)
    deps_metrics = websocket.app.state.api_metrics
    deps_metrics.ws_clients.inc()
    session = _Session(deps, websocket, client, principal)
    try:
        await session.run()
    finally:
        hub.remove(client)
        deps_metrics.ws_clients.dec()
        deps_metrics.ws_dropped.inc(client.dropped)
        deps_metrics.ws_coalesced.inc(client.coalesced)


class _Session:
    def __init__(
        self, deps: ApiDeps, websocket: WebSocket, client: Client, principal: Principal
    ) -> None:
        self.deps = deps
        self.websocket = websocket
        self.client = client
        self.expires_at = principal.expires_at
        self.username = principal.username

    async def run(self) -> None:
        reader = asyncio.create_task(self._read(), name="ws-read")
        writer = asyncio.create_task(self._write(), name="ws-write")
        done, pending = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for task in done:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
                task.result()

    async def _write(self) -> None:
        sent = self.websocket.app.state.api_metrics.ws_sent
        while True:
            remaining = self.expires_at - time.time()
            if remaining <= 0:
                await self.websocket.close(code=CLOSE_UNAUTHORIZED, reason="token expired")
                return
            try:
                batch = await asyncio.wait_for(self.client.next_batch(), min(remaining, 30.0))
            except TimeoutError:
                continue
            for text in batch:
                await self.websocket.send_text(text.decode())
            sent.inc(len(batch))

    async def _read(self) -> None:
        while True:
            raw = await self.websocket.receive_text()
            try:
                message = orjson.loads(raw)
            except orjson.JSONDecodeError:
                self.client.offer_control(_error("not JSON"))
                continue
            if not isinstance(message, dict):
                self.client.offer_control(_error("expected a JSON object"))
                continue
            await self._handle(message)

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "ping":
            self.client.offer_control(b'{"type":"pong"}')
        elif kind == "auth":
            token = message.get("token")
            principal = await _auth_token(self.deps, token) if isinstance(token, str) else None
            if principal is None or principal.username != self.username:
                self.client.offer_control(_error("re-authentication refused"))
                return
            self.expires_at = principal.expires_at
            self.client.offer_control(
                orjson.dumps(
                    {
                        "type": "authenticated",
                        "username": principal.username,
                        "role": principal.role,
                        "expires_at": principal.expires_at,
                    }
                )
            )
        elif kind in ("subscribe", "unsubscribe"):
            try:
                request = Subscribe.model_validate(message)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                self.client.offer_control(_error(f"{where}: {first['msg']}"))
                return
            symbols = [s.upper() if s != ALL else ALL for s in request.symbols or []]
            if any(not (s == ALL or (s.isalnum() and 2 <= len(s) <= 30)) for s in symbols):
                self.client.offer_control(_error('symbols must be alphanumeric or "*"'))
                return
            if kind == "subscribe":
                self.client.subscribe(request.channels, symbols or [ALL])
            else:
                self.client.unsubscribe(request.channels, symbols or None)
            self.client.offer_control(
                orjson.dumps(
                    {
                        "type": "subscribed",
                        "subscriptions": {
                            c: sorted(s) for c, s in self.client.subscriptions.items()
                        },
                    }
                )
            )
        else:
            self.client.offer_control(_error(f"unknown message type {kind!r}"))
