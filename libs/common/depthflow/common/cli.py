"""The ``depthflow`` command: one subcommand per service or tool that exists.

Each service ships ``depthflow/<service>/cli.py`` with a typer ``app``; it is registered here
only when its package is installed, so no subcommand is ever a stub. Service modules import
their heavy dependencies inside the commands, keeping ``depthflow --help`` fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import typer

from depthflow.common.errors import ConfigError, DatabaseError

# subcommand -> module holding its typer ``app``
SUBCOMMANDS: dict[str, str] = {
    "sim": "depthflow.sim.cli",
    "collector": "depthflow.collector.cli",
    "features": "depthflow.features.cli",
    "strategy": "depthflow.strategy.cli",
    "train": "depthflow.strategy.train_cli",
    "executor": "depthflow.executor.cli",
    "api": "depthflow.api.cli",
    "backtest": "depthflow.backtest.cli",
}

# service -> package whose ``migrations/`` folder holds that service's schema
SERVICE_SCHEMAS: dict[str, str] = {
    "collector": "depthflow.collector",
    "features": "depthflow.features",
    "strategy": "depthflow.strategy",
    "executor": "depthflow.executor",
    "api": "depthflow.api",
    "backtest": "depthflow.backtest",
}


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="depthflow",
        help="depthflow: live crypto order books to trading decisions over Kafka and PostgreSQL.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def root(
        ctx: typer.Context,
        log_level: str = typer.Option("INFO", envvar="LOG_LEVEL", help="DEBUG, INFO, WARNING"),
        log_json: bool = typer.Option(True, envvar="LOG_JSON", help="JSON log lines"),
    ) -> None:
        """depthflow: live crypto order books to trading decisions."""
        from depthflow.common.logging import configure_logging

        configure_logging(
            service=ctx.invoked_subcommand or "depthflow", level=log_level, json=log_json
        )

    @app.command("migrate")
    def migrate_command(
        service: list[str] = typer.Option(  # noqa: B008 - typer's idiom
            None, "--service", "-s", help="only these services (default: every one)"
        ),
    ) -> None:
        """Apply each service's versioned SQL migrations to its own schema."""
        from depthflow.common.migrations import load_migrations, migrate
        from depthflow.common.settings import PostgresSettings, load_settings

        settings = load_settings(PostgresSettings)
        wanted = service or list(SERVICE_SCHEMAS)
        for name in wanted:
            package = SERVICE_SCHEMAS.get(name)
            if package is None:
                raise typer.BadParameter(f"unknown service {name!r}", param_hint="--service")
            if not _exists(package) or not _exists(f"{package}.migrations"):
                continue
            applied = migrate(settings.dsn.get_secret_value(), name, load_migrations(package))
            typer.echo(f"{name}: {'applied ' + str(applied) if applied else 'up to date'}")

    for name, module in SUBCOMMANDS.items():
        if _exists(module):
            sub = importlib.import_module(module)
            app.add_typer(sub.app, name=name)
    return app


def main() -> None:
    """Entry point of the ``depthflow`` console script."""
    try:
        build_app()()
    except ConfigError as exc:
        print(f"depthflow: configuration error\n{exc}", file=sys.stderr)
        sys.exit(2)
    except DatabaseError as exc:
        print(f"depthflow: database error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
