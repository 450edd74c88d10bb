"""Helpers shared by the live adapters: number formatting and the user-stream loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from decimal import Decimal
from typing import Any

log = logging.getLogger(__name__)


def fmt_step(value: float, step: float) -> str:
    """``value`` written with exactly the decimals of ``step`` (venues refuse more)."""
    q = Decimal(repr(step)).normalize()
    exp = q.as_tuple().exponent
    places = Decimal(1).scaleb(exp) if isinstance(exp, int) and exp < 0 else Decimal(1)
    return format(Decimal(repr(value)).quantize(places), "f")


class StreamTask:
    """Runs ``connect_once`` forever, reconnecting with jittered back-off, until stopped.
    ``on_connected`` is called after each (re)connection — the executor reconciles then,
    since anything reported while disconnected was lost."""

    def __init__(
        self,
        name: str,
        connect_once: Callable[[asyncio.Event], Awaitable[None]],
        on_connected: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        self.name = name
        self._connect_once = connect_once
        self.on_connected = on_connected
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        delay = 0.2
        while True:
            try:
                self.connected.clear()
                await self._connect_once(self.connected)
                delay = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "user-data stream lost", extra={"stream": self.name, "error": repr(exc)[:300]}
                )
            self.connected.clear()
            await asyncio.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 10.0)


async def partitions_of(consumer: Any, topic: str) -> set[int]:
    """The partitions of ``topic`` from fresh cluster metadata (aiokafka only knows the
    topics it subscribed to; a manual ``assign`` needs them first)."""
    metadata = await consumer._client.fetch_all_metadata()
    return set(metadata.partitions_for_topic(topic) or ())
