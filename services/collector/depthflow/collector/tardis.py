"""Tardis-compatible CSV: export ``quotes`` from orderbook_data, import it back (backfill).

Tardis ``quotes`` columns: exchange, symbol, timestamp, local_timestamp, ask_amount,
ask_price, bid_price, bid_amount (microseconds) — exactly orderbook_data's seed columns.
Imported rows use ``local_timestamp`` as their ``update_id`` (Tardis quotes carry no
exchange sequence), so importing the same file twice adds nothing.
"""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import psycopg
from psycopg import sql

QUOTES_COLUMNS = (
    "exchange", "symbol", "timestamp", "local_timestamp",
    "ask_amount", "ask_price", "bid_price", "bid_amount",
)


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
            writer.writerow(["" if v is None else repr(v) if isinstance(v, float) else v
                             for v in row])
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
        rows: list[tuple[object, ...]] = []

        def flush() -> None:
            if not rows:
                return
            days = {int(r[2]) // 86_400_000_000 for r in rows}
            for day in days:
                conn.execute(
                    sql.SQL("SELECT {}.ensure_orderbook_partitions(%s, "
                            "DATE '1970-01-01' + %s::int, 0)").format(sql.Identifier(schema)),
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
            rows.append((
                rec["exchange"], rec["symbol"], int(rec["timestamp"]), local_ts,
                _float(rec["ask_amount"]), _float(rec["ask_price"]),
                _float(rec["bid_price"]), _float(rec["bid_amount"]), local_ts,
            ))
            read += 1
            if len(rows) >= batch:
                flush()
        flush()
    return read
