"""Control writes: desired state and config go to the compacted ``control.v1`` topic and the
api's own ``control_state``/``control_audit`` tables in one step.

The row lock on ``control_state`` serialises concurrent writers per service (any replica);
the version is one more than both the stored and the last seen topic version. The state and
audit rows are written first, then the message is published, and the transaction commits
only after Kafka acknowledged it: the audit never records a change that was not published,
and if Kafka refuses, nothing is stored and the caller gets a 503.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import asyncpg
from prometheus_client import Counter

from depthflow.api.store import lock_state, write_state
from depthflow.api.views import StatusView
from depthflow.common.kafka import AsyncProducer
from depthflow.common.logging import current_trace_id, trace_headers
from depthflow.common.schemas import Control, Topic

DesiredState = Literal["running", "stopped"]


class VersionConflict(Exception):
    """``expected_version`` did not match the stored version."""

    def __init__(self, service: str, current: int) -> None:
        super().__init__(f"{service} is at version {current}")
        self.current = current


class ControlWriter:
    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AsyncProducer,
        topic: Topic[Control],
        status: StatusView,
        on_change: Counter | None = None,
    ) -> None:
        self._on_change = on_change
        self._pool = pool
        self._producer = producer
        self._topic = topic
        self._status = status

    async def change(
        self,
        service: str,
        *,
        username: str,
        action: str,
        desired_state: DesiredState | None = None,
        config: dict[str, Any] | None = None,
        expected_version: int | None = None,
        client_ip: str | None = None,
    ) -> Control:
        """Publish and record a new desired state for ``service``; returns what was sent."""
        async with self._pool.acquire() as conn, conn.transaction():
            current = await lock_state(conn, service)
            assert current is not None
            seen = self._status.controls.get(service)
            stored_version = int(current["version"])
            latest = max(stored_version, seen.version if seen else 0)
            if expected_version is not None and expected_version != latest:
                raise VersionConflict(service, latest)
            if stored_version == 0 and seen is not None:
                before: dict[str, Any] | None = {
                    "desired_state": seen.desired_state,
                    "config": seen.config,
                    "version": seen.version,
                }
                base_state, base_config = seen.desired_state, seen.config
            elif stored_version == 0:
                before, base_state, base_config = None, "running", {}
            else:
                before = {
                    "desired_state": current["desired_state"],
                    "config": current["config"],
                    "version": stored_version,
                }
                base_state, base_config = current["desired_state"], current["config"]
            message = Control(
                service=service,
                desired_state=desired_state or base_state,
                config=config if config is not None else base_config,
                version=latest + 1,
                updated_by=username,
                ts_us=time.time_ns() // 1000,
            )
            await write_state(
                conn,
                service=service,
                desired_state=message.desired_state,
                config=message.config,
                version=message.version,
                username=username,
                action=action,
                before=before,
                client_ip=client_ip,
                trace_id=current_trace_id(),
            )
            # Stored first (a bad value fails here, before anything is published); the
            # transaction commits only after Kafka acknowledged the message.
            await self._producer.send_and_wait(
                self._topic.name,
                self._topic.encode(message),
                key=service.encode(),
                headers=trace_headers(),
            )
        self._status.on_control(message)
        if self._on_change is not None:
            self._on_change.labels(action).inc()
        return message
