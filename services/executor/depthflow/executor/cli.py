"""``depthflow executor --venue paper|binance|bybit``."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Pre-trade risk, order placement and reconciliation.",
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback(invoke_without_command=True)
def executor(
    venue: str = typer.Option(
        None, help="paper (default), binance or bybit", envvar="EXECUTOR_VENUE"
    ),
    endpoint: str = typer.Option(
        None, help="sim (default), testnet or live", envvar="EXECUTOR_ENDPOINT"
    ),
) -> None:
    """Consume signals.v1, check risk, place orders, publish orders.v1."""
    import asyncio

    from depthflow.common.lifecycle import run_service
    from depthflow.common.settings import (
        HttpSettings,
        KafkaSettings,
        PostgresSettings,
        load_settings,
    )
    from depthflow.executor.app import ExecutorService
    from depthflow.executor.config import ExecutorSettings

    settings = load_settings(ExecutorSettings, venue=venue, endpoint=endpoint)
    service = ExecutorService(
        settings,
        load_settings(KafkaSettings),
        load_settings(PostgresSettings),
        load_settings(HttpSettings),
    )
    asyncio.run(run_service(service))
