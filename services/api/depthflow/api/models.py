"""Request and response bodies of the HTTP API (what the OpenAPI schema documents)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

Role = Literal["admin", "viewer"]
Username = Field(pattern=r"^[A-Za-z0-9_.@-]{3,64}$")


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorBody(BaseModel):
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing, invalid or expired token"},
    403: {"model": ErrorBody, "description": "the token's role may not do this"},
}
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    400: {"model": ErrorBody, "description": "not a controlled service"},
    503: {"model": ErrorBody, "description": "Kafka or PostgreSQL unavailable; nothing changed"},
}


class LoginRequest(Request):
    username: str = Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")
    password: str = Field(min_length=1, max_length=256)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth2 token type
    expires_in: int
    refresh_expires_in: int
    role: Role
    username: str


class RefreshRequest(Request):
    refresh_token: str = Field(min_length=1, max_length=4096)


class ChangePasswordRequest(Request):
    current_password: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=1, max_length=256)


class CreateUserRequest(Request):
    username: str = Username
    password: str = Field(min_length=1, max_length=256)
    role: Role = "viewer"


class UserOut(BaseModel):
    username: str
    role: Role
    created_at: dt.datetime | None = None
    password_changed_at: dt.datetime | None = None
    locked_until: dt.datetime | None = None


class VerifyOut(BaseModel):
    valid: Literal[True] = True
    username: str
    role: Role
    expires_at: int


class Message(BaseModel):
    detail: str


# ---- bot -------------------------------------------------------------------------------


class Instance(BaseModel):
    instance: str
    state: str
    reported_state: str
    ready: bool
    age_s: float
    detail: dict[str, Any]


class ServiceStatusOut(BaseModel):
    service: str
    state: str = Field(
        description="real state from heartbeats: running, paused, starting, "
        "stopping, stopped, failed, down (heartbeats stale) or unknown (none)"
    )
    ready: bool
    up: bool
    desired_state: Literal["running", "stopped"] | None
    desired_version: int | None
    last_heartbeat_age_s: float | None
    instances: list[Instance]


class BotStatus(BaseModel):
    state: Literal["running", "stopped", "degraded", "down"]
    services: list[ServiceStatusOut]
    stale_after_s: float


class ServicesRequest(Request):
    services: list[str] | None = Field(
        default=None,
        max_length=20,
        description="services to act on (default: every controlled service)",
    )


class ControlOut(BaseModel):
    service: str
    desired_state: Literal["running", "stopped"]
    config: dict[str, Any]
    version: int
    updated_by: str
    ts_us: int


class ControlResult(BaseModel):
    changed: list[ControlOut]


class ServiceConfig(BaseModel):
    service: str
    desired_state: Literal["running", "stopped"] | None
    config: dict[str, Any]
    version: int
    updated_by: str | None
    updated_at: dt.datetime | None


class BotConfig(BaseModel):
    services: list[ServiceConfig]
    trading_pairs: list[str]


ConfigValue = str | int | float | bool | None | list[str | int | float | bool]


class ConfigUpdate(Request):
    config: dict[str, ConfigValue] = Field(max_length=100)
    expected_version: int | None = Field(
        default=None,
        ge=0,
        le=2**62,
        description="refuse with 409 unless the current version is this",
    )

    @field_validator("config")
    @classmethod
    def _storable(cls, value: dict[str, ConfigValue]) -> dict[str, ConfigValue]:
        # Say so here rather than fail later: orjson refuses integers beyond 64 bits and
        # PostgreSQL's jsonb refuses NUL characters.
        try:
            text = orjson.dumps(value).decode()
        except orjson.JSONEncodeError:
            raise ValueError("config numbers must fit in 64 bits") from None
        if "\\u0000" in text:
            raise ValueError("config keys and values must not contain NUL characters")
        return value


class AuditEntry(BaseModel):
    id: int
    at: dt.datetime
    username: str
    action: str
    service: str
    version: int
    before: dict[str, Any] | None
    after: dict[str, Any]
    trace_id: str


# ---- data ------------------------------------------------------------------------------


class Pair(BaseModel):
    symbol: str
    configured: bool
    exchanges: list[str]
    age_s: float | None


class PairsOut(BaseModel):
    pairs: list[Pair]


class OrderBookOut(BaseModel):
    exchange: str
    symbol: str
    seq: int
    exchange_ts_us: int
    local_ts_us: int
    age_s: float
    bid_price: float
    bid_qty: float
    ask_price: float
    ask_qty: float
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]


class SymbolMetrics(BaseModel):
    model_config = ConfigDict(extra="allow")

    exchange: str
    symbol: str
    seq: int
    bid_price: float
    ask_price: float
    mid_price: float | None
    micro_price: float | None
    spread_abs: float | None
    spread_bps: float | None
    imbalance_5: float | None
    imbalance_20: float | None
    depth_bid_5: float
    depth_ask_5: float
    updates: int
    updates_per_s: float | None
    age_s: float
    health_counts: dict[str, int]
    last_health: dict[str, Any] | None


class MetricsOut(BaseModel):
    metrics: list[SymbolMetrics]


# ---- trading ---------------------------------------------------------------------------


class SignalOut(BaseModel):
    signal_id: str
    exchange: str
    symbol: str
    side: str
    strength: float
    confidence: float
    strategy: str
    model_version: str
    reason: str
    ts_us: int
    trace_id: str


class SignalsOut(BaseModel):
    signals: list[SignalOut]
    total_seen: int


class PositionOut(BaseModel):
    exchange: str
    symbol: str
    side: Literal["long", "short"]
    qty: float
    avg_price: float | None
    mark_price: float | None
    notional_usdt: float | None
    unrealized_pnl: float | None
    realized_pnl: float
    fees_paid: float
    updated_ts_us: int
    source: str


class PositionsOut(BaseModel):
    positions: list[PositionOut]


class BalanceOut(BaseModel):
    realized_pnl: float
    unrealized_pnl: float
    fees_paid: float
    net_pnl: float
    exposure_usdt: float
    reported: dict[str, Any] | None = Field(
        description="the latest balance the executor reported in an orders.v1 event's "
        "detail.balance, if any"
    )


class RiskStatusOut(BaseModel):
    open_positions: int
    exposure_usdt: float
    max_open_positions: int | None
    max_exposure_usdt: float | None
    within_limits: bool
    breaches: list[str]
    rejects: int
    reject_reasons: dict[str, int]
    executor_state: str


class ExecutionStatsOut(BaseModel):
    orders: int
    fills: int
    rejects: int
    cancels: int
    fill_rate: float | None
    filled_qty: float
    filled_notional: float
    fees: float
    avg_fill_latency_ms: float | None
    p99_fill_latency_ms: float | None
    by_status: dict[str, int]
    history: list[dict[str, Any]] = Field(
        description="fills per day and symbol from executor.fills (empty until it exists)"
    )


class Health(BaseModel):
    status: str
    service: str = "api"
