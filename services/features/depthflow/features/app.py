"""The features service: md.book + md.trades → features.v1, one vector per book update.

A consumer-group worker on ``ConsumerLoop`` (aiokafka) keeps one ``SymbolPipeline`` per symbol
in a table backed by a compacted changelog topic (``<app_id>-symbol_state-changelog``,
partition = the source partition: the sources are keyed ``{exchange}:{symbol}`` and
co-partitioned), so a restarted or rebalanced worker resumes from the changelog without a
warm-up gap. It was a faust-streaming agent until faust's consumer showed both a throughput
cap (~75 µs of CPU per input event against ~3 µs for aiokafka) and commits ahead of what was
saved (docs/features.md, "Why not faust's consumer").

Per batch: decode (garbage → ``dlq.features`` with the raw bytes and the reason), merge,
compute, queue the rows (batched idempotent COPY) and the ``features.v1`` messages.

Per checkpoint (every ``commit_interval_s``, before a rebalance and at shutdown): the changed
symbols' state (pipeline, merge buffer, last offset taken per topic, last book seq) is
serialised at once, with how far the rows and messages have got; then, while later batches
are already handled (``ConsumerLoop``'s ``prepare_commit``), in order:

1. the rows queued before it are COPYed and durable;
2. every ``features.v1`` message and dead letter before it is acknowledged by the broker;
3. the serialised state is written to the changelog and acknowledged;
4. only then are the offsets handled before it committed.

A crash anywhere replays from the last commit with the last checkpointed state: events it
already took (offset not newer) are skipped, the rest are recomputed to the same numbers,
and the stored rows' natural keys absorb the repeat. A failed batch is never checkpointed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from depthflow.common.codec import dumps
from depthflow.common.db import CopyWriter, create_pool, ident
from depthflow.common.errors import DecodeError
from depthflow.common.heartbeat import HeartbeatPublisher
from depthflow.common.kafka import AsyncProducer, Completion, Consumed, ConsumerLoop, Producer
from depthflow.common.lifecycle import Service
from depthflow.common.logging import TRACE_HEADER
from depthflow.common.metrics import HealthServer, ServiceMetrics
from depthflow.common.schemas import BOOK, TRADES, DeadLetter, Topic, dlq_topic
from depthflow.common.settings import HttpSettings, KafkaSettings, PostgresSettings
from depthflow.features.candles import Candle
from depthflow.features.config import FeaturesSettings
from depthflow.features.decode import decode_book, decode_trade
from depthflow.features.latency import UpdateLatency
from depthflow.features.names import FEATURE_SET_VERSION
from depthflow.features.pipeline import SymbolPipeline, Vector
from depthflow.features.scaler import ActiveScaler
from depthflow.features.store import VECTOR_COLUMNS, encode_vector_rows

log = logging.getLogger(__name__)

SERVICE = "features"
STATE_TABLE = "symbol_state"
CANDLE_COLUMNS = (
    "exchange",
    "symbol",
    "start_us",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "trades",
    "from_mid",
)
CANDLE_US = 60_000_000
# the changelog is compacted; small segments let the cleaner keep the restore short
CHANGELOG_CONFIG = {
    "cleanup.policy": "compact",
    "segment.ms": str(10 * 60 * 1000),
    "min.cleanable.dirty.ratio": "0.1",
}


def changelog_topic(settings: FeaturesSettings) -> str:
    return f"{settings.app_id}-{STATE_TABLE}-changelog"


async def restore_changelog(
    kafka: KafkaSettings, topic: str, partitions: set[int]
) -> dict[bytes, tuple[int, bytes]]:
    """The latest value of every key in the given changelog partitions: key -> (partition,
    value). Reads each partition from its beginning to the end it had when the read began."""
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(
        **kafka.aiokafka_config(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id=f"{SERVICE}-restore",
    )
    await consumer.start()
    state: dict[bytes, tuple[int, bytes]] = {}
    try:
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        pending = set(tps)
        while pending:
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
            if not pending:
                break
            batch = await consumer.getmany(*pending, timeout_ms=500, max_records=10_000)
            for tp, records in batch.items():
                end = ends[tp]
                for r in records:
                    if r.offset >= end or r.key is None:
                        continue
                    if r.value is None:
                        state.pop(r.key, None)
                    else:
                        state[r.key] = (tp.partition, r.value)
    finally:
        await consumer.stop()
    return state


@dataclass
class Outputs:
    """What one batch produced, before it is queued for storage and publishing."""

    vector_rows: list[tuple[Any, ...]] = field(default_factory=list)
    candle_rows: list[tuple[Any, ...]] = field(default_factory=list)
    messages: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = field(default_factory=list)
    letters: list[tuple[bytes, bytes]] = field(default_factory=list)
    compute_ns: list[int] = field(default_factory=list)
    n_vectors: int = 0


class FeaturesService(Service):
    """The I/O around ``SymbolPipeline``: the consumer group, decoding, the changelog-backed
    table, COPY sinks, publishing, checkpoints, metrics, heartbeats and the active scaler."""

    name = SERVICE

    def __init__(
        self,
        settings: FeaturesSettings,
        kafka: KafkaSettings,
        pg: PostgresSettings,
        http: HttpSettings,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.kafka = kafka
        self.pg = pg
        self.http = http
        self.hold_us = int(settings.merge_hold_ms * 1000)
        self.min_interval_us = int(settings.min_emit_interval_ms * 1000)
        self.dlq = dlq_topic(SERVICE)
        self.changelog = changelog_topic(settings)
        # the checkpointed state of the owned partitions' symbols: key -> zlib(JSON)
        self.table: dict[bytes, bytes] = {}
        self._pipes: dict[tuple[str, str], tuple[bytes, SymbolPipeline]] = {}
        # symbols changed since the last checkpoint: key -> (pipeline, source partition)
        self._dirty: dict[bytes, tuple[SymbolPipeline, int]] = {}
        self._state_bytes: dict[bytes, int] = {}
        self.scaler: ActiveScaler | None = None
        self._pool: Any = None
        self._vectors: CopyWriter | None = None
        self._candles: CopyWriter | None = None
        self._publisher: Producer | None = None
        self._async_producer: AsyncProducer | None = None
        self.loop: ConsumerLoop | None = None
        self._health: HealthServer | None = None
        self._heartbeat: HeartbeatPublisher | None = None
        self._scaler_task: asyncio.Task[None] | None = None
        self.vectors_total = 0
        self.late_trades = 0  # see SymbolPipeline: where streaming may differ from batch
        # process CPU time (every thread) at the start of the first batch and at the end of
        # the latest: the processing cost per vector, without start-up (heartbeat detail)
        self._cpu_first: float | None = None
        self._cpu_last = 0.0
        self.checkpoints = 0
        # seconds spent per checkpoint phase, summed (heartbeat detail: where a checkpoint goes)
        self._checkpoint_phases = dict.fromkeys(
            ("serialise", "compress", "copy", "publish", "changelog"), 0.0
        )
        self.restored_symbols = 0
        self._rate_mark = (time.monotonic(), 0)
        m = self.metrics = ServiceMetrics(SERVICE)
        self.m_vectors = m.counter("vectors", "feature vectors computed")
        self.m_emitted = m.counter("vectors_emitted", "features.v1 messages published")
        self.m_events = m.counter("events", "input events taken", ["kind"])
        self.m_dead = m.counter("dead_lettered", "messages sent to dlq.features")
        self.m_skipped = m.counter("skipped", "replayed events skipped (offset or seq not newer)")
        self.m_checkpoints = m.counter("checkpoints", "state checkpoints written (then committed)")
        self.m_late = m.counter(
            "late_trades",
            "trades taken after a book at or past their timestamp was computed (the merge "
            "could not put them first: streaming differs from the batch computation there)",
        )
        self.m_latency = UpdateLatency(
            "depthflow_features_update_latency_seconds",
            "feature computation time per book update",
            (5e-6, 1e-5, 2.5e-5, 5e-5, 7.5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 1e-2),
            m.registry,
        )
        self.m_cost = UpdateLatency(
            "depthflow_features_batch_seconds_per_vector",
            "processing time of a batch (decode to queued output) divided by its vectors",
            (1e-5, 2.5e-5, 5e-5, 7.5e-5, 1e-4, 1.5e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 2.5e-2),
            m.registry,
        )
        self.m_input_delay = UpdateLatency(
            "depthflow_features_book_delay_seconds",
            "md.book record time (the collector's produce) to the end of the batch that took "
            "it: Kafka delivery and batching (ms resolution: Kafka timestamps are ms)",
            (1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 1e-1, 2.5e-1, 5e-1, 1.0, 5.0),
            m.registry,
        )
        # resolved once: a labelled child per batch is a dict lookup under a lock
        self.m_events_book = self.m_events.labels("book")
        self.m_events_trade = self.m_events.labels("trade")
        self.m_batch = m.histogram("batch_seconds", "time per processing batch")
        self.m_checkpoint = m.histogram("checkpoint_seconds", "time per state checkpoint")
        self.m_rate = m.gauge("vectors_per_second", "vectors/s since the previous heartbeat")
        self.m_state = m.gauge("state_bytes", "serialised per-symbol state held, bytes")
        self.m_symbols = m.gauge("symbols", "symbols with state in this worker")

    # -- lifecycle -----------------------------------------------------------------------

    async def on_start(self) -> None:
        s = self.settings
        await asyncio.to_thread(prepare, s, self.kafka, self.pg)
        self._pool = await create_pool(self.pg)
        self.exit_stack.push_async_callback(self._pool.close)
        self._vectors = CopyWriter(
            self._pool,
            "vectors",
            VECTOR_COLUMNS,
            schema=s.db_schema,
            conflict_columns=("exchange", "symbol", "feature_set", "book_seq"),
            batch_size=5000,
            binary_encoder=encode_vector_rows,
        )
        self._candles = CopyWriter(
            self._pool,
            "candles",
            CANDLE_COLUMNS,
            schema=s.db_schema,
            conflict_columns=("exchange", "symbol", "start_us"),
            batch_size=5000,
        )
        for writer in (self._vectors, self._candles):
            await writer.start()
            # after the loop's last checkpoint (the exit stack unwinds in reverse)
            self.exit_stack.push_async_callback(writer.close)
        self._publisher = Producer(
            self.kafka,
            client_id=f"{s.app_id}-features",
            linger_ms=s.producer_linger_ms,
            batch_size=s.producer_batch_bytes,
            compression_type=s.producer_compression,
            # the Java client's (and aiokafka's) key hashing: features.v1 keeps the
            # partitioning it had when faust's producer wrote it
            partitioner="murmur2_random",
            track_delivery=True,  # checkpoints wait for exactly the messages before them
        )
        self._async_producer = AsyncProducer(self.kafka, client_id=f"{s.app_id}-status")
        await self._async_producer.start()
        self.exit_stack.push_async_callback(self._async_producer.stop)
        await self.poll_scaler()
        session_ms = int(s.session_timeout_s * 1000)
        self.loop = ConsumerLoop(
            self.kafka,
            service=SERVICE,
            group_id=s.app_id,
            topics=[
                Topic(s.topic_book, BOOK.model, BOOK.key),
                Topic(s.topic_trades, TRADES.model, TRADES.key),
            ],
            handler=self.handle,
            dlq_producer=self._async_producer,
            max_batch=s.batch_max,
            decode=False,
            poll_timeout_ms=int(s.batch_within_s * 1000),
            metrics=self.metrics,
            commit_interval_s=s.commit_interval_s,
            prepare_commit=self.prepare_checkpoint,
            on_assigned=self.on_assigned,
            on_revoked=self.on_revoked,
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=min(3000, session_ms // 4),
        )
        await self.loop.start()
        self.exit_stack.push_async_callback(self.loop.stop)
        self._health = HealthServer(
            self.metrics, self.http.host, self.http.port, lambda: self.ready
        )
        await self._health.start()
        self.exit_stack.push_async_callback(self._health.stop)
        self._heartbeat = HeartbeatPublisher(
            self._async_producer.send_and_wait,
            SERVICE,
            self._status,
            s.heartbeat_interval_s,
            s.topic_status,
        )
        await self._heartbeat.start()
        self.exit_stack.push_async_callback(self._heartbeat.stop)
        self._scaler_task = asyncio.create_task(self._poll_scaler_forever())
        self.exit_stack.push_async_callback(self._stop_scaler_task)
        self.metrics.up.set(1)
        if s.gc_freeze:
            tune_gc(s.gc_gen0_threshold)
        log.info(
            "features worker started",
            extra={"app_id": s.app_id, "health_port": self._health.port},
        )

    async def on_stop(self) -> None:
        self.metrics.up.set(0)

    async def _stop_scaler_task(self) -> None:
        if self._scaler_task is not None:
            self._scaler_task.cancel()
            await asyncio.gather(self._scaler_task, return_exceptions=True)

    async def run(
        self,
        stop: asyncio.Event | None = None,
        max_messages: int | None = None,
        idle_timeout: float | None = None,
    ) -> int:
        """Consume until stopped; the loop's last act is a checkpoint and a commit."""
        assert self.loop is not None
        return await self.loop.run(stop, max_messages, idle_timeout)

    def _status(self) -> tuple[str, bool, dict[str, Any]]:
        now = time.monotonic()
        then, count = self._rate_mark
        rate = (self.vectors_total - count) / max(now - then, 1e-9)
        self._rate_mark = (now, self.vectors_total)
        self.m_rate.set(rate)
        detail = {
            "symbols": len(self._pipes),
            "vectors": self.vectors_total,
            "vectors_per_s": round(rate, 1),
            "checkpoints": self.checkpoints,
            "late_trades": self.late_trades,
            "scaler_version": self.scaler.version if self.scaler else "",
        }
        detail["checkpoint_s_by_phase"] = {
            k: round(v, 3) for k, v in self._checkpoint_phases.items()
        }
        if self._cpu_first is not None:
            detail["cpu_s_since_first_batch"] = round(self._cpu_last - self._cpu_first, 4)
        p50, p99 = self.m_latency.percentiles_us(50, 99)
        c50, c99 = self.m_cost.percentiles_us(50, 99)
        d50, d99 = self.m_input_delay.percentiles_us(50, 99)
        detail["update_us_p50"], detail["update_us_p99"] = p50, p99
        detail["book_delay_ms_p50"], detail["book_delay_ms_p99"] = d50 / 1000, d99 / 1000
        detail["batch_us_per_vector_p50"], detail["batch_us_per_vector_p99"] = c50, c99
        return self.state.value, self.ready, detail

    async def _poll_scaler_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.scaler_poll_s)
            await self.poll_scaler()

    async def poll_scaler(self) -> None:
        """Re-read the active scaler (the service applies whatever is active)."""
        if self._pool is None:
            return
        q = (
            f"SELECT version, mean, scale FROM {ident(self.settings.db_schema)}.scalers "  # noqa: S608 - identifier checked by ident()
            "WHERE feature_set = $1 AND active"
        )
        try:
            row = await self._pool.fetchrow(q, FEATURE_SET_VERSION)
        except Exception as exc:
            log.warning("cannot read the active scaler", extra={"error": str(exc)})
            return
        if row is None:
            if self.scaler is not None:
                log.info("scaler deactivated")
            self.scaler = None
            return
        if self.scaler is None or self.scaler.version != row["version"]:
            self.scaler = ActiveScaler(
                row["version"],
                np.asarray(row["mean"], np.float64),
                np.asarray(row["scale"], np.float64),
            )
            log.info("scaler activated", extra={"version": row["version"]})

    # -- partitions and checkpoints ------------------------------------------------------

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Restore the assigned partitions' symbols from the changelog (before any of their
        events is handed out)."""
        t0 = time.perf_counter()
        partitions = {tp.partition for tp in assigned}
        restored = await restore_changelog(self.kafka, self.changelog, partitions)
        self._forget()
        self.table = {key: value for key, (_, value) in restored.items()}
        self._state_bytes = {key: len(value) for key, value in self.table.items()}
        self.restored_symbols = len(self.table)
        log.info(
            "partitions assigned; state restored from the changelog",
            extra={
                "partitions": sorted(partitions),
                "symbols": len(self.table),
                "seconds": round(time.perf_counter() - t0, 3),
            },
        )

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Forget the state: the loop checkpointed and committed just before; the next owner
        (maybe this worker again) restores it from the changelog."""
        self._forget()
        self.table = {}
        self._state_bytes = {}

    def _forget(self) -> None:
        self._pipes.clear()
        self._dirty.clear()

    async def prepare_checkpoint(self) -> Completion:
        """Snapshot the checkpoint (the loop commits the offsets handled so far once the
        returned completion is done, and keeps handling batches meanwhile): the changed
        symbols' state, serialised now, and how far the row and message streams have got."""
        t0 = time.perf_counter()
        assert self._vectors is not None and self._candles is not None
        assert self._publisher is not None
        vectors, candles, pub = self._vectors, self._candles, self._publisher
        rows_vectors, rows_candles, messages = vectors.mark(), candles.mark(), pub.mark()
        snapshot = [
            (key, dumps(pipe.to_state()), partition)
            for key, (pipe, partition) in self._dirty.items()
        ]
        self._dirty.clear()
        phases = self._checkpoint_phases
        phases["serialise"] += time.perf_counter() - t0

        async def complete() -> None:
            # zlib (pending books can make the JSON large) in a thread: it releases the GIL
            t_zip = time.perf_counter()
            states = await asyncio.to_thread(
                lambda: [(k, zlib.compress(raw, 1), part) for k, raw, part in snapshot]
            )
            t1 = time.perf_counter()
            phases["compress"] += t1 - t_zip
            await vectors.flush_through(rows_vectors)
            await candles.flush_through(rows_candles)
            t2 = time.perf_counter()
            # features.v1 and dead letters of the snapshot acknowledged
            await pub.delivered_through(messages)
            t3 = time.perf_counter()
            if states:
                changelog = self.changelog
                for key, state, partition in states:
                    pub.produce(changelog, state, key, partition=partition)
                await pub.delivered_through(pub.mark())  # the checkpoint acknowledged
                table = self.table
                for key, state, _ in states:
                    table[key] = state
                    self._state_bytes[key] = len(state)
            phases["copy"] += t2 - t1
            phases["publish"] += t3 - t2
            phases["changelog"] += time.perf_counter() - t3
            self.checkpoints += 1
            self.m_checkpoints.inc()
            self.m_state.set(sum(self._state_bytes.values()))
            self.m_checkpoint.observe(time.perf_counter() - t0)

        return complete

    # -- the batch path ------------------------------------------------------------------

    def _pipeline(self, exchange: str, symbol: str) -> tuple[bytes, SymbolPipeline]:
        hit = self._pipes.get((exchange, symbol))
        if hit is not None:
            return hit
        key = f"{exchange}:{symbol}".encode()
        raw = self.table.get(key)
        if raw:
            pipe = SymbolPipeline.from_state(
                orjson.loads(zlib.decompress(raw)), self.hold_us, self.min_interval_us
            )
        else:
            pipe = SymbolPipeline(exchange, symbol, self.hold_us, self.min_interval_us)
        self._pipes[(exchange, symbol)] = (key, pipe)
        return key, pipe

    def _letter(
        self,
        source_topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        raw: bytes | None,
        reason: str,
    ) -> tuple[bytes, bytes]:
        letter = DeadLetter(
            service=SERVICE,
            source_topic=source_topic,
            partition=partition,
            offset=offset,
            key=key.decode(errors="replace") if key else None,
            value=raw.decode("latin-1") if raw is not None else None,
            error=reason[:2000],
            ts_us=time.time_ns() // 1000,
        )
        return source_topic.encode(), self.dlq.encode(letter)

    def _collect(self, key: bytes, pipe: SymbolPipeline, partition: int, out: Outputs) -> None:
        vectors: list[Vector] = []
        candles: list[Candle] = []
        rejected: list[Any] = []
        trade_rejects: list[str] = []
        pipe.release(vectors, candles, rejected, trade_rejects)
        ex, sym = pipe.exchange, pipe.symbol
        out.compute_ns.extend(v.compute_ns for v in vectors)
        emitted = [v for v in vectors if v.emit]
        if emitted:
            # one array per batch and symbol: the scaler, the JSON and the COPY data are
            # then vectorised instead of converting 3 x 110 values per update
            values = np.array([v.values for v in emitted], np.float64)
            valid = np.array([v.valid for v in emitted], bool)
            scaler = self.scaler
            normalized = scaler.apply(values) if scaler else values
            version = scaler.version if scaler else ""
            now_us = time.time_ns() // 1000
            fs = FEATURE_SET_VERSION
            rows = out.vector_rows
            messages = out.messages
            opt = orjson.OPT_SERIALIZE_NUMPY
            encode = orjson.dumps
            for i, v in enumerate(emitted):
                vals = values[i]
                norm = normalized[i]
                ok = valid[i]
                rows.append(
                    (
                        ex,
                        sym,
                        fs,
                        v.book_seq,
                        v.exchange_ts_us,
                        v.local_ts_us,
                        now_us,
                        vals,
                        norm,
                        ok,
                        version,
                    )
                )
                msg = {
                    "schema_version": 1,
                    "exchange": ex,
                    "symbol": sym,
                    "feature_set": fs,
                    "values": vals,
                    "normalized": norm,
                    "valid": ok,
                    "scaler_version": version,
                    "book_seq": v.book_seq,
                    "exchange_ts_us": v.exchange_ts_us,
                    "local_ts_us": v.local_ts_us,
                    "trace_id": v.trace_id,
                }
                tid = v.trace_id
                messages.append(
                    (key, encode(msg, option=opt), [(TRACE_HEADER, tid.encode())] if tid else [])
                )
        for c in candles:
            out.candle_rows.append(
                (
                    ex,
                    sym,
                    c.minute * CANDLE_US,
                    c.open,
                    c.high,
                    c.low,
                    c.close,
                    c.volume,
                    c.trades,
                    c.trades == 0,
                )
            )
        for r in rejected:
            out.letters.append(
                self._letter(
                    self.settings.topic_book, partition, r.offset, key, dumps(r.book), r.reason
                )
            )
        for reason in trade_rejects:
            out.letters.append(
                self._letter(self.settings.topic_trades, partition, -1, key, None, reason)
            )
        self.vectors_total += len(vectors)
        out.n_vectors += len(vectors)
        if pipe.late_trades:
            self.m_late.inc(pipe.late_trades)
            self.late_trades += pipe.late_trades
            pipe.late_trades = 0

    async def handle(self, records: list[Consumed]) -> None:
        """Process one batch: compute, queue the rows and publish (acknowledged and durable
        by the next checkpoint, which precedes the commit)."""
        t0 = time.perf_counter()
        if self._cpu_first is None:
            self._cpu_first = time.process_time()
        s = self.settings
        topic_book = s.topic_book
        out = Outputs()
        touched: dict[bytes, tuple[SymbolPipeline, int]] = {}
        pipeline = self._pipeline
        book_times: list[int] = []  # the books' record times (ms)
        n_book = n_trade = skipped = 0
        for msg in records:
            raw = msg.raw
            try:
                if msg.topic == topic_book:
                    book = decode_book(raw)
                    key, pipe = pipeline(book.exchange, book.symbol)
                    if not pipe.add_book(
                        msg.offset,
                        book.seq,
                        book.exchange_ts_us,
                        book.local_ts_us,
                        book.bids,
                        book.asks,
                        msg.trace_id or book.trace_id,
                        book.feed_id,
                        book.trades_before,
                    ):
                        skipped += 1
                    n_book += 1
                    book_times.append(msg.timestamp_ms)
                else:
                    trade = decode_trade(raw)
                    key, pipe = pipeline(trade.exchange, trade.symbol)
                    if not pipe.add_trade(
                        msg.offset,
                        trade.price,
                        trade.qty,
                        trade.is_buy,
                        trade.exchange_ts_us,
                        trade.feed_id,
                        trade.feed_seq,
                    ):
                        skipped += 1
                    n_trade += 1
            except DecodeError as exc:
                out.letters.append(
                    self._letter(msg.topic, msg.partition, msg.offset, msg.key, raw, str(exc))
                )
                continue
            touched[key] = (pipe, msg.partition)
        for key, (pipe, partition) in touched.items():
            self._collect(key, pipe, partition, out)
        if book_times:  # record time -> end of the batch that took it
            done_ms = time.time_ns() // 1_000_000
            self.m_input_delay.observe_ns([max(0, done_ms - t) * 1_000_000 for t in book_times])
        self._dirty.update(touched)
        if s.store_vectors and out.vector_rows:
            assert self._vectors is not None
            await self._vectors.add_many(out.vector_rows)
        if out.candle_rows:
            assert self._candles is not None
            await self._candles.add_many(out.candle_rows)
        pub = self._publisher
        assert pub is not None
        topic = s.topic_features
        for key, value, headers in out.messages:
            pub.produce(topic, value, key, headers)
        for key, value in out.letters:
            pub.produce(s.topic_dlq, value, key)
        pub.poll(0)  # serve delivery reports
        self._observe(out, n_book, n_trade, skipped, time.perf_counter() - t0)
        self._cpu_last = time.process_time()

    def _observe(
        self, out: Outputs, n_book: int, n_trade: int, skipped: int, batch_s: float
    ) -> None:
        """Metrics, once per batch (per-update latencies go in as one bulk observation)."""
        self.m_latency.observe_ns(out.compute_ns)
        self.m_vectors.inc(out.n_vectors)
        self.m_events_book.inc(n_book)
        self.m_events_trade.inc(n_trade)
        if skipped:
            self.m_skipped.inc(skipped)
        if out.letters:
            self.m_dead.inc(len(out.letters))
            log.warning("dead-lettered messages", extra={"count": len(out.letters)})
        self.m_emitted.inc(len(out.messages))
        self.m_state.set(sum(self._state_bytes.values()))
        self.m_symbols.set(len(self._pipes))
        self.m_batch.observe(batch_s)
        if out.n_vectors:
            self.m_cost.observe_ns([int(batch_s * 1e9 / out.n_vectors)])


