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
        None, help="comma-separated, e.g. BTCUSDT,ETHUSDT (default: TRADING_PAIRS)"
    ),
    source: str | None = typer.Option(
        None, help="sim | binance | binance-testnet | bybit | bybit-testnet"
    ),
    sim_url: str | None = typer.Option(None, help="simulator base URL (source sim)"),
    write_db: bool | None = typer.Option(
        None, "--write-db/--no-write-db", help="store top-of-book changes in PostgreSQL"
    ),
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
        CollectorSettings,
        exchange=exchange,
        symbols=symbols,
        source=source,
        sim_url=sim_url,
        write_db=write_db,
    )
    service = CollectorService(
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


@app.command("sink")
def sink(
    idle_timeout: float | None = typer.Option(
        None, help="burst mode: drain, then exit after this many silent seconds"
    ),
) -> None:
    """Run only the md.book/md.health → PostgreSQL sink (its own process)."""
    from depthflow.collector.app import SinkService
    from depthflow.collector.config import CollectorSettings
    from depthflow.common.lifecycle import run_service
    from depthflow.common.settings import (
        HttpSettings,
        KafkaSettings,
        PostgresSettings,
        load_settings,
    )

    service = SinkService(
        load_settings(CollectorSettings),
        load_settings(KafkaSettings),
        load_settings(PostgresSettings),
        load_settings(HttpSettings),
    )
    if idle_timeout is None:
        asyncio.run(run_service(service))
        return

    async def burst() -> None:
        await service.start()
        try:
            await service.run(idle_timeout=idle_timeout)
        finally:
            await service.stop()

    asyncio.run(burst())


@app.command("export")
def export(
    out: Path = typer.Argument(..., help="CSV file to write"),  # noqa: B008 - typer's idiom
    fmt: str = typer.Option(
        "quotes", "--format", help="quotes | book_snapshot_25 | incremental_book_L2"
    ),
    symbol: str | None = typer.Option(None, help="only this symbol"),
    schema: str | None = typer.Option(None, help="PostgreSQL schema (default: settings)"),
) -> None:
    """Write a Tardis CSV: ``quotes`` from orderbook_data; the book formats rebuilt from
    md.depth.raw (every payload and REST snapshot the collector used)."""
    from depthflow.collector.config import CollectorSettings
    from depthflow.collector.tardis import export_books, export_quotes, read_topic_values
    from depthflow.common.settings import KafkaSettings, PostgresSettings, load_settings

    settings = load_settings(CollectorSettings)
    if fmt == "quotes":
        pg = load_settings(PostgresSettings)
        rows = export_quotes(pg.dsn.get_secret_value(), schema or settings.db_schema, out, symbol)
    elif fmt in ("book_snapshot_25", "incremental_book_L2"):
        kafka = load_settings(KafkaSettings)
        values = read_topic_values(kafka.confluent_config(), settings.topic_depth_raw)
        n_inc, n_snap = export_books(
            values,
            incremental=out if fmt == "incremental_book_L2" else None,
            snapshot_25=out if fmt == "book_snapshot_25" else None,
            symbol=symbol,
        )
        rows = n_inc or n_snap
    else:
        raise typer.BadParameter(f"unknown format {fmt!r}")
    typer.echo(f"{rows} rows → {out}")


@app.command("import")
def import_(
    path: Path = typer.Argument(..., help="Tardis CSV (optionally .gz)"),  # noqa: B008
    fmt: str = typer.Option("quotes", "--format", help="quotes | incremental_book_L2"),
    schema: str | None = typer.Option(None, help="PostgreSQL schema (default: settings)"),
) -> None:
    """Backfill from a Tardis CSV: ``quotes`` rows straight into orderbook_data
    (idempotent); ``incremental_book_L2`` rebuilt into books and published on md.book, which
    the sink stores like live data."""
    from depthflow.collector.config import CollectorSettings
    from depthflow.collector.tardis import import_incremental, import_quotes
    from depthflow.common.settings import KafkaSettings, PostgresSettings, load_settings

    settings = load_settings(CollectorSettings)
    if fmt == "quotes":
        from depthflow.common.migrations import load_migrations, migrate

        dsn = load_settings(PostgresSettings).dsn.get_secret_value()
        target = schema or settings.db_schema
        migrate(dsn, target, load_migrations("depthflow.collector"))
        rows = import_quotes(dsn, target, path)
    elif fmt == "incremental_book_L2":
        from depthflow.common.kafka import Producer

        producer = Producer(load_settings(KafkaSettings), client_id="collector-import")
        rows = import_incremental(path, producer, settings.topic_book)
        producer.flush(60)
    else:
        raise typer.BadParameter(f"unknown format {fmt!r}")
    typer.echo(f"{rows} rows ← {path}")
