"""Fixtures for the strategy's integration tests: fresh topics, a fresh schema, a service
factory, and helpers to write vectors/control messages and read signals back."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg import sql

from depthflow.common.kafka import Producer
from depthflow.common.schemas import CONTROL, FEATURES, SIGNALS, Control, Signal, symbol_key
from depthflow.common.settings import KafkaSettings, PostgresSettings
from depthflow.common.testing.topics import read_topic
from depthflow.strategy.app import StrategyService
from depthflow.strategy.config import StrategySettings


@dataclass
class Env:
    kafka: KafkaSettings
    postgres: PostgresSettings
    dsn: str
    schema: str
    topics: dict[str, str]
    services: list[StrategyService] = field(default_factory=list)
    tasks: list[asyncio.Task[int]] = field(default_factory=list)

    def settings(self, **overrides: Any) -> StrategySettings:
        base: dict[str, Any] = {
            "topic_features": self.topics["features"],
            "topic_signals": self.topics["signals"],
            "topic_control": self.topics["control"],
            "topic_status": self.topics["status"],
            "db_schema": self.schema,
            "group_id": f"strategy-{uuid.uuid4().hex[:8]}",
            "heartbeat_interval_s": 0.5,
            "cooldown_s": 0.0,
        }
        base.update(overrides)
        return StrategySettings(**base)

    async def start(self, **overrides: Any) -> StrategyService:
        service = StrategyService(self.settings(**overrides), self.kafka, self.postgres)
        await service.start()
        self.services.append(service)
        return service

    def run_in_background(self, service: StrategyService, stop: asyncio.Event) -> None:
        self.tasks.append(asyncio.create_task(service.run(stop)))

    def produce_vectors(self, vectors: list[dict[str, Any]]) -> None:
        producer = Producer(self.kafka, client_id="test-features")
        for v in vectors:
            producer.produce(
                self.topics["features"], FEATURES.encode(v), symbol_key(v["exchange"], v["symbol"])
            )
        producer.flush()

    def produce_control(
        self,
        desired_state: str = "running",
        config: dict[str, Any] | None = None,
        version: int = 1,
        service: str = "strategy",
    ) -> None:
        producer = Producer(self.kafka, client_id="test-control")
        msg = Control(
            service=service,
            desired_state=desired_state,  # type: ignore[arg-type]
            config=config or {},
            version=version,
            updated_by="test",
            ts_us=time.time_ns() // 1000,
        )
        producer.produce(self.topics["control"], CONTROL.encode(msg), service.encode())
        producer.flush()

    def stored_signals(self) -> list[dict[str, Any]]:
        with psycopg.connect(self.dsn) as conn:
            cur = conn.execute(
                sql.SQL(
                    "SELECT signal_id, symbol, side, strategy, model_version, book_seq, features, "
                    "reason, trace_id FROM {} ORDER BY symbol, book_seq"
                ).format(sql.Identifier(self.schema, "signals"))
            )
            cols = [d.name for d in cur.description or ()]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def published_signals(self) -> list[Signal]:
        return [SIGNALS.decode(v) for _k, v in read_topic(self.kafka, self.topics["signals"])]


@pytest.fixture
async def env(
    kafka_settings: KafkaSettings,
    pg_settings: PostgresSettings,
    pg_dsn: str,
    fresh_schema: str,
    topic_factory: Callable[..., str],
) -> AsyncIterator[Env]:
    topics = {k: topic_factory(k) for k in ("features", "signals", "control", "status")}
    e = Env(kafka_settings, pg_settings, pg_dsn, fresh_schema, topics)
    yield e
    for task in e.tasks:
        if not task.done():
            task.cancel()
        with contextlib.suppress(BaseException):  # a cancelled run is expected here
            await task
    for service in e.services:
        await service.stop()
