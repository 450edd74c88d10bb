"""``depthflow train``: train a model on stored feature vectors and register it.

Example::

    depthflow train --model sklearn --symbols BTCUSDT,ETHUSDT \\
        --since 2025-01-01T00:00 --until 2025-01-02T00:00 --horizon 10 --threshold 2
"""

from __future__ import annotations

import datetime as dt
import re

import typer

app = typer.Typer(
    help="Train a scikit-learn or PyTorch model on stored feature vectors.", add_completion=False
)


def parse_time_us(text: str) -> int:
    """Microseconds since the epoch from an integer (µs) or an ISO-8601 time (UTC if naive)."""
    text = text.strip()
    if re.fullmatch(r"\d+", text):
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not an ISO time or µs timestamp: {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1_000_000)


@app.callback(invoke_without_command=True)
def train_command(
    ctx: typer.Context,
    model: str = typer.Option(..., help="sklearn | torch"),
    symbols: str = typer.Option(..., help="comma-separated, e.g. BTCUSDT,ETHUSDT"),
    since: str = typer.Option(..., help="start (ISO time, UTC if naive, or µs since epoch)"),
    until: str = typer.Option(..., help="end, exclusive (ISO time or µs)"),
    exchange: str | None = typer.Option(None, help="only this exchange (default: all)"),
    horizon: float = typer.Option(10.0, help="label horizon, seconds"),
    threshold: float = typer.Option(2.0, help="label threshold, bps of the mid-price"),
    folds: int = typer.Option(4, min=1, help="walk-forward folds"),
    name: str | None = typer.Option(None, help="registry name (default: the model kind)"),
    activate: bool = typer.Option(
        True, "--activate/--no-activate", help="make the new version the active one"
    ),
    max_iter: int = typer.Option(100, min=1, help="sklearn: boosting iterations"),
    epochs: int = typer.Option(5, min=1, help="torch: epochs"),
    seed: int = typer.Option(0, help="random seed"),
    source_schema: str = typer.Option("features", help="schema of the stored vectors"),
    source_table: str = typer.Option("vectors", help="table of the stored vectors"),
    schema: str = typer.Option("strategy", help="schema of the model registry"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bar"),
) -> None:
    """Label stored vectors with future mid-prices, validate walk-forward, register."""
    if ctx.invoked_subcommand is not None:
        return
    import json

    import psycopg
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from depthflow.common.migrations import load_migrations, migrate
    from depthflow.common.settings import PostgresSettings, load_settings
    from depthflow.strategy.train import TrainingError, TrainParams, train

    if model not in ("sklearn", "torch"):
        raise typer.BadParameter("sklearn or torch", param_hint="--model")
    wanted = tuple(s.strip().upper() for s in symbols.split(",") if s.strip())
    if not wanted:
        raise typer.BadParameter("at least one symbol", param_hint="--symbols")
    params = TrainParams(
        model=model,  # type: ignore[arg-type]
        symbols=wanted,
        since_us=parse_time_us(since),
        until_us=parse_time_us(until),
        exchange=exchange,
        horizon_s=horizon,
        threshold_bps=threshold,
        folds=folds,
        name=name,
        activate=activate,
        max_iter=max_iter,
        epochs=epochs,
        seed=seed,
        source_schema=source_schema,
        source_table=source_table,
        registry_schema=schema,
    )
    if params.until_us <= params.since_us:
        raise typer.BadParameter("--until must be after --since")
    if model == "torch":
        import torch

        torch.set_num_threads(1)
    pg = load_settings(PostgresSettings)
    dsn = pg.dsn.get_secret_value()
    migrate(dsn, schema, load_migrations("depthflow.strategy"))
    with Progress(
        TextColumn("{task.description:<14}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        disable=not progress,
        transient=False,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=max(total, 1))
            bar.update(tasks[stage], completed=done, total=max(total, 1))

        try:
            with psycopg.connect(dsn) as conn:
                result = train(conn, params, report)
        except TrainingError as exc:
            typer.echo(f"training failed: {exc}", err=True)
            raise typer.Exit(1) from None
    summary = {
        "name": result.name,
        "version": result.version,
        "kind": result.kind,
        "sha256": result.sha256,
        "rows": result.rows,
        "walk_forward_mean": result.metrics["walk_forward"]["mean"],
        "folds_scored": result.metrics["walk_forward"]["n_scored"],
        "active": activate,
    }
    typer.echo(json.dumps(summary, indent=2))
