"""A real Prometheus (Debian's package) scrapes a locally running simulator-fed collector:
every target is up and the pipeline's metrics move."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from depthflow.common.testing import eventually
from depthflow.common.testing.processes import free_port

DEPTHFLOW = Path(sys.executable).parent / "depthflow"
SYMBOLS = "BTCUSDT,ETHUSDT"


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310 - local test servers
        return json.loads(resp.read())


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310
            return resp.status == 200
    except OSError:
        return False


class Processes:
    """Subprocesses of one test, stopped (SIGTERM, then SIGKILL) at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Callable:
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.procs.append((name, proc))

        def alive() -> None:
            if proc.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{tail}")

        return alive

    def stop(self) -> None:
        for _name, proc in reversed(self.procs):
            proc.terminate()
        for _name, proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    p = Processes(tmp_path)
    yield p
    p.stop()


def test_prometheus_scrapes_the_running_pipeline(
    tools: dict[str, str],
    procs: Processes,
    tmp_path: Path,
    kafka_settings,
    pg_dsn: str,
    topic_factory: Callable[..., str],
    fresh_schema: str,
) -> None:
    # the exchange simulator
    sim_port = free_port()
    sim_alive = procs.start(
        "sim",
        [
            str(DEPTHFLOW),
            "--log-level",
            "WARNING",
            "sim",
            "--port",
            str(sim_port),
            "--symbols",
            SYMBOLS,
            "--rate",
            "20",
            "--seed",
            "9",
        ],
    )
    sim_url = f"http://127.0.0.1:{sim_port}"

    def sim_up() -> bool:
        sim_alive()
        return answers(f"{sim_url}/healthz")

    eventually(sim_up, timeout=30, what="simulator answers /healthz")

    # a collector on fresh topics and a fresh schema, /metrics on a free port
    metrics_port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "POSTGRES_DSN": pg_dsn,
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(metrics_port),
        "LOG_LEVEL": "WARNING",
        "COLLECTOR_EXCHANGE": "binance",
        "COLLECTOR_SYMBOLS": SYMBOLS,
        "COLLECTOR_SOURCE": "sim",
        "COLLECTOR_SIM_URL": sim_url,
        "COLLECTOR_TOPIC_DEPTH_RAW": topic_factory("raw"),
        "COLLECTOR_TOPIC_BOOK": topic_factory("book"),
        "COLLECTOR_TOPIC_TRADES": topic_factory("trades"),
        "COLLECTOR_TOPIC_HEALTH": topic_factory("health"),
        "COLLECTOR_TOPIC_DLQ": topic_factory("dlq"),
        "COLLECTOR_DB_SCHEMA": fresh_schema,
        "COLLECTOR_DB_GROUP_ID": f"collector-db-{uuid.uuid4().hex[:8]}",
        "COLLECTOR_DB_BATCH_SIZE": "100",
    }
    collector_alive = procs.start("collector", [str(DEPTHFLOW), "collector"], env=env)

    # Prometheus: a generated config on a free port, storage in a temp dir
    prom_port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(Path(__file__).parents[2] / "deploy" / "prometheus" / "alerts.yml")],
        "scrape_configs": [
            {
                "job_name": "collector",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{metrics_port}"], "labels": {"service": "collector"}},
                ],
            },
        ],
    }
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    prom_alive = procs.start(
        "prometheus",
        [
            tools["prometheus"],
            f"--config.file={config_path}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--storage.tsdb.retention.time=1h",
        ],
    )
    api = f"http://127.0.0.1:{prom_port}/api/v1"

    def query(expr: str) -> float | None:
        prom_alive()
        collector_alive()
        body = get_json(f"{api}/query?" + urllib.parse.urlencode({"query": expr}))
        result = body["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def targets_up() -> bool:
        prom_alive()
        collector_alive()
        try:
            active = get_json(f"{api}/targets")["data"]["activeTargets"]
        except OSError:
            return False
        return bool(active) and all(t["health"] == "up" for t in active)

    eventually(targets_up, timeout=60, interval=0.5, what="every Prometheus target is up")
    assert query('up{job="collector"}') == 1.0

    # the pipeline moves: exchange messages in, depth updates applied, rows stored, books synced
    for expr, what in [
        ("sum(increase(depthflow_collector_messages_received_total[15s]))", "messages received"),
        ("sum(increase(depthflow_collector_messages_applied_total[15s]))", "updates applied"),
        ("sum(increase(depthflow_collector_db_rows_total[30s]))", "rows written"),
        ("sum(depthflow_collector_synced_books)", "books in sync"),
        ("sum(depthflow_collector_service_up)", "service up"),
    ]:
        eventually(
            lambda e=expr: (query(e) or 0) > 0,
            timeout=60,
            interval=0.5,
            what=f"Prometheus sees {what}: {expr}",
        )
    first = query("sum(depthflow_collector_messages_applied_total)")
    eventually(
        lambda: (query("sum(depthflow_collector_messages_applied_total)") or 0) > (first or 0),
        timeout=30,
        interval=0.5,
        what="the applied-updates counter keeps growing",
    )
    # books are fresh: the stale-book alert's metric stays low while the feed runs
    age = query("max(depthflow_collector_book_age_seconds)")
    assert age is not None and age < 10, age
    # the alert rules load in the real server
    groups = get_json(f"{api}/rules")["data"]["groups"]
    assert {g["name"] for g in groups} >= {"depthflow-market-data", "depthflow-trading"}
    assert query('ALERTS{alertname="DepthflowStaleBook", alertstate="firing"}') is None
