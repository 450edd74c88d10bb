"""``depthflow backtest``: replay recorded market data through the live code; ``compare`` runs.

Examples::

    depthflow backtest --symbols BTCUSDT,ETHUSDT --from 2026-01-01T00:00 --to 2026-01-01T06:00 \\
        --strategy imbalance --output out/run1
    depthflow backtest --symbols BTCUSDT --from ... --to ... --strategy model:sklearn@v3
    depthflow backtest --source tardis --tardis book.csv.gz --tardis trades.csv.gz ...
    depthflow backtest compare bt-1a2b... bt-3c4d...
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(
    help="Backtests: replay md.book/md.trades (or md.depth.raw, or Tardis CSV) through the same "
    "feature, strategy, risk and fill-model code as live, deterministically.",
    add_completion=False,
    pretty_exceptions_enable=False,
)


def parse_time_us(text: str) -> int:
    """µs since the epoch from an integer (µs) or an ISO-8601 time (UTC when naive)."""
    text = text.strip()
    if re.fullmatch(r"\d+", text):
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not an ISO time or µs timestamp: {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1_000_000)


def _pairs(items: list[str], what: str) -> dict[str, Any]:
    import orjson

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=what)
        try:
            out[key.strip()] = orjson.loads(raw)
        except orjson.JSONDecodeError:
            out[key.strip()] = raw
    return out


@app.callback(invoke_without_command=True)
def backtest(
    ctx: typer.Context,
    symbols: str | None = typer.Option(None, help="comma-separated, e.g. BTCUSDT,ETHUSDT"),
    from_: str | None = typer.Option(
        None, "--from", help="start, exchange time: ISO-8601 (UTC if naive) or µs since epoch"
    ),
    to: str | None = typer.Option(None, "--to", help="end, exclusive (ISO-8601 or µs)"),
    strategy: str = typer.Option("imbalance", help="imbalance | model:<name>@<version>"),
    source: str = typer.Option(
        "kafka", help="kafka (md.book+md.trades+md.health) | depth-raw | tardis"
    ),
    tardis: list[Path] = typer.Option(  # noqa: B008 - typer's idiom
        [], "--tardis", help="Tardis CSV (incremental_book_L2, book_snapshot_25, trades); repeat"
    ),
    warmup_s: float = typer.Option(
        0.0, help="replay this much before --from without trading (features warm-up)"
    ),
    output: Path | None = typer.Option(  # noqa: B008 - typer's idiom
        None, "--output", "-o", help="write trades.csv, metrics.json, equity.png, report.html ..."
    ),
    store: bool = typer.Option(True, "--store/--no-store", help="store in the backtest schema"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bar"),
    set_strategy: list[str] = typer.Option(  # noqa: B008 - typer's idiom
        [], "--strategy-config", help="override a strategy runtime setting: KEY=VALUE; repeat"
    ),
    set_fill: list[str] = typer.Option(  # noqa: B008 - typer's idiom
        [], "--fill", help="override a fill-model setting, e.g. submit_latency_us=50000; repeat"
    ),
    features_mode: str = typer.Option(
        "batch",
        "--features-mode",
        help="batch: each symbol's feature vectors computed at once over the loaded range "
        "(vectorised, same results); stream: event by event through the streaming engine",
    ),
) -> None:
    """Run a backtest over a time range and report it."""
    if ctx.invoked_subcommand is not None:
        return
    if not symbols or not from_ or not to:
        raise typer.BadParameter("--symbols, --from and --to are required")
    from dataclasses import replace

    from pydantic import ValidationError

    from depthflow.backtest.app import Backtest, LiveConfig, RunRequest
    from depthflow.backtest.config import BacktestSettings, StrategySpec
    from depthflow.backtest.sources import InputError
    from depthflow.common.settings import KafkaSettings, PostgresSettings, load_settings
    from depthflow.strategy.registry import ModelNotFound

    try:
        spec = StrategySpec.parse(strategy)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--strategy") from None
    if source not in ("kafka", "depth-raw", "tardis"):
        raise typer.BadParameter(f"unknown source {source!r}", param_hint="--source")
    if features_mode not in ("stream", "batch"):
        raise typer.BadParameter(
            f"expected stream or batch, got {features_mode!r}", param_hint="--features-mode"
        )
    fill = _pairs(set_fill, "--fill")
    settings = load_settings(BacktestSettings, **{f"fill_{k}": v for k, v in fill.items()})
    live = LiveConfig.from_env()
    try:
        if set_strategy:
            changes = _pairs(set_strategy, "--strategy-config")
            live = replace(live, runtime=live.runtime.merged(changes))
    except ValidationError as exc:
        raise typer.BadParameter(str(exc), param_hint="--strategy-config") from None
    wanted = tuple(s.strip().upper() for s in symbols.split(",") if s.strip())
    request = RunRequest(
        symbols=wanted,
        from_us=parse_time_us(from_),
        to_us=parse_time_us(to),
        strategy=spec,
        source=source,  # type: ignore[arg-type]
        tardis_files=tuple(tardis),
        warmup_s=warmup_s,
        output_dir=output,
        store=store and settings.store_results,
        progress=progress,
        features_mode=features_mode,  # type: ignore[arg-type]
    )
    needs_pg = request.store or spec.kind == "model"
    dsn = load_settings(PostgresSettings).dsn.get_secret_value() if needs_pg else None
    kafka = load_settings(KafkaSettings) if source != "tardis" else None
    try:
        outcome = Backtest(request, settings, live, kafka, dsn).run()
    except (InputError, ModelNotFound, ValueError) as exc:
        typer.echo(f"backtest: {exc}", err=True)
        raise typer.Exit(1) from None
    s = outcome.metrics["summary"]
    typer.echo(
        f"run {outcome.run_id}: {outcome.run['events']} events in {outcome.run['replay_s']}s "
        f"({outcome.run['events_per_s']:,.0f} events/s); pnl {s['pnl_usdt']} USDT, "
        f"return {s['return']}, sharpe {s['sharpe']}, max drawdown {s['max_drawdown']}, "
        f"fills {s['fills']}, gaps {outcome.metrics['gaps']['count']}"
    )
    if outcome.files:
        typer.echo(f"written: {output}/ ({', '.join(sorted(outcome.files))})")


COMPARE_ROWS: tuple[tuple[str, str], ...] = (
    ("strategy", "strategy"),
    ("symbols", "symbols"),
    ("from", "from"),
    ("to", "to"),
    ("source", "source"),
    ("config hash", "config_hash"),
    ("code", "code_version"),
    ("pnl (USDT)", "summary.pnl_usdt"),
    ("return", "summary.return"),
    ("sharpe", "summary.sharpe"),
    ("sortino", "summary.sortino"),
    ("max drawdown", "summary.max_drawdown"),
    ("max drawdown (USDT)", "summary.max_drawdown_usdt"),
    ("hit rate", "summary.hit_rate"),
    ("fills", "summary.fills"),
    ("turnover (USDT)", "summary.turnover_usdt"),
    ("fees (USDT)", "summary.fees_usdt"),
    ("avg gross exposure", "summary.avg_gross_exposure_usdt"),
    ("time in market", "summary.time_in_market"),
    ("signals", "signals.total"),
    ("gaps", "gaps.count"),
    ("latency (µs)", "fill.submit_latency_us"),
    ("taker fee", "fill.taker_fee_rate"),
    ("events/s", "run.events_per_s"),
    ("wall (s)", "run.wall_s"),
)


def compare_value(run: dict[str, Any], path: str) -> str:
    """One cell of the comparison table."""
    from depthflow.backtest.report import iso

    if path in ("from", "to"):
        return str(iso(run[f"{path}_us"]))
    if path == "symbols":
        return ",".join(run["symbols"])
    head, _, rest = path.partition(".")
    if not rest:
        return str(run[head])
    section = {
        "run": run["run_meta"],
        "fill": run["config"]["fill_model"],
    }.get(head, run["metrics"].get(head, {}))
    value = section.get(rest)
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.6g}"
    return str(value)


@app.command("compare")
def compare(
    run_ids: list[str] = typer.Argument(..., help="two or more run ids"),  # noqa: B008
) -> None:
    """Print stored runs side by side."""
    from rich.console import Console
    from rich.table import Table

    from depthflow.backtest.config import BacktestSettings
    from depthflow.backtest.store import load_runs
    from depthflow.common.settings import PostgresSettings, load_settings

    settings = load_settings(BacktestSettings)
    dsn = load_settings(PostgresSettings).dsn.get_secret_value()
    try:
        runs = load_runs(dsn, settings.db_schema, run_ids)
    except LookupError as exc:
        typer.echo(f"backtest compare: {exc}", err=True)
        raise typer.Exit(1) from None
    table = Table(title="backtest runs")
    table.add_column("")
    for r in runs:
        table.add_column(r["run_id"], justify="right")
    for label, path in COMPARE_ROWS:
        table.add_row(label, *(compare_value(r, path) for r in runs))
    Console(width=max(100, 28 + 24 * len(runs))).print(table)
