"""The gateway's settings.

``ApiSettings`` (``API_*``) holds where it listens, token lifetimes, throttling, topic names
and view bounds. ``SecuritySettings`` keeps the seed's own names (``SECRET_KEY``,
``APP_USERNAME``, ``APP_PASSWORD``, ``TRADING_PAIRS``) plus ``ENVIRONMENT``; outside
``development`` it refuses weak or placeholder secrets, so a forgotten ``.env`` cannot ship.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode

from depthflow.common.db import ident
from depthflow.common.settings import (
    Environment,
    KafkaSettings,
    PostgresSettings,
    load_settings,
    settings_config,
)

# Development defaults: usable out of the box, refused everywhere else.
DEV_SECRET_KEY = "depthflow-development-secret-key-do-not-use-in-production"  # noqa: S105 - refused outside development
DEV_APP_PASSWORD = "depthflow-dev-password"  # noqa: S105 - refused outside development

_PLACEHOLDERS = {
    "",
    "secret",
    "changeme",
    "change-me",
    "change_me",
    "password",
    "admin",
    "admin123",
    "your-secret-key",
    "your_secret_key",
    "your-secret-key-here",
    "supersecret",
    "default",
    "test",
    "example",
    "12345678",
    "123456789012",
    "qwerty",
    "letmein",
    DEV_SECRET_KEY,
    DEV_APP_PASSWORD,
}


def _looks_placeholder(value: str) -> bool:
    lowered = value.strip().lower()
    return (
        lowered in _PLACEHOLDERS
        or ("change" in lowered and "me" in lowered)
        or lowered.startswith(("your-", "your_", "<"))
        or len(set(lowered)) < 6
    )


def _comma_list(value: object) -> object:
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


class SecuritySettings(BaseSettings):
    """The seed's settings, unprefixed: ``SECRET_KEY``, ``APP_USERNAME``, ``APP_PASSWORD``,
    ``TRADING_PAIRS`` and ``ENVIRONMENT``."""

    model_config = settings_config("")

    environment: Environment = "development"
    secret_key: SecretStr = SecretStr(DEV_SECRET_KEY)
    app_username: str = Field(default="admin", pattern=r"^[A-Za-z0-9_.@-]{3,64}$")
    app_password: SecretStr = SecretStr(DEV_APP_PASSWORD)
    trading_pairs: Annotated[tuple[str, ...], NoDecode] = ("BTCUSDT", "ETHUSDT", "SOLUSDT")

    @field_validator("trading_pairs", mode="before")
    @classmethod
    def _split_pairs(cls, value: object) -> object:
        value = _comma_list(value)
        if isinstance(value, (tuple, list)):
            return tuple(str(v).upper() for v in value)
        return value

    @model_validator(mode="after")
    def _refuse_weak_secrets_outside_development(self) -> SecuritySettings:
        if self.environment == "development":
            return self
        key = self.secret_key.get_secret_value()
        if len(key) < 32 or _looks_placeholder(key):
            raise ValueError(
                "SECRET_KEY is weak or a placeholder; outside ENVIRONMENT=development it must "
                "be at least 32 random characters (openssl rand -hex 32)"
            )
        password = self.app_password.get_secret_value()
        if (
            len(password) < 12
            or _looks_placeholder(password)
            or self.app_username.lower() in password.lower()
        ):
            raise ValueError(
                "APP_PASSWORD is weak or a placeholder; outside ENVIRONMENT=development it must "
                "be at least 12 characters and not contain the user name"
            )
        return self


class ApiSettings(BaseSettings):
    """The gateway itself (``API_*``)."""

    model_config = settings_config("API_")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ("http://localhost:3000",)
    db_schema: str = "api"
    # tokens
    jwt_issuer: str = "depthflow-api"
    jwt_audience: str = "depthflow"
    access_token_ttl_s: int = Field(default=900, ge=10, le=24 * 3600)
    refresh_token_ttl_s: int = Field(default=7 * 24 * 3600, ge=60, le=90 * 24 * 3600)
    # password hashing (Argon2id; RFC 9106 low-memory profile by default)
    argon2_time_cost: int = Field(default=3, ge=1, le=20)
    argon2_memory_kib: int = Field(default=65536, ge=8192, le=4 * 1024 * 1024)
    argon2_parallelism: int = Field(default=4, ge=1, le=16)
    # login throttling and lockout
    login_max_failures: int = Field(default=5, ge=1, le=100)
    login_window_s: int = Field(default=300, ge=1)
    lockout_s: int = Field(default=900, ge=1)
    login_ip_max_failures: int = Field(default=50, ge=1)
    # live views
    heartbeat_stale_s: float = Field(default=15.0, gt=0)
    max_symbols: int = Field(default=500, ge=1, le=100_000)
    signals_kept: int = Field(default=1000, ge=1, le=1_000_000)
    orders_kept: int = Field(default=5000, ge=1, le=1_000_000)
    backfill_per_partition: int = Field(default=500, ge=0, le=1_000_000)
    ws_max_clients: int = Field(default=1000, ge=1)
    ws_event_buffer: int = Field(default=1000, ge=1, le=100_000)
    ws_auth_timeout_s: float = Field(default=5.0, gt=0)
    # topics (tests use fresh ones)
    topic_book: str = "md.book"
    topic_health: str = "md.health"
    topic_signals: str = "signals.v1"
    topic_orders: str = "orders.v1"
    topic_status: str = "status.v1"
    topic_control: str = "control.v1"
    # services /bot/start and /bot/stop act on
    controlled_services: Annotated[tuple[str, ...], NoDecode] = (
        "collector",
        "features",
        "strategy",
        "executor",
    )

    @field_validator("cors_origins", "controlled_services", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return _comma_list(value)

    @field_validator("cors_origins")
    @classmethod
    def _no_wildcard(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if origin == "*" or not origin.startswith(("http://", "https://")):
                raise ValueError(f"CORS origins are an explicit allow-list of URLs, got {origin!r}")
        return value

    @field_validator("db_schema")
    @classmethod
    def _plain_schema(cls, value: str) -> str:
        ident(value)
        return value


class Settings(BaseModel):
    """Everything the gateway reads, composed (frozen; each part reads its own prefix)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api: ApiSettings = Field(default_factory=ApiSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)


def load() -> Settings:
    """Read every part from the environment, naming the bad variable on error."""
    return Settings(
        api=load_settings(ApiSettings),
        security=load_settings(SecuritySettings),
        kafka=load_settings(KafkaSettings),
        postgres=load_settings(PostgresSettings),
    )
