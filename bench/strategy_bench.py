"""Strategy throughput and inference latency, per strategy type (imbalance, sklearn, torch).

``decide``: the pure strategies over the same synthetic vectors - vectors/s with batches of
500 and per-vector latency p50/p99 with batches of 1 (what a lone waiting vector costs) and
with batches of 500 (batch time / 500). The ceiling measured in the same run is decoding
and validating the ``features.v1`` JSON of each vector - the least the service spends per
vector before any strategy runs; ``ratio`` = decide rate / decode rate.

``service``: real Kafka + PostgreSQL, the whole ``StrategyService`` (consume, check, decide,
store, publish, commit) per strategy type, vectors/s and signals/s from its first batch on;
the ceilings are a bare aiokafka ``getmany`` loop reading the same topic and, above, the
JSON decode + validation rate (which the service pays for every vector).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from depthflow.common.schemas import FEATURES, FeatureVector
from depthflow.strategy.config import RuntimeConfig
from depthflow.strategy.imbalance import ImbalanceStrategy
from depthflow.strategy.models import LoadedModel, ModelMeta, ModelStrategy, model_inputs, sha256
from depthflow.strategy.synthetic import vector_series
from depthflow.strategy.vectors import VectorInput

BATCH = 500


def _vectors(n: int, seed: int = 1) -> list[dict[str, Any]]:
    half = n // 2
    return vector_series(half, symbol="BTCUSDT", seed=seed) + vector_series(
        n - half, symbol="ETHUSDT", seed=seed + 1, mid0=3000.0
    )


def _fit(kind: str, vectors: list[dict[str, Any]]) -> tuple[Any, bytes, ModelMeta]:
    """A small model of each kind on labelled synthetic vectors (imbalance → next move)."""
    from depthflow.strategy.train import TrainParams, fit_model

    inputs = [VectorInput.from_message(FeatureVector.model_validate(v)) for v in vectors]
    x = np.stack([model_inputs(v.normalized, v.valid) for v in inputs])
    imb = x[:, 15]
    y = np.where(imb > 0.3, 1, np.where(imb < -0.3, -1, 0))
    params = TrainParams(
        model=kind,
        symbols=("BTCUSDT",),
        since_us=0,
        until_us=1,  # type: ignore[arg-type]
        max_iter=50,
        epochs=3,
    )
    fitted = fit_model(params, x, y)
    meta = ModelMeta(
        kind=kind,
        name=kind,
        version=f"{kind}-bench",
        feature_set="v1",
        required_features=("imbalance_5",),
    )
    if kind == "sklearn":
        from depthflow.strategy.models import encode_sklearn

        data = encode_sklearn(fitted, meta)
    else:
        from depthflow.strategy.torch_model import encode_torch

        data = encode_torch(fitted, meta)
    return fitted, data, meta


def _strategy(kind: str, artifacts: dict[str, bytes]) -> Any:
    cfg = RuntimeConfig(cooldown_s=0)
    if kind == "imbalance":
        return ImbalanceStrategy(cfg)
    from depthflow.strategy.models import decode_artifact

    model: LoadedModel = decode_artifact(kind, artifacts[kind], sha256(artifacts[kind]))
    return ModelStrategy(model, cfg)


def run_decide(n: int = 20_000) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    raw = _vectors(n)
    encoded = [FEATURES.encode(v) for v in raw]
    t0 = time.perf_counter()
    decoded = [FEATURES.decode(b) for b in encoded]
    decode_s = time.perf_counter() - t0
    inputs = [VectorInput.from_message(v) for v in decoded]
    artifacts = {k: _fit(k, raw[:4000])[1] for k in ("sklearn", "torch")}
    out: dict[str, Any] = {"vectors": n, "ceiling_decode_per_s": round(n / decode_s)}
    for kind in ("imbalance", "sklearn", "torch"):
        strategy = _strategy(kind, artifacts)
        t0 = time.perf_counter()
        per_batch = []
        signals = 0
        for i in range(0, n, BATCH):
            s = time.perf_counter()
            batch = inputs[i : i + BATCH]
            decisions = strategy.decide([v for v in batch if strategy.check(v) is None])
            per_batch.append((time.perf_counter() - s) / len(batch))
            signals += sum(d is not None for d in decisions)
        total = time.perf_counter() - t0
        single = _strategy(kind, artifacts)
        lat = []
        for v in inputs[:2000]:
            s = time.perf_counter_ns()
            if single.check(v) is None:
                single.decide([v])
            lat.append(time.perf_counter_ns() - s)
        rate = n / total
        out[kind] = {
            "vectors_per_s": round(rate),
            "signals_per_s": round(signals / total),
            "ratio_to_decode_ceiling": round(rate / out["ceiling_decode_per_s"], 3),
            "latency_us_batch1_p50": round(float(np.percentile(lat, 50)) / 1000, 1),
            "latency_us_batch1_p99": round(float(np.percentile(lat, 99)) / 1000, 1),
            "latency_us_per_vector_batch500_p50": round(float(np.median(per_batch)) * 1e6, 2),
        }
    return out


async def _service(kind: str, n: int, artifacts: dict[str, bytes]) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer

    from depthflow.common.kafka import Producer, create_topics, delete_topics
    from depthflow.common.migrations import load_migrations, migrate
    from depthflow.common.schemas import symbol_key
    from depthflow.common.settings import KafkaSettings, PostgresSettings
    from depthflow.common.testing import infra
    from depthflow.strategy.app import StrategyService
    from depthflow.strategy.config import StrategySettings
    from depthflow.strategy.registry import ModelRecord, register_model

    kafka = KafkaSettings(bootstrap_servers=infra.kafka_bootstrap(), default_partitions=3)
    dsn = infra.postgres_dsn()
    from pydantic import SecretStr

    pg = PostgresSettings(dsn=SecretStr(dsn))
    tag = uuid.uuid4().hex[:10]
    topics = {k: f"bench.strategy.{k}.{tag}" for k in ("features", "signals", "control", "status")}
    schema = f"bench_{tag}"
    create_topics(kafka, list(topics.values()), partitions=3)
    try:
        migrate(dsn, schema, load_migrations("depthflow.strategy"))
        if kind != "imbalance":
            with psycopg.connect(dsn) as conn:
                register_model(
                    conn,
                    schema,
                    ModelRecord(
                        name=kind,
                        version=f"{kind}-bench",
                        kind=kind,
                        sha256=sha256(artifacts[kind]),
                        feature_set="v1",
                        artifact=artifacts[kind],
                    ),
                )
        producer = Producer(kafka, client_id="bench")
        for v in _vectors(n, seed=5):
            producer.produce(
                topics["features"], FEATURES.encode(v), symbol_key(v["exchange"], v["symbol"])
            )
        producer.flush()

        consumer = AIOKafkaConsumer(
            topics["features"],
            **kafka.aiokafka_config(),
            group_id=f"bench-{tag}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        got = 0
        t0 = None
        while got < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=BATCH)
            if batch and t0 is None:
                t0 = time.perf_counter()
            got += sum(len(r) for r in batch.values())
        ceiling = n / (time.perf_counter() - (t0 or time.perf_counter()))
        await consumer.stop()

        settings = StrategySettings(
            topic_features=topics["features"],
            topic_signals=topics["signals"],
            topic_control=topics["control"],
            topic_status=topics["status"],
            db_schema=schema,
            group_id=f"strategy-bench-{tag}",
            default_strategy=kind,
            cooldown_s=0,
            max_batch=BATCH,
        )
        service = StrategyService(settings, kafka, pg)
        await service.start()
        try:
            handled = await service.run(max_messages=n, idle_timeout=30)
            # from the first batch on: the consumer group join is start-up, not throughput
            elapsed = time.monotonic() - (service.first_batch_monotonic or time.monotonic())
        finally:
            await service.stop()
        rate = handled / elapsed
        return {
            "vectors_per_s": round(rate),
            "signals_per_s": round(service.signals_published / elapsed),
            "signals": service.signals_published,
            "ceiling_consume_per_s": round(ceiling),
            "ratio": round(rate / ceiling, 3),
        }
    finally:
        delete_topics(kafka, list(topics.values()))
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def run_service(n: int = 10_000) -> dict[str, Any]:
    raw = _vectors(4000)
    artifacts = {k: _fit(k, raw)[1] for k in ("sklearn", "torch")}
    return {
        kind: asyncio.run(_service(kind, n, artifacts))
        for kind in ("imbalance", "sklearn", "torch")
    }


def run() -> dict[str, Any]:
    return {"decide": run_decide(), "service": run_service()}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
