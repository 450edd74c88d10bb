"""Every Kafka topic of depthflow: name, key, value schema and retention, in one module.

Keys are ``{exchange}:{symbol}`` (one symbol's events stay ordered in one partition), or the
service name on ``control.v1``. Values are JSON objects carrying ``schema_version``.

Hot-path producers build values as plain dicts (see the ``*_value`` helpers' field lists);
consumers decode with ``Topic.decode`` which validates against the pydantic model and raises
``DecodeError`` for anything else, so the message can go to ``dlq.<service>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from depthflow.common.codec import dumps, loads_object
from depthflow.common.errors import DecodeError

Exchange = Literal["binance", "bybit"]
Side = Literal["buy", "sell"]
DAY_MS = 24 * 3600 * 1000


class Message(BaseModel):
    """Base of every topic value: immutable, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = 1


class DepthRaw(Message):
    """An exchange payload exactly as received (``payload`` is the text, byte for byte)."""

    exchange: Exchange
    symbol: str
    kind: Literal["ws", "snapshot", "trade"]
    conn_id: str
    recv_ts_us: int
    payload: str


Level = tuple[float, float]


class Book(Message):
    """A validated book after one applied update: top-of-book and the top 20 levels."""

    exchange: Exchange
    symbol: str
    seq: int = Field(
        description="exchange update id of the last applied event (Binance u, Bybit u)"
    )
    prev_seq: int
    exchange_ts_us: int
    local_ts_us: int
    bid_price: float
    bid_qty: float
    ask_price: float
    ask_qty: float
    bids: list[Level] = Field(max_length=20)
    asks: list[Level] = Field(max_length=20)
    trace_id: str = ""
    cross_seq: int = Field(
        default=0,
        description="Bybit's cross sequence (data.seq) of the last applied event; 0 on Binance",
    )
    tob_changed: bool = Field(
        default=True,
        description="top of book differs from the previous md.book of this symbol "
        "(the collector stores exactly these in collector.orderbook_data)",
    )
    feed_id: str = Field(
        default="",
        description="the collector feed (one process's connection set for one exchange) that "
        "published it; empty when unknown",
    )
    trades_before: int = Field(
        default=0,
        ge=0,
        description="how many md.trades of this symbol the same feed published before this "
        "book (the trades' feed_seq): a consumer holding trade feed_seq >= trades_before has "
        "every trade the collector received before it, so it need not wait for the trade feed",
    )


class Trade(Message):
    """A normalised trade; ``side`` is the taker's side."""

    exchange: Exchange
    symbol: str
    trade_id: str
    price: float = Field(gt=0)
    qty: float = Field(gt=0)
    side: Side
    exchange_ts_us: int
    local_ts_us: int
    feed_id: str = Field(default="", description="the collector feed that published it")
    feed_seq: int = Field(
        default=0, ge=0, description="1-based index among the feed's trades of this symbol"
    )


class Health(Message):
    """A book-health event: a gap, resync, stale or crossed book, reconnect, snapshot."""

    exchange: Exchange
    symbol: str
    kind: Literal[
        "gap", "resync", "synced", "stale", "crossed", "reconnect", "disconnect", "parse_error"
    ]
    detail: str = ""
    ts_us: int
    conn_id: str = ""


class FeatureVector(Message):
    """One vector of a feature set, per book update."""

    exchange: Exchange
    symbol: str
    feature_set: str
    values: list[float]
    normalized: list[float]
    valid: list[bool]
    scaler_version: str = ""
    book_seq: int
    exchange_ts_us: int
    local_ts_us: int
    trace_id: str = ""


class Signal(Message):
    """A strategy's decision about one symbol."""

    signal_id: str
    exchange: Exchange
    symbol: str
    side: Literal["buy", "sell", "hold"]
    strength: float = Field(ge=0, le=1)
    confidence: float = Field(ge=0, le=1)
    strategy: str
    model_version: str = ""
    reason: str = ""
    features: dict[str, float] = Field(default_factory=dict)
    feature_set: str
    book_seq: int
    ts_us: int
    source_ts_us: int
    trace_id: str = ""


