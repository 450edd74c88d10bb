"""Settings shared by every service.

Every model is frozen and refuses unknown fields; secrets are ``SecretStr`` so they never
show in ``repr`` or logs. Services compose ``KafkaSettings`` and ``PostgresSettings`` into
their own settings model and read everything from the environment (and ``.env``).
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from depthflow.common.errors import ConfigError

Environment = Literal["development", "test", "production"]


def settings_config(env_prefix: str) -> SettingsConfigDict:
    """The one settings configuration every depthflow model uses."""
    return SettingsConfigDict(
        env_prefix=env_prefix,
        frozen=True,
        extra="forbid",
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        validate_default=True,
    )


class KafkaSettings(BaseSettings):
    """How to reach the Kafka cluster (``KAFKA_*``)."""

    model_config = settings_config("KAFKA_")

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    default_partitions: int = Field(default=6, ge=1, le=1000)
    replication_factor: int = Field(default=1, ge=1, le=5)
    # how long a producer waits to fill a request: the latency each Kafka hop adds, against
    # fewer, larger requests (the features worker has its own FEATURES_PRODUCER_LINGER_MS)
    producer_linger_ms: float = Field(default=5.0, ge=0.0, le=1000.0)

    @field_validator("bootstrap_servers")
    @classmethod
    def _hosts_have_ports(cls, value: str) -> str:
        for host in value.split(","):
            name, sep, port = host.strip().rpartition(":")
            if not sep or not name or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value

    def confluent_config(self) -> dict[str, Any]:
        """Connection settings in librdkafka's vocabulary."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username or ""
            conf["sasl.password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else ""
            )
        if self.ssl_cafile:
            conf["ssl.ca.location"] = self.ssl_cafile
        return conf

    def aiokafka_config(self) -> dict[str, Any]:
        """Connection settings in aiokafka's vocabulary."""
        conf: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            conf["sasl_mechanism"] = self.sasl_mechanism
            conf["sasl_plain_username"] = self.sasl_username
            conf["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        if self.security_protocol in ("SSL", "SASL_SSL"):
            import ssl

            conf["ssl_context"] = ssl.create_default_context(cafile=self.ssl_cafile)
        return conf


class PostgresSettings(BaseSettings):
    """How to reach PostgreSQL (``POSTGRES_*``)."""

    model_config = settings_config("POSTGRES_")

    dsn: SecretStr = SecretStr("postgresql://depthflow:depthflow@127.0.0.1:5432/depthflow")
    pool_min_size: int = Field(default=1, ge=0, le=100)
    pool_max_size: int = Field(default=5, ge=1, le=100)
    # 0 behind PgBouncer in transaction mode (DigitalOcean's connection pooler).
    statement_cache_size: int = Field(default=100, ge=0)
    ssl_rootcert: str | None = None

    @field_validator("dsn")
    @classmethod
    def _is_postgres_url(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if not raw.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value


class HttpSettings(BaseSettings):
    """Where a service serves /metrics, /healthz and /readyz (``HTTP_*``)."""

    model_config = settings_config("HTTP_")

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)


S = TypeVar("S", bound=BaseSettings)


def load_settings(model: type[S], **overrides: Any) -> S:
    """Build a settings model, turning validation errors into a ``ConfigError`` that names
    every bad field and the environment variable that sets it."""
    try:
        return model(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        prefix = str(model.model_config.get("env_prefix", ""))
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(settings)"
            env = (prefix + str(err["loc"][0])).upper() if err["loc"] else prefix
            lines.append(f"  {loc} (env {env}): {err['msg']}")
        raise ConfigError(f"invalid {model.__name__} settings:\n" + "\n".join(lines)) from None
