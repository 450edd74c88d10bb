"""Heartbeats: each service instance publishes its real state to ``status.v1``.

The api's ``/bot/status`` reads these (compacted topic, latest per instance) and reports a
service as down when its last heartbeat is older than a few intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from depthflow.common.schemas import STATUS, Heartbeat

log = logging.getLogger(__name__)

Send = Callable[[str, bytes, bytes], Awaitable[Any]]


def instance_id() -> str:
    """This process's instance name: ``HOSTNAME`` (the pod name on Kubernetes) plus pid."""
    return f"{os.environ.get('HOSTNAME') or socket.gethostname()}-{os.getpid()}"


class HeartbeatPublisher:
    """Publishes a ``Heartbeat`` every ``interval`` seconds until stopped (and a final one)."""

    def __init__(
        self,
        send: Send,
        service: str,
        state: Callable[[], tuple[str, bool, dict[str, Any]]],
        interval: float = 5.0,
        topic: str = STATUS.name,
    ) -> None:
        self._send = send
        self._service = service
        self._state = state
        self._interval = interval
        self._topic = topic
        self.instance = instance_id()
        self._task: asyncio.Task[None] | None = None

    async def beat(self) -> None:
        state, ready, detail = self._state()
        value = Heartbeat(
            service=self._service,
            instance=self.instance,
            state=state,  # type: ignore[arg-type]
            ready=ready,
            detail=detail,
            ts_us=time.time_ns() // 1000,
        )
        await self._send(
            self._topic, STATUS.encode(value), f"{self._service}:{self.instance}".encode()
        )

    async def _loop(self) -> None:
        while True:
            try:
                await self.beat()
            except Exception as exc:  # a missed heartbeat must never stop the service
                log.warning("heartbeat not sent", extra={"error": str(exc)})
            await asyncio.sleep(self._interval)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"heartbeat-{self._service}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.beat()
