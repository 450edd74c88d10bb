"""The simulator's settings (``SIM_*``): frozen, unknown fields refused, secret hidden."""

from __future__ import annotations

import zlib
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode

from depthflow.common.settings import settings_config
from depthflow.sim.faults import FaultConfig

# Documented local defaults (docs/simulator.md): they only ever unlock the simulator.
DEFAULT_API_KEY = "depthflow-sim-key"
DEFAULT_API_SECRET = "depthflow-sim-secret"  # noqa: S105 - a documented local default


def push_phase_ms(symbol: str, mode: str) -> int:
    """A symbol's push offset: fixed per symbol (crc32, taken mod each interval), 0 aligned."""
    return zlib.crc32(symbol.encode()) if mode == "per_symbol" else 0


class SimSettings(BaseSettings):
    """How ``depthflow sim`` runs."""

    model_config = settings_config("SIM_")

    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    symbols: Annotated[tuple[str, ...], NoDecode] = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    seed: int = 1
    rate: float = Field(default=50.0, gt=0, le=200_000, description="updates/s per symbol")
    tick_ms: float = Field(default=10.0, ge=1, le=1000)
    api_key: str = DEFAULT_API_KEY
    api_secret: SecretStr = SecretStr(DEFAULT_API_SECRET)
    starting_balance: float = Field(default=100_000.0, ge=0)
    leverage: int = Field(default=20, ge=1, le=125)
    maker_fee: float = Field(default=0.0002, ge=0, le=0.01)
    taker_fee: float = Field(default=0.0005, ge=0, le=0.01)
    weight_limit: int = Field(default=2400, ge=1, description="request weight per minute")
    ban_after: int = Field(default=5, ge=0, description="429s before a 418 ban")
    ban_seconds: float = Field(default=120.0, ge=0)
    history: int = Field(
        default=250_000,
        ge=2_000,
        description="updates kept for truth, over all symbols (each keeps at least 2,000)",
    )
    push_phase: Literal["per_symbol", "aligned"] = Field(
        default="per_symbol",
        description="interval streams (@depth@100ms, Bybit orderbook): each symbol pushed at "
        "its own fixed offset within the interval (the exchanges' event times are not on "
        "round multiples), or every symbol on the clock's round multiples at once",
    )
    faults: FaultConfig = FaultConfig()

    @field_validator("symbols", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            value = [s for s in value.replace(" ", "").split(",") if s]
        return tuple(str(s).upper() for s in value)  # type: ignore[attr-defined]

    @field_validator("symbols")
    @classmethod
    def _valid(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one symbol")
        for s in value:
            if not s.isalnum() or not s.endswith("USDT"):
                raise ValueError(f"{s!r} is not a USDT-margined symbol like BTCUSDT")
        return value