class OrderEvent(Message):
    """One step of an order's lifecycle, a fill or a position change."""

    event_id: str
    event_type: Literal["order", "fill", "position", "reject", "audit"]
    venue: str
    exchange: Exchange
    symbol: str
    client_order_id: str
    venue_order_id: str = ""
    signal_id: str = ""
    side: Side
    order_type: str
    status: str
    qty: float
    price: float | None = None
    filled_qty: float = 0.0
    avg_price: float | None = None
    fee: float = 0.0
    detail: dict[str, Any] = Field(default_factory=dict)
    ts_us: int
    trace_id: str = ""


class Control(Message):
    """Desired state and configuration of one service (compacted, key = service name)."""

    service: str
    desired_state: Literal["running", "stopped"]
    config: dict[str, Any] = Field(default_factory=dict)
    version: int = Field(ge=0)
    updated_by: str
    ts_us: int


class Heartbeat(Message):
    """A service instance's real state, published every few seconds (compacted, key =
    ``{service}:{instance}``); the api's ``/bot/status`` reads these, not the desired state."""

    service: str
    instance: str
    state: Literal["starting", "running", "stopping", "stopped", "failed", "paused"]
    ready: bool
    detail: dict[str, Any] = Field(default_factory=dict)
    ts_us: int


class DeadLetter(Message):
    """A message a service could not handle, with where it came from and why."""

    service: str
    source_topic: str
    partition: int
    offset: int
    key: str | None
    value: str | None = Field(description="the original bytes, latin-1 decoded (lossless)")
    error: str
    ts_us: int


M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Topic(Generic[M]):
    """A topic: its name, value model and how the broker keeps it."""

    name: str
    model: type[M]
    key: str
    retention_ms: int | None = 7 * DAY_MS
    compacted: bool = False

    def encode(self, value: M | dict[str, Any]) -> bytes:
        """Encode a model or an already-shaped dict."""
        if isinstance(value, BaseModel):
            return dumps(value.model_dump(mode="json"))
        return dumps(value)

    def decode(self, data: bytes | bytearray | memoryview | None) -> M:
        """Decode and validate; any problem raises ``DecodeError``."""
        obj = loads_object(self.name, data)
        version = obj.get("schema_version")
        if version != self.model.model_fields["schema_version"].default:
            raise DecodeError(self.name, f"unsupported schema_version {version!r}")
        try:
            return self.model.model_validate(obj)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise DecodeError(self.name, f"{where}: {first['msg']}") from None

    def config(self) -> dict[str, str]:
        """Topic-level broker configuration."""
        conf = {"cleanup.policy": "compact" if self.compacted else "delete"}
        if self.retention_ms is not None and not self.compacted:
            conf["retention.ms"] = str(self.retention_ms)
        return conf


DEPTH_RAW: Topic[DepthRaw] = Topic("md.depth.raw", DepthRaw, "{exchange}:{symbol}", 3 * DAY_MS)
BOOK: Topic[Book] = Topic("md.book", Book, "{exchange}:{symbol}")
TRADES: Topic[Trade] = Topic("md.trades", Trade, "{exchange}:{symbol}")
HEALTH: Topic[Health] = Topic("md.health", Health, "{exchange}:{symbol}", 30 * DAY_MS)
FEATURES: Topic[FeatureVector] = Topic("features.v1", FeatureVector, "{exchange}:{symbol}")
SIGNALS: Topic[Signal] = Topic("signals.v1", Signal, "{exchange}:{symbol}", 30 * DAY_MS)
ORDERS: Topic[OrderEvent] = Topic("orders.v1", OrderEvent, "{exchange}:{symbol}", None)
CONTROL: Topic[Control] = Topic("control.v1", Control, "{service}", None, compacted=True)
STATUS: Topic[Heartbeat] = Topic(
    "status.v1", Heartbeat, "{service}:{instance}", None, compacted=True
)

ALL_TOPICS: tuple[Topic[Any], ...] = (
    DEPTH_RAW,
    BOOK,
    TRADES,
    HEALTH,
    FEATURES,
    SIGNALS,
    ORDERS,
    CONTROL,
    STATUS,
)


def dlq_topic(service: str) -> Topic[DeadLetter]:
    """The dead-letter topic of a service: ``dlq.<service>``."""
    return Topic(f"dlq.{service}", DeadLetter, "{source_topic}", 30 * DAY_MS)


def symbol_key(exchange: str, symbol: str) -> bytes:
    """The message key that keeps one symbol's events in one partition."""
    return f"{exchange}:{symbol}".encode()
