"""Backtests of a recorded simulator session, against real Kafka and PostgreSQL.

- parity: the replay of md.book/md.trades decides exactly the signals the live strategy
  service published for the same data (same symbol, book, side, time, strength, confidence);
- md.depth.raw rebuilt through the collector's sync machines decides the same again;
- determinism: two runs write byte-identical trades.csv / signals.csv / equity.csv /
  metrics.json (the CLI too), both are stored, ``compare`` sets them side by side;
- gaps: the session's recorded gaps are reported, and no fill happens while a book is invalid.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import psycopg
from psycopg import sql

from depthflow.backtest.app import Backtest, LiveConfig, RunOutcome, RunRequest
from depthflow.backtest.config import BacktestSettings, StrategySpec
from depthflow.backtest.report import inside_gap

from .conftest import COOLDOWN_S, DEPTHFLOW, SYMBOLS, Recording

DETERMINISTIC = ("trades.csv", "signals.csv", "equity.csv", "metrics.json")


def settings(rec: Recording, **extra: object) -> BacktestSettings:
    return BacktestSettings(
        topic_book=rec.topics["book"],
        topic_trades=rec.topics["trades"],
        topic_health=rec.topics["health"],
        topic_depth_raw=rec.topics["raw"],
        db_schema=rec.backtest_schema,
        returns_interval_s=1.0,
        **extra,  # type: ignore[arg-type]
    )


def live_config(**runtime: object) -> LiveConfig:
    live = LiveConfig.from_env()
    return replace(live, runtime=live.runtime.merged({"cooldown_s": COOLDOWN_S, **runtime}))


def backtest(
    rec: Recording,
    source: str = "kafka",
    output: Path | None = None,
    store: bool = False,
    live: LiveConfig | None = None,
    **extra: object,
) -> RunOutcome:
    request = RunRequest(
        symbols=SYMBOLS,
        from_us=rec.first_ts,
        to_us=rec.last_ts + 1,
        strategy=StrategySpec.parse("imbalance"),
        source=source,  # type: ignore[arg-type]
        output_dir=output,
        store=store,
    )
    return Backtest(
        request, settings(rec, **extra), live or live_config(), rec.kafka, rec.dsn
    ).run()


def decided(outcome: RunOutcome, rec: Recording | None = None) -> list[tuple[object, ...]]:
    """(symbol, book seq, side, exchange time, strength, confidence) of every signal, up to
    the last book the live features worker processed when ``rec`` is given (it keeps the
    books after the last trade waiting for a later trade, which never came)."""
    return [
        (s.symbol, s.book_seq, s.side, s.ts, s.strength, s.confidence)
        for s in outcome.result.signals
        if rec is None or s.book_seq <= rec.live_last_seq[s.symbol]
    ]


def test_replay_reproduces_the_live_strategy_signals(recording: Recording) -> None:
    rec = recording
    live = sorted(
        (s["symbol"], s["book_seq"], s["side"], s["source_ts_us"], s["strength"], s["confidence"])
        for s in rec.live_signals
    )
    assert rec.books >= 1600 and rec.live_vectors > 1000
    assert len(live) >= 10, "the session must give the parity test something to compare"
    assert len({x[2] for x in live}) >= 2
    outcome = backtest(rec)
    print(f"parity: {len(live)} live signals, {rec.live_vectors} live vectors, {rec.books} books")
    assert sorted(decided(outcome, rec)) == live
    # the same ids as live, too (the executor's idempotency keys derive from them)
    ids = {s.signal_id for s in outcome.result.signals if s.book_seq <= rec.live_last_seq[s.symbol]}
    assert ids == {s["signal_id"] for s in rec.live_signals}
    # and the features worker's vectors were the backtest's vectors
    counted = outcome.metrics["features"]["vectors"]
    assert counted >= rec.live_vectors


def test_depth_raw_rebuild_decides_the_same(recording: Recording) -> None:
    from_book = backtest(recording)
    from_raw = backtest(recording, source="depth-raw")
    assert from_raw.metrics["features"]["books"] == from_book.metrics["features"]["books"]
    assert decided(from_raw) == decided(from_book)
    assert len(decided(from_raw)) >= 10


def test_two_runs_are_byte_identical_stored_and_compared(
    recording: Recording, tmp_path: Path
) -> None:
    rec = recording
    a = backtest(rec, output=tmp_path / "a", store=True)
    b = backtest(rec, output=tmp_path / "b", store=True)
    assert a.run_id != b.run_id
    for name in DETERMINISTIC:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "run.json").read_bytes() != (tmp_path / "b" / "run.json").read_bytes()
    trades = (tmp_path / "a" / "trades.csv").read_text().splitlines()
    assert len(trades) - 1 == len(a.result.trades) > 0

    # the CLI, in its own process, with the same settings: the same bytes again
    cli_out = tmp_path / "cli"
    proc = subprocess.run(
        [
            str(DEPTHFLOW),
            "--log-level",
            "WARNING",
            "backtest",
            "--symbols",
            ",".join(SYMBOLS),
            "--from",
            str(rec.first_ts),
            "--to",
            str(rec.last_ts + 1),
            "--strategy",
            "imbalance",
            "--output",
            str(cli_out),
            "--no-progress",
        ],
        env=rec.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in DETERMINISTIC:
        assert (cli_out / name).read_bytes() == (tmp_path / "a" / name).read_bytes(), name
    cli_run = proc.stdout.split("run ", 1)[1].split(":", 1)[0]

    with psycopg.connect(rec.dsn) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT r.run_id, r.config_hash, r.code_version, count(t.n) FROM {}.runs r"
                " LEFT JOIN {}.trades t USING (run_id) GROUP BY 1, 2, 3 ORDER BY 1"
            ).format(sql.Identifier(rec.backtest_schema), sql.Identifier(rec.backtest_schema))
        ).fetchall()
        pnl = conn.execute(
            sql.SQL(
                "SELECT value FROM {}.metrics WHERE run_id = %s AND scope = 'total'"
                " AND name = 'pnl_usdt'"
            ).format(sql.Identifier(rec.backtest_schema)),
            (a.run_id,),
        ).fetchone()
    assert sorted(r[0] for r in rows) == sorted([a.run_id, b.run_id, cli_run])
    assert {r[1] for r in rows} == {a.config.config_hash}
    assert all(r[2].startswith("0.") and r[3] == len(a.result.trades) for r in rows)
    assert pnl is not None and pnl[0] == a.metrics["summary"]["pnl_usdt"]

    shown = subprocess.run(
        [str(DEPTHFLOW), "--log-level", "WARNING", "backtest", "compare", a.run_id, b.run_id],
        env=rec.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert a.run_id in shown.stdout and b.run_id in shown.stdout and "sharpe" in shown.stdout
    missing = subprocess.run(
        [str(DEPTHFLOW), "backtest", "compare", a.run_id, "bt-nope"],
        env=rec.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert missing.returncode == 1 and "bt-nope" in missing.stderr


def test_recorded_gaps_are_reported_and_never_traded_through(recording: Recording) -> None:
    rec = recording
    # trade on nearly every book change, with orders in flight for 300 ms: gaps meet orders
    live = live_config(
        imbalance_buy_threshold=0.55,
        imbalance_sell_threshold=0.45,
        hysteresis=0.0,
        cooldown_s=0.0,
        min_cluster_volume=0.0,
    )
    outcome = backtest(rec, live=live, fill_submit_latency_us=300_000)
    gaps = outcome.metrics["gaps"]
    assert outcome.metrics["input"]["health_events"].get("gap", 0) >= 1
    assert gaps["count"] >= 1 and gaps["invalid_us"] > 0
    assert all(
        g["end_ts_us"] is None or g["end_ts_us"] > g["start_ts_us"] for g in gaps["intervals"]
    )
    assert {k for g in gaps["intervals"] for k in g["kinds"]} & {"gap", "resync", "seq_gap"}
    assert len(outcome.result.trades) > 20
    print(
        f"gaps: {gaps['count']}, cancelled {gaps['cancelled_orders']},"
        f" fills {len(outcome.result.trades)}"
    )
    assert gaps["fills_while_invalid"] == 0
    for t in outcome.result.trades:
        assert not inside_gap(outcome.result, f"{t.exchange}:{t.symbol}", t.ts)
    # orders in flight when a gap came were cancelled, not filled against the old book
    assert gaps["cancelled_orders"] >= 1
    cancelled = [o for o in outcome.result.orders if o.reason.startswith("book invalid")]
    assert len(cancelled) == gaps["cancelled_orders"]
    assert all(o.filled_qty == 0.0 for o in cancelled)
