"""The features service: a faust-streaming worker from md.book + md.trades to features.v1.

``build_app`` makes the faust app (no module-level app): one agent consumes both source
topics (keyed ``{exchange}:{symbol}``, co-partitioned) in ``stream.take_events`` batches and
keeps one ``SymbolPipeline`` per symbol in a changelog-backed table, so a restarted or
rebalanced worker resumes from the changelog without a warm-up gap.

Per batch, in this order (at-least-once in, exactly-once-ish out):

1. decode (garbage → ``dlq.features`` with the raw bytes and the reason), merge, compute;
2. store the vectors and closed candles with batched idempotent COPY, wait until durable;
3. publish ``features.v1`` and the dead letters and wait for the broker's acknowledgement;
4. write the changed symbols' state to the changelog and wait for the broker's
   acknowledgement (the checkpoint), then update the table;
5. return, which acks the batch; faust commits acked offsets on its timer.

So a committed offset always lies behind a durable checkpoint, and a checkpoint always lies
behind durable vectors: a crash anywhere replays from the last commit, the restored state
knows the last Kafka offset it took from each topic and the last book seq, replayed events
are skipped or recomputed to the same numbers, and the stored rows' natural keys absorb the
repeat. A batch that fails is retried from the last checkpoint and never acked until it
succeeds; a batch interrupted by shutdown or a rebalance is never acked (``withhold_acks``),
nor one in which a source partition skipped an offset: the partition is rewound instead
(``FeaturesProcessor._contiguous``), so no book is ever taken after a later one of its symbol.
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
# retry backoff of a failed batch (seconds): first, cap
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0
# longest wait for the broker to acknowledge a batch's changelog records before the batch is
# retried (the producer retries by itself meanwhile; a broker outage just waits here)
CHECKPOINT_TIMEOUT_S = 120.0


class BatchAbandoned(Exception):
    """The partitions moved while the batch ran: it is left to the next owner (replayed from
    the committed offset) and must not be acknowledged."""


class OffsetGap(BatchAbandoned):
    """A source partition's offsets jumped past the next one this worker must take."""


# a hole that persists this long (rewinding meanwhile) is taken as real: the offsets are gone
# from the source topic (retention, compaction, transaction markers), not merely undelivered
GAP_ACCEPT_AFTER_S = 30.0
# a rewound partition not taken past its target within this long is sought again: messages
# fetched before the seek and delivered after it move faust's read offset past the target,
# and faust then drops the re-fetched ones
RESEEK_AFTER_S = 2.0


