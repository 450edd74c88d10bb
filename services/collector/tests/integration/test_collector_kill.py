"""``kill -9`` of the collector process, then of a separate sink process, mid-stream.

The collector runs as the real CLI (``depthflow collector``) against the simulator. The
first process (WebSockets + in-process sink) is SIGKILLed while it writes; a second one
(WebSockets only) and a separate ``depthflow collector sink`` take over, the sink is
SIGKILLed in turn and restarted, everything is stopped with SIGTERM and a burst-mode sink
drains what is left. ``collector.orderbook_data`` must then hold exactly one row per
``md.book`` message with ``tob_changed`` in the topic (counted with a fresh consumer): no
duplicates (the natural key is unique) and nothing lost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import psycopg
from psycopg import sql

from depthflow.common.settings import KafkaSettings
from depthflow.common.testing import eventually

from .conftest import DEPTHFLOW, read_topic

SYMBOLS = "BTCUSDT,ETHUSDT,SOLUSDT"


def rows_in(dsn: str, schema: str) -> tuple[int, int]:
    """(rows, distinct natural keys) in orderbook_data; (0, 0) before the migration ran."""
    with psycopg.connect(dsn) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (f"{schema}.orderbook_data",)).fetchone()
        if not exists or exists[0] is None:
            return 0, 0
        total, distinct = conn.execute(
            sql.SQL(
                "SELECT count(*), count(DISTINCT (exchange, symbol, timestamp, update_id))"
                " FROM {}.orderbook_data"
            ).format(sql.Identifier(schema))
        ).fetchone()  # type: ignore[misc]
    return int(total), int(distinct)


class Procs:
    """The CLI processes of one test, their stderr kept in files for failure messages."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        err = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [str(DEPTHFLOW), "--log-level", "WARNING", "collector", *args],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        err.close()
        self.started.append(proc)
        return proc

    def tail(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]

    def alive(self, proc: subprocess.Popen[bytes], name: str) -> None:
        assert proc.poll() is None, f"{name} exited {proc.returncode}: {self.tail(name)}"

    def cleanup(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_kill_minus_9_loses_and_duplicates_nothing(
    sim_factory: Callable[..., str],
    kafka_settings: KafkaSettings,
    pg_dsn: str,
    topic_factory: Callable[..., str],
    fresh_schema: str,
    tmp_path: Path,
) -> None:
    url = sim_factory("--symbols", SYMBOLS, "--rate", "150", "--seed", "11")
    book_topic = topic_factory("book")
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
        "COLLECTOR_TOPIC_BOOK": book_topic,
        "COLLECTOR_TOPIC_TRADES": topic_factory("trades"),
        "COLLECTOR_TOPIC_HEALTH": topic_factory("health"),
        "COLLECTOR_TOPIC_DLQ": topic_factory("dlq"),
        "COLLECTOR_DB_SCHEMA": fresh_schema,
        "COLLECTOR_DB_GROUP_ID": f"collector-db-{uuid.uuid4().hex[:8]}",
        # a killed consumer holds its partitions for this long: the broker's minimum
        "COLLECTOR_DB_SESSION_TIMEOUT_MS": "6000",
        "COLLECTOR_DB_BATCH_SIZE": "200",
    }
    procs = Procs(env, tmp_path)
    try:

        def more_rows(than: int, proc: subprocess.Popen[bytes], name: str) -> int:
            def check() -> int:
                procs.alive(proc, name)
                total, _ = rows_in(pg_dsn, fresh_schema)
                return total if total >= than else 0

            return eventually(
                check, timeout=60, interval=0.1, what=f"{name}: orderbook_data reaches {than} rows"
            )

        # 1. the whole collector (WebSockets + in-process sink), killed while it writes
        c1 = procs.spawn("c1")
        seen = more_rows(150, c1, "c1")
        c1.send_signal(signal.SIGKILL)
        c1.wait(10)

        # 2. WebSockets in one process, the sink in another; the sink is killed mid-stream
        c2 = procs.spawn("c2", "--no-write-db")
        s1 = procs.spawn("s1", "sink")
        seen = more_rows(seen + 150, s1, "s1")
        s1.send_signal(signal.SIGKILL)
        s1.wait(10)
        s2 = procs.spawn("s2", "sink")
        more_rows(seen + 150, s2, "s2")
        procs.alive(c2, "c2")

        # 3. graceful stop of both, then a burst-mode sink drains what the topic still holds
        for proc, name in ((c2, "c2"), (s2, "s2")):
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(40) == 0, procs.tail(name)
        drain = procs.spawn("drain", "sink", "--idle-timeout", "2")
        assert drain.wait(60) == 0, procs.tail("drain")
    finally:
        procs.cleanup()

    books = [orjson.loads(v) for _, v in read_topic(kafka_settings, book_topic)]
    changed = [
        (b["exchange"], b["symbol"], b["exchange_ts_us"], b["seq"])
        for b in books
        if b["tob_changed"]
    ]
    total, distinct = rows_in(pg_dsn, fresh_schema)
    assert len(changed) > 450
    assert len(set(changed)) == len(changed)  # the topic itself repeats no book
    assert total == distinct == len(changed)  # nothing duplicated, nothing lost
