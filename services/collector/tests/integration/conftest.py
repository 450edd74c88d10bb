"""Fixtures for the collector's integration tests: the simulator as a subprocess and
helpers to read a topic back."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from depthflow.common.settings import KafkaSettings
from depthflow.common.testing import eventually
from depthflow.common.testing.processes import free_port

DEPTHFLOW = Path(sys.executable).parent / "depthflow"


def _alive(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as resp:  # noqa: S310 - local
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture
def sim_factory() -> Iterator[Callable[..., str]]:
    """Starts ``depthflow sim`` on a free port with the given options; returns its URL."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> str:
        port = free_port()
        proc = subprocess.Popen(
            [str(DEPTHFLOW), "--log-level", "WARNING", "sim", "--port", str(port), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"simulator exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            return _alive(url)

        eventually(up, timeout=30, what="simulator answers /healthz")
        return url

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def read_topic(kafka: KafkaSettings, topic: str, idle_s: float = 3.0) -> list[tuple[bytes, bytes]]:
    """Every message of a topic, from the beginning, in partition order: (key, value)."""
    consumer = Consumer(
        {
            **kafka.confluent_config(),
            "group.id": f"t-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10)
        parts = list(meta.topics[topic].partitions)
        ends = {}
        for p in parts:
            _lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends[p] = hi
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        out: list[tuple[bytes, bytes]] = []
        seen = {p: 0 for p in parts}
        while any(seen[p] < ends[p] for p in parts):
            batch = consumer.consume(10_000, timeout=idle_s)
            if not batch:
                break
            for msg in batch:
                if msg.error():
                    continue
                out.append((msg.key(), msg.value()))
                seen[msg.partition()] = msg.offset() + 1
        return out
    finally:
        consumer.close()
