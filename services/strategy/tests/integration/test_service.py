"""The strategy service against real Kafka and PostgreSQL: vectors in, signals stored and
published; replays give the same signal ids; bad vectors are refused, never traded on;
control.v1 stops, starts and reconfigures it, and a restarted service obeys the latest."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
import pytest

from depthflow.common.schemas import FeatureVector
from depthflow.common.testing import eventually, eventually_async
from depthflow.features.names import INDEX, N_FEATURES
from depthflow.strategy.config import RuntimeConfig
from depthflow.strategy.imbalance import ImbalanceStrategy
from depthflow.strategy.synthetic import vector_series
from depthflow.strategy.vectors import VectorInput

from .conftest import Env

SHARES = [0.5, 0.8, 0.8, 0.6, 0.5, 0.2, 0.2, 0.5, 0.9, 0.5, 0.1, 0.5]


def shaped(shares: list[float], symbol: str, seed: int = 0) -> list[dict[str, Any]]:
    """Synthetic vectors whose imbalance_5 gives these bid shares, big clusters both sides."""
    out = vector_series(len(shares), symbol=symbol, seed=seed, step_us=1_000_000)
    for v, share in zip(out, shares, strict=True):
        v["values"][INDEX["imbalance_5"]] = 2 * share - 1
        v["values"][INDEX["largest_bid_cluster_volume"]] = 1.0
        v["values"][INDEX["largest_ask_cluster_volume"]] = 1.0
        v["normalized"] = v["values"]
    return out


def expected(vectors: list[dict[str, Any]]) -> list[tuple[str, int, str]]:
    strategy = ImbalanceStrategy(RuntimeConfig(cooldown_s=0))
    inputs = [VectorInput.from_message(FeatureVector.model_validate(v)) for v in vectors]
    return sorted(
        (v.symbol, v.book_seq, d.side)
        for v, d in zip(inputs, strategy.decide(inputs), strict=True)
        if d
    )


async def test_vectors_in_signals_stored_and_published(env: Env) -> None:
    vectors = shaped(SHARES, "BTCUSDT") + shaped(SHARES[::-1], "ETHUSDT", seed=1)
    vectors[3]["trace_id"] = "trace-abc"
    env.produce_vectors(vectors)
    service = await env.start()
    handled = await service.run(max_messages=len(vectors), idle_timeout=30)
    assert handled == len(vectors)

    want = expected(vectors)
    assert len(want) >= 8
    stored = env.stored_signals()
    assert sorted((r["symbol"], r["book_seq"], r["side"]) for r in stored) == want
    published = eventually(
        lambda: env.published_signals() if len(env.published_signals()) >= len(want) else None,
        timeout=15,
        what="signals published",
    )
    assert sorted(s.signal_id for s in published) == sorted(r["signal_id"] for r in stored)
    for s in published:
        assert s.strategy == "imbalance" and s.model_version == "rule-v1"
        assert s.feature_set == "v1" and s.reason and "imbalance_5" in s.features
        assert s.trace_id
    by_seq = {(s.symbol, s.book_seq): s for s in published}
    if ("BTCUSDT", 4) in by_seq:
        assert by_seq[("BTCUSDT", 4)].trace_id == "trace-abc"

    metrics = service.metrics.service.render().decode()
    assert 'depthflow_strategy_signals_total{side="buy",strategy="imbalance"}' in metrics
    assert "depthflow_strategy_inference_latency_seconds_bucket" in metrics

    # A replay (another consumer group from the start) decides the same: same ids, no new rows.
    replay = await env.start()
    assert await replay.run(max_messages=len(vectors), idle_timeout=30) == len(vectors)
    assert len(env.stored_signals()) == len(stored)
    again = eventually(
        lambda: env.published_signals() if len(env.published_signals()) >= 2 * len(want) else None,
        timeout=15,
        what="replayed signals",
    )
    assert {s.signal_id for s in again} == {s.signal_id for s in published}


async def test_wrong_feature_set_and_invalid_values_are_refused(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = shaped([0.9, 0.1, 0.9], "BTCUSDT")
    for v in wrong:
        v["feature_set"] = "v0"
    invalid = shaped([0.9, 0.1, 0.9], "ETHUSDT")
    for v in invalid:
        v["valid"] = [True] * N_FEATURES
        v["valid"][INDEX["imbalance_5"]] = False
    short = shaped([0.9], "SOLUSDT")
    short[0]["values"] = short[0]["values"][:100]
    env.produce_vectors(wrong + invalid + short)
    service = await env.start()
    with caplog.at_level(logging.WARNING, logger="depthflow.strategy.app"):
        assert await service.run(max_messages=7, idle_timeout=30) == 7
    assert env.stored_signals() == []
    assert service.refused == 7 and service.signals_published == 0
    metrics = service.metrics.service.render().decode()
    assert 'refusals_total{reason="wrong_feature_set",strategy="imbalance"} 3.0' in metrics
    assert 'refusals_total{reason="invalid_feature",strategy="imbalance"} 3.0' in metrics
    assert 'refusals_total{reason="wrong_shape",strategy="imbalance"} 1.0' in metrics
    reasons = {getattr(r, "reason", None) for r in caplog.records}
    assert {"wrong_feature_set", "invalid_feature", "wrong_shape"} <= reasons
    details = " ".join(getattr(r, "detail", "") for r in caplog.records)
    assert "imbalance_5" in details and "'v0'" in details


async def test_control_stops_starts_reconfigures_and_survives_restart(env: Env) -> None:
    # The desired state is already "stopped" when the service starts: it consumes nothing.
    env.produce_control("stopped", version=1)
    service = await env.start()
    assert service.paused and service.control_version == 1
    stop = asyncio.Event()
    env.run_in_background(service, stop)
    env.produce_vectors(shaped(SHARES, "BTCUSDT"))
    assert service.loop is not None
    await eventually_async(_async(lambda: service.paused), timeout=5)
    assert service.loop.stats.consumed == 0

    # Started, with a stricter buy threshold: only share 0.9 buys now.
    env.produce_control("running", {"imbalance_buy_threshold": 0.85}, version=2)
    await eventually_async(
        _async(lambda: service.loop.stats.consumed == len(SHARES)),
        timeout=20,
        what="consumed after start",
    )
    assert service.config.imbalance_buy_threshold == 0.85
    # consumed counts a batch when it is handed to the handler: its signals are stored after

    def buys() -> list[int]:
        return [r["book_seq"] for r in env.stored_signals() if r["side"] == "buy"]

    await eventually_async(_async(lambda: bool(buys())), timeout=10, what="the batch stored")
    assert buys() == [9]

    # A config with an unknown key is refused; the previous one stays.
    env.produce_control("running", {"no_such_setting": 1}, version=3)
    await eventually_async(
        _async(lambda: _sample(service, 'control_messages_total{outcome="refused"} 1.0')),
        timeout=10,
    )
    assert service.config.imbalance_buy_threshold == 0.85 and service.control_version == 2

    env.produce_control("stopped", {"imbalance_buy_threshold": 0.8}, version=4)
    await eventually_async(_async(lambda: service.paused), timeout=10)
    heartbeat = service._heartbeat_state()
    assert heartbeat[0] == "paused" and heartbeat[1] is False
    stop.set()
    await env.tasks[-1]
    await service.stop()

    # A restarted service reads the compacted topic to its end: stopped, threshold 0.8.
    restarted = await env.start()
    assert restarted.paused and restarted.control_version == 4
    assert restarted.config.imbalance_buy_threshold == 0.8


def _sample(service: Any, line: str) -> bool:
    return line in service.metrics.service.render().decode()


def _async(fn: Any) -> Any:
    async def call() -> Any:
        return fn()

    return call


def test_signal_ids_are_deterministic() -> None:
    from depthflow.strategy.app import signal_id

    a = signal_id("binance", "BTCUSDT", 7, "sklearn", "v1")
    assert a == signal_id("binance", "BTCUSDT", 7, "sklearn", "v1")
    assert a != signal_id("binance", "BTCUSDT", 7, "sklearn", "v2")
    assert len({signal_id("binance", "BTCUSDT", i, "imbalance", "") for i in range(100)}) == 100
    assert np.isfinite(1.0)
