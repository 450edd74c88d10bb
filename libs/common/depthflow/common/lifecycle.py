"""The service lifecycle: build → start → run → stop, with graceful drain on signals.

A ``Service`` acquires its resources in ``start`` (pushed on an ``AsyncExitStack`` so
``stop`` releases them in reverse order even after a partial start), does its work in
``run(stop, max_messages, idle_timeout)`` until a stop condition holds — so tests drive the
real loop to a stop instead of sleeping — and drains in ``stop``. ``run_service`` wires
SIGTERM/SIGINT to the stop event and bounds the drain time (Kubernetes'
``terminationGracePeriodSeconds`` should be a little longer).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import signal
from contextlib import AsyncExitStack
from enum import Enum

log = logging.getLogger(__name__)


class State(str, Enum):
    BUILT = "built"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class Service(abc.ABC):
    """Base of every long-running depthflow service."""

    name: str = "service"

    def __init__(self) -> None:
        self.state = State.BUILT
        self.exit_stack = AsyncExitStack()

    @property
    def ready(self) -> bool:
        """True while the service runs and can do its job (``/readyz``)."""
        return self.state is State.RUNNING

    async def start(self) -> None:
        """Acquire resources; on failure releases what was acquired and re-raises."""
        self.state = State.STARTING
        try:
            await self.on_start()
        except BaseException:
            self.state = State.FAILED
            await self.exit_stack.aclose()
            raise
        self.state = State.RUNNING

    async def stop(self) -> None:
        """Drain and release resources in reverse order of acquisition."""
        if self.state in (State.STOPPED, State.BUILT):
            return
        self.state = State.STOPPING
        try:
            await self.on_stop()
        finally:
            await self.exit_stack.aclose()
            self.state = State.STOPPED

    async def on_start(self) -> None:  # noqa: B027 - optional hook
        """Override: connect, create writers, push cleanups on ``self.exit_stack``."""

    async def on_stop(self) -> None:  # noqa: B027 - optional hook
        """Override: flush buffers before the exit stack releases resources."""

    @abc.abstractmethod
    async def run(
        self,
        stop: asyncio.Event | None = None,
        max_messages: int | None = None,
        idle_timeout: float | None = None,
    ) -> int:
        """Do the work until a stop condition holds; returns messages handled."""


async def run_service(service: Service, drain_timeout: float = 25.0) -> int:
    """Start, run until SIGTERM/SIGINT, then stop within ``drain_timeout`` seconds."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await service.start()
    log.info("service started", extra={"service_name": service.name})
    try:
        return await service.run(stop)
    finally:
        log.info("service stopping", extra={"service_name": service.name})
        try:
            await asyncio.wait_for(service.stop(), drain_timeout)
        except TimeoutError:
            log.error(
                "drain timed out", extra={"service_name": service.name, "timeout_s": drain_timeout}
            )