def tune_gc(gen0_threshold: int) -> None:
    """Freeze what start-up left alive and collect the young generation less often (process
    wide; the worker process is this service alone)."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
    log.info("gc tuned", extra={"frozen": gc.get_freeze_count(), "gen0": gen0_threshold})


def prepare(settings: FeaturesSettings, kafka: KafkaSettings, pg: PostgresSettings) -> None:
    """Migrate the schema and create the topics, the changelog with as many partitions as
    the book topic has (a symbol's state lives in its source partition's number)."""
    from confluent_kafka.admin import AdminClient

    from depthflow.common.kafka import create_topics
    from depthflow.common.migrations import load_migrations, migrate
    from depthflow.common.schemas import FEATURES, STATUS

    migrate(pg.dsn.get_secret_value(), settings.db_schema, load_migrations("depthflow.features"))
    create_topics(
        kafka, [settings.topic_book, settings.topic_trades], partitions=settings.partitions
    )
    feat = FEATURES if settings.topic_features == FEATURES.name else settings.topic_features
    create_topics(kafka, [feat, settings.topic_dlq], partitions=settings.partitions)
    status = STATUS if settings.topic_status == STATUS.name else settings.topic_status
    create_topics(kafka, [status], partitions=1)
    meta = AdminClient(kafka.confluent_config()).list_topics(timeout=30).topics
    sources = [meta[t] for t in (settings.topic_book, settings.topic_trades) if t in meta]
    partitions = max([len(t.partitions) for t in sources] or [settings.partitions])
    create_topics(
        kafka, [changelog_topic(settings)], partitions=partitions, config=CHANGELOG_CONFIG
    )
