"""A recorded simulator session for the backtest's integration tests.

Once per module, as the collector's and the features' integration tests do it: the
simulator (Binance protocol, 1 % of stream messages dropped, so the collector records real
gaps and resyncs on md.health), the collector, the features worker and the strategy service
run as real ``depthflow`` subprocesses on fresh topics and schemas, against the shared Kafka
and PostgreSQL. When md.book holds enough books the collector is stopped, the features and
strategy groups are waited for until they consumed everything, and what the live strategy
published on signals.v1 is kept for the parity test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from psycopg import sql

from depthflow.common.kafka import create_topics, delete_topics
from depthflow.common.settings import KafkaSettings
from depthflow.common.testing import eventually
from depthflow.common.testing.processes import ServiceProcess, free_port
from depthflow.common.testing.topics import end_offsets, read_topic

DEPTHFLOW = Path(sys.executable).parent / "depthflow"
SYMBOLS = ("BTCUSDT", "ETHUSDT")
PARTITIONS = 2
COOLDOWN_S = 0.5
MIN_BOOKS = 1600


@dataclass
class Recording:
    kafka: KafkaSettings
    dsn: str
    topics: dict[str, str]
    backtest_schema: str
    env: dict[str, str]  # what a `depthflow backtest` subprocess needs
    live_signals: list[dict[str, object]] = field(default_factory=list)
    live_last_seq: dict[str, int] = field(default_factory=dict)
    live_vectors: int = 0
    first_ts: int = 0
    last_ts: int = 0
    books: int = 0


def read_all(kafka: KafkaSettings, topic: str) -> list[bytes]:
    """Every value of ``topic`` up to its current end."""
    return [v for _k, v in read_topic(kafka, topic) if v is not None]


def caught_up(kafka: KafkaSettings, group: str, topics: list[str]) -> bool:
    """Whether ``group`` has committed the end of every partition of ``topics`` (reads the
    committed offsets only; never joins the group)."""
    consumer = Consumer({**kafka.confluent_config(), "group.id": group})
    try:
        for topic in topics:
            ends = end_offsets(kafka, topic)
            tps = [TopicPartition(topic, p) for p in ends]
            for tp in consumer.committed(tps, timeout=10):
                if ends[tp.partition] > 0 and tp.offset < ends[tp.partition]:
                    return False
        return True
    finally:
        consumer.close()


def _alive(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as resp:  # noqa: S310 - local
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def recording(
    kafka_settings: KafkaSettings, pg_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Recording]:
    run = uuid.uuid4().hex[:10]
    logs = tmp_path_factory.mktemp("services")
    names = {
        r: f"test.bt.{r}.{run}"
        for r in (
            "raw",
            "book",
            "trades",
            "health",
            "dlqc",
            "features",
            "dlqf",
            "signals",
            "control",
            "status",
        )
    }
    create_topics(kafka_settings, list(names.values()), partitions=PARTITIONS)
    schemas = {k: f"t_bt_{k}_{run}" for k in ("features", "strategy", "backtest")}
    app_id = f"test-bt-features-{run}"
    group = f"test-bt-strategy-{run}"
    port = free_port()
    sim = subprocess.Popen(
        [
            str(DEPTHFLOW),
            "--log-level",
            "WARNING",
            "sim",
            "--port",
            str(port),
            "--symbols",
            ",".join(SYMBOLS),
            "--rate",
            "40",
            "--seed",
            "5",
            "--drop-rate",
            "0.01",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(logs / "sim.log").open("wb"),
    )
    sim_url = f"http://127.0.0.1:{port}"
    base = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "POSTGRES_DSN": pg_dsn,
        "LOG_JSON": "false",
    }
    features_env = {
        **base,
        "FEATURES_APP_ID": app_id,
        "FEATURES_PARTITIONS": str(PARTITIONS),
        "FEATURES_TOPIC_BOOK": names["book"],
        "FEATURES_TOPIC_TRADES": names["trades"],
        "FEATURES_TOPIC_FEATURES": names["features"],
        "FEATURES_TOPIC_DLQ": names["dlqf"],
        "FEATURES_TOPIC_STATUS": names["status"],
        "FEATURES_DB_SCHEMA": schemas["features"],
        # the parity test reads features.v1; stored vectors are not needed here
        "FEATURES_STORE_VECTORS": "false",
        # wait for the trade feed whatever the arrival interleaving (see docs/backtest.md)
        "FEATURES_MERGE_HOLD_MS": "3600000",
        "FEATURES_BATCH_MAX": "200",
        "FEATURES_COMMIT_INTERVAL_S": "0.5",
        "FEATURES_SESSION_TIMEOUT_S": "6",
        "FEATURES_HEARTBEAT_INTERVAL_S": "1",
    }
    strategy_env = {
        **base,
        "STRATEGY_TOPIC_FEATURES": names["features"],
        "STRATEGY_TOPIC_SIGNALS": names["signals"],
        "STRATEGY_TOPIC_CONTROL": names["control"],
        "STRATEGY_TOPIC_STATUS": names["status"],
        "STRATEGY_DB_SCHEMA": schemas["strategy"],
        "STRATEGY_GROUP_ID": group,
        "STRATEGY_COOLDOWN_S": str(COOLDOWN_S),
        "STRATEGY_HEARTBEAT_INTERVAL_S": "1",
    }
    collector_env = {
        **base,
        "COLLECTOR_EXCHANGE": "binance",
        "COLLECTOR_SYMBOLS": ",".join(SYMBOLS),
        "COLLECTOR_SOURCE": "sim",
        "COLLECTOR_SIM_URL": sim_url,
        "COLLECTOR_TOPIC_DEPTH_RAW": names["raw"],
        "COLLECTOR_TOPIC_BOOK": names["book"],
        "COLLECTOR_TOPIC_TRADES": names["trades"],
        "COLLECTOR_TOPIC_HEALTH": names["health"],
        "COLLECTOR_TOPIC_DLQ": names["dlqc"],
        "COLLECTOR_WRITE_DB": "false",
    }
    procs: list[ServiceProcess] = []

    def service(name: str, args: list[str], env: dict[str, str]) -> ServiceProcess:
        http = free_port()
        proc = ServiceProcess(
            name,
            args,
            {**env, "HTTP_PORT": str(http)},
            logs,
            health_url=f"http://127.0.0.1:{http}/readyz",
        )
        procs.append(proc)
        proc.start()
        return proc

    rec = Recording(
        kafka_settings,
        pg_dsn,
        names,
        schemas["backtest"],
        {
            **os.environ,
            **base,
            "BACKTEST_TOPIC_BOOK": names["book"],
            "BACKTEST_TOPIC_TRADES": names["trades"],
            "BACKTEST_TOPIC_HEALTH": names["health"],
            "BACKTEST_TOPIC_DEPTH_RAW": names["raw"],
            "BACKTEST_DB_SCHEMA": schemas["backtest"],
            "BACKTEST_RETURNS_INTERVAL_S": "1",
            "STRATEGY_COOLDOWN_S": str(COOLDOWN_S),
        },
    )
    try:
        eventually(lambda: sim.poll() is None and _alive(sim_url), timeout=30, what="simulator")
        features = service("features", ["features"], features_env)
        features.wait_healthy(90)
        strategy = service("strategy", ["strategy"], strategy_env)
        strategy.wait_healthy(60)
        collector = service("collector", ["collector"], collector_env)

        def books() -> int:
            assert collector.alive, collector.log_tail()
            return sum(end_offsets(kafka_settings, names["book"]).values())

        eventually(lambda: books() >= MIN_BOOKS, timeout=120, interval=0.5, what="books")
        assert collector.stop() == 0, collector.log_tail()
        eventually(
            lambda: caught_up(kafka_settings, app_id, [names["book"], names["trades"]]),
            timeout=90,
            interval=0.5,
            what="features worker consumed the recording",
        )
        # features.v1 is complete now (published before its offsets were committed)
        eventually(
            lambda: caught_up(kafka_settings, group, [names["features"]]),
            timeout=90,
            interval=0.5,
            what="strategy consumed every vector",
        )
        for proc in (strategy, features):
            proc.stop()
        for raw in read_all(kafka_settings, names["signals"]):
            rec.live_signals.append(orjson.loads(raw))
        for raw in read_all(kafka_settings, names["features"]):
            v = orjson.loads(raw)
            rec.live_vectors += 1
            seq = rec.live_last_seq.get(v["symbol"], -1)
            rec.live_last_seq[v["symbol"]] = max(seq, v["book_seq"])
        stamps = [
            orjson.loads(b)["exchange_ts_us"] for b in read_all(kafka_settings, names["book"])
        ]
        rec.books = len(stamps)
        rec.first_ts, rec.last_ts = min(stamps), max(stamps)
        yield rec
    finally:
        for proc in procs:
            proc.stop(10)
        sim.terminate()
        try:
            sim.wait(10)
        except subprocess.TimeoutExpired:
            sim.kill()
        topics = AdminClient(kafka_settings.confluent_config()).list_topics(timeout=10).topics
        delete_topics(
            kafka_settings, [*names.values(), *(t for t in topics if t.startswith(app_id))]
        )
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            for schema in schemas.values():
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )
