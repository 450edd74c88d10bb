"""Collector settings (``COLLECTOR_*``; the symbols also from the seed's ``TRADING_PAIRS``)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode

from depthflow.common.settings import settings_config

Source = Literal["sim", "binance", "binance-testnet", "bybit", "bybit-testnet"]
ExchangeName = Literal["binance", "bybit"]

# (WebSocket base, REST base) per source. Binance USD-M: combined streams are served at
# ``<ws>/stream?streams=a/b``; Bybit v5 public linear at ``<ws>/v5/public/linear``.
ENDPOINTS: dict[str, tuple[str, str]] = {
    "binance": ("wss://fstream.binance.com", "https://fapi.binance.com"),
    "binance-testnet": ("wss://fstream.binancefuture.com", "https://testnet.binancefuture.com"),
    "bybit": ("wss://stream.bybit.com", "https://api.bybit.com"),
    "bybit-testnet": ("wss://stream-testnet.bybit.com", "https://api-testnet.bybit.com"),
}
_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9_\-]{0,39}$")


class CollectorSettings(BaseSettings):
    """Everything the collector needs besides Kafka/PostgreSQL/HTTP settings."""

    model_config = settings_config("COLLECTOR_")

    exchange: ExchangeName = "binance"
    symbols: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("BTCUSDT", "ETHUSDT", "SOLUSDT"),
        validation_alias=AliasChoices("symbols", "COLLECTOR_SYMBOLS", "TRADING_PAIRS"),
    )
    source: Source = "sim"
    sim_url: str = "http://127.0.0.1:8090"
    ws_url: str | None = Field(default=None, description="override the source's WS base")
    rest_url: str | None = Field(default=None, description="override the source's REST base")
    # Binance: 100ms diff stream, 1000-level REST snapshot; Bybit: orderbook.200 topic.
    binance_depth_speed: Literal["100ms", "250ms", "500ms"] = "100ms"
    snapshot_limit: Literal[5, 10, 20, 50, 100, 500, 1000] = 1000
    bybit_depth: Literal[1, 50, 200, 1000] = 200
    trades: bool = True
    # Binance USD-M allows up to 1024 streams per connection; Bybit caps one subscribe
    # request's args. Stay well below the limits.
    streams_per_connection: int = Field(default=200, ge=1, le=1024)
    bybit_args_per_request: int = Field(default=10, ge=1, le=100)
    book_levels: int = Field(default=20, ge=1, le=20)
    # Events that arrive early are held for this many successors before it counts as a gap
    # (TCP never reorders; this absorbs a relay's swaps without a resync).
    reorder_window: int = Field(default=4, ge=0, le=10_000)
    stale_after_s: float = Field(default=10.0, gt=0)
    roll_after_s: float = Field(default=23 * 3600.0, gt=0, description="before Binance's 24h")
    bybit_ping_interval_s: float = Field(default=20.0, gt=0)
    reconnect_initial_s: float = Field(default=0.2, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    snapshot_timeout_s: float = Field(default=10.0, gt=0)
    # topics (tests use fresh ones)
    topic_depth_raw: str = "md.depth.raw"
    topic_book: str = "md.book"
    topic_trades: str = "md.trades"
    topic_health: str = "md.health"
    topic_dlq: str = "dlq.collector"
    # md.depth.raw's producer linger (ms): the archive nobody waits for, sent in fewer, larger
    # requests than the books and trades (KAFKA_PRODUCER_LINGER_MS)
    raw_linger_ms: float = Field(default=100.0, ge=0.0, le=1000.0)
    # heartbeats (real state for the api's /bot/status), like every service
    topic_status: str = "status.v1"
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    # the PostgreSQL sink: md.book/md.health → collector.orderbook_data/book_health
    write_db: bool = True
    db_schema: str = Field(default="collector", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    db_group_id: str = "collector-db"
    db_batch_size: int = Field(default=5000, ge=1)
    db_max_buffered: int = Field(default=200_000, ge=1)
    # a consumer killed without leaving the group holds its partitions this long
    # (the broker's group.min.session.timeout.ms, 6 s by default, is the floor)
    db_session_timeout_ms: int = Field(default=10_000, ge=1000, le=300_000)
    # Nobody waits for these rows by the millisecond: the sink's fetches wait for this much
    # data or this long, and its offsets are committed at most this often (a crash replays
    # at most that much; the rows' natural keys absorb the repeat). Each Kafka request costs
    # the broker ~150 µs of CPU: per-batch fetches and commits were ~400 requests/s at 50
    # symbols, where batches are small.
    db_fetch_min_bytes: int = Field(default=256 * 1024, ge=1, le=16 * 1024 * 1024)
    db_fetch_max_wait_ms: int = Field(default=100, ge=0, le=1000)
    db_commit_interval_s: float = Field(default=1.0, ge=0.0, le=60.0)
    partitions_ahead_days: int = Field(default=2, ge=0, le=60)
    # graceful stop: once the sockets are closed and the producer flushed, the in-process
    # sink writes and commits md.book/md.health up to their end for at most this long (the
    # rest is replayed by the next sink); keep the whole stop inside run_service's 25 s
    drain_timeout_s: float = Field(default=10.0, gt=0, le=20)

    @field_validator("symbols", mode="before")
    @classmethod
    def _split_symbols(cls, value: object) -> object:
        if isinstance(value, str):
            value = [s for s in re.split(r"[,\s]+", value) if s]
        if isinstance(value, (list, tuple)):
            out = []
            for s in value:
                s = str(s).strip().upper()
                if not _SYMBOL.match(s):
                    raise ValueError(f"not a symbol: {s!r}")
                if s not in out:
                    out.append(s)
            if not out:
                raise ValueError("at least one symbol")
            return tuple(out)
        return value

    def endpoints(self) -> tuple[str, str]:
        """(WebSocket base, REST base) for the configured source."""
        if self.source == "sim":
            rest = self.sim_url.rstrip("/")
            ws = "ws" + rest[4:] if rest.startswith("http") else rest
        else:
            if not self.source.startswith(self.exchange):
                raise ValueError(f"source {self.source!r} does not serve {self.exchange!r}")
            ws, rest = ENDPOINTS[self.source]
        return (self.ws_url or ws).rstrip("/"), (self.rest_url or rest).rstrip("/")
