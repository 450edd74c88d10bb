"""Tardis-compatible CSV: ``quotes`` (orderbook_data), ``book_snapshot_25`` and
``incremental_book_L2`` (rebuilt from md.depth.raw) out; ``quotes`` and
``incremental_book_L2`` back in as a source (backfill).

Tardis ``quotes`` columns: exchange, symbol, timestamp, local_timestamp, ask_amount,
ask_price, bid_price, bid_amount (microseconds) — exactly orderbook_data's seed columns.
Imported rows use ``local_timestamp`` as their ``update_id`` (Tardis quotes carry no
exchange sequence), so importing the same file twice adds nothing.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql

from depthflow.collector.book import LocalBook
from depthflow.collector.events import DepthUpdate, ParseError
from depthflow.collector.feed import Publisher
from depthflow.collector.parsers import (
    parse_binance_frame,
    parse_binance_snapshot,
    parse_bybit_frame,
    parse_bybit_snapshot,
)
from depthflow.collector.sync import RESYNC_OUTCOMES, BinanceBookSync, BybitBookSync

QUOTES_COLUMNS = (
    "exchange",
    "symbol",
    "timestamp",
    "local_timestamp",
    "ask_amount",
    "ask_price",
    "bid_price",
    "bid_amount",
)
# one orderbook_data row as imported: QUOTES_COLUMNS, then update_id
QuoteRow = tuple[str, str, int, int, float | None, float | None, float | None, float | None, int]


def export_quotes(dsn: str, schema: str, out: Path, symbol: str | None = None) -> int:
    """Write orderbook_data (optionally one symbol) as a Tardis quotes CSV; returns rows."""
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in QUOTES_COLUMNS)
    query = sql.SQL("SELECT {} FROM {}.orderbook_data").format(cols, sql.Identifier(schema))
    params: tuple[str, ...] = ()
    if symbol:
        query += sql.SQL(" WHERE symbol = %s")
        params = (symbol,)
    query += sql.SQL(" ORDER BY exchange, symbol, timestamp, update_id")
    rows = 0
    with psycopg.connect(dsn) as conn, out.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(QUOTES_COLUMNS)
        for row in conn.execute(query, params):
            writer.writerow(
                ["" if v is None else repr(v) if isinstance(v, float) else v for v in row]
            )
            rows += 1
    return rows


def _open(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def _float(value: str) -> float | None:
    return float(value) if value != "" else None


def import_quotes(dsn: str, schema: str, path: Path, batch: int = 10_000) -> int:
    """Load a Tardis quotes CSV into orderbook_data idempotently; returns rows read."""
    read = 0
    target = sql.SQL("{}.orderbook_data").format(sql.Identifier(schema))
    with psycopg.connect(dsn) as conn, _open(path) as fh:
        reader = csv.DictReader(fh)
        missing = set(QUOTES_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"not a Tardis quotes file, missing columns: {sorted(missing)}")
        rows: list[QuoteRow] = []

        def flush() -> None:
            if not rows:
                return
            days = {r[2] // 86_400_000_000 for r in rows}
            for day in days:
                conn.execute(
                    sql.SQL(
                        "SELECT {}.ensure_orderbook_partitions(%s, DATE '1970-01-01' + %s::int, 0)"
                    ).format(sql.Identifier(schema)),
                    (schema, day),
                )
            with conn.cursor() as cur:
                cur.executemany(
                    sql.SQL(
                        "INSERT INTO {} (exchange, symbol, timestamp, local_timestamp, ask_amount,"
                        " ask_price, bid_price, bid_amount, update_id)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
                    ).format(target),
                    rows,
                )
            conn.commit()
            rows.clear()

        for rec in reader:
            local_ts = int(rec["local_timestamp"])
            rows.append(
                (
                    rec["exchange"],
                    rec["symbol"],
                    int(rec["timestamp"]),
                    local_ts,
                    _float(rec["ask_amount"]),
                    _float(rec["ask_price"]),
                    _float(rec["bid_price"]),
                    _float(rec["bid_amount"]),
                    local_ts,
                )
            )
            read += 1
            if len(rows) >= batch:
                flush()
        flush()
    return read


# ---------------------------------------------------------------------------- order books
#
# Tardis "incremental_book_L2": exchange, symbol, timestamp, local_timestamp, is_snapshot,
# side (bid|ask), price, amount — one row per level change; a block of is_snapshot=true rows
# replaces the book. "book_snapshot_25": exchange, symbol, timestamp, local_timestamp, then
# asks[0].price, asks[0].amount, bids[0].price, bids[0].amount, ... up to index 24 (empty
# when the book is shallower). Both are rebuilt from md.depth.raw (every exchange payload
# byte for byte + the REST snapshots), since md.book carries only 20 levels.

INCREMENTAL_COLUMNS = (
    "exchange",
    "symbol",
    "timestamp",
    "local_timestamp",
    "is_snapshot",
    "side",
    "price",
    "amount",
)
SNAPSHOT_DEPTH = 25
SNAPSHOT_25_COLUMNS = (
    "exchange",
    "symbol",
    "timestamp",
    "local_timestamp",
    *(
        f"{side}[{i}].{field}"
        for i in range(SNAPSHOT_DEPTH)
        for side in ("asks", "bids")
        for field in ("price", "amount")
    ),
)
TARDIS_EXCHANGE = {"binance": "binance-futures", "bybit": "bybit"}
OUR_EXCHANGE = {v: k for k, v in TARDIS_EXCHANGE.items()}


@dataclass
class BookState:
    """One rebuilt book right after one applied exchange message."""

    exchange: str  # Tardis id
    symbol: str
    timestamp: int
    local_timestamp: int
    update_id: int
    bids: list[tuple[float, float]]  # best first
    asks: list[tuple[float, float]]


def _num(value: float) -> str:
    return repr(value)


def rebuild_from_depth_raw(
    values: Iterable[bytes | dict[str, Any]],
    depth: int = SNAPSHOT_DEPTH,
) -> Iterator[tuple[BookState, list[tuple[Any, ...]]]]:
    """Replay md.depth.raw values through the same sync machines as the collector.

    Yields, for each applied update, the book after it (top ``depth`` levels) and its
    incremental_book_L2 rows: the update's levels, or — first update after a (re)sync — the
    whole book as ``is_snapshot`` rows.
    """
    syncs: dict[tuple[str, str], BinanceBookSync | BybitBookSync] = {}
    fresh: dict[tuple[str, str], bool] = {}
    out: list[tuple[BookState, list[tuple[Any, ...]]]] = []
    recv = 0

    def on_applied_for(key: tuple[str, str]) -> Callable[[DepthUpdate, int], None]:
        def on_applied(update: DepthUpdate, _prev: int) -> None:
            book = syncs[key].book
            ex = TARDIS_EXCHANGE.get(update.exchange, update.exchange)
            ts = update.exchange_ts_us
            rows: list[tuple[Any, ...]]
            if fresh.get(key, True) or update.kind == "snapshot":
                fresh[key] = False
                rows = [
                    (ex, update.symbol, ts, recv, "true", "bid", p, q)
                    for p, q in book.top_bids(len(book.bids))
                ]
                rows += [
                    (ex, update.symbol, ts, recv, "true", "ask", p, q)
                    for p, q in book.top_asks(len(book.asks))
                ]
            else:
                rows = [(ex, update.symbol, ts, recv, "false", "bid", p, q) for p, q in update.bids]
                rows += [
                    (ex, update.symbol, ts, recv, "false", "ask", p, q) for p, q in update.asks
                ]
            state = BookState(
                ex,
                update.symbol,
                ts,
                recv,
                update.seq or update.last_id,
                book.top_bids(depth),
                book.top_asks(depth),
            )
            out.append((state, rows))

        return on_applied

    for raw in values:
        msg = raw if isinstance(raw, dict) else orjson.loads(raw)
        kind = msg["kind"]
        if kind == "trade":
            continue
        exchange, symbol = msg["exchange"], msg["symbol"]
        key = (exchange, symbol)
        recv = int(msg["recv_ts_us"])
        try:
            if kind == "snapshot":
                update = (
                    parse_binance_snapshot if exchange == "binance" else parse_bybit_snapshot
                )(msg["payload"], symbol)
            else:
                event = (parse_binance_frame if exchange == "binance" else parse_bybit_frame)(
                    msg["payload"]
                )
                if not isinstance(event, DepthUpdate):
                    continue
                update = event
        except ParseError:
            continue  # the collector dead-lettered it too
        sync = syncs.get(key)
        if sync is None:
            cls = BinanceBookSync if exchange == "binance" else BybitBookSync
            sync = syncs[key] = cls(symbol, on_applied_for(key), 4)
        outcome = sync.on_update(update)
        if outcome in RESYNC_OUTCOMES or not sync.synced:
            fresh[key] = True
        yield from out
        out.clear()


def export_books(
    values: Iterable[bytes | dict[str, Any]],
    incremental: Path | None = None,
    snapshot_25: Path | None = None,
    symbol: str | None = None,
) -> tuple[int, int]:
    """Write incremental_book_L2 and/or book_snapshot_25 CSVs rebuilt from md.depth.raw
    values; returns (incremental rows, snapshot rows)."""
    n_inc = n_snap = 0
    with contextlib.ExitStack() as stack:
        inc_w = snap_w = None
        if incremental is not None:
            inc_w = csv.writer(
                stack.enter_context(incremental.open("w", newline="")), lineterminator="\n"
            )
            inc_w.writerow(INCREMENTAL_COLUMNS)
        if snapshot_25 is not None:
            snap_w = csv.writer(
                stack.enter_context(snapshot_25.open("w", newline="")), lineterminator="\n"
            )
            snap_w.writerow(SNAPSHOT_25_COLUMNS)
        for state, rows in rebuild_from_depth_raw(values):
            if symbol and state.symbol != symbol:
                continue
            if inc_w is not None:
                inc_w.writerows((*r[:6], _num(r[6]), _num(r[7])) for r in rows)
                n_inc += len(rows)
            if snap_w is not None:
                line: list[Any] = [
                    state.exchange,
                    state.symbol,
                    state.timestamp,
                    state.local_timestamp,
                ]
                for i in range(SNAPSHOT_DEPTH):
                    for levels in (state.asks, state.bids):
                        if i < len(levels):
                            line += [_num(levels[i][0]), _num(levels[i][1])]
                        else:
                            line += ["", ""]
                snap_w.writerow(line)
                n_snap += 1
    return n_inc, n_snap


def books_from_incremental(path: Path, depth: int = 20) -> Iterator[BookState]:
    """Replay an incremental_book_L2 CSV: the book (top ``depth``) after each exchange
    message (rows grouped by symbol and local_timestamp, as Tardis advises)."""
    books: dict[tuple[str, str], LocalBook] = {}
    with _open(path) as fh:
        reader = csv.DictReader(fh)
        missing = set(INCREMENTAL_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"not a Tardis incremental_book_L2 file, missing {sorted(missing)}")
        group: tuple[str, str, int] | None = None
        ts = 0
        snapshot_block: dict[tuple[str, str], int] = {}  # symbol → local_ts of its block
        for rec in reader:
            key = (rec["exchange"], rec["symbol"])
            local_ts = int(rec["local_timestamp"])
            if group is not None and (key, local_ts) != (group[:2], group[2]):
                yield _state(books[group[:2]], group, ts, depth)
            book = books.setdefault(key, LocalBook())
            if rec["is_snapshot"] == "true":
                if snapshot_block.get(key) != local_ts:
                    book.clear()  # a snapshot block starts: it replaces the book
                    snapshot_block[key] = local_ts
            else:
                snapshot_block.pop(key, None)
            group = (key[0], key[1], local_ts)
            ts = int(rec["timestamp"])
            level = [(float(rec["price"]), float(rec["amount"]))]
            if rec["side"] == "bid":
                book.apply(level, [])
            else:
                book.apply([], level)
        if group is not None:
            yield _state(books[group[:2]], group, ts, depth)


def _state(book: LocalBook, group: tuple[str, str, int], ts: int, depth: int) -> BookState:
    return BookState(
        group[0], group[1], ts, group[2], group[2], book.top_bids(depth), book.top_asks(depth)
    )


def import_incremental(
    path: Path,
    publisher: Publisher,
    book_topic: str,
    depth: int = 20,
) -> int:
    """Publish the books an incremental_book_L2 CSV describes as md.book messages (one per
    exchange message, ``seq`` = local_timestamp, ``tob_changed`` as the collector sets it);
    the collector's sink turns them into orderbook_data rows. Returns messages published."""
    last_tob: dict[tuple[str, str], tuple[float, ...]] = {}
    n = 0
    for state in books_from_incremental(path, depth):
        if not state.bids or not state.asks:
            continue
        ex = OUR_EXCHANGE.get(state.exchange, state.exchange)
        tob = (*state.bids[0], *state.asks[0])
        key = (ex, state.symbol)
        changed = last_tob.get(key) != tob
        last_tob[key] = tob
        trace = f"tardis{state.local_timestamp:016x}"
        publisher.produce(
            book_topic,
            orjson.dumps(
                {
                    "schema_version": 1,
                    "exchange": ex,
                    "symbol": state.symbol,
                    "seq": state.update_id,
                    "prev_seq": 0,
                    "exchange_ts_us": state.timestamp,
                    "local_ts_us": state.local_timestamp,
                    "bid_price": tob[0],
                    "bid_qty": tob[1],
                    "ask_price": tob[2],
                    "ask_qty": tob[3],
                    "bids": state.bids,
                    "asks": state.asks,
                    "trace_id": trace,
                    "cross_seq": 0,
                    "tob_changed": changed,
                }
            ),
            f"{ex}:{state.symbol}".encode(),
        )
        n += 1
    return n


def read_topic_values(bootstrap_config: dict[str, Any], topic: str) -> Iterator[bytes]:
    """Every value of ``topic`` up to its current end, partition by partition (each
    symbol's messages are in one partition, in order). A throwaway consumer, no group."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            **bootstrap_config,
            "group.id": "depthflow-tardis-export",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        parts = list(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        for p in parts:
            lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if hi <= lo:
                continue
            consumer.assign([TopicPartition(topic, p, lo)])
            pos = lo
            while pos < hi:
                for msg in consumer.consume(10_000, timeout=5):
                    offset = msg.offset()
                    if msg.error() is not None or offset is None:
                        continue  # a partition event (e.g. EOF), not a record
                    pos = offset + 1
                    value = msg.value()
                    if pos <= hi and value is not None:  # None: a tombstone, no payload
                        yield value
    finally:
        consumer.close()
