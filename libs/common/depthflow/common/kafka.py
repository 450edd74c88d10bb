"""Thin typed wrappers over confluent-kafka and aiokafka.

- ``Producer``: the high-rate idempotent producer (confluent-kafka, acks=all) for the
  collector; back-pressure when librdkafka's queue is full, delivery failures raised.
- ``AsyncProducer``: the idempotent aiokafka producer for asyncio services.
- ``ConsumerLoop``: an aiokafka consumer that decodes each batch, hands the good messages to
  a handler that makes them durable, sends the bad ones to ``dlq.<service>``, and only then
  commits the offsets. A crash before the commit replays the batch; handlers write
  idempotently, so nothing is lost and nothing is duplicated. Optionally the commit happens
  every ``commit_interval_s`` after a ``before_commit`` checkpoint (Kafka Streams'
  ``commit.interval.ms``), and a rebalance waits for the batch in flight and commits first.
- ``create_topics``: topic creation with the configured partitions and retention.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from confluent_kafka import KafkaError as CKafkaError
from confluent_kafka import KafkaException
from confluent_kafka import Producer as CProducer
from confluent_kafka.admin import AdminClient, NewTopic

from depthflow.common.errors import DecodeError, KafkaError, ProduceError
from depthflow.common.logging import trace_from_headers
from depthflow.common.metrics import ServiceMetrics
from depthflow.common.schemas import DeadLetter, Topic, dlq_topic
from depthflow.common.settings import KafkaSettings

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
_CHeaders = list[tuple[str, str | bytes | None]] | None


def create_topics(
    settings: KafkaSettings,
    topics: Iterable[Topic[Any] | str],
    partitions: int | None = None,
    timeout: float = 30.0,
    config: dict[str, str] | None = None,
) -> None:
    """Create topics that do not exist yet; existing ones are left as they are. ``config``
    adds topic-level settings to every one of them."""
    admin = AdminClient(settings.confluent_config())
    new = []
    for topic in topics:
        name = topic if isinstance(topic, str) else topic.name
        conf = {} if isinstance(topic, str) else topic.config()
        conf.update(config or {})
        new.append(
            NewTopic(
                name,
                num_partitions=partitions or settings.default_partitions,
                replication_factor=settings.replication_factor,
                config=conf,
            )
        )
    if not new:
        return
    futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, CKafkaError) and err.code() == CKafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise KafkaError(f"cannot create topic {name!r}: {err}") from None


def delete_topics(settings: KafkaSettings, names: Iterable[str], timeout: float = 30.0) -> None:
    """Delete topics (tests clean up after themselves)."""
    admin = AdminClient(settings.confluent_config())
    for future in admin.delete_topics(list(names), operation_timeout=timeout).values():
        with contextlib.suppress(KafkaException):
            future.result(timeout=timeout)


class Producer:
    """Idempotent, acks=all producer on confluent-kafka for high message rates.

    ``produce`` never drops: when librdkafka's local queue is full it serves delivery
    reports until there is room (back-pressure). Delivery failures are collected and raised
    as ``ProduceError`` by the next ``produce``/``flush``.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        client_id: str,
        *,
        track_delivery: bool = False,
        **overrides: Any,
    ) -> None:
        """``track_delivery``: number every message so that ``delivered_through(mark())``
        can wait for exactly the messages produced so far (not for later ones, as
        ``flush`` does); costs a callback object per message."""
        conf: dict[str, Any] = {
            **settings.confluent_config(),
            "client.id": client_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": settings.producer_linger_ms,
            "compression.type": "lz4",
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 500_000,
            "queue.buffering.max.kbytes": 512 * 1024,
            "on_delivery": self._on_delivery,
        }
        conf.update({k.replace("_", "."): v for k, v in overrides.items()})
        self._producer = CProducer(conf)
        self._failures: list[str] = []
        self.delivered = 0
        self._track = track_delivery
        self._produced = 0  # messages numbered so far (track_delivery)
        self._undelivered: deque[int] = deque()  # their numbers, in produce order
        self._reported: set[int] = set()  # numbers reported out of order, not yet popped

    def _on_delivery(self, err: CKafkaError | None, msg: Any) -> None:
        if err is not None:
            self._failures.append(f"{msg.topic()}: {err.str()}")
        else:
            self.delivered += 1

    def _raise_failures(self) -> None:
        if self._failures:
            failures, self._failures = self._failures, []
            raise ProduceError(f"{len(failures)} message(s) not delivered, first: {failures[0]}")

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Headers | None = None,
        timestamp_ms: int = 0,
        partition: int = -1,
    ) -> None:
        """Queue one message (to ``partition``, or the partitioner's choice when -1); blocks
        (serving delivery reports) while the queue is full."""
        if self._failures:
            self._raise_failures()
        produce = self._producer.produce
        while True:
            try:
                if self._track:
                    number = self._produced + 1
                    produce(
                        topic,
                        value,
                        key,
                        partition=partition,
                        headers=cast("_CHeaders", headers),
                        timestamp=timestamp_ms,
                        on_delivery=functools.partial(self._on_tracked, number),
                    )
                    self._produced = number
                    self._undelivered.append(number)
                # keyword arguments cost librdkafka's binding ~0.5 µs: only the ones given
                elif partition < 0 and not timestamp_ms:
                    if headers is None:
                        produce(topic, value, key)
                    else:
                        produce(topic, value, key, headers=headers)  # type: ignore[arg-type]
                else:
                    produce(
                        topic,
                        value,
                        key,
                        partition=partition,
                        headers=cast("_CHeaders", headers),  # the same list; invariant stub
                        timestamp=timestamp_ms,
                    )
                return
            except BufferError:
                self._producer.poll(0.05)

    def _on_tracked(self, number: int, err: CKafkaError | None, msg: Any) -> None:
        self._on_delivery(err, msg)
        undelivered = self._undelivered
        if undelivered and undelivered[0] == number:
            undelivered.popleft()
            reported = self._reported
            while undelivered and undelivered[0] in reported:
                reported.discard(undelivered.popleft())
        else:
            self._reported.add(number)

    def mark(self) -> int:
        """The number of the last message produced so far (``track_delivery``)."""
        return self._produced

    async def delivered_through(self, mark: int, timeout: float = 120.0) -> None:
        """Wait (serving delivery reports from this thread) until every message up to
        ``mark`` is acknowledged, or raise ``ProduceError`` (a failure, or the timeout)."""
        if not self._track:
            raise RuntimeError("delivered_through needs Producer(track_delivery=True)")
        deadline = time.monotonic() + timeout
        while True:
            self._producer.poll(0)
            self._raise_failures()
            if not self._undelivered or self._undelivered[0] > mark:
                return
            if time.monotonic() > deadline:
                raise ProduceError(f"messages up to {mark} not acknowledged within {timeout}s")
            await asyncio.sleep(0.001)

    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery reports; cheap to call often."""
        return int(self._producer.poll(timeout))

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued message is delivered, or raise ``ProduceError``."""
        remaining = self._producer.flush(timeout)
        self._raise_failures()
        if remaining:
            raise ProduceError(f"{remaining} message(s) still queued after {timeout}s")

    def __len__(self) -> int:
        return len(self._producer)


