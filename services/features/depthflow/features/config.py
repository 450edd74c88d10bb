"""Features service settings (``FEATURES_*``): frozen, unknown fields refused."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings

from depthflow.common.settings import settings_config

_IDENT = r"^[a-z_][a-z0-9_]{0,62}$"


class FeaturesSettings(BaseSettings):
    """Everything the features service needs besides Kafka/PostgreSQL/HTTP settings."""

    model_config = settings_config("FEATURES_")

    # the consumer group id and the prefix of the state changelog topic
    app_id: str = Field(default="depthflow-features", pattern=r"^[A-Za-z0-9._\-]{1,200}$")
    # partitions of md.book/md.trades (co-partitioned) and of the state table's changelog
    partitions: int = Field(default=6, ge=1, le=1000)
    # topics (tests use fresh ones)
    topic_book: str = "md.book"
    topic_trades: str = "md.trades"
    topic_features: str = "features.v1"
    topic_dlq: str = "dlq.features"
    topic_status: str = "status.v1"
    # PostgreSQL schema holding vectors, candles and scalers
    db_schema: str = Field(default="features", pattern=_IDENT)
    store_vectors: bool = True
    # at most one features.v1 message (and stored vector) per symbol per this many ms of
    # exchange time; 0 = one per book update
    min_emit_interval_ms: float = Field(default=0.0, ge=0.0)
    # how long (exchange time) a book waits for the trades up to its timestamp before it is
    # processed anyway; trades and books then enter the engine in canonical order
    # (trade before book on equal timestamps) whenever the trade feed keeps up
    merge_hold_ms: float = Field(default=200.0, ge=0.0)
    # most events per processing batch, and the longest wait for the first one
    batch_max: int = Field(default=2000, ge=1, le=100_000)
    batch_within_s: float = Field(default=0.05, gt=0.0, le=10.0)
    # features.v1/changelog producers: wait up to this long to fill a request, request batch
    # size per partition, and compression (a 110-value vector is ~5 kB of JSON)
    # features.v1 leaves in bursts (a batch's vectors at once): a short linger suffices
    producer_linger_ms: float = Field(default=1.0, ge=0.0, le=1000.0)
    producer_batch_bytes: int = Field(default=1_000_000, ge=16_384, le=16_000_000)
    producer_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    # after start-up, move every object then alive out of the cyclic GC's reach (gc.freeze)
    # and collect the young generation less often: a batch keeps ~40 level lists per book
    # alive, which otherwise triggers full collections that walk the whole heap
    gc_freeze: bool = True
    gc_gen0_threshold: int = Field(default=50_000, ge=100, le=10_000_000)
    # how often the state is checkpointed to the changelog and the offsets committed (a
    # crash replays at most this much, recomputing the same vectors). Each checkpoint
    # serialises every changed symbol's state (~0.2-1 ms each) on the worker's loop; the
    # writes that follow run while batches go on
    commit_interval_s: float = Field(default=5.0, gt=0.0, le=60.0)
    # how long the group waits for a silent worker (a crashed one) before rebalancing
    session_timeout_s: float = Field(default=30.0, ge=6.0, le=300.0)
    # how often the active scaler is re-read from the database
    scaler_poll_s: float = Field(default=5.0, gt=0.0)
    heartbeat_interval_s: float = Field(default=5.0, gt=0.0)
