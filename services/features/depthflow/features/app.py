"""The features service: a faust-streaming worker from md.book + md.trades to features.v1.

``build_app`` makes the faust app (no module-level app): one agent consumes both source
topics (keyed ``{exchange}:{symbol}``, co-partitioned) in ``stream.take_events`` batches and
keeps one ``SymbolPipeline`` per symbol in a changelog-backed table, so a restarted or
rebalanced worker resumes from the changelog without a warm-up gap.

Per batch, in this order (at-least-once in, exactly-once-ish out):

1. decode (garbage → ``dlq.features`` with the raw bytes and the reason), merge, compute;
2. store the vectors and closed candles with batched idempotent COPY, wait until durable;
3. queue the ``features.v1`` messages and the changed symbols' state on the changelog;
4. return, which acks the batch; faust flushes the producer before it commits offsets.

A crash anywhere replays from the last commit: the restored state knows the last Kafka offset
it took from each topic and the last book seq, so replayed events are skipped or recomputed
to the same numbers, and the stored rows' natural keys absorb the repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from depthflow.common.codec import dumps
from depthflow.common.db import CopyWriter, create_pool, ident
from depthflow.common.errors import DecodeError
from depthflow.common.heartbeat import HeartbeatPublisher
from depthflow.common.kafka import Producer
from depthflow.common.logging import TRACE_HEADER
from depthflow.common.metrics import HealthServer, ServiceMetrics
from depthflow.common.schemas import DeadLetter, dlq_topic
from depthflow.common.settings import HttpSettings, KafkaSettings, PostgresSettings
from depthflow.features.candles import Candle
from depthflow.features.config import FeaturesSettings
from depthflow.features.decode import decode_book, decode_trade
from depthflow.features.latency import UpdateLatency
from depthflow.features.names import FEATURE_SET_VERSION
from depthflow.features.pipeline import SymbolPipeline, Vector
from depthflow.features.scaler import ActiveScaler
from depthflow.features.store import VECTOR_COLUMNS, encode_vector_rows

if TYPE_CHECKING:
    from mode.types.signals import BaseSignalT

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


def _headers_list(headers: Any) -> list[tuple[str, bytes]]:
    if not headers:
        return []
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers)


@dataclass
class Outputs:
    """What one batch produced, before it is made durable and published."""

    vector_rows: list[tuple[Any, ...]] = field(default_factory=list)
    candle_rows: list[tuple[Any, ...]] = field(default_factory=list)
    messages: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = field(default_factory=list)
    letters: list[tuple[bytes, bytes]] = field(default_factory=list)
    compute_ns: list[int] = field(default_factory=list)
    n_vectors: int = 0


class FeaturesProcessor:
    """The I/O around ``SymbolPipeline``: decoding, the table, COPY sinks, publishing,
    metrics, heartbeats and the active scaler. One per worker process."""

    def __init__(
        self,
        app: Any,
        table: Any,
        settings: FeaturesSettings,
        kafka: KafkaSettings,
        pg: PostgresSettings,
        http: HttpSettings,
    ) -> None:
        self.app = app
        self.table = table
        self.settings = settings
        self.kafka = kafka
        self.pg = pg
        self.http = http
        self.hold_us = int(settings.merge_hold_ms * 1000)
        self.min_interval_us = int(settings.min_emit_interval_ms * 1000)
        self.dlq = dlq_topic(SERVICE)
        self._pipes: dict[tuple[str, str], tuple[bytes, SymbolPipeline]] = {}
        self._state_bytes: dict[bytes, int] = {}
        self.scaler: ActiveScaler | None = None
        self._pool: Any = None
        self._vectors: CopyWriter | None = None
        self._candles: CopyWriter | None = None
        self._publisher: Producer | None = None
        self._health: HealthServer | None = None
        self._heartbeat: HeartbeatPublisher | None = None
        self._start_lock = asyncio.Lock()
        self.started = False
        self.vectors_total = 0
        self._rate_mark = (time.monotonic(), 0)
        m = self.metrics = ServiceMetrics(SERVICE)
        self.m_vectors = m.counter("vectors", "feature vectors computed")
        self.m_emitted = m.counter("vectors_emitted", "features.v1 messages published")
        self.m_events = m.counter("events", "input events taken", ["kind"])
        self.m_dead = m.counter("dead_lettered", "messages sent to dlq.features")
        self.m_skipped = m.counter("skipped", "replayed events skipped (offset or seq not newer)")
        self.m_latency = UpdateLatency(
            "depthflow_features_update_latency_seconds",
            "feature computation time per book update",
            (5e-6, 1e-5, 2.5e-5, 5e-5, 7.5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 1e-2),
            m.registry,
        )
        self.m_cost = UpdateLatency(
            "depthflow_features_batch_seconds_per_vector",
            "processing time of a batch (decode to durable) divided by its vectors",
            (1e-5, 2.5e-5, 5e-5, 7.5e-5, 1e-4, 1.5e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 2.5e-2),
            m.registry,
        )
        # resolved once: a labelled child per batch is a dict lookup under a lock
        self.m_events_book = self.m_events.labels("book")
        self.m_events_trade = self.m_events.labels("trade")
        self.m_batch = m.histogram("batch_seconds", "time per processing batch incl. storage")
        self.m_rate = m.gauge("vectors_per_second", "vectors/s since the previous heartbeat")
        self.m_state = m.gauge("state_bytes", "serialised per-symbol state held, bytes")
        self.m_symbols = m.gauge("symbols", "symbols with state in this worker")

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the pool, the COPY writers, the health server and heartbeats (idempotent)."""
        async with self._start_lock:
            if self.started:
                return
            s = self.settings
            self._pool = await create_pool(self.pg)
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
            if s.publisher == "confluent":
                self._publisher = Producer(
                    self.kafka,
                    client_id=f"{s.app_id}-features",
                    linger_ms=s.producer_linger_ms,
                    batch_size=s.producer_batch_bytes,
                    compression_type=s.producer_compression,
                    # the Java client's (and aiokafka's, faust's) key hashing: features.v1
                    # keeps the partitioning it had when faust's producer wrote it
                    partitioner="murmur2_random",
                )
            await self.poll_scaler()
            self._health = HealthServer(
                self.metrics, self.http.host, self.http.port, lambda: self.started
            )
            await self._health.start()
            self._heartbeat = HeartbeatPublisher(
                self._send_status, SERVICE, self._status, s.heartbeat_interval_s, s.topic_status
            )
            await self._heartbeat.start()
            self.metrics.up.set(1)
            self.started = True
            log.info(
                "features worker started",
                extra={"app_id": s.app_id, "health_port": self._health.port},
            )

    async def stop(self) -> None:
        """Release everything ``start`` acquired (the batch path leaves nothing buffered)."""
        if not self.started:
            return
        self.started = False
        self.metrics.up.set(0)
        if self._heartbeat:
            await self._heartbeat.stop()
        if self._health:
            await self._health.stop()
        for writer in (self._vectors, self._candles):
            if writer:
                await writer.flush()
        if self._publisher is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._publisher.flush)
        if self._pool:
            await self._pool.close()

    async def _send_status(self, topic: str, value: bytes, key: bytes) -> None:
        await self.app.producer.send_and_wait(topic, key, value, None, None, None)

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
            "scaler_version": self.scaler.version if self.scaler else "",
        }
        p50, p99 = self.m_latency.percentiles_us(50, 99)
        c50, c99 = self.m_cost.percentiles_us(50, 99)
        detail["update_us_p50"], detail["update_us_p99"] = p50, p99
        detail["batch_us_per_vector_p50"], detail["batch_us_per_vector_p99"] = c50, c99
        return ("running" if self.started else "stopped"), self.started, detail

    def on_partitions_changed(self) -> None:
        """Forget cached pipelines: after a rebalance the table is the truth."""
        self._pipes.clear()
        self._state_bytes.clear()

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

    # -- the batch path ------------------------------------------------------------------

    def _pipeline(self, exchange: str, symbol: str) -> tuple[bytes, SymbolPipeline]:
        hit = self._pipes.get((exchange, symbol))
        if hit is not None:
            return hit
        key = f"{exchange}:{symbol}".encode()
        raw = self.table.data.get(key)
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

    async def handle(self, events: Sequence[Any]) -> int:
        """Process one batch of faust events end to end; returns vectors emitted."""
        if not self.started:
            await self.start()
        t0 = time.perf_counter()
        s = self.settings
        topic_book = s.topic_book
        out = Outputs()
        touched: dict[bytes, tuple[SymbolPipeline, int]] = {}
        pipeline = self._pipeline
        n_book = n_trade = skipped = 0
        for event in events:
            msg = event.message
            raw = msg.value
            try:
                if msg.topic == topic_book:
                    book = decode_book(raw)
                    key, pipe = pipeline(book.exchange, book.symbol)
                    trace = ""
                    for name, value in msg.headers or ():
                        if name == TRACE_HEADER and value:
                            trace = bytes(value).decode(errors="replace")
                            break
                    if not pipe.add_book(
                        msg.offset,
                        book.seq,
                        book.exchange_ts_us,
                        book.local_ts_us,
                        book.bids,
                        book.asks,
                        trace or book.trace_id,
                    ):
                        skipped += 1
                    n_book += 1
                else:
                    trade = decode_trade(raw)
                    key, pipe = pipeline(trade.exchange, trade.symbol)
                    if not pipe.add_trade(
                        msg.offset, trade.price, trade.qty, trade.is_buy, trade.exchange_ts_us
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
        # durable first ...
        if s.store_vectors and out.vector_rows:
            assert self._vectors is not None
            await self._vectors.add_many(out.vector_rows)
            await self._vectors.flush()
        if out.candle_rows:
            assert self._candles is not None
            await self._candles.add_many(out.candle_rows)
            await self._candles.flush()
        # ... then published and checkpointed (faust flushes its producer before committing)
        await self._publish(out.messages)
        send = self.app.producer.send
        for key, value in out.letters:
            await send(s.topic_dlq, key, value, None, None, None)
        for key, (pipe, partition) in touched.items():
            # zlib: pending books (while one topic runs ahead) make the JSON large
            state = zlib.compress(dumps(pipe.to_state()), 1)
            self.table.data[key] = state
            self.table.send_changelog(partition, key, state)
            self._state_bytes[key] = len(state)
        self._observe(out, n_book, n_trade, skipped, time.perf_counter() - t0)
        return len(out.messages)

    async def _publish(self, messages: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]) -> None:
        """Publish the batch's features.v1 messages; with the confluent publisher, return only
        once the broker has them (the batch is acknowledged, and so committable, after)."""
        topic = self.settings.topic_features
        pub = self._publisher
        if pub is None:
            send = self.app.producer.send
            for key, value, headers in messages:
                await send(topic, key, value, None, None, headers)
            return
        if not messages:
            return
        produce = pub.produce
        for key, value, headers in messages:
            produce(topic, value, key, headers)
        await asyncio.get_running_loop().run_in_executor(None, pub.flush)

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


