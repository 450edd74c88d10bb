"""Strategy settings (``STRATEGY_*``; the seed's ``IMBALANCE_*`` and ``MIN_CLUSTER_VOLUME``
names are accepted unprefixed too) and the runtime configuration ``control.v1`` may change.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode

from depthflow.common.settings import settings_config

StrategyKind = Literal["imbalance", "sklearn", "torch"]
ModelKind = Literal["sklearn", "torch"]
ImbalanceFeature = Literal["imbalance_5", "imbalance_10", "imbalance_total"]
_SYMBOL_KEY = re.compile(r"^([a-z]+:)?[A-Z0-9][A-Z0-9_\-]{0,39}$")


def _parse_mapping(value: object) -> object:
    """``"BTCUSDT=sklearn,binance:ETHUSDT=torch"`` → dict; dicts pass through."""
    if isinstance(value, str):
        out: dict[str, str] = {}
        for part in re.split(r"[,\s]+", value.strip()):
            if not part:
                continue
            key, sep, val = part.partition("=")
            if not sep or not key or not val:
                raise ValueError(f"expected KEY=VALUE[,KEY=VALUE...], got {part!r}")
            out[key.strip()] = val.strip()
        return out
    return value


class RuntimeConfig(BaseModel):
    """What a ``control.v1`` message's ``config`` may change while the service runs.

    Unknown keys are refused (the whole message is then ignored with a logged reason and
    the previous configuration stays).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    imbalance_buy_threshold: float = Field(default=0.75, gt=0.5, le=1.0)
    imbalance_sell_threshold: float = Field(default=0.25, ge=0.0, lt=0.5)
    min_cluster_volume: float = Field(default=10_000.0, ge=0.0)
    imbalance_feature: ImbalanceFeature = "imbalance_5"
    hysteresis: float = Field(default=0.05, ge=0.0, lt=0.25)
    cooldown_s: float = Field(default=5.0, ge=0.0)
    min_confidence: float = Field(default=0.5, ge=0.0, le=1.0)
    default_strategy: StrategyKind = "imbalance"
    # "SYMBOL" or "exchange:SYMBOL" -> strategy kind
    symbol_strategies: dict[str, StrategyKind] = Field(default_factory=dict)
    # model kind -> pinned registry version ("" or absent: the registry's active version)
    model_versions: dict[ModelKind, str] = Field(default_factory=dict)

    @field_validator("symbol_strategies", "model_versions", mode="before")
    @classmethod
    def _mapping(cls, value: object) -> object:
        return _parse_mapping(value)

    @field_validator("symbol_strategies")
    @classmethod
    def _keys_are_symbols(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _SYMBOL_KEY.match(key):
                raise ValueError(f"not a symbol or exchange:SYMBOL: {key!r}")
        return value

    def strategy_for(self, exchange: str, symbol: str) -> StrategyKind:
        """The strategy configured for a symbol (``exchange:SYMBOL`` wins over ``SYMBOL``)."""
        return (
            self.symbol_strategies.get(f"{exchange}:{symbol}")
            or self.symbol_strategies.get(symbol)
            or self.default_strategy
        )

    def merged(self, changes: dict[str, Any]) -> RuntimeConfig:
        """A new configuration with ``changes`` applied (validated; raises on bad input)."""
        return RuntimeConfig.model_validate({**self.model_dump(), **changes})


class StrategySettings(BaseSettings):
    """Everything the strategy service needs besides Kafka/PostgreSQL/HTTP settings."""

    model_config = settings_config("STRATEGY_")

    # The seed's names are requirements: IMBALANCE_BUY_THRESHOLD, IMBALANCE_SELL_THRESHOLD,
    # MIN_CLUSTER_VOLUME (quote currency, e.g. USDT: cluster volume x cluster price).
    imbalance_buy_threshold: float = Field(
        default=0.75,
        gt=0.5,
        le=1.0,
        validation_alias=AliasChoices(
            "imbalance_buy_threshold", "STRATEGY_IMBALANCE_BUY_THRESHOLD", "IMBALANCE_BUY_THRESHOLD"
        ),
    )
    imbalance_sell_threshold: float = Field(
        default=0.25,
        ge=0.0,
        lt=0.5,
        validation_alias=AliasChoices(
            "imbalance_sell_threshold",
            "STRATEGY_IMBALANCE_SELL_THRESHOLD",
            "IMBALANCE_SELL_THRESHOLD",
        ),
    )
    min_cluster_volume: float = Field(
        default=10_000.0,
        ge=0.0,
        validation_alias=AliasChoices(
            "min_cluster_volume", "STRATEGY_MIN_CLUSTER_VOLUME", "MIN_CLUSTER_VOLUME"
        ),
    )
    imbalance_feature: ImbalanceFeature = "imbalance_5"
    hysteresis: float = Field(default=0.05, ge=0.0, lt=0.25)
    cooldown_s: float = Field(default=5.0, ge=0.0)
    min_confidence: float = Field(default=0.5, ge=0.0, le=1.0)
    default_strategy: StrategyKind = "imbalance"
    symbol_strategies: Annotated[dict[str, StrategyKind], NoDecode] = Field(default_factory=dict)
    model_versions: Annotated[dict[ModelKind, str], NoDecode] = Field(default_factory=dict)
    # registry names of the models each model strategy loads
    sklearn_model: str = "sklearn"
    torch_model: str = "torch"
    # topics (tests use fresh ones)
    topic_features: str = "features.v1"
    topic_signals: str = "signals.v1"
    topic_control: str = "control.v1"
    topic_status: str = "status.v1"
    group_id: str = "strategy"
    control_service: str = Field(default="strategy", description="key on control.v1")
    db_schema: str = Field(default="strategy", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    max_batch: int = Field(default=500, ge=1, le=100_000)
    # features.v1 offsets are committed at most this often, not after every batch: a commit
    # is a Kafka round trip the next batch waits for, and ~300 requests/s at 50 symbols. A
    # crash replays at most this much more; the signal ids (deterministic) make the repeat
    # harmless (ON CONFLICT DO NOTHING here, the executor's dedup there).
    commit_interval_s: float = Field(default=0.2, ge=0.0, le=10.0)
    # signals are few and each one waits for a decision: sent at once by default
    producer_linger_ms: int = Field(default=0, ge=0, le=1000)
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    # a refusal is logged the first time per (symbol, reason), then every Nth time
    refusal_log_every: int = Field(default=1000, ge=1)
    torch_threads: int = Field(default=1, ge=1, le=64)

    @field_validator("symbol_strategies", "model_versions", mode="before")
    @classmethod
    def _mapping(cls, value: object) -> object:
        return _parse_mapping(value)

    @model_validator(mode="after")
    def _runtime_is_valid(self) -> StrategySettings:
        self.runtime()  # the same rules as a control message's config
        return self

    def runtime(self) -> RuntimeConfig:
        """The starting runtime configuration (``control.v1`` may replace it)."""
        return RuntimeConfig.model_validate(
            {name: getattr(self, name) for name in RuntimeConfig.model_fields}
        )

    def model_name(self, kind: ModelKind) -> str:
        return self.sklearn_model if kind == "sklearn" else self.torch_model