class AsyncProducer:
    """Idempotent aiokafka producer for asyncio services."""

    def __init__(self, settings: KafkaSettings, client_id: str, **overrides: Any) -> None:
        self._producer = AIOKafkaProducer(
            **settings.aiokafka_config(),
            client_id=client_id,
            enable_idempotence=True,
            acks="all",
            **{"linger_ms": int(settings.producer_linger_ms), **overrides},
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Headers | None = None
    ) -> asyncio.Future[Any]:
        """Queue a message; await the returned future for its delivery."""
        return await self._producer.send(topic, value, key=key, headers=headers)

    async def send_and_wait(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Headers | None = None
    ) -> None:
        """Send and wait for the broker's acknowledgement."""
        try:
            await self._producer.send_and_wait(topic, value, key=key, headers=headers)
        except Exception as exc:
            raise ProduceError(f"cannot deliver to {topic!r}: {exc}") from exc

    async def flush(self) -> None:
        await self._producer.flush()


@dataclass(frozen=True, slots=True)
class Consumed:
    """A consumed message: where it came from, its key, decoded value and trace id."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: Any
    raw: bytes | None
    timestamp_ms: int
    trace_id: str = ""


Rejects = Sequence[tuple[Consumed, str]]
BatchHandler = Callable[[list[Consumed]], Awaitable[Rejects | None]]
Checkpoint = Callable[[], Awaitable[None]]
# a checkpoint in two parts: the first (awaited with the loop held) takes what must be made
# durable and returns the second, which makes it durable while the loop goes on
Completion = Callable[[], Awaitable[None]]
PreparedCheckpoint = Callable[[], Awaitable[Completion]]
PartitionsHook = Callable[[set[TopicPartition]], Awaitable[None]]


@dataclass
class ConsumerStats:
    consumed: int = 0
    handled: int = 0
    dead_lettered: int = 0
    batches: int = 0
    commits: int = 0
    commit_failures: int = 0
    stale_dropped: int = 0
    last_message_monotonic: float = field(default_factory=time.monotonic)


class ConsumerLoop:
    """Consume, decode, handle durably, dead-letter the bad, then commit.

    The handler receives each batch of decoded messages and must only return once its writes
    are durable. It may return ``(message, reason)`` pairs it refuses; those and every message
    that fails to decode go to ``dlq.<service>``; the loop keeps going.

    With ``commit_interval_s`` > 0 the handler may instead keep work in progress (buffered
    rows, state): offsets are then committed at most that often, each time after
    ``before_commit`` returned (it must make everything handled so far durable), and also
    when the loop stops and before partitions are revoked. A rebalance never cuts a batch:
    revocation waits for the batch in flight, commits, then calls ``on_revoked``; newly
    assigned partitions are handed out only after ``on_assigned`` returned (a handler with
    per-partition state restores it there). Records fetched for a partition this member no
    longer owns (or does not own yet) are dropped, never handled: the owner reads them
    again from the committed offset.

    ``prepare_commit`` (instead of ``before_commit``) takes the checkpoint off the hot path:
    it snapshots what is handled so far and returns a completion that makes that durable;
    the loop keeps handling batches while the completion runs, then commits exactly the
    offsets of the snapshot. One checkpoint runs at a time; revocation and shutdown wait for
    it (and then checkpoint the rest in the foreground); a failed completion stops the loop
    (its offsets are never committed).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        service: str,
        group_id: str,
        topics: Sequence[Topic[Any]],
        handler: BatchHandler,
        dlq_producer: AsyncProducer,
        max_batch: int = 500,
        auto_offset_reset: str = "earliest",
        decode: bool = True,
        poll_timeout_ms: int = 200,
        metrics: ServiceMetrics | None = None,
        lag_interval_s: float = 1.0,
        commit_interval_s: float = 0.0,
        before_commit: Checkpoint | None = None,
        prepare_commit: PreparedCheckpoint | None = None,
        on_assigned: PartitionsHook | None = None,
        on_revoked: PartitionsHook | None = None,
        **overrides: Any,
    ) -> None:
        self.service = service
        self.group_id = group_id
        self._metrics = metrics
        self._lag_interval_s = lag_interval_s
        self._lag_next = 0.0
        self._lag_labelled: set[TopicPartition] = set()
        self._topics = {t.name: t for t in topics}
        self._handler = handler
        self._dlq = dlq_producer
        self._dlq_topic = dlq_topic(service)
        self._max_batch = max_batch
        self._decode = decode
        self._poll_timeout_ms = poll_timeout_ms
        self.stats = ConsumerStats()
        self._commit_interval_s = commit_interval_s
        if before_commit is not None and prepare_commit is not None:
            raise ValueError("before_commit or prepare_commit, not both")
        self._before_commit = before_commit
        self._prepare_commit = prepare_commit
        # the checkpoint completing in the background (prepare_commit), if any
        self._pending_checkpoint: asyncio.Task[None] | None = None
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        # handled, not yet committed: partition -> next offset
        self._uncommitted: dict[TopicPartition, int] = {}
        self._commit_due = 0.0
        # held while a batch is handled and committed, and while a rebalance hook runs
        self._lock = asyncio.Lock()
        # partitions whose ``on_assigned`` completed and that were not revoked since
        self._owned: set[TopicPartition] = set()
        self._failed = False
        self._consumer = AIOKafkaConsumer(
            **settings.aiokafka_config(),
            group_id=group_id,
            client_id=f"{service}-consumer",
            enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset,
            isolation_level="read_committed",
            **overrides,
        )

    async def start(self) -> None:
        self._consumer.subscribe(list(self._topics), listener=_Rebalance(self))
        await self._consumer.start()

    async def stop(self) -> None:
        task = self._pending_checkpoint
        if task is not None and not task.done():  # its offsets stay uncommitted: replayed
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._consumer.stop()

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:  # the batch in flight finishes (and commits) first
            try:
                await self._commit(force=True)
            finally:
                self._owned.clear()
                self._uncommitted.clear()
                if self._on_revoked is not None:
                    await self._on_revoked(revoked)

    async def _assigned(self, assigned: set[TopicPartition]) -> None:
        async with self._lock:
            if self._on_assigned is not None:
                await self._on_assigned(assigned)
            self._owned = set(assigned)
            self._commit_due = time.monotonic() + self._commit_interval_s

    def _decode_record(self, record: Any) -> Consumed | tuple[Consumed, str]:
        trace_id = trace_from_headers(record.headers)
        raw = record.value
        consumed = Consumed(
            record.topic,
            record.partition,
            record.offset,
            record.key,
            raw,
            raw,
            record.timestamp,
            trace_id,
        )
        if not self._decode:
            return consumed
        try:
            value = self._topics[record.topic].decode(raw)
        except DecodeError as exc:
            return consumed, str(exc)
        return Consumed(
            record.topic,
            record.partition,
            record.offset,
            record.key,
            value,
            raw,
            record.timestamp,
            trace_id or getattr(value, "trace_id", "") or "",
        )

    async def dead_letter(self, message: Consumed, reason: str) -> None:
        """Send one message to ``dlq.<service>`` and wait for the broker's ack."""
        letter = DeadLetter(
            service=self.service,
            source_topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key.decode(errors="replace") if message.key else None,
            value=message.raw.decode("latin-1") if message.raw is not None else None,
            error=reason[:2000],
            ts_us=time.time_ns() // 1000,
        )
        await self._dlq.send_and_wait(
            self._dlq_topic.name, self._dlq_topic.encode(letter), key=message.topic.encode()
        )
        self.stats.dead_lettered += 1
        log.warning(
            "dead-lettered message",
            extra={
                "topic": message.topic,
                "partition": message.partition,
                "offset": message.offset,
                "reason": reason[:500],
            },
        )

    async def run(
        self,
        stop: asyncio.Event | None = None,
        max_messages: int | None = None,
        idle_timeout: float | None = None,
    ) -> int:
        """Consume until ``stop`` is set, ``max_messages`` were consumed, or nothing arrived
        for ``idle_timeout`` seconds. Returns the number of messages consumed."""
        stop = stop or asyncio.Event()
        consumed_here = 0
        last_seen = time.monotonic()
        while not stop.is_set():
            limit = self._max_batch
            if max_messages is not None:
                limit = min(limit, max_messages - consumed_here)
                if limit <= 0:
                    break
            if self._metrics is not None and time.monotonic() >= self._lag_next:
                await self._export_lag(self._metrics)  # every record handed out is handled
            batch = await self._consumer.getmany(
                timeout_ms=self._poll_timeout_ms, max_records=limit
            )
            if not batch:
                if self._uncommitted or self._pending_checkpoint is not None:
                    async with self._lock:
                        await self._commit(force=False)
                if idle_timeout is not None and time.monotonic() - last_seen >= idle_timeout:
                    break
                continue
            last_seen = time.monotonic()
            async with self._lock:
                batch = self._owned_records(batch)
                if batch:
                    await self._handle_batch(batch)
                    consumed_here += sum(len(records) for records in batch.values())
                await self._commit(force=False)
        async with self._lock:
            await self._commit(force=True)
        return consumed_here

    def _owned_records(
        self, batch: dict[TopicPartition, list[Any]]
    ) -> dict[TopicPartition, list[Any]]:
        """The part of a fetched batch this member may handle: a partition fetched before a
        revocation, or before its ``on_assigned`` finished, is dropped (and, if assigned,
        sought back so that it is fetched again once it is ours)."""
        if all(tp in self._owned for tp in batch):
            return batch
        kept = {}
        assignment = self._consumer.assignment()
        for tp, records in batch.items():
            if tp in self._owned:
                kept[tp] = records
                continue
            self.stats.stale_dropped += len(records)
            if tp in assignment:
                with contextlib.suppress(IllegalStateError):
                    self._consumer.seek(tp, records[0].offset)
        return kept

    async def _commit(self, force: bool) -> None:
        """Commit the handled offsets when due (always when ``force``), after the
        ``before_commit`` checkpoint (or start a ``prepare_commit`` one that commits when
        complete; ``force`` waits for it). Called with ``_lock`` held. Never after a handler
        failed: its partial work must not be checkpointed; the batch is replayed."""
        task = self._pending_checkpoint
        if task is not None:
            if not task.done() and not force:
                return  # one checkpoint at a time; this one is due again when it is done
            self._pending_checkpoint = None
            try:
                await task  # raises what the completion raised: the loop stops
            except BaseException:
                self._failed = True
                raise
        if not self._uncommitted or self._failed:
            return
        if not force and time.monotonic() < self._commit_due:
            return
        complete = None
        if self._prepare_commit is not None:
            complete = await self._prepare_commit()
        elif self._before_commit is not None:
            await self._before_commit()
        offsets, self._uncommitted = self._uncommitted, {}
        self._commit_due = time.monotonic() + self._commit_interval_s
        if complete is None or force:
            await self._complete_and_commit(complete, offsets)
        else:
            self._pending_checkpoint = asyncio.create_task(
                self._complete_and_commit(complete, offsets), name="checkpoint"
            )

    async def _complete_and_commit(
        self, complete: Completion | None, offsets: dict[TopicPartition, int]
    ) -> None:
        if complete is not None:
            await complete()
        try:
            await self._consumer.commit(offsets)
            self.stats.commits += 1
        except (CommitFailedError, IllegalStateError) as exc:
            # A rebalance took the partitions away (IllegalStateError: revoked while the
            # batch was handled); the next owner replays from the last commit and the
            # idempotent writes absorb the repeat.
            self.stats.commit_failures += 1
            log.warning("offset commit failed after rebalance", extra={"error": str(exc)})

    async def _handle_batch(self, batch: dict[TopicPartition, list[Any]]) -> None:
        good: list[Consumed] = []
        bad: list[tuple[Consumed, str]] = []
        offsets: dict[TopicPartition, int] = {}
        for tp, records in batch.items():
            for record in records:
                decoded = self._decode_record(record)
                if isinstance(decoded, tuple):
                    bad.append(decoded)
                else:
                    good.append(decoded)
            offsets[tp] = records[-1].offset + 1
        self.stats.consumed += len(good) + len(bad)
        try:
            if good:
                rejects = await self._handler(good)
                self.stats.handled += len(good)
                if rejects:
                    bad.extend(rejects)
            for message, reason in bad:
                await self.dead_letter(message, reason)
        except BaseException:
            self._failed = True
            raise
        self._uncommitted.update(offsets)
        self.stats.batches += 1
        self.stats.last_message_monotonic = time.monotonic()

    async def lag(self) -> dict[TopicPartition, int]:
        """Per assigned partition: records between its end (the last stable offset, as we
        read committed) and our position, i.e. fetched-and-handled or not yet fetched.
        Partitions whose end is not known yet (no fetch answered) are left out."""
        out: dict[TopicPartition, int] = {}
        for tp in self._consumer.assignment():
            end = self._consumer.last_stable_offset(tp)
            if end is None:
                end = self._consumer.highwater(tp)
            if end is None:
                continue
            try:
                position = await self._consumer.position(tp)
            except IllegalStateError:  # revoked meanwhile: no figure this round
                continue
            out[tp] = max(end - position, 0)
        return out

    async def _export_lag(self, metrics: ServiceMetrics) -> None:
        self._lag_next = time.monotonic() + self._lag_interval_s
        gauge = metrics.consumer_lag
        lags = await self.lag()
        for tp, value in lags.items():
            gauge.labels(self.service, self.group_id, tp.topic, str(tp.partition)).set(value)
        for tp in self._lag_labelled - lags.keys():  # revoked: stop reporting it
            with contextlib.suppress(KeyError):
                gauge.remove(self.service, self.group_id, tp.topic, str(tp.partition))
        self._lag_labelled = set(lags)

    async def committed(self, topic: str, partition: int) -> int | None:
        """The group's committed offset for a partition (for tests and lag metrics)."""
        result = await self._consumer.committed(TopicPartition(topic, partition))
        return int(result) if result is not None else None


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Routes aiokafka's rebalance callbacks to the loop (which serialises them with batches)."""

    def __init__(self, loop: ConsumerLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._loop._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._loop._assigned(set(assigned))
