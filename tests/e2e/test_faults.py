"""Faults against the whole running pipeline (issue 11): nothing lost, nothing duplicated.

One pipeline — ``make run``'s process set (``runner.PROCESSES``, each command as its own
process group so one can be killed) on a private Kafka + PostgreSQL — runs at the
simulator's steady rate (3 symbols x 50 updates/s, both exchanges) through every test of
this module, in order:

1. ``kill -9`` of each service in turn (both collectors, features, strategy, executor,
   api), each restarted: the pipeline flows again through the killed stage;
2. a Kafka broker restart; 3. PostgreSQL stopped for 30 s; 4. simulator disconnects, gaps
   (drop_rate) and stalls; 5. a poison message on every topic, dead-lettered to
   ``dlq.<service>`` (or counted, for the api and control.v1) while every service keeps going;
6. the drain and the audit: the collectors stop, a burst-mode sink drains md.book, every
   consumer group catches up, and ``Ledger.verify`` compares every stage's output with its
   input topic read back from the beginning (see ``pipeline.Ledger`` for what "lost" and
   "duplicated" mean per stage). The audit covers every fault above, cumulatively.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from depthflow.common.testing import eventually

from .pipeline import (
    BIN,
    Ledger,
    Pipeline,
    PrivateInfra,
    committed_lag,
    db_count,
    db_rows,
    decode_all,
    http_json,
    login,
    message_at,
    metric_sum,
    pipeline_env,
    produce_raw,
    read_topic,
    scrape,
)

pytestmark = pytest.mark.timeout(600)

# Test-only settings, all documented: a killed consumer's partitions move on sooner.
FAST_FAILOVER = {
    "FEATURES_SESSION_TIMEOUT_S": "10",
    "COLLECTOR_DB_SESSION_TIMEOUT_MS": "6000",
}
FLOW_TIMEOUT_S = 150.0
FEATURES_IN = ("md.book", "md.trades")  # what the features group (depthflow-features) reads
POISON = b"\xff\xfe this is not JSON {"


@pytest.fixture(scope="module")
def pipe(private_infra: PrivateInfra) -> Iterator[Pipeline]:
    workdir = private_infra.dir / "run"
    workdir.mkdir()
    p = Pipeline(private_infra, pipeline_env(private_infra, FAST_FAILOVER), workdir)
    try:
        p.start()
        yield p
    finally:
        p.stop()
        # outside pytest's rotating basetemp: the machine runs other suites meanwhile
        logs = Path(tempfile.mkdtemp(prefix="depthflow-e2e-logs-"))
        for svc in p.services.values():
            if svc.log_path.exists():
                (logs / svc.log_path.name).write_bytes(svc.log_path.read_bytes())
        print(f"e2e service logs kept in {logs}")


# --------------------------------------------------------------------------- helpers

STAGE_TABLES = {
    "books": "collector.orderbook_data",
    "vectors": "features.vectors",
    "signals": "strategy.signals",
    "orders": "executor.signals",
}


def counts(pipe: Pipeline) -> dict[str, int]:
    return {stage: db_count(pipe.infra.dsn, table) for stage, table in STAGE_TABLES.items()}


def assert_flows(pipe: Pipeline, *stages: str, exchange: str | None = None) -> None:
    """Every named stage stores new rows (the pipeline moves through it) while every
    process stays alive."""
    stages = stages or tuple(STAGE_TABLES)
    dsn = pipe.infra.dsn

    def books_of(x: str) -> int:
        name = {"binance": "binance-futures", "bybit": "bybit"}[x]
        return int(
            db_rows(
                dsn,
                f"SELECT count(*) FROM collector.orderbook_data WHERE exchange = '{name}'",
            )[0][0]
        )

    before = counts(pipe)
    before_x = books_of(exchange) if exchange else 0

    def moved() -> bool:
        pipe.assert_all_alive()
        now = counts(pipe)
        ok = all(now[s] > before[s] for s in stages)
        if exchange:
            ok = ok and books_of(exchange) > before_x
        return ok

    eventually(moved, timeout=FLOW_TIMEOUT_S, interval=1.0, what=f"new rows in {stages}")


def mark(event: str) -> None:
    """When each fault happened (UTC, as in the services' logs)."""
    print(f"{time.strftime('%H:%M:%S', time.gmtime())} {event}")


def health_kinds(pipe: Pipeline) -> Counter[str]:
    health, _ = decode_all(read_topic(pipe.infra.bootstrap, "md.health"))
    return Counter(h["kind"] for h in health)


# --------------------------------------------------------------------------- the faults


def test_pipeline_runs_at_a_steady_rate(pipe: Pipeline) -> None:
    assert_flows(pipe)
    first = counts(pipe)
    t0 = time.monotonic()
    eventually(lambda: time.monotonic() - t0 >= 10 and pipe.assert_all_alive() is None, 15, 1)
    rate = (counts(pipe)["books"] - first["books"]) / (time.monotonic() - t0)
    print(f"orderbook_data rows/s: {rate:.1f}")
    assert rate > 5, f"the pipeline is not flowing at a steady rate: {rate:.1f} rows/s"


@pytest.mark.parametrize(
    ("service", "stages", "exchange"),
    [
        ("collector-binance", ("books",), "binance"),
        ("collector-bybit", ("books",), "bybit"),
        ("features", ("vectors",), None),
        ("strategy", ("signals",), None),
        ("executor", ("orders",), None),
        ("api", (), None),
    ],
)
def test_kill_minus_9_and_restart(
    pipe: Pipeline, service: str, stages: tuple[str, ...], exchange: str | None
) -> None:
    svc = pipe[service]
    # mid-stream: the stage has just written something
    assert_flows(pipe, *(stages or ("books",)))
    mark(f"kill -9 {service}")
    svc.kill9()
    assert not svc.alive
    svc.start().wait_healthy(180)
    if service == "api":
        token = login(pipe.api_url)

        def fresh_book() -> bool:
            status, body = http_json(f"{pipe.api_url}/data/orderbook/BTCUSDT", token=token)
            return status == 200 and body["age_s"] < 5

        eventually(fresh_book, timeout=60, interval=0.5, what="api serves live books again")
        assert_flows(pipe, "books")
    else:
        assert_flows(pipe, *stages, exchange=exchange)
        assert_flows(pipe)  # and everything downstream too


def test_kafka_broker_restart(pipe: Pipeline) -> None:
    assert_flows(pipe, "books")
    mark("restart Kafka")
    pipe.infra.infra("restart-kafka")
    assert_flows(pipe)


def test_postgres_stopped_for_30_seconds(pipe: Pipeline) -> None:
    assert_flows(pipe, "books")
    mark("stop PostgreSQL")
    pipe.infra.infra("stop-pg")
    outage_end = time.monotonic() + 30.0
    while time.monotonic() < outage_end:  # the outage itself: every process must survive it
        pipe.assert_all_alive()
        time.sleep(1.0)
    mark("start PostgreSQL")
    pipe.infra.infra("start-pg")
    assert_flows(pipe)


def test_simulator_disconnects_gaps_and_stalls(pipe: Pipeline) -> None:
    before = health_kinds(pipe)
    faults = {
        "drop_rate": 0.01,
        "duplicate_rate": 0.01,
        "disconnect_every_s": 8.0,
        "stall_every_s": 13.0,
        "stall_duration_s": 3.0,
    }
    mark(f"simulator faults {faults}")
    status, body = http_json(f"{pipe.sim_url}/sim/faults", "POST", faults)
    assert status == 200, body
    try:
        window_end = time.monotonic() + 35.0
        while time.monotonic() < window_end:  # the faulty market itself
            pipe.assert_all_alive()
            time.sleep(1.0)
    finally:
        off = dict.fromkeys(faults, 0.0)
        status, body = http_json(f"{pipe.sim_url}/sim/faults", "POST", off)
        assert status == 200, body
    after = health_kinds(pipe)
    grew = {k: after[k] - before[k] for k in after}
    print("md.health events during the faults:", grew)
    assert grew.get("gap", 0) > 0, grew
    assert grew.get("resync", 0) > 0, grew
    assert grew.get("reconnect", 0) + grew.get("disconnect", 0) > 0, grew
    assert_flows(pipe)


def test_poison_message_on_every_topic(pipe: Pipeline) -> None:
    b = pipe.infra.bootstrap
    key = b"binance:BTCUSDT"
    topics = {
        "md.book": key,
        "md.trades": key,
        "md.health": key,
        "md.depth.raw": key,
        "features.v1": key,
        "signals.v1": key,
        "orders.v1": key,
        "control.v1": b"e2e-poison",
        "status.v1": b"e2e:poison",
    }
    mark("poison on every topic")
    for topic, k in topics.items():
        produce_raw(b, topic, k, POISON)

    def dead_letters(dlq: str) -> set[str]:
        letters, _ = decode_all(read_topic(b, dlq))
        return {x["source_topic"] for x in letters if x.get("value") == POISON.decode("latin-1")}

    expected = {
        "dlq.collector": {"md.book", "md.health"},
        "dlq.features": {"md.book", "md.trades"},
        "dlq.strategy": {"features.v1"},
        "dlq.executor": {"signals.v1"},
    }
    for dlq, sources in expected.items():
        eventually(
            lambda dlq=dlq, sources=sources: dead_letters(dlq) >= sources,
            timeout=90,
            interval=1.0,
            what=f"{dlq} holds the poison of {sorted(sources)}",
        )
    # the api reads without a consumer group (nothing to dead-letter): it counts and skips
    for topic in ("md.book", "md.health", "signals.v1", "orders.v1", "status.v1", "control.v1"):
        eventually(
            lambda topic=topic: (
                metric_sum(
                    scrape(pipe.metrics_url("api")), "depthflow_api_undecodable_total", topic=topic
                )
                >= 1
            ),
            timeout=60,
            interval=1.0,
            what=f"api counted the poison on {topic}",
        )
    # control.v1 is read by strategy and executor outside their consumer loops: logged, kept
    eventually(
        lambda: (
            metric_sum(
                scrape(pipe.metrics_url("strategy")),
                "depthflow_strategy_control_messages_total",
                outcome="undecodable",
            )
            >= 1
        ),
        timeout=60,
        interval=1.0,
        what="strategy counted the undecodable control message",
    )
    eventually(
        lambda: "bad control.v1 record" in pipe["executor"].log_text(),
        timeout=60,
        interval=1.0,
        what="executor logged the undecodable control message",
    )
    assert_flows(pipe)


def test_drained_pipeline_lost_and_duplicated_nothing(pipe: Pipeline) -> None:
    infra = pipe.infra
    assert_flows(pipe)
    # stop the sources, then let every stage drain what Kafka still holds for it
    for name in ("collector-binance", "collector-bybit"):
        assert pipe[name].stop() == 0, pipe[name].log_tail()
    drain = subprocess.run(
        [str(BIN / "depthflow"), "collector", "sink", "--idle-timeout", "5"],
        env=pipe.env,
        cwd=pipe.workdir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert drain.returncode == 0, drain.stderr[-3000:]
    ledger_groups = {
        "collector-db": ("md.book", "md.health"),
        "strategy": ("features.v1",),
        "executor": ("signals.v1",),
    }

    def caught_up(group: str, topics: tuple[str, ...]) -> bool:
        lag = committed_lag(infra.bootstrap, group, topics)
        assert not lag, f"{group} has not committed (committed, end): {lag}"
        return True

    caught_up("collector-db", ledger_groups["collector-db"])  # the burst sink drained it
    # the features worker commits only after its checkpoint (rows durable, features.v1 and
    # the state acknowledged): committed to the end means everything taken is stored, books
    # still held in its merge buffer being pending (the audit allows for them)
    eventually(
        lambda: pipe["features"].assert_alive() or caught_up("depthflow-features", FEATURES_IN),
        timeout=180,
        interval=1.0,
        what="the features worker committed everything",
    )
    for group in ("strategy", "executor"):
        eventually(
            lambda group=group: caught_up(group, ledger_groups[group]),
            timeout=180,
            interval=1.0,
            what=f"consumer group {group} committed everything",
        )
    eventually(
        lambda: (
            not db_rows(
                infra.dsn, "SELECT 1 FROM executor.order_events WHERE published_at IS NULL LIMIT 1"
            )
        ),
        timeout=60,
        interval=1.0,
        what="executor outbox published",
    )
    for name in ("features", "strategy", "executor", "api", "sim"):
        pipe[name].assert_alive()
    figures = Ledger(infra.bootstrap, infra.dsn).verify()
    print("end-to-end figures:", orjson.dumps(figures).decode())
    restarts = {n: s.starts for n, s in pipe.services.items()}
    print("process starts:", restarts)
    assert figures["orders"] > 0 and figures["signals"] > 0, figures
    assert all(restarts[n] == 2 for n in restarts if n != "sim"), restarts
    # Finally the features worker's offsets: everything it stored must also be committed,
    # or a restart would replay (harmlessly, but without end) from the stuck offset.
    lag = committed_lag(infra.bootstrap, "depthflow-features", FEATURES_IN)
    stuck = [
        message_at(infra.bootstrap, k.split(":")[0], int(k.split(":")[1]), v[0])
        for k, v in lag.items()
    ]
    assert not lag, f"depthflow-features never committed past (committed, end) {lag}: {stuck}"
