"""Feature set v1 throughput: streaming vectors/s on one core with per-update latency
p50/p99, and batch vectors/s, over the same generated series.

``engine``: the pure ``FeatureState`` (no I/O). The ceiling measured in the same run is a
bare loop that only walks the books' levels (summing quantities) - the least any per-update
Python code must spend.

``service`` (real Kafka + PostgreSQL): the same md.book/md.trades input through

- ``worker``: the real ``depthflow features`` worker (decode, merge, compute, COPY, publish
  features.v1, checkpoint the state on the changelog and commit every second);
- ``consume_only``: consumers that only read the same input and commit, the ceiling of the
  consumer layer: a bare aiokafka ``getmany`` loop (what the worker is built on) and a faust
  agent with ``take_events(500)`` (what it was built on until faust's per-event cost and
  commit behaviour ruled it out: docs/features.md).

``vectors_per_s`` = vectors / (last - first features.v1 CreateTime), so start-up and
recovery are excluded; ``cpu_us_per_vector`` = the worker process's CPU time (every thread:
Python, librdkafka, asyncpg) from the start of its first batch to the end of its last, by its
own account (heartbeat detail ``cpu_s_since_first_batch``), divided by the vectors - the
"per core" figure on a machine whose other core runs Kafka and PostgreSQL (the consume-only
consumers measure their CPU from their first to their last event, in-process too);
``update_us_p50/p99`` = the engine's per-update time inside the service;
``batch_us_per_vector_p50/p99`` = a batch's wall time (decode to queued output) / its vectors.
Each variant runs ``repeats`` times (median and min-max reported).
"""

from __future__ import annotations

import asyncio
import heapq
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from depthflow.features import FeatureState
from depthflow.features.batch import compute_batch
from depthflow.features.synthetic import generate


def run_engine(n_books: int = 20_000, seed: int = 42) -> dict[str, Any]:
    """Measure the pure engine: streaming and batch; returns plain figures (vectors/s, µs)."""
    series = generate(n_books, seed=seed, mean_gap_us=300_000, one_sided_every=1000)
    events = series.events
    state = FeatureState()
    lat = np.empty(n_books, np.float64)
    k = 0
    clock = time.perf_counter_ns
    t0 = time.perf_counter()
    for e in events:
        if e[0] == "t":
            state.on_trade(e[1], e[2], e[3], e[4])
        else:
            s = clock()
            state.on_book(e[1], e[2], e[3], e[4], e[5])
            lat[k] = clock() - s
            k += 1
    stream_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for e in events:
        if e[0] == "b":
            x = 0.0
            for _, q in e[1]:
                x += q
            for _, q in e[2]:
                x += q
    floor_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compute_batch(series.books, series.trades)
    batch_s = time.perf_counter() - t0
    state_bytes = len(json.dumps(state.to_state()))
    stream_rate = n_books / stream_s
    return {
        "books": n_books,
        "trades": len(series.trades.ts),
        "streaming_vectors_per_s": round(stream_rate),
        "streaming_incl_trades_s": round(stream_s, 3),
        "latency_us_p50": round(float(np.percentile(lat, 50)) / 1e3, 2),
        "latency_us_p99": round(float(np.percentile(lat, 99)) / 1e3, 2),
        "latency_us_max": round(float(lat.max()) / 1e3, 2),
        "ceiling_level_walk_per_s": round(n_books / floor_s),
        "streaming_vs_ceiling": round(stream_rate / (n_books / floor_s), 4),
        "batch_vectors_per_s": round(n_books / batch_s),
        "state_json_bytes": state_bytes,
    }


# -- the service path over Kafka -----------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
BATCH = 500


def _bare_consumer(kind: str) -> dict[str, Any]:
    """Consume the input topics and do nothing else (``--faust-bare``: a faust agent with
    ``take_events(500)``; ``--plain-bare``: an aiokafka ``getmany(500)`` loop committing each
    batch): the per-message cost of each consumer alone. CPU from the first to the last
    event, in-process (every thread). faust is imported here only: the comparison is what
    justifies the worker not being a faust agent, so every bench run measures it again."""
    topics = os.environ["BENCH_TOPICS"].split(",")
    expected = int(os.environ["BENCH_EXPECTED_EVENTS"])
    bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    group = f"bench-bare-{uuid.uuid4().hex[:8]}"
    marks: dict[str, float] = {}
    seen = 0

    def count(n: int) -> bool:
        nonlocal seen
        if not seen:
            marks["cpu0"], marks["t0"] = time.process_time(), time.perf_counter()
        seen += n
        if seen >= expected:
            marks["cpu1"], marks["t1"] = time.process_time(), time.perf_counter()
            return True
        return False

    def result() -> dict[str, Any]:
        cpu = marks["cpu1"] - marks["cpu0"]
        wall = max(marks["t1"] - marks["t0"], 1e-6)
        return {
            "events": seen,
            "events_per_s": round(seen / wall),
            "cpu_us_per_event": round(cpu / seen * 1e6, 1),
        }

    if kind == "plain":
        from aiokafka import AIOKafkaConsumer

        async def plain() -> dict[str, Any]:
            consumer = AIOKafkaConsumer(
                *topics,
                bootstrap_servers=bootstrap,
                group_id=group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            )
            await consumer.start()
            try:
                while True:
                    batch = await consumer.getmany(timeout_ms=200, max_records=BATCH)
                    n = sum(len(v) for v in batch.values())
                    if n:
                        done = count(n)
                        await consumer.commit()
                        if done:
                            return result()
            finally:
                await consumer.stop()

        return asyncio.run(plain())

    import faust

    app = faust.App(
        group,
        broker=f"kafka://{bootstrap}",
        web_enabled=False,
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
        topic_partitions=1,
    )
    source = app.topic(*topics, key_serializer="raw", value_serializer="raw")

    async def bare(stream: Any) -> None:
        async for events in stream.take_events(BATCH, 0.05):
            if count(len(events)):
                print(json.dumps(result()), flush=True)
                os._exit(0)  # the figures are out; no need for a graceful faust shutdown

    app.agent(source, name="bare")(bare)
    worker = faust.Worker(app, loglevel="warning", redirect_stdouts=False)
    worker.execute_from_commandline()
    raise RuntimeError("faust worker stopped before the last event")


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads), from /proc; None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _watch_output(
    kafka: Any,
    topic: str,
    expected: int,
    timeout: float,
    pid: int,
    alive: Callable[[], bool],
) -> dict[str, Any]:
    """Consume ``topic`` (created beforehand, one partition) while the consumer under test
    runs: the rate from the messages' CreateTime, and its CPU time between its first and its
    last output. ``assign``, not ``subscribe``: a group join would see the first message
    seconds late."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            **kafka.confluent_config(),
            "group.id": f"bench-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    stamps: list[int] = []
    cpu0 = cpu1 = None
    deadline = time.monotonic() + timeout
    try:
        while len(stamps) < expected and time.monotonic() < deadline:
            if not alive():
                break
            for m in consumer.consume(1000, timeout=0.02):
                if m.error() is None:
                    if cpu0 is None:
                        cpu0 = _cpu_seconds(pid)
                    stamps.append(m.timestamp()[1])
        cpu1 = _cpu_seconds(pid)
    finally:
        consumer.close()
    if len(stamps) < expected:
        raise RuntimeError(f"only {len(stamps)}/{expected} vectors on {topic}")
    span_s = max((max(stamps) - min(stamps)) / 1000, 1e-3)
    out: dict[str, Any] = {
        "vectors": len(stamps),
        "span_s": round(span_s, 3),
        "vectors_per_s": round(len(stamps) / span_s),
    }
    if cpu0 is not None and cpu1 is not None and cpu1 > cpu0:
        # the first message was seen after the consumer produced it: a small undercount
        out["cpu_us_per_vector"] = round((cpu1 - cpu0) / len(stamps) * 1e6, 1)
    return out


def _last_heartbeat(kafka: Any, topic: str, timeout: float = 10.0) -> dict[str, Any]:
    """The detail of the newest heartbeat on ``topic`` (the worker's own latency figures)."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            **kafka.confluent_config(),
            "group.id": f"bench-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    detail: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msgs = consumer.consume(100, timeout=0.5)
            for m in msgs:
                value = m.value()
                if m.error() is None and value:
                    detail = json.loads(value)["detail"]
            if detail and not msgs:
                break
    finally:
        consumer.close()
    keys = ("update_us_p50", "update_us_p99", "batch_us_per_vector_p50", "batch_us_per_vector_p99")
    out = {k: detail[k] for k in keys if k in detail}
    cpu_s, vectors = detail.get("cpu_s_since_first_batch"), detail.get("vectors")
    if cpu_s and vectors:
        # the worker's own account: CPU from its first batch to its last, every thread
        out["cpu_us_per_vector"] = round(cpu_s / vectors * 1e6, 1)
    return out


def _produce_input(
    kafka: Any, book: str, trades: str, n_books: int, seed: int, symbols: int = 1
) -> int:
    """The generated books and trades on ``book``/``trades``; returns the trades produced.
    One symbol (BTCUSDT, one series), or ``symbols`` symbols with a series each (n_books /
    symbols books ~100 ms apart, as in the end-to-end load), interleaved in time order."""
    from depthflow.common.kafka import Producer
    from depthflow.common.logging import trace_headers
    from depthflow.common.schemas import BOOK, TRADES, symbol_key

    if symbols == 1:
        streams = [("BTCUSDT", generate(n_books, seed=seed, mean_gap_us=300_000).events)]
    else:
        streams = [
            (
                f"S{k:03d}USDT",
                generate(
                    n_books // symbols, seed=seed + k, mean_gap_us=100_000, quiet_minutes=0
                ).events,
            )
            for k in range(symbols)
        ]
    # (event time, symbol number, position in its series, event): one time-ordered stream
    merged = heapq.merge(
        *(
            [(e[4] if e[0] == "t" else e[3], k, i, e) for i, e in enumerate(events)]
            for k, (_, events) in enumerate(streams)
        )
    )
    producer = Producer(kafka, client_id="bench-features")
    keys = [symbol_key("binance", sym) for sym, _ in streams]
    last_ts = 0
    n_trades = 0

    def trade(symbol: str, trade_id: str, price: float, qty: float, buy: bool, ts: int) -> bytes:
        return TRADES.encode(
            {
                "schema_version": 1,
                "exchange": "binance",
                "symbol": symbol,
                "trade_id": trade_id,
                "price": price,
                "qty": qty,
                "side": "buy" if buy else "sell",
                "exchange_ts_us": ts,
                "local_ts_us": ts,
            }
        )

    for ts, k, i, e in merged:
        symbol = streams[k][0]
        last_ts = max(last_ts, ts)
        if e[0] == "t":
            n_trades += 1
            producer.produce(trades, trade(symbol, str(i), e[1], e[2], e[3], e[4]), keys[k])
        else:
            _, bids, asks, ts, lts, seq = e
            producer.produce(
                book,
                BOOK.encode(
                    {
                        "schema_version": 1,
                        "exchange": "binance",
                        "symbol": symbol,
                        "seq": seq,
                        "prev_seq": seq - 1,
                        "exchange_ts_us": ts,
                        "local_ts_us": lts,
                        "bid_price": bids[0][0] if bids else 0.0,
                        "bid_qty": bids[0][1] if bids else 0.0,
                        "ask_price": asks[0][0] if asks else 0.0,
                        "ask_qty": asks[0][1] if asks else 0.0,
                        "bids": bids,
                        "asks": asks,
                    }
                ),
                keys[k],
                headers=trace_headers(f"b{seq}"),
            )
    # releases the books still waiting for the trade feed
    for k, (symbol, _) in enumerate(streams):
        producer.produce(
            trades, trade(symbol, "end", 100_000.0, 0.001, True, last_ts + 1_000_000), keys[k]
        )
    producer.flush()
    return n_trades


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and min-max of every numeric figure over repeated runs."""
    out: dict[str, Any] = {"runs": len(runs)}
    for k in runs[0]:
        xs = [r[k] for r in runs if isinstance(r.get(k), int | float)]
        if not xs or k in ("vectors",):
            continue
        med = statistics.median(xs)
        out[k] = round(med, 1) if isinstance(med, float) else med
        if len(xs) > 1:
            out[f"{k}_range"] = [min(xs), max(xs)]
    return out


def run_service(
    n_books: int = 6000,
    seed: int = 43,
    repeats: int = 3,
    many_symbols: int = 200,
    many_books: int = 20_000,
    many_batch_max: int = 40,
) -> dict[str, Any]:
    """The features worker and the two consume-only ceilings, over the same input; then the
    worker over ``many_symbols`` interleaved symbols in batches of at most ``many_batch_max``
    events, the shape of the end-to-end load (~2,000 books + trades/s, ~35 per batch)."""
    import psycopg
    from confluent_kafka.admin import AdminClient
    from psycopg import sql

    from depthflow.common.kafka import create_topics, delete_topics
    from depthflow.common.settings import KafkaSettings
    from depthflow.common.testing import infra
    from depthflow.common.testing.processes import ServiceProcess, free_port

    kafka = KafkaSettings(bootstrap_servers=infra.kafka_bootstrap())
    dsn = infra.postgres_dsn()
    run_id = uuid.uuid4().hex[:8]
    book, trades = f"bench.book.{run_id}", f"bench.trades.{run_id}"
    create_topics(kafka, [book, trades], partitions=1)
    n_trades = _produce_input(kafka, book, trades, n_books, seed)
    many_book, many_trades = f"bench.book.{run_id}.many", f"bench.trades.{run_id}.many"
    create_topics(kafka, [many_book, many_trades], partitions=1)
    _produce_input(kafka, many_book, many_trades, many_books, seed, symbols=many_symbols)
    many_books = many_books // many_symbols * many_symbols

    out: dict[str, Any] = {"books": n_books, "trades": n_trades}
    made: list[str] = [book, trades, many_book, many_trades]
    schemas: list[str] = []
    log_dir = Path(tempfile.mkdtemp(prefix=f"features-bench-{run_id}-"))

    def env_for(name: str) -> dict[str, str]:
        schema = f"bench_features_{run_id}_{name}"
        schemas.append(schema)
        feats = f"bench.features.{run_id}.{name}"
        made.extend([feats, f"bench.dlq.{run_id}.{name}", f"bench.status.{run_id}.{name}"])
        return {
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "POSTGRES_DSN": dsn,
            "FEATURES_APP_ID": f"bench-features-{run_id}-{name}",
            "FEATURES_PARTITIONS": "1",
            "FEATURES_TOPIC_BOOK": book,
            "FEATURES_TOPIC_TRADES": trades,
            "FEATURES_TOPIC_FEATURES": feats,
            "FEATURES_TOPIC_DLQ": f"bench.dlq.{run_id}.{name}",
            "FEATURES_TOPIC_STATUS": f"bench.status.{run_id}.{name}",
            "FEATURES_DB_SCHEMA": schema,
            "FEATURES_MERGE_HOLD_MS": "200",
            "FEATURES_SESSION_TIMEOUT_S": "6",
            "FEATURES_HEARTBEAT_INTERVAL_S": "0.5",
            "LOG_JSON": "false",
        }

    def worker_run(name: str, expected: int, **extra_env: str) -> dict[str, Any]:
        print(f"   features: worker {name}", file=sys.stderr, flush=True)
        env = {**env_for(name), **extra_env}
        create_topics(kafka, [env["FEATURES_TOPIC_FEATURES"]], partitions=1)
        port = free_port()
        proc = ServiceProcess(
            name,
            ["features"],
            {**env, "HTTP_PORT": str(port)},
            log_dir,
            health_url=f"http://127.0.0.1:{port}/readyz",
        ).start()
        try:
            proc.wait_healthy(120)
            assert proc.proc is not None
            res = _watch_output(
                kafka,
                env["FEATURES_TOPIC_FEATURES"],
                expected,
                300,
                proc.proc.pid,
                lambda: proc.alive,
            )
            time.sleep(1.2)  # one more heartbeat with the final figures
            res.update(_last_heartbeat(kafka, env["FEATURES_TOPIC_STATUS"]))
        finally:
            proc.stop()
        return res

    def bare_run(kind: str) -> dict[str, Any]:
        print(f"   features: consume-only {kind}", file=sys.stderr, flush=True)
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "BENCH_TOPICS": f"{book},{trades}",
            "BENCH_EXPECTED_EVENTS": str(n_books + n_trades + 1),
        }
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        done = subprocess.run(
            [sys.executable, "-m", "bench.features_bench", f"--{kind}-bare"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=300,
            check=False,
        )
        lines = done.stdout.decode().strip().splitlines()
        if not lines:
            raise RuntimeError(f"{kind} bare consumer failed: {done.stderr.decode()[-2000:]}")
        return dict(json.loads(lines[-1]))

    try:
        worker_runs = [worker_run(f"worker{i}", n_books) for i in range(repeats)]
        many_runs = [
            worker_run(
                f"many{i}",
                many_books,
                FEATURES_TOPIC_BOOK=many_book,
                FEATURES_TOPIC_TRADES=many_trades,
                FEATURES_BATCH_MAX=str(many_batch_max),
            )
            for i in range(repeats)
        ]
        bare_plain = [bare_run("plain") for _ in range(repeats)]
        bare_faust = [bare_run("faust") for _ in range(repeats)]
        events = n_books + n_trades + 1
        out["consume_only"] = {
            "events": events,
            "plain_aiokafka": _summary(bare_plain),
            "faust_take": _summary(bare_faust),
        }
        out["worker"] = w = _summary(worker_runs)
        if "cpu_us_per_vector" in w:
            w["vectors_per_cpu_s"] = round(1e6 / w["cpu_us_per_vector"])
            # the consumer layer's own share of the worker's CPU per vector
            plain_cpu = out["consume_only"]["plain_aiokafka"]["cpu_us_per_event"] * events
            faust_cpu = out["consume_only"]["faust_take"]["cpu_us_per_event"] * events
            out["consume_only"]["plain_cpu_us_per_vector"] = round(plain_cpu / n_books, 1)
            out["consume_only"]["faust_cpu_us_per_vector"] = round(faust_cpu / n_books, 1)
        out["worker_many_symbols"] = m = {
            "symbols": many_symbols,
            "books": many_books,
            "batch_max": many_batch_max,
            **_summary(many_runs),
        }
        if "cpu_us_per_vector" in m:
            m["vectors_per_cpu_s"] = round(1e6 / m["cpu_us_per_vector"])
        out["target_vectors_per_s"] = 10_000
    finally:
        names = AdminClient(kafka.confluent_config()).list_topics(timeout=10).topics
        made.extend(n for n in names if n.startswith(f"bench-features-{run_id}"))
        delete_topics(kafka, made)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )
    return out


def run() -> dict[str, Any]:
    """Both sections: the pure engine, then the service path over Kafka."""
    return {"engine": run_engine(), "service": run_service()}


if __name__ == "__main__":
    if sys.argv[1:] in (["--plain-bare"], ["--faust-bare"]):
        print(json.dumps(_bare_consumer(sys.argv[1][2:7])), flush=True)
    else:
        print(json.dumps(run(), indent=2))
