"""Where a backtest's events come from: Kafka topics read as a *reader*, md.depth.raw rebuilt
through the collector's own sync machines, or Tardis CSV files.

The Kafka reader is a confluent-kafka ``Consumer`` used without a consumer group's state:
``offsets_for_times`` finds each partition's first record at or after ``from - margin``
(Kafka record time = producer time), the partitions are ``assign``-ed there, read up to the
high watermark seen at start (or past ``to + margin``), and nothing is ever committed
(``enable.auto.commit`` off, no commit call) — a backtest never moves a live group's offsets.
Records are then kept by *exchange* time: ``from - warmup <= ts < to``.

A loaded range is held in memory, per symbol, as the recorded streams (``SymbolStreams``);
``events.merge_symbols`` turns them into one event-time stream.
"""

from __future__ import annotations

import csv
import gzip
import io
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from depthflow.backtest.events import BookEvent, HealthEvent, SymbolStreams, TradeEvent, finalize
from depthflow.common.errors import DepthflowError
from depthflow.common.settings import KafkaSettings

Progress = Callable[[int, int], None]  # (records read so far, records expected)


class InputError(DepthflowError):
    """The requested input does not exist or cannot be read."""


@dataclass
class LoadStats:
    """What reading the input did (reported in metrics.json)."""

    records: int = 0
    kept: int = 0
    other_symbols: int = 0
    out_of_range: int = 0
    undecodable: int = 0
    per_topic: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Range:
    """Exchange-time window ``[start_us, end_us)`` (start includes the warm-up)."""

    start_us: int
    end_us: int

    def __contains__(self, ts: object) -> bool:
        return isinstance(ts, int) and self.start_us <= ts < self.end_us


# ---------------------------------------------------------------------------- Kafka


