"""Collector benchmark: depth messages/s through parse → book → publish on one core.

Measured: ``FeedProcessor.on_frame`` on realistic Binance USD-M combined-stream depth frames
(10 levels each, a valid U/u/pu chain, the book synced from a snapshot first), publishing
md.depth.raw + md.book (top 20) through the common idempotent ``Producer`` to a real broker,
metrics on. Ceiling, same run, same bytes: ``orjson.loads`` of each frame + a raw
confluent-kafka ``produce`` of it with the same producer settings. Both include the final
flush. Target: ≥ 20,000 msg/s and ≥ 0.5 of the ceiling.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from typing import Any

import orjson
from confluent_kafka import Producer as CProducer
from depthflow.collector.feed import FeedProcessor, TopicNames
from depthflow.collector.metrics import CollectorMetrics
from depthflow.common.kafka import Producer, create_topics, delete_topics
from depthflow.common.metrics import ServiceMetrics
from depthflow.common.settings import KafkaSettings

KAFKA = os.environ.get("DEPTHFLOW_TEST_KAFKA", "127.0.0.1:9092")
N = int(os.environ.get("COLLECTOR_BENCH_MESSAGES", "60000"))


def make_frames(n: int, seed: int = 1) -> tuple[bytes, list[bytes]]:
    """A snapshot and ``n`` diff frames continuing it (prices in 0.1 ticks around 60,000)."""
    rng = random.Random(seed)
    mid = 600_000
    snap = {
        "lastUpdateId": 1000, "E": 1, "T": 1,
        "bids": [[f"{(mid - i) / 10:.1f}", "1.000"] for i in range(1, 1001)],
        "asks": [[f"{(mid + i) / 10:.1f}", "1.000"] for i in range(1, 1001)],
    }
    frames = []
    last = 1000
    ts = 1_758_365_738_000
    for _ in range(n):
        first = last + 1
        u = first + rng.randint(0, 20)
        bids = [[f"{(mid - rng.randint(1, 200)) / 10:.1f}",
                 "0" if rng.random() < 0.2 else f"{rng.uniform(0.001, 5):.3f}"] for _ in range(5)]
        asks = [[f"{(mid + rng.randint(1, 200)) / 10:.1f}",
                 "0" if rng.random() < 0.2 else f"{rng.uniform(0.001, 5):.3f}"] for _ in range(5)]
        ts += 1
        frames.append(orjson.dumps({"stream": "btcusdt@depth@100ms", "data": {
            "e": "depthUpdate", "E": ts, "T": ts, "s": "BTCUSDT", "U": first, "u": u,
            "pu": last, "b": bids, "a": asks}}))
        last = u
    return orjson.dumps(snap), frames


def _producer_conf(kafka: KafkaSettings) -> dict[str, Any]:
    return {**kafka.confluent_config(), "enable.idempotence": True, "acks": "all",
            "linger.ms": 5, "compression.type": "lz4", "batch.size": 1_000_000,
            "queue.buffering.max.messages": 500_000,
            "queue.buffering.max.kbytes": 512 * 1024}


def run() -> dict[str, Any]:
    kafka = KafkaSettings(bootstrap_servers=KAFKA, default_partitions=1)
    tag = uuid.uuid4().hex[:8]
    topics = TopicNames(f"bench.raw.{tag}", f"bench.book.{tag}", f"bench.trades.{tag}",
                        f"bench.health.{tag}", f"bench.dlq.{tag}")
    ceiling_topic = f"bench.ceiling.{tag}"
    names = [topics.depth_raw, topics.book, topics.trades, topics.health, topics.dlq,
             ceiling_topic]
    create_topics(kafka, names, partitions=1)
    snap, frames = make_frames(N)
    try:
        # ceiling: parse + raw produce of the same bytes
        raw = CProducer(_producer_conf(kafka))
        key = b"binance:BTCUSDT"
        started = time.perf_counter()
        for i, frame in enumerate(frames):
            orjson.loads(frame)
            while True:
                try:
                    raw.produce(ceiling_topic, frame, key)
                    break
                except BufferError:
                    raw.poll(0.01)
            if not i & 1023:
                raw.poll(0)
        raw.flush(60)
        ceiling_s = time.perf_counter() - started

        # measured: the collector's path
        producer = Producer(kafka, client_id="bench-collector")
        metrics = CollectorMetrics(ServiceMetrics("collector_bench"), "binance")
        feed = FeedProcessor("binance", ["BTCUSDT"], producer, topics, metrics=metrics)
        feed.on_snapshot_body("BTCUSDT", snap, "rest", 0)
        on_frame = feed.on_frame
        started = time.perf_counter()
        for i, frame in enumerate(frames):
            on_frame(frame, "bench", 1_758_365_738_000_000 + i)
            if not i & 1023:
                producer.poll(0)
        producer.flush(60)
        measured_s = time.perf_counter() - started
        assert feed.stats.applied == N, feed.stats
        assert feed.stats.gaps == 0 and feed.stats.parse_errors == 0
    finally:
        delete_topics(kafka, names)
    measured = N / measured_s
    ceiling = N / ceiling_s
    return {
        "messages": N,
        "depth_msgs_per_s": round(measured),
        "ceiling_msgs_per_s": round(ceiling),
        "ratio_to_ceiling": round(measured / ceiling, 3),
        "kafka_messages_per_depth_msg": 2,
        "target": {"msgs_per_s": 20_000, "ratio": 0.5},
        "meets_target": measured >= 20_000 and measured / ceiling >= 0.5,
    }


if __name__ == "__main__":
    print(orjson.dumps(run(), option=orjson.OPT_INDENT_2).decode())
