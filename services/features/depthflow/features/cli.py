"""``depthflow features``: run the worker; ``describe`` the feature set; ``fit-scaler``."""

from __future__ import annotations

from datetime import datetime

import typer

app = typer.Typer(
    help="Feature set v1 (110 features per book update) as a consumer-group service.",
    add_completion=False,
)


@app.callback(invoke_without_command=True)
def features(ctx: typer.Context) -> None:
    """Run the features worker (md.book + md.trades → features.v1) until SIGTERM/SIGINT."""
    if ctx.invoked_subcommand is not None:
        return
    import asyncio

    from depthflow.common.lifecycle import run_service
    from depthflow.common.settings import (
        HttpSettings,
        KafkaSettings,
        PostgresSettings,
        load_settings,
    )
    from depthflow.features.app import FeaturesService
    from depthflow.features.config import FeaturesSettings

    service = FeaturesService(
        load_settings(FeaturesSettings),
        load_settings(KafkaSettings),
        load_settings(PostgresSettings),
        load_settings(HttpSettings),
    )
    asyncio.run(run_service(service))


@app.command("describe")
def describe(
    names: bool = typer.Option(False, "--names", help="only the 110 names, one per line"),
) -> None:
    """Print every feature's formula, unit, window and default (or just the names)."""
    from depthflow.features.describe import describe as text
    from depthflow.features.describe import describe_names

    typer.echo(describe_names() if names else text(), nl=False)


def _time_us(value: str) -> int:
    """µs since the epoch from an integer (µs) or an ISO-8601 time (UTC when naive)."""
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"not µs or ISO-8601: {value!r}") from None
    if dt.tzinfo is None:
        from datetime import UTC

        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1_000_000)


@app.command("fit-scaler")
def fit_scaler_command(
    since: str = typer.Option(..., help="start (exchange time): ISO-8601 or µs since epoch"),
    until: str = typer.Option(..., help="end, exclusive: ISO-8601 or µs since epoch"),
    symbols: str | None = typer.Option(None, help="comma-separated symbols (default: all)"),
    activate: bool = typer.Option(
        True, "--activate/--no-activate", help="make it the active scaler"
    ),
) -> None:
    """Fit a StandardScaler on stored vectors, store it versioned and activate it."""
    from depthflow.common.migrations import load_migrations, migrate
    from depthflow.common.settings import PostgresSettings, load_settings
    from depthflow.features.config import FeaturesSettings
    from depthflow.features.scaler import fit_scaler

    settings = load_settings(FeaturesSettings)
    dsn = load_settings(PostgresSettings).dsn.get_secret_value()
    migrate(dsn, settings.db_schema, load_migrations("depthflow.features"))
    wanted = tuple(s.strip() for s in (symbols or "").split(",") if s.strip())
    try:
        version, rows = fit_scaler(
            dsn, settings.db_schema, _time_us(since), _time_us(until), wanted, activate=activate
        )
    except ValueError as exc:
        typer.echo(f"fit-scaler: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"scaler {version}: {rows} vectors{' (active)' if activate else ''}")
