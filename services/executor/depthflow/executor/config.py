"""The executor's settings (``EXECUTOR_*`` plus the seed's unprefixed risk names).

The seed's names are requirements: ``MAX_OPEN_POSITIONS``, ``MAX_EXPOSURE_USDT``,
``MIN_ORDER_SIZE_USDT`` and ``TESTNET`` are read exactly so (``EXECUTOR_``-prefixed spellings
are accepted too, the prefixed one winning), via field aliases on the one settings model — no
second unprefixed model that would have to tolerate every other variable in ``.env``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings

from depthflow.common.db import ident
from depthflow.common.settings import settings_config
from depthflow.executor.breaker import BreakerConfig
from depthflow.executor.risk import RiskLimits

Venue = Literal["paper", "binance", "bybit"]

SIM_BASE_URL = "http://127.0.0.1:8090"
BINANCE_LIVE_URL = "https://fapi.binance.com"
BINANCE_TESTNET_URL = "https://testnet.binancefuture.com"
BINANCE_LIVE_WS = "wss://fstream.binance.com"
BINANCE_TESTNET_WS = "wss://stream.binancefuture.com"
BYBIT_LIVE_URL = "https://api.bybit.com"
BYBIT_TESTNET_URL = "https://api-testnet.bybit.com"
BYBIT_LIVE_WS = "wss://stream.bybit.com"
BYBIT_TESTNET_WS = "wss://stream-testnet.bybit.com"
# The simulator's documented local account (docs/simulator.md); it unlocks nothing else.
SIM_API_KEY = "depthflow-sim-key"
SIM_API_SECRET = "depthflow-sim-secret"  # noqa: S105 - documented local default


def _seed(name: str) -> AliasChoices:
    return AliasChoices(f"EXECUTOR_{name}", name, name.lower())


class ExecutorSettings(BaseSettings):
    """How ``depthflow executor`` runs. Frozen; unknown fields refused; secrets hidden."""

    model_config = settings_config("EXECUTOR_") | {"populate_by_name": True}

    venue: Venue = "paper"
    # Endpoint: "sim" (the local simulator, the default), "testnet" or "live".
    endpoint: Literal["sim", "testnet", "live"] = "sim"
    testnet: bool = Field(
        default=False,
        validation_alias=_seed("TESTNET"),
        description="the seed's TESTNET: use the venue's testnet URLs",
    )
    sim_base_url: str = SIM_BASE_URL
    base_url: str | None = Field(default=None, description="override the REST base URL")
    ws_url: str | None = Field(default=None, description="override the WebSocket base URL")
    api_key: SecretStr = SecretStr(SIM_API_KEY)
    api_secret: SecretStr = SecretStr(SIM_API_SECRET)
    recv_window_ms: int = Field(default=5000, ge=100, le=60_000)
    request_timeout_s: float = Field(default=5.0, gt=0, le=60)
    order_timeout_s: float | None = Field(
        default=None,
        gt=0,
        le=60,
        description="timeout of order placement (default: request_timeout_s)",
    )
    # A Pending order is declared Failed only when the venue says it does not know it and the
    # request can no longer be accepted: sent_at + recv_window + this grace.
    unknown_grace_s: float = Field(default=2.0, ge=0)
    unknown_resolve_s: float = Field(
        default=10.0,
        ge=0,
        description="keep querying an "
        "unknown outcome this long past the Failed deadline, "
        "then leave it to reconciliation",
    )
    max_rate_limit_wait_s: float = Field(default=10.0, ge=0)

    # Risk: the seed's names first.
    max_open_positions: int = Field(default=5, ge=0, validation_alias=_seed("MAX_OPEN_POSITIONS"))
    max_exposure_usdt: float = Field(
        default=10_000.0, ge=0, validation_alias=_seed("MAX_EXPOSURE_USDT")
    )
    min_order_size_usdt: float = Field(
        default=5.0, ge=0, validation_alias=_seed("MIN_ORDER_SIZE_USDT")
    )
    max_symbol_exposure_usdt: float = Field(default=10_000.0, ge=0)
    daily_loss_limit_usdt: float = Field(default=500.0, ge=0)
    order_usdt_at_full_conviction: float = Field(default=1_000.0, gt=0)
    slippage_buffer_bps: float = Field(
        default=20.0, ge=0, le=1000, description="limit price of the marketable IOC order"
    )
    max_book_age_s: float = Field(default=30.0, gt=0)

    # Paper venue: the fill model of the backtests.
    paper_starting_balance: float = Field(default=100_000.0, ge=0)
    paper_latency_ms: float = Field(default=20.0, ge=0)
    paper_maker_fee: float = Field(default=0.0002)
    paper_taker_fee: float = Field(default=0.0005, ge=0)
    paper_book_warmup: int = Field(
        default=200, ge=0, description="md.book messages re-read per partition at start"
    )
    # The paper venue's md.book fetches wait for this much data or this long: a few ms older
    # books against a fetch (~150 µs of broker CPU, more in aiokafka) per book or two when
    # books are few; at most ~100 fetches/s at the default
    paper_book_fetch_min_bytes: int = Field(default=64 * 1024, ge=1, le=16 * 1024 * 1024)
    paper_book_fetch_max_wait_ms: int = Field(default=10, ge=0, le=500)

    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_recovery_timeout_s: float = Field(default=30.0, gt=0)
    reconcile_interval_s: float = Field(default=30.0, gt=0)

    service_name: str = "executor"
    db_schema: str = "executor"
    migrate_on_start: bool = True
    group_id: str = "executor"
    topic_signals: str = "signals.v1"
    topic_book: str = "md.book"
    topic_orders: str = "orders.v1"
    topic_control: str = "control.v1"
    topic_status: str = "status.v1"
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    # orders.v1 producer linger (ms): each outbox publish waits for its acks, and the next
    # signal for that, so events are sent at once by default
    producer_linger_ms: int = Field(default=0, ge=0, le=1000)
    concurrency: int = Field(default=16, ge=1, le=256, description="signals handled at once")

    @field_validator("db_schema")
    @classmethod
    def _plain_schema(cls, value: str) -> str:
        ident(value)
        return value

    @model_validator(mode="after")
    def _testnet_means_testnet(self) -> ExecutorSettings:
        if self.testnet and self.endpoint == "live":
            raise ValueError("TESTNET=true contradicts EXECUTOR_ENDPOINT=live")
        return self

    @property
    def effective_endpoint(self) -> str:
        """``sim``, ``testnet`` or ``live`` (``TESTNET=true`` selects testnet)."""
        return "testnet" if self.testnet else self.endpoint

    def rest_url(self) -> str:
        """The REST base URL of the configured venue and endpoint."""
        if self.base_url:
            return self.base_url.rstrip("/")
        ep = self.effective_endpoint
        if ep == "sim" or self.venue == "paper":
            return self.sim_base_url.rstrip("/")
        if self.venue == "binance":
            return BINANCE_TESTNET_URL if ep == "testnet" else BINANCE_LIVE_URL
        return BYBIT_TESTNET_URL if ep == "testnet" else BYBIT_LIVE_URL

    def stream_url(self) -> str:
        """The WebSocket base URL (user-data streams)."""
        if self.ws_url:
            return self.ws_url.rstrip("/")
        ep = self.effective_endpoint
        if ep == "sim" or self.venue == "paper":
            return self.sim_base_url.replace("http", "ws", 1).rstrip("/")
        if self.venue == "binance":
            return BINANCE_TESTNET_WS if ep == "testnet" else BINANCE_LIVE_WS
        return BYBIT_TESTNET_WS if ep == "testnet" else BYBIT_LIVE_WS

    def risk_limits(self) -> RiskLimits:
        """The pre-trade limits."""
        return RiskLimits(
            max_open_positions=self.max_open_positions,
            max_exposure_usdt=self.max_exposure_usdt,
            min_order_size_usdt=self.min_order_size_usdt,
            max_symbol_exposure_usdt=self.max_symbol_exposure_usdt,
            daily_loss_limit_usdt=self.daily_loss_limit_usdt,
            order_usdt_at_full_conviction=self.order_usdt_at_full_conviction,
        )

    def breaker_config(self) -> BreakerConfig:
        return BreakerConfig(
            failure_threshold=self.breaker_failure_threshold,
            recovery_timeout_s=self.breaker_recovery_timeout_s,
        )

    @property
    def running_by_default(self) -> bool:
        """Paper trades unless told to stop; live venues wait for an explicit start."""
        return self.venue == "paper"
