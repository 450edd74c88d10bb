"""The gateway's reader of the services' topics: md.book, md.health, signals.v1, orders.v1,
status.v1 and control.v1 feed the in-memory views and the WebSocket hub.

The gateway only observes, so it reads without a consumer group and commits nothing: at
start it assigns every partition and seeks — compacted topics (status, control) from the
beginning, event topics to the last ``backfill_per_partition`` messages, books to the last
few — then follows the head. Any replica sees everything. A message that does not decode is
counted and logged (it belongs to its producer's dead-letter topic, not to the gateway's).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka.admin import AdminClient

from depthflow.api.config import ApiSettings
from depthflow.api.hub import Hub
from depthflow.api.views import MarketView, OrderView, SignalView, StatusView
from depthflow.common.errors import DecodeError
from depthflow.common.metrics import ServiceMetrics
from depthflow.common.schemas import BOOK, CONTROL, HEALTH, ORDERS, SIGNALS, STATUS, Topic
from depthflow.common.settings import KafkaSettings

log = logging.getLogger(__name__)

BOOK_BACKFILL = 20


@dataclass(frozen=True)
class Views:
    """Everything the feed keeps up to date."""

    market: MarketView
    signals: SignalView
    orders: OrderView
    status: StatusView
    hub: Hub

    @classmethod
    def build(cls, settings: ApiSettings) -> Views:
        return cls(
            market=MarketView(settings.max_symbols),
            signals=SignalView(settings.signals_kept, settings.max_symbols),
            orders=OrderView(settings.orders_kept, settings.max_symbols),
            status=StatusView(settings.heartbeat_stale_s),
            hub=Hub(),
        )


def api_topics(settings: ApiSettings) -> dict[str, Topic[Any]]:
    """The schema topics under the names this gateway is configured with."""
    return {
        "book": dataclasses.replace(BOOK, name=settings.topic_book),
        "health": dataclasses.replace(HEALTH, name=settings.topic_health),
        "signals": dataclasses.replace(SIGNALS, name=settings.topic_signals),
        "orders": dataclasses.replace(ORDERS, name=settings.topic_orders),
        "status": dataclasses.replace(STATUS, name=settings.topic_status),
        "control": dataclasses.replace(CONTROL, name=settings.topic_control),
    }


class TopicFeed:
    """Consumes the configured topics into ``Views``."""

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: ApiSettings,
        views: Views,
        metrics: ServiceMetrics,
    ) -> None:
        self._kafka = kafka
        self._settings = settings
        self._views = views
        topics = api_topics(settings)
        v = views
        self._routes: dict[str, tuple[Topic[Any], Callable[[Any], None], int | None]] = {
            topics["book"].name: (topics["book"], self._on_book, BOOK_BACKFILL),
            topics["health"].name: (topics["health"], v.market.on_health, 100),
            topics["signals"].name: (
                topics["signals"],
                self._on_signal,
                settings.backfill_per_partition,
            ),
            topics["orders"].name: (
                topics["orders"],
                self._on_order,
                settings.backfill_per_partition,
            ),
            topics["status"].name: (topics["status"], v.status.on_heartbeat, None),
            topics["control"].name: (topics["control"], v.status.on_control, None),
        }
        self._catch_up: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_bad_log = 0.0
        self.consumed = metrics.counter("consumed", "messages read by the gateway", ["topic"])
        self.undecodable = metrics.counter(
            "undecodable", "messages the gateway could not decode", ["topic"]
        )
        self.caught_up = False

    def _on_book(self, book: Any) -> None:
        self._views.market.on_book(book)
        self._views.hub.publish_book(book)

    def _on_signal(self, signal: Any) -> None:
        self._views.signals.on_signal(signal)
        self._views.hub.publish_signal(signal)

    def _on_order(self, event: Any) -> None:
        self._views.orders.on_order(event)
        self._views.hub.publish_order(event)

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            **self._kafka.aiokafka_config(),
            group_id=None,
            client_id="api-feed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        await consumer.start()
        self._consumer = consumer
        try:
            partitions = await asyncio.to_thread(self._partitions)
            assignment = [
                TopicPartition(name, p) for name in self._routes for p in partitions.get(name, ())
            ]
            consumer.assign(assignment)
            if assignment:
                ends = await consumer.end_offsets(assignment)
                begins = await consumer.beginning_offsets(assignment)
                for tp in assignment:
                    backfill = self._routes[tp.topic][2]
                    start = begins[tp] if backfill is None else max(begins[tp], ends[tp] - backfill)
                    consumer.seek(tp, start)
                    if backfill is None and ends[tp] > start:
                        self._catch_up[tp] = ends[tp]
            self.caught_up = not self._catch_up
        except BaseException:
            await consumer.stop()
            raise
        self._task = asyncio.create_task(self._run(), name="api-feed")

    def _partitions(self) -> dict[str, list[int]]:
        """Partition ids per topic, straight from the broker (aiokafka's cached cluster view
        does not know topics created moments ago). A topic created moments ago reports
        LEADER_NOT_AVAILABLE until its leaders are elected (a fresh broker, every service
        creating the same topics at once): wait for it rather than never reading it."""
        admin = AdminClient(self._kafka.confluent_config())
        deadline = time.monotonic() + 30.0
        while True:
            metadata = admin.list_topics(timeout=15)
            found = {
                name: sorted(metadata.topics[name].partitions)
                for name in self._routes
                if name in metadata.topics
                and metadata.topics[name].error is None
                and metadata.topics[name].partitions
            }
            missing = sorted(set(self._routes) - set(found))
            if not missing:
                return found
            if time.monotonic() >= deadline:
                log.warning("topics not available; not reading them", extra={"topics": missing})
                return found
            time.sleep(0.5)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer:
            await self._consumer.stop()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=200, max_records=2000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("topic read failed; retrying", extra={"error": str(exc)})
                await asyncio.sleep(1.0)
                continue
            for tp, records in batch.items():
                topic, handle, _ = self._routes[tp.topic]
                for record in records:
                    self._dispatch(topic, handle, record)
                self.consumed.labels(tp.topic).inc(len(records))
                if tp in self._catch_up and records[-1].offset + 1 >= self._catch_up[tp]:
                    del self._catch_up[tp]
            if not self.caught_up and not self._catch_up:
                self.caught_up = True
            if not batch:
                await asyncio.sleep(0)  # let the loop breathe between empty polls

    def _dispatch(self, topic: Topic[Any], handle: Callable[[Any], None], record: Any) -> None:
        try:
            value = topic.decode(record.value)
        except DecodeError as exc:
            self.undecodable.labels(topic.name).inc()
            now = time.monotonic()
            if now - self._last_bad_log > 5.0:
                self._last_bad_log = now
                log.warning(
                    "undecodable message skipped",
                    extra={
                        "topic": topic.name,
                        "partition": record.partition,
                        "offset": record.offset,
                        "reason": exc.reason[:300],
                    },
                )
            return
        try:
            handle(value)
        except Exception:
            log.exception(
                "view update failed", extra={"topic": topic.name, "offset": record.offset}
            )