def withhold_acks(events: Sequence[Any]) -> None:
    """Make sure faust never acknowledges these events (so never commits past them).

    ``Stream.take_events`` acks the batch it yielded in a ``finally``: also when the agent's
    body raised or was cancelled (the generator is closed later). A batch that did not
    complete must not be committed, so its messages are marked acked beforehand, which makes
    faust's own ack a no-op: the offsets stay uncommitted and the batch is replayed by the
    next owner of the partition (after a restart or a rebalance, from the committed offset).
    """
    for event in events:
        event.message.acked = True


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
        # held for a whole batch: ``stop`` waits for the one in flight before closing
        self._batch_lock = asyncio.Lock()
        # bumped by every revocation/assignment: a batch that spans one is abandoned
        self._generation = 0
        # per source (topic, partition): the next offset to take, of the batches done so far
        self._next_offset: dict[tuple[str, int], int] = {}
        # (topic, partition, expected offset) -> monotonic time the hole was first seen
        self._gaps: dict[tuple[str, int, int], float] = {}
        # partitions rewound and not yet taken past their target: (topic, partition) -> offset
        self._rewinds: dict[tuple[str, int], int] = {}
        self._rewound_at = 0.0
        self._reseeker: asyncio.Task[None] | None = None
        self.started = False
        self.closed = False
        self.vectors_total = 0
        self._rate_mark = (time.monotonic(), 0)
        m = self.metrics = ServiceMetrics(SERVICE)
        self.m_vectors = m.counter("vectors", "feature vectors computed")
        self.m_emitted = m.counter("vectors_emitted", "features.v1 messages published")
        self.m_events = m.counter("events", "input events taken", ["kind"])
        self.m_dead = m.counter("dead_lettered", "messages sent to dlq.features")
        self.m_skipped = m.counter("skipped", "replayed events skipped (offset or seq not newer)")
        self.m_retries = m.counter("batch_retries", "failed batches retried from the checkpoint")
        self.m_abandoned = m.counter(
            "batches_abandoned", "batches left unacknowledged: a rebalance happened during them"
        )
        self.m_gaps = m.counter(
            "offset_gaps", "batches refused: a source partition skipped an offset (rewound)"
        )
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
            if getattr(self.app, "consumer", None) is not None:
                self._reseeker = asyncio.ensure_future(self._reseek_loop())
            self.metrics.up.set(1)
            self.started = True
            log.info(
                "features worker started",
                extra={"app_id": s.app_id, "health_port": self._health.port},
            )

    async def stop(self) -> None:
        """Let the batch in flight finish (durable and checkpointed), then release everything
        ``start`` acquired; later batches are never processed nor acknowledged."""
        self.closed = True
        async with self._batch_lock:
            pass
        if not self.started:
            return
        self.started = False
        self.metrics.up.set(0)
        if self._reseeker is not None:
            self._reseeker.cancel()
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
        """Forget cached pipelines: after a rebalance the table is the truth. A batch in
        flight across this point is abandoned (see ``handle``)."""
        self._generation += 1
        self._next_offset.clear()
        self._rewinds.clear()
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
        out.n_vectors += len(vectors)

    async def handle(self, events: Sequence[Any]) -> int:
        """Process one batch of faust events end to end; returns vectors emitted.

        Returns only once the batch's vectors are durable, its messages and dead letters are
        acknowledged by the broker and the changed symbols' state is checkpointed on the
        changelog (acknowledged): only then may the batch be acked. A failure is retried with
        backoff from the last checkpoint (a partial attempt is recomputed to the same rows and
        absorbed by the natural keys), never skipped. Raises ``BatchAbandoned`` when a
        rebalance happened during the batch; never returns once the processor is stopped
        (waits to be cancelled): in both cases the caller must not acknowledge the events."""
        attempt = 0
        while not self.closed:
            async with self._batch_lock:
                if self.closed:
                    break
                try:
                    return await self._handle_once(events)
                except OffsetGap as gap:
                    self._forget()
                    self.m_gaps.inc()
                    await self._rewind(events, gap)
                    raise
                except BatchAbandoned:
                    self._forget()
                    self.m_abandoned.inc()
                    log.warning("rebalance during a batch; left to the partitions' owner")
                    raise
                except Exception as exc:
                    # the attempt may have advanced cached pipelines past what is stored:
                    # back to the last checkpoint (the table), then the same events again
                    self._forget()
                    attempt += 1
                    self.m_retries.inc()
                    delay = min(RETRY_FIRST_S * 2 ** (attempt - 1), RETRY_MAX_S)
                    log.error(
                        "batch failed; retrying from the last checkpoint",
                        exc_info=exc,
                        extra={"attempt": attempt, "events": len(events), "retry_in_s": delay},
                    )
                except BaseException:
                    self._forget()
                    raise
            await asyncio.sleep(delay)  # outside the lock: ``stop`` need not wait for it
        # stopped: the batch is left to the next run; wait to be cancelled by the shutdown
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable")

    def _forget(self) -> None:
        self._pipes.clear()
        self._state_bytes.clear()

    def _contiguous(self, events: Sequence[Any]) -> dict[tuple[str, int], int]:
        """Check that every source partition continues exactly where this worker stopped
        taking it (or, after an assignment, at the committed offset faust seeked to); returns
        the next offsets after the batch, or raises ``OffsetGap``.

        faust can hand over a partition's messages with a hole around a rebalance (messages
        of the old generation are dropped, a prefetched later one arrives first: faust-
        streaming #216/#221) and then commits straight over a one-offset hole at the head of
        its acked offsets (#606). A later book of a symbol taken before the missing one makes
        the missing one look replayed (offset/seq not newer) when it finally comes: it would
        be skipped and never get a vector. So nothing after a hole is processed."""
        consumer = getattr(self.app, "consumer", None)
        committed: Any = getattr(consumer, "_committed_offset", None) or {}
        nxt = dict(self._next_offset)
        for event in events:
            msg = event.message
            tp = (msg.topic, msg.partition)
            expected = nxt.get(tp)
            if expected is None:
                expected = committed.get(tp)
            offset = msg.offset
            if expected is not None and offset > expected:
                first = self._gaps.setdefault((tp[0], tp[1], expected), time.monotonic())
                if time.monotonic() - first < GAP_ACCEPT_AFTER_S:
                    raise OffsetGap(f"{tp[0]}[{tp[1]}] expected offset {expected}, got {offset}")
                log.error(
                    "source offsets missing; continuing after them",
                    extra={"topic": tp[0], "partition": tp[1], "expected": expected, "got": offset},
                )
                expected = offset
            if expected is None or offset >= expected:
                nxt[tp] = offset + 1
        return nxt

    async def _rewind(self, events: Sequence[Any], gap: OffsetGap) -> None:
        """Seek every partition of the refused batch back to the next offset to take: faust
        delivers them again (what was already taken is skipped as a replay)."""
        consumer = getattr(self.app, "consumer", None)
        if consumer is None:
            return
        committed: Any = getattr(consumer, "_committed_offset", None) or {}
        targets: dict[tuple[str, int], int] = {}
        for event in events:
            msg = event.message
            tp = (msg.topic, msg.partition)
            if tp not in targets:
                target = self._next_offset.get(tp)
                if target is None:
                    target = committed.get(tp)
                targets[tp] = msg.offset if target is None else min(target, msg.offset)
        self._rewinds.update(targets)
        await self._seek(targets)
        log.warning(
            "source offsets skipped; batch refused and partitions rewound",
            extra={"gap": str(gap), "rewound": {f"{t}[{p}]": o for (t, p), o in targets.items()}},
        )

    async def _seek(self, targets: dict[tuple[str, int], int]) -> None:
        from faust.types import TP

        self._rewound_at = time.monotonic()
        try:
            # seek_wait: in the consumer's own thread (aiokafka runs there; a seek from this
            # thread corrupts its fetcher); returns once the new positions are set
            await self.app.consumer.seek_wait(
                {TP(t, p): offset for (t, p), offset in targets.items()}
            )
        except Exception as exc:  # e.g. the partition was revoked meanwhile
            log.warning("rewinding a source partition failed", extra={"error": repr(exc)})

    async def _reseek_loop(self) -> None:
        """Seek again the partitions a rewind has not brought back (see RESEEK_AFTER_S)."""
        while True:
            await asyncio.sleep(RESEEK_AFTER_S / 2)
            if self._rewinds and time.monotonic() - self._rewound_at >= RESEEK_AFTER_S:
                async with self._batch_lock:
                    if self._rewinds and not self.closed:
                        log.info("rewinding again", extra={"partitions": len(self._rewinds)})
                        await self._seek(dict(self._rewinds))

    async def _handle_once(self, events: Sequence[Any]) -> int:
        if not self.started:
            await self.start()
        t0 = time.perf_counter()
        generation = self._generation
        next_offsets = self._contiguous(events)
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
        # ... then published (broker-acknowledged) ...
        await self._publish(out.messages)
        if out.letters:
            send = self.app.producer.send
            sent = [await send(s.topic_dlq, k, v, None, None, None) for k, v in out.letters]
            await asyncio.gather(*sent)
        # ... then checkpointed: the state goes to the changelog and the broker acknowledges
        # it before the batch may be acked. faust's own path (``send_changelog``) only
        # buffers the record, and faust's flush before a commit gives up after 0.1 s without
        # a send completing, so offsets could be committed past a checkpoint that a crash
        # then loses; the restarted worker would skip the events in between, including books
        # that were waiting in the merge buffer: their vectors would never be stored.
        if generation != self._generation:
            raise BatchAbandoned
        table = self.table
        states: list[tuple[bytes, bytes]] = []
        pending: list[Any] = []
        for key, (pipe, partition) in touched.items():
            # zlib: pending books (while one topic runs ahead) make the JSON large
            state = zlib.compress(dumps(pipe.to_state()), 1)
            states.append((key, state))
            # faust's FutureMessage: resolved once the broker has acknowledged the record
            fut = table.send_changelog(partition, key, state)
            if fut is not None:
                pending.append(fut)
        if pending:
            done, not_done = await asyncio.wait(pending, timeout=CHECKPOINT_TIMEOUT_S)
            if not_done:
                raise TimeoutError(f"{len(not_done)} changelog record(s) not acknowledged")
            for fut in done:
                fut.result()  # a failed send raises here
        if generation != self._generation:
            raise BatchAbandoned
        for key, state in states:
            table.data[key] = state
            self._state_bytes[key] = len(state)
        self._next_offset = next_offsets
        if self._rewinds:
            self._rewinds = {
                tp: t for tp, t in self._rewinds.items() if next_offsets.get(tp, t) <= t
            }
        if self._gaps:
            self._gaps = {g: t for g, t in self._gaps.items() if g[2] >= next_offsets.get(g[:2], 0)}
        self._observe(out, n_book, n_trade, skipped, time.perf_counter() - t0)
        return len(out.messages)

    async def _publish(self, messages: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]) -> None:
        """Publish the batch's features.v1 messages; with the confluent publisher, return only
        once the broker has them (the batch is acknowledged, and so committable, after)."""
        topic = self.settings.topic_features
        pub = self._publisher
        if pub is None:
            send = self.app.producer.send
            sent = [
                await send(topic, key, value, None, None, headers)
                for key, value, headers in messages
            ]
            if sent:
                await asyncio.gather(*sent)
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
        self.vectors_total += out.n_vectors
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
            try:
                await processor.handle(events)
            except BatchAbandoned:
                withhold_acks(events)
            except BaseException:
                # cancelled (shutdown) mid-batch: not done, so never committed
                withhold_acks(events)
                raise

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