def build_app(
    settings: FeaturesSettings, kafka: KafkaSettings, pg: PostgresSettings, http: HttpSettings
) -> tuple[Any, FeaturesProcessor]:
    """A configured faust app and its processor; nothing connects until a worker starts."""
    import faust

    conf: dict[str, Any] = {}
    if kafka.sasl_mechanism:
        conf["broker_credentials"] = faust.SASLCredentials(
            username=kafka.sasl_username or "",
            password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else "",
            mechanism=kafka.sasl_mechanism,
            ssl_context=kafka.aiokafka_config().get("ssl_context"),
        )
    elif kafka.security_protocol == "SSL":
        conf["broker_credentials"] = kafka.aiokafka_config()["ssl_context"]
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{h.strip()}" for h in kafka.bootstrap_servers.split(",")],
        store=settings.store,
        topic_partitions=settings.partitions,
        topic_replication_factor=kafka.replication_factor,
        web_enabled=False,
        autodiscover=False,
        broker_commit_interval=settings.commit_interval_s,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 4),
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger=settings.producer_linger_ms / 1000.0,
        producer_max_batch_size=settings.producer_batch_bytes,
        producer_max_request_size=max(1_000_000, settings.producer_batch_bytes),
        producer_compression_type=(
            None if settings.producer_compression == "none" else settings.producer_compression
        ),
        stream_wait_empty=False,
        **conf,
    )
    source = app.topic(
        settings.topic_book, settings.topic_trades, key_serializer="raw", value_serializer="raw"
    )
    table = app.Table(
        STATE_TABLE, default=None, partitions=settings.partitions, key_type=bytes, value_type=bytes
    )
    processor = FeaturesProcessor(app, table, settings, kafka, pg, http)

    async def features(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_max, settings.batch_within_s):
            await processor.handle(events)

    app.agent(source, name="features")(features)

    async def poll_scaler() -> None:
        await processor.poll_scaler()

    app.timer(settings.scaler_poll_s)(poll_scaler)

    async def start_resources() -> None:
        await processor.start()
        if settings.gc_freeze:
            tune_gc(settings.gc_gen0_threshold)

    app.task(start_resources)

    # mode's SignalHandlerT: the sender positionally, ``signal`` always passed by keyword
    async def on_revoked(
        _sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
    ) -> None:
        processor.on_partitions_changed()

    async def on_shutdown(
        _sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
    ) -> None:
        with contextlib.suppress(Exception):
            await processor.stop()

    app.on_partitions_revoked.connect(on_revoked)
    app.on_partitions_assigned.connect(on_revoked)
    app.on_before_shutdown.connect(on_shutdown)
    return app, processor


def prepare(settings: FeaturesSettings, kafka: KafkaSettings, pg: PostgresSettings) -> None:
    """Migrate the schema and create the topics (faust needs its sources to exist)."""
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


def run_worker(
    settings: FeaturesSettings, kafka: KafkaSettings, pg: PostgresSettings, http: HttpSettings
) -> None:
    """Prepare, then run a faust worker in this process until SIGTERM/SIGINT."""
    import faust

    prepare(settings, kafka, pg)
    app, _processor = build_app(settings, kafka, pg, http)
    worker = faust.Worker(
        app, loglevel=settings.log_level, redirect_stdouts=False, override_logging=False
    )
    worker.execute_from_commandline()
