"""The ``backtest`` schema: store a run (config, code version, metrics, trades) and read runs
back for ``depthflow backtest compare``. Synchronous (psycopg): a backtest is a tool."""

from __future__ import annotations

from typing import Any

import orjson
import psycopg
from psycopg import sql

from depthflow.backtest.engine import EngineResult
from depthflow.common.migrations import load_migrations, migrate

NUMERIC_SECTIONS = ("summary",)


def migrate_schema(dsn: str, schema: str) -> list[int]:
    return migrate(dsn, schema, load_migrations("depthflow.backtest"))


def _metric_rows(run_id: str, metrics: dict[str, Any]) -> list[tuple[str, str, str, float | None]]:
    rows: list[tuple[str, str, str, float | None]] = []
    for name, value in metrics["summary"].items():
        if value is None or isinstance(value, (int, float)):
            rows.append((run_id, "total", name, None if value is None else float(value)))
    for scope, figures in metrics["per_symbol"].items():
        for name, value in figures.items():
            if value is None or isinstance(value, (int, float)):
                rows.append((run_id, scope, name, None if value is None else float(value)))
    rows.append((run_id, "total", "gaps", float(metrics["gaps"]["count"])))
    rows.append((run_id, "total", "signals", float(metrics["signals"]["total"])))
    return rows


def store_run(
    dsn: str,
    schema: str,
    run_id: str,
    metrics: dict[str, Any],
    result: EngineResult,
    run: dict[str, Any],
) -> None:
    """One transaction: the run, its figures and its trades (COPY)."""
    cfg = metrics["config"]
    ident = sql.Identifier
    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.runs (run_id, strategy, exchange, symbols, from_us, to_us, source,"
                " config, config_hash, code_version, metrics, run_meta, output_dir)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s::jsonb, %s::jsonb, %s)"
            ).format(ident(schema)),
            (
                run_id,
                cfg["strategy"],
                cfg["exchange"],
                list(cfg["symbols"]),
                cfg["from_us"],
                cfg["to_us"],
                cfg["source"],
                orjson.dumps(cfg).decode(),
                metrics["config_hash"],
                run["code_version"],
                orjson.dumps(metrics).decode(),
                orjson.dumps(run).decode(),
                run.get("output_dir"),
            ),
        )
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    "INSERT INTO {}.metrics (run_id, scope, name, value) VALUES (%s, %s, %s, %s)"
                ).format(ident(schema)),
                _metric_rows(run_id, metrics),
            )
            columns = sql.SQL(
                "run_id, n, ts_us, exchange, symbol, client_order_id, signal_id, side, qty, price,"
                " fee, liquidity, realized_pnl, position_qty"
            )
            with cur.copy(
                sql.SQL("COPY {}.trades ({}) FROM STDIN").format(ident(schema), columns)
            ) as copy:
                for n, t in enumerate(result.trades):
                    copy.write_row(
                        (
                            run_id,
                            n,
                            t.ts,
                            t.exchange,
                            t.symbol,
                            t.client_order_id,
                            t.signal_id,
                            t.side,
                            t.qty,
                            t.price,
                            t.fee,
                            t.liquidity,
                            t.realized_pnl,
                            t.position_qty,
                        )
                    )


def load_runs(dsn: str, schema: str, run_ids: list[str]) -> list[dict[str, Any]]:
    """The stored runs, in the order asked; ``LookupError`` names any that is missing."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT run_id, created_at, strategy, exchange, symbols, from_us, to_us, source,"
                " config_hash, code_version, metrics, run_meta, config FROM {}.runs"
                " WHERE run_id = ANY(%s)"
            ).format(sql.Identifier(schema)),
            (run_ids,),
        ).fetchall()
    found = {
        r[0]: {
            "run_id": r[0],
            "created_at": r[1],
            "strategy": r[2],
            "exchange": r[3],
            "symbols": r[4],
            "from_us": r[5],
            "to_us": r[6],
            "source": r[7],
            "config_hash": r[8],
            "code_version": r[9],
            "metrics": r[10],
            "run_meta": r[11],
            "config": r[12],
        }
        for r in rows
    }
    missing = [r for r in run_ids if r not in found]
    if missing:
        raise LookupError(f"no backtest run {', '.join(missing)} in {schema}.runs")
    return [found[r] for r in run_ids]


def count_trades(dsn: str, schema: str, run_id: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.trades WHERE run_id = %s").format(
                sql.Identifier(schema)
            ),
            (run_id,),
        ).fetchone()
    return int(row[0]) if row else 0
