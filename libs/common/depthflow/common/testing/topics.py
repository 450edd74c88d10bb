"""Read what a topic really holds, from the beginning to its current end (tests, benches).

A plain confluent-kafka consumer with a throwaway group id, assigned (never subscribed, never
committing), so reading back never disturbs the groups under test.
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, KafkaException, TopicPartition

from depthflow.common.settings import KafkaSettings

Kafka = KafkaSettings | str  # settings, or a bare "host:port" bootstrap


def reader(kafka: Kafka) -> Consumer:
    """A consumer for reading back (read_committed, no commits, a fresh group id)."""
    base = (
        kafka.confluent_config()
        if isinstance(kafka, KafkaSettings)
        else {"bootstrap.servers": kafka}
    )
    return Consumer(
        {
            **base,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )


def end_offsets(kafka: Kafka, topic: str) -> dict[int, int]:
    """Each partition's end offset; transient broker errors (a topic created a moment ago,
    a restarted broker electing leaders) are retried for up to a minute."""
    deadline = time.monotonic() + 60
    while True:
        c = reader(kafka)
        try:
            meta = c.list_topics(topic, timeout=15)
            t = meta.topics.get(topic)
            assert t is not None and t.error is None, f"topic {topic} missing: {t and t.error}"
            return {
                p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=15)[1]
                for p in t.partitions
            }
        except (KafkaException, AssertionError):
            if time.monotonic() >= deadline:
                raise
        finally:
            c.close()
        time.sleep(0.5)


def read_topic(
    kafka: Kafka, topic: str, timeout: float = 120.0
) -> list[tuple[bytes | None, bytes | None]]:
    """Every message of ``topic`` from the beginning up to its current end: (key, value)."""
    ends = end_offsets(kafka, topic)
    c = reader(kafka)
    out: list[tuple[bytes | None, bytes | None]] = []
    try:
        c.assign([TopicPartition(topic, p, 0) for p in ends])
        pos = dict.fromkeys(ends, 0)
        deadline = time.monotonic() + timeout
        while any(pos[p] < ends[p] for p in ends):
            assert time.monotonic() < deadline, f"reading {topic} back took > {timeout} s"
            for msg in c.consume(10_000, timeout=1.0):
                p, offset = msg.partition(), msg.offset()
                if msg.error() or p is None or offset is None:
                    continue
                if offset < ends[p]:
                    out.append((msg.key(), msg.value()))
                pos[p] = max(pos[p], offset + 1)
            # transactional markers/compaction leave offsets without messages
            for p in ends:
                if pos[p] < ends[p]:
                    low, _high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                    pos[p] = max(pos[p], low)
                    position = c.position([TopicPartition(topic, p)])[0].offset
                    if position >= 0:
                        pos[p] = max(pos[p], position)
    finally:
        c.close()
    return out
