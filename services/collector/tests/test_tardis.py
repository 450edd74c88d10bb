"""Tardis CSV round trips: md.depth.raw → incremental_book_L2 / book_snapshot_25 → books,
equal to the md.book messages the collector published; quotes through PostgreSQL."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import orjson
import psycopg
from psycopg import sql

from depthflow.collector.feed import FeedProcessor
from depthflow.collector.tardis import (
    SNAPSHOT_25_COLUMNS,
    books_from_incremental,
    export_books,
    export_quotes,
    import_incremental,
    import_quotes,
)
from depthflow.common.migrations import load_migrations, migrate

from .test_feed import ListPublisher


def _binance_feed(n: int = 300, seed: int = 3) -> ListPublisher:
    rng = random.Random(seed)
    pub = ListPublisher()
    feed = FeedProcessor("binance", ["BTCUSDT", "ETHUSDT"], pub)
    for sym, mid in (("BTCUSDT", 600_000), ("ETHUSDT", 30_000)):
        feed.on_snapshot_body(
            sym,
            orjson.dumps(
                {
                    "lastUpdateId": 100,
                    "E": 1,
                    "T": 1,
                    "bids": [[f"{(mid - i) / 10:.1f}", "1.5"] for i in range(1, 60)],
                    "asks": [[f"{(mid + i) / 10:.1f}", "2.5"] for i in range(1, 60)],
                }
            ),
            "rest",
            1_700_000_000_000_000,
        )
    last = {"BTCUSDT": 100, "ETHUSDT": 100}
    for i in range(n):
        sym, mid = (("BTCUSDT", 600_000), ("ETHUSDT", 30_000))[i % 2]
        first = last[sym] + 1
        u = first + rng.randint(0, 3)

        def side(sign: int, mid: int = mid) -> list[list[str]]:
            return [
                [
                    f"{(mid + sign * rng.randint(1, 40)) / 10:.1f}",
                    "0" if rng.random() < 0.3 else f"{rng.uniform(0.001, 5):.3f}",
                ]
                for _ in range(rng.randint(1, 4))
            ]

        feed.on_frame(
            orjson.dumps(
                {
                    "stream": f"{sym.lower()}@depth@100ms",
                    "data": {
                        "e": "depthUpdate",
                        "E": 1_700_000_001_000 + i,
                        "T": 1_700_000_001_000 + i,
                        "s": sym,
                        "U": first,
                        "u": u,
                        "pu": last[sym],
                        "b": side(-1),
                        "a": side(1),
                    },
                }
            ),
            "c1",
            1_700_000_001_000_000 + i * 1000,
        )
        last[sym] = u
    return pub


def _levels(rows: list[list[float]]) -> list[tuple[float, float]]:
    return [(float(p), float(q)) for p, q in rows]


def test_incremental_and_snapshot_25_rebuild_the_published_books(tmp_path: Path) -> None:
    pub = _binance_feed()
    books = pub.on("md.book")
    inc, snap = tmp_path / "inc.csv", tmp_path / "snap.csv"
    n_inc, n_snap = export_books(
        (v for t, v, _ in pub.sent if t == "md.depth.raw"), incremental=inc, snapshot_25=snap
    )
    assert n_snap == len(books) > 250 and n_inc > n_snap

    rebuilt = list(books_from_incremental(inc, depth=20))
    assert len(rebuilt) == len(books)
    for got, want in zip(rebuilt, books, strict=True):
        assert (got.symbol, got.timestamp, got.local_timestamp) == (
            want["symbol"],
            want["exchange_ts_us"],
            want["local_ts_us"],
        )
        assert got.bids == _levels(want["bids"]) and got.asks == _levels(want["asks"])

    with snap.open() as fh:
        reader = csv.reader(fh)
        assert tuple(next(reader)) == SNAPSHOT_25_COLUMNS
        rows = list(reader)
    deep = list(books_from_incremental(inc, depth=25))
    for row, book in zip(rows, deep, strict=True):
        asks = [(float(row[4 + 4 * i]), float(row[5 + 4 * i])) for i in range(25) if row[4 + 4 * i]]
        bids = [(float(row[6 + 4 * i]), float(row[7 + 4 * i])) for i in range(25) if row[6 + 4 * i]]
        assert row[0] == "binance-futures" and (asks, bids) == (book.asks, book.bids)
        assert len(asks) == 25  # deeper than md.book's 20

    # import as a source: md.book messages with the same books and top-of-book changes
    out = ListPublisher()
    assert import_incremental(inc, out, "md.book") == len(books)
    for got, want in zip(out.on("md.book"), books, strict=True):
        assert (got["bids"], got["asks"]) == (want["bids"], want["asks"])
        assert got["tob_changed"] == want["tob_changed"]
        assert got["exchange"] == "binance" and got["local_ts_us"] == want["local_ts_us"]


def test_quotes_round_trip_through_postgres(pg_dsn: str, fresh_schema: str, tmp_path: Path) -> None:
    migrate(pg_dsn, fresh_schema, load_migrations("depthflow.collector"))
    books = [b for b in _binance_feed(120).on("md.book") if b["tob_changed"]]
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(
            sql.SQL("SELECT {}.ensure_orderbook_partitions(%s, DATE '2023-11-14', 1)").format(
                sql.Identifier(fresh_schema)
            ),
            (fresh_schema,),
        )
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    "INSERT INTO {}.orderbook_data (exchange, symbol, timestamp, local_timestamp,"
                    " ask_amount, ask_price, bid_price, bid_amount, update_id)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                ).format(sql.Identifier(fresh_schema)),
                [
                    (
                        "binance-futures",
                        b["symbol"],
                        b["exchange_ts_us"],
                        b["local_ts_us"],
                        b["ask_qty"],
                        b["ask_price"],
                        b["bid_price"],
                        b["bid_qty"],
                        b["seq"],
                    )
                    for b in books
                ],
            )
    first, second = tmp_path / "quotes.csv", tmp_path / "again.csv"
    assert export_quotes(pg_dsn, fresh_schema, first) == len(books)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("TRUNCATE {}.orderbook_data").format(sql.Identifier(fresh_schema)))
    assert import_quotes(pg_dsn, fresh_schema, first) == len(books)
    assert import_quotes(pg_dsn, fresh_schema, first) == len(books)  # idempotent
    assert export_quotes(pg_dsn, fresh_schema, second) == len(books)
    assert first.read_text() == second.read_text()
