"""``depthflow collector``: run the collector; ``export``/``import`` Tardis-shaped CSV."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

app = typer.Typer(
    help="Exchange order books (Binance USD-M, Bybit v5) into Kafka and PostgreSQL.",
    add_completion=False,
)


@app.callback(invoke_without_command=True)
def collector(
    ctx: typer.Context,
    exchange: str | None = typer.Option(None, help="binance | bybit"),
    symbols: str | None = typer.Option(
        None, help="comma-separated, e.g. BTCUSDT,ETHUSDT (default: TRADING_PAIRS)"),
    source: str | None = typer.Option(
        None, help="sim | binance | binance-testnet | bybit | bybit-testnet"),
    sim_url: str | None = typer.Option(None, help="simulator base URL (source sim)"),
    write_db: bool | None = typer.Option(None, "--write-db/--no-write-db",
                                         help="store top-of-book changes in PostgreSQL"),
    max_messages: int | None = typer.Option(None, help="stop after this many frames"),
    idle_timeout: float | None = typer.Option(None, help="stop after this many silent seconds"),
) -> None:
    """Collect synchronised order books until SIGTERM/SIGINT."""
    if ctx.invoked_subcommand is not None:
        return
    from depthflow.collector.app import CollectorService
    from depthflow.collector.config import CollectorSettings
    from depthflow.common.lifecycle import run_service
    from depthflow.common.settings import (
        HttpSettings,
        KafkaSettings,
        PostgresSettings,
        load_settings,
    )

    settings = load_settings(
        CollectorSettings, exchange=exchange, symbols=symbols, source=source, sim_url=sim_url,
        write_db=write_db,
    )
    service = CollectorService(
        settings, load_settings(KafkaSettings), load_settings(PostgresSettings),
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


@app.command("export")
def export(
    out: Path = typer.Argument(..., help="CSV file to write"),  # noqa: B008 - typer's idiom
    symbol: str | None = typer.Option(None, help="only this symbol"),
    schema: str = typer.Option("collector", help="PostgreSQL schema"),
) -> None:
    """Write collector.orderbook_data as a Tardis ``quotes`` CSV."""
    from depthflow.collector.tardis import export_quotes
    from depthflow.common.settings import PostgresSettings, load_settings

    pg = load_settings(PostgresSettings)
    rows = export_quotes(pg.dsn.get_secret_value(), schema, out, symbol)
    typer.echo(f"{rows} rows → {out}")


@app.command("import")
def import_(
    path: Path = typer.Argument(..., help="Tardis quotes CSV (optionally .gz)"),  # noqa: B008
    schema: str = typer.Option("collector", help="PostgreSQL schema"),
) -> None:
    """Load a Tardis ``quotes`` CSV into collector.orderbook_data (idempotent)."""
    from depthflow.collector.tardis import import_quotes
    from depthflow.common.migrations import load_migrations, migrate
    from depthflow.common.settings import PostgresSettings, load_settings

    pg = load_settings(PostgresSettings)
    dsn = pg.dsn.get_secret_value()
    migrate(dsn, schema, load_migrations("depthflow.collector"))
    rows = import_quotes(dsn, schema, path)
    typer.echo(f"{rows} rows ← {path}")
