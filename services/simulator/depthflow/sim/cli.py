"""``depthflow sim``: run the exchange simulator."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Local Binance USD-M + Bybit v5 exchange simulator.",
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback(invoke_without_command=True)
def sim(
    host: str | None = typer.Option(None, help="[default 127.0.0.1] interface to bind"),
    port: int | None = typer.Option(
        None, help="[default 8090] one port for REST and WebSocket, both protocols"
    ),
    symbols: str | None = typer.Option(
        None, help="[default BTCUSDT,ETHUSDT,SOLUSDT] comma-separated symbols"
    ),
    seed: int | None = typer.Option(
        None, help="[default 1] market model seed (deterministic per seed)"
    ),
    rate: float | None = typer.Option(
        None, help="[default 50.0] book updates per second per symbol"
    ),
    api_key: str = typer.Option(None, envvar="SIM_API_KEY", help="trading API key"),
    api_secret: str = typer.Option(None, envvar="SIM_API_SECRET", help="trading API secret"),
    starting_balance: float = typer.Option(None, help="USDT each account starts with"),
    weight_limit: int = typer.Option(None, help="Binance request weight per minute"),
    drop_rate: float | None = typer.Option(None, help="share of stream messages dropped"),
    duplicate_rate: float | None = typer.Option(None, help="share of stream messages sent twice"),
    reorder_rate: float | None = typer.Option(None, help="share of stream messages swapped"),
    disconnect_every_s: float | None = typer.Option(
        None, help="close streams after N s (0 = never)"
    ),
    stall_every_s: float | None = typer.Option(None, help="go silent every N s (0 = never)"),
    stall_duration_s: float | None = typer.Option(None, help="length of each stall"),
    slow_response_ms: float | None = typer.Option(None, help="delay every REST response"),
    user_stream_delay_ms: float | None = typer.Option(
        None, help="delay account events on the user-data streams"
    ),
    unknown_503_rate: float | None = typer.Option(None, help="orders placed but answered 503"),
    reject_rate: float | None = typer.Option(None, help="orders rejected"),
) -> None:
    """Serve REST and WebSocket for Binance USD-M and Bybit v5 linear on one port."""
    import asyncio

    from depthflow.common.lifecycle import run_service
    from depthflow.common.settings import load_settings
    from depthflow.sim.app import Simulator
    from depthflow.sim.config import SimSettings
    from depthflow.sim.faults import FaultConfig

    # Flags override SIM_* settings only when given; fault flags override SIM_FAULTS.
    fault_flags = {
        "drop_rate": drop_rate,
        "duplicate_rate": duplicate_rate,
        "reorder_rate": reorder_rate,
        "disconnect_every_s": disconnect_every_s,
        "stall_every_s": stall_every_s,
        "stall_duration_s": stall_duration_s,
        "slow_response_ms": slow_response_ms,
        "user_stream_delay_ms": user_stream_delay_ms,
        "unknown_503_rate": unknown_503_rate,
        "reject_rate": reject_rate,
    }
    given = {k: v for k, v in fault_flags.items() if v is not None}
    faults = FaultConfig.model_validate(given) if given else None
    settings = load_settings(
        SimSettings,
        host=host,
        port=port,
        symbols=symbols,
        seed=seed,
        rate=rate,
        api_key=api_key,
        api_secret=api_secret,
        starting_balance=starting_balance,
        weight_limit=weight_limit,
        faults=faults,
    )
    asyncio.run(run_service(Simulator(settings)))