def read_topic_range(
    kafka: KafkaSettings,
    topic: str,
    from_ms: int,
    to_ms: int,
    *,
    poll_timeout_s: float = 5.0,
    progress: Progress | None = None,
) -> Iterator[tuple[bytes | None, bytes | None]]:
    """(key, value) of every record of ``topic`` whose Kafka timestamp is in
    ``[from_ms, to_ms]`` (approximately: a partition stops at its first record past
    ``to_ms``), partition by partition in offset order. Never commits anything."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            **kafka.confluent_config(),
            # librdkafka wants a group id; it is never joined (assign) nor committed to.
            "group.id": f"depthflow-backtest-reader-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10)
        found = meta.topics.get(topic)
        if found is None or found.error is not None:
            raise InputError(f"topic {topic!r} does not exist")
        parts = sorted(found.partitions)
        starts = consumer.offsets_for_times(
            [TopicPartition(topic, p, max(0, from_ms)) for p in parts], timeout=10
        )
        ends: dict[int, int] = {}
        assign = []
        for tp in starts:
            part = TopicPartition(topic, tp.partition)
            _lo, hi = consumer.get_watermark_offsets(part, timeout=10)
            if tp.offset < 0 or tp.offset >= hi:
                continue  # nothing at or after from_ms
            ends[tp.partition] = hi
            assign.append(TopicPartition(topic, tp.partition, tp.offset))
        expected = sum(ends[tp.partition] - tp.offset for tp in assign)
        if not assign:
            return
        consumer.assign(assign)
        done: set[int] = set()
        read = 0
        while len(done) < len(assign):
            batch = consumer.consume(10_000, timeout=poll_timeout_s)
            if not batch:
                raise InputError(
                    f"{topic}: no record within {poll_timeout_s}s before the partitions' ends"
                )
            for msg in batch:
                err = msg.error()
                if err is not None:
                    raise InputError(f"{topic}: {err}")
                p = int(msg.partition() or 0)
                if p in done:
                    continue
                off = int(msg.offset() or 0)
                if off >= ends[p]:
                    done.add(p)
                    continue
                read += 1
                _kind, ts_ms = msg.timestamp()
                if ts_ms > to_ms:
                    done.add(p)
                    continue
                yield msg.key(), msg.value()
                if off + 1 >= ends[p]:
                    done.add(p)
            if progress is not None:
                progress(read, expected)
    finally:
        consumer.close()


def _key(exchange: str, symbol: str) -> str:
    return f"{exchange}:{symbol}"


def _streams(out: dict[str, SymbolStreams], key: str) -> SymbolStreams:
    s = out.get(key)
    if s is None:
        s = out[key] = SymbolStreams(key)
    return s


def book_from_json(obj: dict[str, Any]) -> BookEvent:
    """An md.book value (decoded JSON) as a replay event; KeyError/TypeError if malformed."""
    ex, sym = obj["exchange"], obj["symbol"]
    bids, asks = obj["bids"], obj["asks"]
    if not isinstance(bids, list) or not isinstance(asks, list) or obj["schema_version"] != 1:
        raise TypeError("not an md.book v1 value")
    return BookEvent(
        _key(ex, sym),
        ex,
        sym,
        int(obj["exchange_ts_us"]),
        int(obj["local_ts_us"]),
        int(obj["seq"]),
        int(obj["prev_seq"]),
        bids,
        asks,
        str(obj.get("trace_id", "")),
    )


def trade_from_json(obj: dict[str, Any]) -> TradeEvent:
    """An md.trades value as a replay event; KeyError/TypeError/ValueError if malformed."""
    ex, sym = obj["exchange"], obj["symbol"]
    side = obj["side"]
    if side not in ("buy", "sell") or obj["schema_version"] != 1:
        raise ValueError(f"bad trade side {side!r}")
    return TradeEvent(
        _key(ex, sym),
        ex,
        sym,
        int(obj["exchange_ts_us"]),
        int(obj["local_ts_us"]),
        float(obj["price"]),
        float(obj["qty"]),
        side == "buy",
    )


def health_from_json(obj: dict[str, Any]) -> HealthEvent:
    ex, sym = obj["exchange"], obj["symbol"]
    ts = int(obj["ts_us"])
    return HealthEvent(_key(ex, sym), ex, sym, ts, ts, str(obj["kind"]), str(obj.get("detail", "")))


def load_kafka(
    kafka: KafkaSettings,
    topics: dict[str, str],
    keys: set[str],
    window: Range,
    margin_us: int,
    *,
    poll_timeout_s: float = 5.0,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[list[SymbolStreams], LoadStats]:
    """md.book / md.trades / md.health (``topics`` keys ``book``, ``trades``, ``health``;
    ``health`` may be empty) for the symbols ``keys`` (``exchange:SYMBOL``)."""
    out: dict[str, SymbolStreams] = {}
    stats = LoadStats()
    from_ms = (window.start_us - margin_us) // 1000
    to_ms = (window.end_us + margin_us) // 1000
    decoders: dict[str, Callable[[dict[str, Any]], Any]] = {
        "book": book_from_json,
        "trades": trade_from_json,
        "health": health_from_json,
    }
    wanted = {k.encode() for k in keys}
    for role in ("book", "trades", "health"):
        topic = topics.get(role)
        if not topic:
            continue
        decode = decoders[role]
        cb = None
        if progress is not None:
            cb = _bind(progress, topic)
        n = 0
        for key, value in read_topic_range(
            kafka, topic, from_ms, to_ms, poll_timeout_s=poll_timeout_s, progress=cb
        ):
            stats.records += 1
            if key not in wanted:
                stats.other_symbols += 1
                continue
            try:
                ev = decode(orjson.loads(value))  # type: ignore[arg-type]
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                stats.undecodable += 1  # the live services dead-letter these too
                continue
            s = _streams(out, ev.key)
            if role == "health":
                # placed on the exchange clock later; keep a margin on the wall clock
                if not (window.start_us - margin_us <= ev.local_ts < window.end_us + margin_us):
                    stats.out_of_range += 1
                    continue
                s.health.append(ev)
            elif ev.ts in window:
                (s.books if role == "book" else s.trades).append(ev)
            else:
                stats.out_of_range += 1
                continue
            n += 1
        stats.per_topic[topic] = n
    return _finish(out, window, stats), stats


def _bind(progress: Callable[[str, int, int], None], topic: str) -> Progress:
    def cb(read: int, expected: int) -> None:
        progress(topic, read, expected)

    return cb


def _finish(out: dict[str, SymbolStreams], window: Range, stats: LoadStats) -> list[SymbolStreams]:
    result = []
    for key in sorted(out):
        s = finalize(out[key])
        s.health = [h for h in s.health if h.ts in window]
        for i, h in enumerate(s.health):
            h.idx = i
        stats.kept += len(s.books) + len(s.trades) + len(s.health)
        result.append(s)
    return result


# ---------------------------------------------------------------------------- md.depth.raw


def streams_from_depth_raw(
    values: Iterable[bytes], keys: set[str], window: Range, stats: LoadStats, book_levels: int = 20
) -> list[SymbolStreams]:
    """Rebuild md.book and md.trades from md.depth.raw values with the collector's parsers and
    sync machines (``collector.tardis.rebuild_from_depth_raw``). A resync (the first book
    after a gap, written as an ``is_snapshot`` block) becomes a ``resync`` health event right
    after the last book before it."""
    from depthflow.collector.events import ParseError
    from depthflow.collector.events import TradeEvent as RawTrade
    from depthflow.collector.parsers import parse_binance_frame, parse_bybit_frame
    from depthflow.collector.tardis import OUR_EXCHANGE, rebuild_from_depth_raw

    out: dict[str, SymbolStreams] = {}
    wanted_bytes = keys

    def depth_values() -> Iterator[dict[str, Any]]:
        for raw in values:
            stats.records += 1
            try:
                msg = orjson.loads(raw)
                key = _key(msg["exchange"], msg["symbol"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                stats.undecodable += 1
                continue
            if key not in wanted_bytes:
                stats.other_symbols += 1
                continue
            if msg.get("kind") == "trade":
                parse = parse_binance_frame if msg["exchange"] == "binance" else parse_bybit_frame
                try:
                    parsed = parse(msg["payload"])
                except ParseError:
                    stats.undecodable += 1
                    continue
                if isinstance(parsed, list):
                    s = _streams(out, key)
                    for t in parsed:
                        if isinstance(t, RawTrade) and t.exchange_ts_us in window:
                            s.trades.append(
                                TradeEvent(
                                    key,
                                    t.exchange,
                                    t.symbol,
                                    t.exchange_ts_us,
                                    int(msg["recv_ts_us"]),
                                    t.price,
                                    t.qty,
                                    t.side == "buy",
                                )
                            )
                continue
            yield msg

    seen: dict[str, BookEvent] = {}
    for state, rows in rebuild_from_depth_raw(depth_values(), depth=book_levels):
        if not state.bids or not state.asks:
            continue  # the collector publishes no book with an empty side
        ex = OUR_EXCHANGE.get(state.exchange, state.exchange)
        key = _key(ex, state.symbol)
        book = BookEvent(
            key,
            ex,
            state.symbol,
            state.timestamp,
            state.local_timestamp,
            state.update_id,
            0,
            state.bids,
            state.asks,
        )
        prev = seen.get(key)
        seen[key] = book
        if book.ts not in window:
            continue
        s = _streams(out, key)
        if prev is not None and rows and rows[0][4] == "true":
            s.health.append(
                HealthEvent(key, ex, state.symbol, prev.ts, prev.local_ts, "resync", placed=True)
            )
        s.books.append(book)
    return _finish(out, window, stats)


# ---------------------------------------------------------------------------- Tardis CSV

TARDIS_TRADES_COLUMNS = ("exchange", "symbol", "timestamp", "local_timestamp", "id", "side")


def _open(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def tardis_kind(path: Path) -> str:
    """``incremental_book_L2``, ``book_snapshot_25`` or ``trades``, from the header."""
    with _open(path) as fh:
        header = next(csv.reader(fh), [])
    cols = set(header)
    if {"is_snapshot", "side", "price", "amount"} <= cols:
        return "incremental_book_L2"
    if "asks[0].price" in cols and "bids[0].price" in cols:
        return "book_snapshot_25"
    if set(TARDIS_TRADES_COLUMNS) <= cols and {"price", "amount"} <= cols:
        return "trades"
    raise InputError(f"{path}: not a Tardis incremental_book_L2, book_snapshot_25 or trades CSV")


BookRow = tuple[str, str, int, int, list[Any], list[Any]]


def _snapshot_rows(path: Path, levels: int) -> Iterator[BookRow]:
    with _open(path) as fh:
        for rec in csv.DictReader(fh):
            bids: list[tuple[float, float]] = []
            asks: list[tuple[float, float]] = []
            for side, out in (("bids", bids), ("asks", asks)):
                for i in range(levels):
                    p = rec.get(f"{side}[{i}].price", "")
                    q = rec.get(f"{side}[{i}].amount", "")
                    if not p or not q:
                        break
                    out.append((float(p), float(q)))
            yield (
                rec["exchange"],
                rec["symbol"],
                int(rec["timestamp"]),
                int(rec["local_timestamp"]),
                bids,
                asks,
            )


def load_tardis(
    paths: Iterable[Path], keys: set[str], window: Range, book_levels: int = 20
) -> tuple[list[SymbolStreams], LoadStats]:
    """Books from ``incremental_book_L2`` (rebuilt with the collector's Tardis importer) or
    ``book_snapshot_25`` files, trades from Tardis ``trades`` files. Tardis exchange ids
    (``binance-futures``) map to ours; a book's ``seq`` is its ``local_timestamp``, as the
    collector's import publishes it. Tardis files carry no health stream."""
    from depthflow.collector.tardis import OUR_EXCHANGE, books_from_incremental

    out: dict[str, SymbolStreams] = {}
    stats = LoadStats()
    for path in paths:
        kind = tardis_kind(path)
        n = 0
        if kind == "trades":
            with _open(path) as fh:
                for rec in csv.DictReader(fh):
                    stats.records += 1
                    ex = OUR_EXCHANGE.get(rec["exchange"], rec["exchange"])
                    key = _key(ex, rec["symbol"])
                    if key not in keys:
                        stats.other_symbols += 1
                        continue
                    ts = int(rec["timestamp"])
                    if ts not in window:
                        stats.out_of_range += 1
                        continue
                    try:
                        price, qty = float(rec["price"]), float(rec["amount"])
                    except ValueError:
                        stats.undecodable += 1
                        continue
                    _streams(out, key).trades.append(
                        TradeEvent(
                            key,
                            ex,
                            rec["symbol"],
                            ts,
                            int(rec["local_timestamp"]),
                            price,
                            qty,
                            rec["side"] == "buy",
                        )
                    )
                    n += 1
        else:
            if kind == "incremental_book_L2":
                rows: Iterator[BookRow] = (
                    (b.exchange, b.symbol, b.timestamp, b.local_timestamp, b.bids, b.asks)
                    for b in books_from_incremental(path, book_levels)
                )
            else:
                rows = _snapshot_rows(path, book_levels)
            for tex, sym, ts, local_ts, bids, asks in rows:
                stats.records += 1
                ex = OUR_EXCHANGE.get(tex, tex)
                key = _key(ex, sym)
                if key not in keys:
                    stats.other_symbols += 1
                    continue
                if ts not in window:
                    stats.out_of_range += 1
                    continue
                if not bids or not asks:
                    continue
                _streams(out, key).books.append(
                    BookEvent(key, ex, sym, ts, local_ts, local_ts, 0, bids, asks)
                )
                n += 1
        stats.per_topic[str(path)] = n
    return _finish(out, window, stats), stats
