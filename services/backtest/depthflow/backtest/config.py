"""Backtest settings (``BACKTEST_*``) and the frozen configuration of one run.

The strategy, feature and risk settings are deliberately *not* duplicated here: a backtest
reads the same ``STRATEGY_*`` (runtime config), ``FEATURES_MIN_EMIT_INTERVAL_MS`` and
executor risk settings (``MAX_OPEN_POSITIONS``, ``MAX_EXPOSURE_USDT``, ...) as the live
services, so by default it runs what production runs. Only what has no live counterpart is a
``BACKTEST_*`` setting: where to read, the fill model's assumptions, the account and the report.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings

from depthflow.common.settings import settings_config

Source = Literal["kafka", "depth-raw", "tardis"]
GAP_POLICY: Literal["freeze"] = "freeze"
_MODEL_SPEC = re.compile(r"^model:([A-Za-z0-9_.\-]{1,100})@([A-Za-z0-9_.:\-]{1,200})$")


class BacktestSettings(BaseSettings):
    """Everything a backtest needs besides Kafka/PostgreSQL and the live services' settings."""

    model_config = settings_config("BACKTEST_")

    exchange: Literal["binance", "bybit"] = "binance"
    # what to replay (tests use fresh topics)
    topic_book: str = "md.book"
    topic_trades: str = "md.trades"
    topic_health: str = "md.health"
    topic_depth_raw: str = "md.depth.raw"
    # records are located with offsets_for_times on their Kafka timestamp (producer time),
    # then filtered on exchange time: read this much before --from and after --to
    seek_margin_s: float = Field(default=60.0, ge=0.0)
    poll_timeout_s: float = Field(default=5.0, gt=0.0)
    # results
    db_schema: str = Field(default="backtest", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    store_results: bool = True
    # where the model registry and the scalers live (read-only)
    strategy_db_schema: str = Field(default="strategy", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    features_db_schema: str = Field(default="features", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    # account and report
    starting_balance_usdt: float = Field(default=100_000.0, gt=0.0)
    returns_interval_s: float = Field(default=60.0, gt=0.0)
    chunk_events: int = Field(default=512, ge=1, le=1_000_000)
    # the fill model (depthflow.executor.fills.FillModelConfig); every one is in the report
    fill_submit_latency_us: int = Field(default=20_000, ge=0)
    fill_cancel_latency_us: int = Field(default=20_000, ge=0)
    fill_maker_fee_rate: float = 0.0002
    fill_taker_fee_rate: float = Field(default=0.0005, ge=0.0)
    fill_taker_slippage_bps: float = Field(default=0.0, ge=0.0)
    fill_queue_ahead_fraction: float = Field(default=1.0, ge=0.0, le=1.0)
    fill_shrink_queue_on_level_decrease: bool = False
    fill_on_trade_through: bool = True
    fill_on_book_cross: bool = True
    fill_consume_liquidity: bool = True
    fill_max_levels: int = Field(default=20, ge=1, le=20)

    def fill_model(self) -> dict[str, Any]:
        """The fill model's parameters, keyed as ``FillModelConfig`` fields."""
        return {
            "submit_latency_us": self.fill_submit_latency_us,
            "cancel_latency_us": self.fill_cancel_latency_us,
            "maker_fee_rate": self.fill_maker_fee_rate,
            "taker_fee_rate": self.fill_taker_fee_rate,
            "taker_slippage_bps": self.fill_taker_slippage_bps,
            "queue_ahead_fraction": self.fill_queue_ahead_fraction,
            "shrink_queue_on_level_decrease": self.fill_shrink_queue_on_level_decrease,
            "fill_on_trade_through": self.fill_on_trade_through,
            "fill_on_book_cross": self.fill_on_book_cross,
            "consume_liquidity": self.fill_consume_liquidity,
            "max_levels": self.fill_max_levels,
        }


class StrategySpec(BaseModel):
    """``imbalance`` or ``model:<name>@<version>``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["imbalance", "model"]
    name: str = ""
    version: str = ""

    @classmethod
    def parse(cls, text: str) -> StrategySpec:
        text = text.strip()
        if text == "imbalance":
            return cls(kind="imbalance")
        match = _MODEL_SPEC.match(text)
        if not match:
            raise ValueError(f"expected 'imbalance' or 'model:<name>@<version>', got {text!r}")
        return cls(kind="model", name=match[1], version=match[2])

    def __str__(self) -> str:
        return "imbalance" if self.kind == "imbalance" else f"model:{self.name}@{self.version}"


class RunConfig(BaseModel):
    """Everything that decides a run's results (hashed into ``config_hash``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Source
    exchange: Literal["binance", "bybit"]
    symbols: tuple[str, ...]
    from_us: int
    to_us: int
    warmup_us: int = Field(default=0, ge=0)
    inputs: tuple[str, ...] = ()  # topics or files read
    strategy: str
    strategy_runtime: dict[str, Any]
    model: dict[str, Any] = Field(default_factory=dict)
    min_emit_interval_ms: float = Field(default=0.0, ge=0.0)
    risk: dict[str, Any]
    slippage_buffer_bps: float = Field(default=20.0, ge=0.0)
    fill_model: dict[str, Any]
    starting_balance_usdt: float = Field(gt=0.0)
    returns_interval_s: float = Field(gt=0.0)
    gap_policy: Literal["freeze"] = GAP_POLICY

    @field_validator("symbols")
    @classmethod
    def _sorted_unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one symbol")
        return tuple(sorted(set(value)))

    def canonical_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)

    @property
    def config_hash(self) -> str:
        return hashlib.sha256(self.canonical_json()).hexdigest()
