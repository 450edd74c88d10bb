"""``depthflow api``: serve the gateway."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="The API gateway: control, data and trading views, live WebSocket.", add_completion=False
)


@app.callback(invoke_without_command=True)
def serve(
    host: str = typer.Option(None, help="listen address (API_HOST)"),
    port: int = typer.Option(None, help="listen port (API_PORT, default 8000)"),
) -> None:
    """Run the gateway on uvicorn until SIGTERM/SIGINT."""
    import asyncio

    from depthflow.api.app import ApiService
    from depthflow.api.config import Settings, load
    from depthflow.common.lifecycle import run_service

    settings = load()
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    if overrides:
        settings = Settings(**{**dict(settings), "api": settings.api.model_copy(update=overrides)})
    asyncio.run(run_service(ApiService(settings)))
