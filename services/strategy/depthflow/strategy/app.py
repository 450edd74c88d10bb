"""``StrategyService``: ``features.v1`` → strategies → ``signals.v1`` and ``strategy.signals``.

Lifecycle (``depthflow.common.lifecycle.Service``):
- ``start``: topics, migrations, the asyncpg pool, the producer, the latest desired state
  from the compacted ``control.v1`` (read to its end first, so a restarted service obeys
  the last start/stop/config), the models it needs from the registry, the features
  consumer, heartbeats and /metrics /healthz /readyz.
- ``run(stop, max_messages, idle_timeout)``: consume feature vectors in batches; each
  batch is checked (refusals are logged and counted, never traded on), decided with one
  call per strategy, stored (``ON CONFLICT DO NOTHING`` on the signal id), published, and
  only then are the offsets committed. While control says ``stopped`` nothing is consumed.
- ``stop``: stop consuming, final heartbeat, release everything.

Control messages keep arriving while it runs: a new config or model version takes effect
from the next batch, without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from depthflow.common.db import create_pool, ident, until_postgres_answers
from depthflow.common.errors import DecodeError
from depthflow.common.heartbeat import HeartbeatPublisher
from depthflow.common.kafka import AsyncProducer, Consumed, ConsumerLoop, create_topics
from depthflow.common.lifecycle import Service
from depthflow.common.logging import new_trace_id, trace_headers
from depthflow.common.metrics import HealthServer, ServiceMetrics
from depthflow.common.migrations import load_migrations, migrate
from depthflow.common.schemas import (
    CONTROL,
    FEATURES,
    SIGNALS,
    STATUS,
    Control,
    Signal,
    Topic,
    dlq_topic,
)
from depthflow.common.settings import HttpSettings, KafkaSettings, PostgresSettings
from depthflow.strategy.base import Strategy
from depthflow.strategy.config import ModelKind, RuntimeConfig, StrategySettings
from depthflow.strategy.imbalance import ImbalanceStrategy
from depthflow.strategy.metrics import StrategyMetrics
from depthflow.strategy.models import ModelStrategy
from depthflow.strategy.registry import fetch_model
from depthflow.strategy.vectors import NO_MODEL, Decision, Refusal, VectorInput

log = logging.getLogger(__name__)
MODEL_KINDS: tuple[ModelKind, ...] = ("sklearn", "torch")


def signal_id(exchange: str, symbol: str, book_seq: int, strategy: str, version: str) -> str:
    """Deterministic: the same input decided by the same model gives the same id on replay."""
    raw = f"{exchange}|{symbol}|{book_seq}|{strategy}|{version}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def now_us() -> int:
    return time.time_ns() // 1000


class StrategyService(Service):
    name = "strategy"

    def __init__(
        self,
        settings: StrategySettings,
        kafka: KafkaSettings,
        postgres: PostgresSettings,
        http: HttpSettings | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.kafka = kafka
        self.postgres = postgres
        self.http = http or HttpSettings()
        self.metrics = StrategyMetrics(ServiceMetrics("strategy"))
        self.config: RuntimeConfig = settings.runtime()
        self.control_version = -1
        self.paused = False
        self.strategies: dict[str, Strategy] = {"imbalance": ImbalanceStrategy(self.config)}
        self.model_errors: dict[str, str] = {}
        self.pool: Any = None
        self.producer: AsyncProducer | None = None
        self.loop: ConsumerLoop | None = None
        self.health_server: HealthServer | None = None
        self._control: AIOKafkaConsumer | None = None
        self._control_task: asyncio.Task[None] | None = None
        self._heartbeat: HeartbeatPublisher | None = None
        self._paused_event = asyncio.Event()
        self._resumed_event = asyncio.Event()
        self._resumed_event.set()
        self._apply_lock = asyncio.Lock()
        self._refusal_counts: Counter[tuple[str, str]] = Counter()
        self.signals_published = 0
        self.refused = 0
        self.first_batch_monotonic: float | None = None  # when consumption really began
        self._signal_table = f"{ident(settings.db_schema)}.{ident('signals')}"

    # ------------------------------------------------------------------ lifecycle

    async def on_start(self) -> None:
        s = self.settings
        if "torch" in self._kinds_in_use() or s.model_versions.get("torch"):
            self._torch_threads()
        create_topics(
            self.kafka,
            [
                Topic(s.topic_features, FEATURES.model, FEATURES.key, FEATURES.retention_ms),
                Topic(s.topic_signals, SIGNALS.model, SIGNALS.key, SIGNALS.retention_ms),
                Topic(s.topic_control, CONTROL.model, CONTROL.key, None, compacted=True),
                Topic(s.topic_status, STATUS.model, STATUS.key, None, compacted=True),
                dlq_topic("strategy"),
            ],
        )
        await asyncio.to_thread(
            migrate,
            self.postgres.dsn.get_secret_value(),
            s.db_schema,
            load_migrations("depthflow.strategy"),
        )
        self.pool = await create_pool(self.postgres)
        self.exit_stack.push_async_callback(self.pool.close)
        self.producer = AsyncProducer(
            self.kafka, client_id="strategy", linger_ms=self.settings.producer_linger_ms
        )
        await self.producer.start()
        self.exit_stack.push_async_callback(self.producer.stop)

        await self._start_control()
        await self._load_models()

        self.loop = ConsumerLoop(
            self.kafka,
            service="strategy",
            group_id=s.group_id,
            topics=[Topic(s.topic_features, FEATURES.model, FEATURES.key)],
            handler=self._handle,
            dlq_producer=self.producer,
            max_batch=s.max_batch,
            metrics=self.metrics.service,
            commit_interval_s=s.commit_interval_s,
        )
        await self.loop.start()
        self.exit_stack.push_async_callback(self.loop.stop)

        self._heartbeat = HeartbeatPublisher(
            self.producer.send_and_wait,
            s.control_service,
            self._heartbeat_state,
            interval=s.heartbeat_interval_s,
            topic=s.topic_status,
        )
        await self._heartbeat.start()
        self.exit_stack.push_async_callback(self._heartbeat.stop)
        self.health_server = HealthServer(
            self.metrics.service, self.http.host, self.http.port, lambda: self.ready
        )
        await self.health_server.start()
        self.exit_stack.push_async_callback(self.health_server.stop)
        self.metrics.service.up.set(1)

    async def on_stop(self) -> None:
        self.metrics.service.up.set(0)

    def _torch_threads(self) -> None:
        import torch

        torch.set_num_threads(self.settings.torch_threads)

    def _heartbeat_state(self) -> tuple[str, bool, dict[str, Any]]:
        state = "paused" if self.paused and self.ready else self.state.value
        detail: dict[str, Any] = {
            "control_version": self.control_version,
            "models": {k: s.model_version for k, s in self.strategies.items()},
            "model_errors": dict(self.model_errors),
            "signals": self.signals_published,
            "refused": self.refused,
        }
        return state, self.ready and not self.paused, detail

    # ------------------------------------------------------------------ control.v1

    async def _start_control(self) -> None:
        """Read the compacted control topic to its end (latest desired state), then keep
        following it in the background."""
        s = self.settings
        consumer = AIOKafkaConsumer(
            **self.kafka.aiokafka_config(),
            client_id="strategy-control",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        self._control = consumer
        self.exit_stack.push_async_callback(consumer.stop)
        parts = await asyncio.to_thread(self._control_partitions)
        tps = [TopicPartition(s.topic_control, p) for p in sorted(parts or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    await self._on_control_record(record, loading=True)
        self._control_task = asyncio.create_task(self._follow_control(), name="control")
        self.exit_stack.push_async_callback(self._stop_control_task)

    def _control_partitions(self) -> list[int]:
        from confluent_kafka.admin import AdminClient

        topic = self.settings.topic_control
        admin = AdminClient(self.kafka.confluent_config())
        # A topic created a moment ago (a fresh broker, every service creating the same
        # topics at once) reports LEADER_NOT_AVAILABLE until its leaders are elected.
        deadline = time.monotonic() + 30.0
        while True:
            meta = admin.list_topics(topic, timeout=10)
            found = meta.topics.get(topic)
            if found is not None and found.error is None and found.partitions:
                return list(found.partitions)
            if time.monotonic() >= deadline:
                detail = found.error if found is not None else "missing"
                raise RuntimeError(f"control topic {topic!r} is not available: {detail}")
            time.sleep(0.5)

    async def _stop_control_task(self) -> None:
        if self._control_task:
            self._control_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._control_task

    async def _follow_control(self) -> None:
        assert self._control is not None
        while True:
            try:
                batch = await self._control.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        await self._on_control_record(record, loading=False)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("control.v1 follower failed; retrying")
                await asyncio.sleep(1.0)

    async def _on_control_record(self, record: Any, loading: bool) -> None:
        topic = Topic(self.settings.topic_control, Control, "{service}", None, compacted=True)
        if record.value is None:  # a tombstone
            return
        try:
            control = topic.decode(record.value)
        except DecodeError as exc:
            self.metrics.control_applied.labels("undecodable").inc()
            log.warning("ignored undecodable control message", extra={"error": str(exc)})
            return
        if control.service != self.settings.control_service:
            return
        await self.apply_control(control, load_models=not loading)

    async def apply_control(self, control: Control, load_models: bool = True) -> bool:
        """Apply a desired state; returns False (keeping the current one) when refused."""
        async with self._apply_lock:
            if control.version <= self.control_version:
                self.metrics.control_applied.labels("stale").inc()
                return False
            try:
                config = self.settings.runtime().merged(control.config)
            except ValidationError as exc:
                self.metrics.control_applied.labels("refused").inc()
                log.error(
                    "control config refused; keeping the current configuration",
                    extra={"version": control.version, "error": str(exc)[:1000]},
                )
                return False
            self.control_version = control.version
            self.config = config
            for strategy in self.strategies.values():
                strategy.configure(config)
            if load_models:
                await self._load_models()
            self._set_paused(control.desired_state == "stopped")
            self.metrics.control_applied.labels("applied").inc()
            log.info(
                "control applied",
                extra={
                    "version": control.version,
                    "desired_state": control.desired_state,
                    "updated_by": control.updated_by,
                },
            )
            return True

    def _set_paused(self, paused: bool) -> None:
        self.paused = paused
        self.metrics.paused.set(1 if paused else 0)
        if paused:
            self._resumed_event.clear()
            self._paused_event.set()
        else:
            self._paused_event.clear()
            self._resumed_event.set()

    # ------------------------------------------------------------------ models

    def _kinds_in_use(self) -> set[str]:
        return {self.config.default_strategy, *self.config.symbol_strategies.values()}

    async def _load_models(self) -> None:
        """Load (or switch to) the model version each model strategy in use should run:
        the pinned ``model_versions`` entry, else the registry's active version."""
        for kind in MODEL_KINDS:
            pinned = self.config.model_versions.get(kind) or None
            if kind not in self._kinds_in_use() and pinned is None:
                continue
            if kind == "torch":
                self._torch_threads()
            current = self.strategies.get(kind)
            try:
                model = await fetch_model(
                    self.pool, self.settings.db_schema, self.settings.model_name(kind), pinned
                )
            except Exception as exc:
                self.model_errors[kind] = str(exc)
                self.metrics.model_loads.labels(kind, "failed").inc()
                log.error(
                    "model not loaded; keeping the previous one (or refusing its symbols)",
                    extra={"kind": kind, "version": pinned or "active", "error": str(exc)},
                )
                continue
            self.model_errors.pop(kind, None)
            if isinstance(current, ModelStrategy):
                if current.model_version == model.meta.version:
                    continue
                self.strategies[kind] = current.with_model(model)
            else:
                self.strategies[kind] = ModelStrategy(model, self.config)
            self.metrics.model_loads.labels(kind, "loaded").inc()
            log.info("model loaded", extra={"kind": kind, "version": model.meta.version})

    # ------------------------------------------------------------------ the hot path

    def _refuse(self, v: VectorInput, kind: str, refusal: Refusal) -> None:
        self.refused += 1
        self.metrics.refusals.labels(kind, refusal.reason).inc()
        key = (v.key, refusal.reason)
        self._refusal_counts[key] += 1
        n = self._refusal_counts[key]
        if n == 1 or n % self.settings.refusal_log_every == 0:
            log.warning(
                "feature vector refused",
                extra={
                    "symbol": v.key,
                    "book_seq": v.book_seq,
                    "strategy": kind,
                    "reason": refusal.reason,
                    "detail": refusal.detail,
                    "count": n,
                    "trace_id": v.trace_id,
                },
            )

    def decide(self, vectors: Sequence[VectorInput]) -> list[Signal]:
        """Check, batch per strategy, decide: the signals to store and publish."""
        groups: dict[str, list[VectorInput]] = {}
        for v in vectors:
            kind = self.config.strategy_for(v.exchange, v.symbol)
            self.metrics.vectors.labels(kind).inc()
            strategy = self.strategies.get(kind)
            if strategy is None:
                self._refuse(
                    v,
                    kind,
                    Refusal(NO_MODEL, self.model_errors.get(kind, f"no {kind} model loaded")),
                )
                continue
            refusal = strategy.check(v)
            if refusal is not None:
                self._refuse(v, kind, refusal)
                continue
            groups.setdefault(kind, []).append(v)
        out: list[Signal] = []
        decided_at = now_us()
        for name, batch in groups.items():
            strategy = self.strategies[name]
            started = time.perf_counter()
            decisions = strategy.decide(batch)
            elapsed = time.perf_counter() - started
            self.metrics.inference_latency.labels(name).observe(elapsed / len(batch))
            self.metrics.batch_size.labels(name).observe(len(batch))
            for v, d in zip(batch, decisions, strict=True):
                if d is not None:
                    out.append(self._signal(v, d, strategy, decided_at))
        return out

    def _signal(self, v: VectorInput, d: Decision, strategy: Strategy, ts_us: int) -> Signal:
        return Signal(
            signal_id=signal_id(
                v.exchange, v.symbol, v.book_seq, strategy.kind, strategy.model_version
            ),
            exchange=v.exchange,  # type: ignore[arg-type]
            symbol=v.symbol,
            side=d.side,
            strength=d.strength,
            confidence=d.confidence,
            strategy=strategy.kind,
            model_version=strategy.model_version,
            reason=d.reason,
            features=d.features,
            feature_set=v.feature_set,
            book_seq=v.book_seq,
            ts_us=ts_us,
            source_ts_us=v.exchange_ts_us,
            trace_id=v.trace_id or new_trace_id(),
        )

    async def _handle(self, batch: list[Consumed]) -> None:
        if self.first_batch_monotonic is None:
            self.first_batch_monotonic = time.monotonic()
        vectors = [VectorInput.from_message(m.value, m.trace_id) for m in batch]
        signals = self.decide(vectors)
        if not signals:
            return None
        # both before the offsets are committed, neither waits for the other: a crash between
        # them replays the batch, and the signal ids (deterministic) make the repeat harmless
        # (ON CONFLICT DO NOTHING here, the executor's signal dedup there)
        await asyncio.gather(self._store(signals), self._publish(signals))
        for sig in signals:
            self.metrics.signals.labels(sig.strategy, sig.side).inc()
        self.signals_published += len(signals)
        return None

    async def _store(self, signals: list[Signal]) -> None:
        rows = [
            (
                s.signal_id,
                s.exchange,
                s.symbol,
                s.side,
                s.strength,
                s.confidence,
                s.strategy,
                s.model_version,
                s.reason,
                orjson.dumps(s.features).decode(),
                s.feature_set,
                s.book_seq,
                s.ts_us,
                s.source_ts_us,
                s.trace_id,
            )
            for s in signals
        ]
        # The table name is built from ident()-checked identifiers; values are parameters.
        query = (
            f"INSERT INTO {self._signal_table} (signal_id, exchange, symbol, side, strength, "  # noqa: S608
            "confidence, strategy, model_version, reason, features, feature_set, book_seq, "
            "ts_us, source_ts_us, trace_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, "
            "$10::jsonb, $11, $12, $13, $14, $15) ON CONFLICT DO NOTHING"
        )

        # A PostgreSQL outage must not stop the service: retry until the database answers
        # (the offsets stay uncommitted meanwhile; ON CONFLICT makes a repeat harmless).
        async def insert() -> None:
            async with self.pool.acquire() as conn:
                await conn.executemany(query, rows)

        await until_postgres_answers(insert, "signals", signals=len(rows))

    async def _publish(self, signals: list[Signal]) -> None:
        assert self.producer is not None
        topic = self.settings.topic_signals
        futures = [
            await self.producer.send(
                topic,
                SIGNALS.encode(s),
                key=f"{s.exchange}:{s.symbol}".encode(),
                headers=trace_headers(s.trace_id),
            )
            for s in signals
        ]
        await asyncio.gather(*futures)

    # ------------------------------------------------------------------ run

    async def run(
        self,
        stop: asyncio.Event | None = None,
        max_messages: int | None = None,
        idle_timeout: float | None = None,
    ) -> int:
        assert self.loop is not None
        stop = stop or asyncio.Event()
        handled = 0
        while not stop.is_set():
            if self.paused:
                resumed = await self._wait_any(stop, self._resumed_event, timeout=idle_timeout)
                if not resumed:
                    break  # idle while stopped
                continue
            inner = asyncio.Event()
            watcher = asyncio.create_task(self._relay(inner, stop))
            try:
                remaining = None if max_messages is None else max_messages - handled
                n = await self.loop.run(inner, remaining, idle_timeout)
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            handled += n
            if max_messages is not None and handled >= max_messages:
                break
            if not inner.is_set():
                break  # idle timeout
        return handled

    async def _relay(self, inner: asyncio.Event, stop: asyncio.Event) -> None:
        await self._wait_any(stop, self._paused_event, timeout=None)
        inner.set()

    @staticmethod
    async def _wait_any(a: asyncio.Event, b: asyncio.Event, timeout: float | None) -> bool:
        tasks = [asyncio.create_task(a.wait()), asyncio.create_task(b.wait())]
        try:
            done, _ = await asyncio.wait(
                tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            return bool(done)
        finally:
            for t in tasks:
                t.cancel()
