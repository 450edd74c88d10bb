"""The collector's lifecycle seen from outside: heartbeats on ``status.v1`` and a graceful
SIGTERM.

- Both collectors (binance, bybit) publish heartbeats that the api's ``StatusView`` (what
  ``/bot/status`` serves) shows as one ``collector`` service with two live instances, with
  live figures in ``detail`` and a final ``stopped`` beat.
- ``depthflow collector`` stopped with SIGTERM while the simulator streams exits 0 within
  seconds, and its sink has committed md.book/md.health up to their end: nothing is left
  for the next sink to replay.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from depthflow.api.views import StatusView
from depthflow.collector.app import CollectorService
from depthflow.common.schemas import STATUS, Heartbeat
from depthflow.common.settings import KafkaSettings, PostgresSettings
from depthflow.common.testing import eventually, eventually_async

from .conftest import DEPTHFLOW, read_topic
from .test_collector_kill import rows_in
from .test_collector_sim import SYMBOLS, collector_settings


def heartbeats(kafka: KafkaSettings, topic: str) -> list[Heartbeat]:
    return [STATUS.decode(value) for _key, value in read_topic(kafka, topic)]


async def test_both_collectors_heartbeat_and_the_api_view_shows_them_running(
    sim_factory: Callable[..., str],
    kafka_settings: KafkaSettings,
    pg_settings: PostgresSettings,
    topic_factory: Callable[..., str],
    fresh_schema: str,
) -> None:
    url = sim_factory("--symbols", SYMBOLS, "--rate", "50", "--seed", "5")
    status_topic = topic_factory("status")
    services = [
        CollectorService(
            collector_settings(
                exchange,
                url,
                fresh_schema,
                topic_factory,
                topic_status=status_topic,
                heartbeat_interval_s=0.3,
                write_db=exchange == "binance",  # one with its sink, one without
            ),
            kafka_settings,
            pg_settings,
        )
        for exchange in ("binance", "bybit")
    ]
    stop = asyncio.Event()
    for service in services:
        await service.start()
    runs = [asyncio.create_task(service.run(stop)) for service in services]
    try:

        async def all_synced() -> bool:
            for run in runs:
                if run.done():
                    run.result()  # raise what stopped it
            return all(
                s.feed is not None and all(x.synced for x in s.feed.syncs.values())
                for s in services
            )

        await eventually_async(all_synced, timeout=30, what="both collectors synced")
        await asyncio.sleep(1.0)  # a few beats with the synced figures

        beats = await asyncio.to_thread(heartbeats, kafka_settings, status_topic)
        assert {b.service for b in beats} == {"collector"}
        latest = {b.instance: b for b in beats}
        assert len(latest) == 2
        by_exchange = {b.detail["exchange"]: b for b in latest.values()}
        assert set(by_exchange) == {"binance", "bybit"}
        for exchange, beat in by_exchange.items():
            assert beat.instance.startswith(f"{exchange}-")
            assert (beat.state, beat.ready) == ("running", True)
            assert beat.detail["synced_books"] == beat.detail["symbols"] == 3
            assert beat.detail["frames"] > 0 and beat.detail["messages_per_s"] >= 0
            assert beat.detail["last_error"] == ""
        assert "sink_buffered_rows" in by_exchange["binance"].detail
        assert by_exchange["binance"].detail["sink"] is True
        assert by_exchange["bybit"].detail["sink"] is False

        # what /bot/status serves: one "collector" service, running, both instances live
        view = StatusView(stale_s=15)
        for beat in beats:
            view.on_heartbeat(beat)
        status = view.service("collector")
        assert (status.state, status.ready, status.up) == ("running", True, True)
        assert sorted(i["detail"]["exchange"] for i in status.instances) == ["binance", "bybit"]
        assert all(i["state"] == "running" for i in status.instances)
    finally:
        stop.set()
        await asyncio.gather(*runs, return_exceptions=True)
        for service in services:
            await service.stop()

    final = {b.instance: b for b in heartbeats(kafka_settings, status_topic)}
    assert {b.state for b in final.values()} == {"stopped"}
    view = StatusView(stale_s=15)
    for beat in final.values():
        view.on_heartbeat(beat)
    assert view.service("collector").state == "stopped"


def committed_and_end(
    kafka: KafkaSettings, group: str, topics: list[str]
) -> dict[tuple[str, int], tuple[int, int]]:
    """Per partition with messages: (the group's committed offset, the topic's end)."""
    consumer = Consumer({**kafka.confluent_config(), "group.id": group})
    try:
        out = {}
        for topic in topics:
            parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            tps = [TopicPartition(topic, p) for p in parts]
            for tp in consumer.committed(tps, timeout=10):
                _lo, end = consumer.get_watermark_offsets(tp, timeout=10)
                if end:
                    out[(topic, tp.partition)] = (tp.offset, end)
        return out
    finally:
        consumer.close()


def test_sigterm_under_load_exits_promptly_with_the_last_batch_committed(
    sim_factory: Callable[..., str],
    kafka_settings: KafkaSettings,
    pg_dsn: str,
    topic_factory: Callable[..., str],
    fresh_schema: str,
    tmp_path: Path,
) -> None:
    url = sim_factory("--symbols", SYMBOLS, "--rate", "200", "--seed", "13")
    group = f"collector-db-{uuid.uuid4().hex[:8]}"
    book, health, status = topic_factory("book"), topic_factory("health"), topic_factory("st")
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "POSTGRES_DSN": pg_dsn,
        "HTTP_PORT": "0",
        "COLLECTOR_EXCHANGE": "binance",
        "COLLECTOR_SYMBOLS": SYMBOLS,
        "COLLECTOR_SOURCE": "sim",
        "COLLECTOR_SIM_URL": url,
        "COLLECTOR_TOPIC_DEPTH_RAW": topic_factory("raw"),
        "COLLECTOR_TOPIC_BOOK": book,
        "COLLECTOR_TOPIC_TRADES": topic_factory("trades"),
        "COLLECTOR_TOPIC_HEALTH": health,
        "COLLECTOR_TOPIC_DLQ": topic_factory("dlq"),
        "COLLECTOR_TOPIC_STATUS": status,
        "COLLECTOR_HEARTBEAT_INTERVAL_S": "0.5",
        "COLLECTOR_DB_SCHEMA": fresh_schema,
        "COLLECTOR_DB_GROUP_ID": group,
        "COLLECTOR_DB_BATCH_SIZE": "200",
    }
    log_path = tmp_path / "collector.log"
    with log_path.open("wb") as err:
        proc = subprocess.Popen(
            [str(DEPTHFLOW), "--log-level", "INFO", "collector"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:

        def writing() -> bool:
            assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
            return rows_in(pg_dsn, fresh_schema)[0] >= 300

        eventually(writing, timeout=60, interval=0.2, what="the sink writes under load")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    log = log_path.read_text(errors="replace")
    assert code == 0, log[-3000:]
    assert "drain timed out" not in log
    assert "next sink replays" not in log, log[-3000:]
    offsets = committed_and_end(kafka_settings, group, [book, health])
    assert offsets and any(t == book for t, _p in offsets)
    behind = {tp: ce for tp, ce in offsets.items() if ce[0] != ce[1]}
    assert not behind, f"committed != end (took {took:.1f} s): {behind}"
    beats = heartbeats(kafka_settings, status)
    assert beats[-1].state == "stopped" and beats[-1].detail["exchange"] == "binance"
