"""``depthflow strategy``: run the service; ``models`` / ``activate`` manage the registry."""

from __future__ import annotations

import asyncio

import typer

app = typer.Typer(
    help="Feature vectors to trading signals (imbalance rule, scikit-learn, PyTorch).",
    add_completion=False,
)


@app.callback(invoke_without_command=True)
def strategy(
    ctx: typer.Context,
    default_strategy: str | None = typer.Option(None, help="imbalance | sklearn | torch"),
    symbol_strategies: str | None = typer.Option(
        None, help="per symbol, e.g. BTCUSDT=sklearn,binance:ETHUSDT=torch"
    ),
    max_messages: int | None = typer.Option(None, help="stop after this many vectors"),
    idle_timeout: float | None = typer.Option(None, help="stop after this many silent seconds"),
) -> None:
    """Turn features.v1 into signals.v1 until SIGTERM/SIGINT."""
    if ctx.invoked_subcommand is not None:
        return
    from depthflow.common.lifecycle import run_service
    from depthflow.common.settings import (
        HttpSettings,
        KafkaSettings,
        PostgresSettings,
        load_settings,
    )
    from depthflow.strategy.app import StrategyService
    from depthflow.strategy.config import StrategySettings

    settings = load_settings(
        StrategySettings,
        default_strategy=default_strategy,
        symbol_strategies=symbol_strategies,
    )
    service = StrategyService(
        settings,
        load_settings(KafkaSettings),
        load_settings(PostgresSettings),
        load_settings(HttpSettings),
    )
    if max_messages is None and idle_timeout is None:
        asyncio.run(run_service(service))
        return

    async def bounded() -> None:
        await service.start()
        try:
            await service.run(max_messages=max_messages, idle_timeout=idle_timeout)
        finally:
            await service.stop()

    asyncio.run(bounded())


@app.command("models")
def models(schema: str = typer.Option("strategy", help="PostgreSQL schema")) -> None:
    """List registered model versions with their walk-forward summary."""
    import psycopg

    from depthflow.common.settings import PostgresSettings, load_settings
    from depthflow.strategy.registry import list_models

    pg = load_settings(PostgresSettings)
    with psycopg.connect(pg.dsn.get_secret_value()) as conn:
        rows = list_models(conn, schema)
    for r in rows:
        summary = (r["metrics"] or {}).get("walk_forward", {}).get("mean", {})
        typer.echo(
            f"{'*' if r['active'] else ' '} {r['name']:<10} {r['version']:<40} {r['kind']:<8} "
            f"{r['feature_set']} bal_acc={summary.get('balanced_accuracy', float('nan')):.3f} "
            f"macro_f1={summary.get('macro_f1', float('nan')):.3f} {r['created_at']:%Y-%m-%d %H:%M}"
        )


@app.command("activate")
def activate(
    name: str = typer.Argument(..., help="model name (sklearn, torch, ...)"),
    version: str = typer.Argument(..., help="registry version"),
    schema: str = typer.Option("strategy", help="PostgreSQL schema"),
) -> None:
    """Make a version the active one of its name (a control message switches a running
    service; restarted services load the active version)."""
    import psycopg

    from depthflow.common.settings import PostgresSettings, load_settings
    from depthflow.strategy.registry import activate_model

    pg = load_settings(PostgresSettings)
    with psycopg.connect(pg.dsn.get_secret_value()) as conn:
        activate_model(conn, schema, name, version)
    typer.echo(f"{name} {version} is active")
