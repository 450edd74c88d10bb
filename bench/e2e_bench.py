"""The whole pipeline under load: simulator → collector → features → strategy → executor
(paper), as the real processes ``make run`` starts, on a private Kafka + PostgreSQL pair.

Issue 11's load case: ``BENCH_E2E_SYMBOLS`` symbols (200) at 10 depth messages/s each (the
Binance ``@depth@100ms`` stream) for ``BENCH_E2E_SECONDS`` (600). Every ``SAMPLE_S`` it samples
each consumer group's lag (committed offsets against the log end) and each process's
resident memory; at the end it stops the simulator, lets the pipeline drain and reports:

- per stage, messages/s over the steady window (Kafka log-end offsets), with the simulator's
  sent rate as the stage's ceiling (a stage can only pass on what it gets) and the ratio;
- lag: max and final per group — bounded means it does not grow from the first to the last
  third of the run;
- memory: RSS per process, first, middle and last third: ``growth`` (first to last) includes
  the symbols' sync and buffers filling up; ``steady_growth`` (middle to last) is the leak
  test (flat = under 5 %);
- CPU: cores each process (with its children; the private Kafka broker and PostgreSQL
  server too) used over the steady window — where the machine's cores go;
- nothing dropped: the simulator's depth messages sent = the collector's received, every
  md.book message has its stored vector (bar the last books of each symbol that wait in the
  features merge buffer), every buy/sell signal reached the executor;
- end-to-end latency exchange event → paper order acknowledged: per order, the order's
  first ``Placed``/``Filled`` event time on orders.v1 minus its signal's ``source_ts_us``
  (the exchange time of the book it acted on), p50/p99 over every order of the steady window.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.e2e.pipeline import (  # noqa: E402 - the repo root must be importable first
    Pipeline,
    PrivateInfra,
    committed_lag,
    end_offsets,
    http_json,
    metric_sum,
    pipeline_env,
    read_topic,
    scrape,
)

SYMBOLS_N = int(os.environ.get("BENCH_E2E_SYMBOLS", "200"))
SECONDS = float(os.environ.get("BENCH_E2E_SECONDS", "600"))
# the simulator's interval-stream schedule (SIM_PUSH_PHASE): per_symbol (default) or aligned
PUSH_PHASE = os.environ.get("BENCH_E2E_PUSH_PHASE", "per_symbol")
SAMPLE_S = 10.0
WARMUP_S = 30.0  # excluded from rates and latency: connections, snapshots, first candles
STAGES = ("sim", "collector-binance", "features", "strategy", "executor")


def _rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_by_process(roots: dict[str, int], infra_dir: str) -> dict[str, float]:
    """CPU seconds (user + system, since start) of each stage process with its children, and
    of the private Kafka broker and PostgreSQL server (every process whose command line, or an
    ancestor's, names ``infra_dir``), from /proc; ``other`` is everything else on the machine."""
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    cmd: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd[int(entry.name)] = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    by_pid = {pid: name for name, pid in roots.items()}
    totals: dict[str, float] = dict.fromkeys([*roots, "kafka", "postgres", "other"], 0.0)
    for pid, seconds in cpu.items():
        name = None
        walk: int | None = pid
        while walk and name is None:
            if walk in by_pid:
                name = by_pid[walk]
            elif infra_dir in cmd.get(walk, ""):
                name = "kafka" if "java" in cmd[walk] else "postgres"
            walk = parent.get(walk)
        totals[name or "other"] += seconds
    return totals


def _machine_cpu() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine since boot, from /proc/stat: busy counts
    what no process is charged with too (interrupts, softirq: loopback networking)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLK_TCK, (idle + iowait) / CLK_TCK


def _total(bootstrap: str, topic: str) -> int:
    return sum(end_offsets(bootstrap, topic).values())


def _lag(bootstrap: str, group: str, topics: list[str]) -> int:
    """Records the group has not committed yet, over its topics."""
    return sum(end - done for done, end in committed_lag(bootstrap, group, topics).values())


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _vector_stamps(
    dsn: str, books: set[tuple[str, str, int]]
) -> dict[tuple[str, str, int], tuple[int, int]]:
    """(collector receive time, vector computed time) of each of these books' vectors."""
    import psycopg

    if not books:
        return {}
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT v.exchange, v.symbol, v.book_seq, v.local_ts_us, v.computed_ts_us"
            " FROM features.vectors v JOIN unnest(%s::text[], %s::text[], %s::bigint[])"
            " AS b(exchange, symbol, seq)"
            " ON v.exchange = b.exchange AND v.symbol = b.symbol AND v.book_seq = b.seq"
            " WHERE v.feature_set = 'v1'",
            ([b[0] for b in books], [b[1] for b in books], [b[2] for b in books]),
        ).fetchall()
    return {(r[0], r[1], int(r[2])): (int(r[3]), int(r[4])) for r in rows}


def _latencies(bootstrap: str, dsn: str, since_us: int) -> dict[str, list[float]]:
    """ms, per order: exchange event → order acknowledged ("total"), split at the strategy's
    decision: exchange event → signal ("to_signal") and signal → acknowledged ("to_order");
    and exchange event → order sent to the venue ("to_sent": its ``Pending`` event, stored
    before sending), which leaves out the paper venue's simulated latency
    (``EXECUTOR_PAPER_LATENCY_MS``). Per stage, from the stored vector of the signal's book
    (``features.vectors``: the collector's receive time and the features worker's compute
    time): exchange → collector ("to_collector"), collector → vector computed ("to_vector"),
    vector → signal decided ("to_decision")."""
    source: dict[str, int] = {}
    decided: dict[str, int] = {}
    book_of: dict[str, tuple[str, str, int]] = {}
    for _key, value in read_topic(bootstrap, "signals.v1"):
        if value:
            s = orjson.loads(value)
            source[s["signal_id"]] = s["source_ts_us"]
            decided[s["signal_id"]] = s["ts_us"]
            book_of[s["signal_id"]] = (s["exchange"], s["symbol"], s["book_seq"])
    acked: dict[str, int] = {}
    sent: dict[str, int] = {}
    for _key, value in read_topic(bootstrap, "orders.v1"):
        if not value:
            continue
        e = orjson.loads(value)
        if e.get("event_type") == "order" and e.get("status") == "Pending":
            sid = e.get("signal_id")
            if sid and sid not in sent:
                sent[sid] = e["ts_us"]
        if e.get("event_type") == "order" and e.get("status") in (
            "Placed",
            "PartiallyFilled",
            "Filled",
        ):
            sid = e.get("signal_id")
            if sid and sid not in acked:
                acked[sid] = e["ts_us"]
    ids = [sid for sid in acked if sid in source and source[sid] >= since_us]
    stamps = _vector_stamps(dsn, {book_of[sid] for sid in ids})
    staged = [sid for sid in ids if book_of[sid] in stamps]
    return {
        "to_collector": [(stamps[book_of[i]][0] - source[i]) / 1000 for i in staged],
        "to_vector": [(stamps[book_of[i]][1] - stamps[book_of[i]][0]) / 1000 for i in staged],
        "to_decision": [(decided[i] - stamps[book_of[i]][1]) / 1000 for i in staged],
        "total": [(acked[sid] - source[sid]) / 1000 for sid in ids],
        "to_signal": [(decided[sid] - source[sid]) / 1000 for sid in ids],
        "to_order": [(acked[sid] - decided[sid]) / 1000 for sid in ids],
        "to_sent": [(sent[sid] - source[sid]) / 1000 for sid in ids if sid in sent],
    }


def run() -> dict[str, Any]:
    symbols = [f"L{i:03d}USDT" for i in range(SYMBOLS_N)]
    infra = PrivateInfra().up()
    workdir = Path(tempfile.mkdtemp(prefix="depthflow-e2e-bench-"))
    pipe: Pipeline | None = None
    try:
        infra.migrate()
        env = pipeline_env(
            infra,
            {
                "DEPTHFLOW_LOCAL_DIR": str(infra.local),
                "SIM_SYMBOLS": ",".join(symbols),
                # updates/s per symbol: the 100 ms stream then carries ~10 messages/s each
                "SIM_RATE": "40",
                "SIM_PUSH_PHASE": PUSH_PHASE,
                "COLLECTOR_SYMBOLS": ",".join(symbols),
                "LOG_LEVEL": "WARNING",
                # the generic instruments (price ~10, lot 0.1) have small clusters in USDT:
                # the seed's 10,000 would never let the imbalance rule fire on them
                "MIN_CLUSTER_VOLUME": "100",
                # room for many symbols' positions, so signals become orders (the latency)
                "MAX_OPEN_POSITIONS": "400",
                "MAX_EXPOSURE_USDT": "10000000",
            },
        )
        pipe = Pipeline(infra, env, workdir)
        for name in STAGES:
            pipe[name].start()
            pipe[name].wait_healthy(300)
        started = time.monotonic()
        steady_from_us = time.time_ns() // 1000 + int(WARMUP_S * 1e6)
        groups = {
            "collector-sink": ("collector-db", ["md.book", "md.health"]),
            "features": ("depthflow-features", ["md.book", "md.trades"]),
            "strategy": ("strategy", ["features.v1"]),
            "executor": ("executor", ["signals.v1"]),
        }
        samples: list[dict[str, Any]] = []
        cpu_marks: dict[str, dict[str, float]] = {}
        machine_marks: dict[str, tuple[float, float]] = {}

        def _roots() -> dict[str, int]:
            return {n: p.proc.pid for n in STAGES if (p := pipe[n]).proc is not None}

        marks: dict[str, tuple[float, dict[str, int]]] = {}
        # when every symbol's book was first in sync (the collector's gauge, per sample): the
        # load's steady state starts there; before it, snapshots and resyncs share the cores
        synced_at: tuple[float, int] | None = None
        collector_url = pipe.metrics_url("collector-binance")
        topics = ("md.depth.raw", "md.book", "features.v1", "signals.v1", "orders.v1")
        while time.monotonic() - started < SECONDS:
            time.sleep(SAMPLE_S)
            for name in STAGES:
                pipe[name].assert_alive()
            t = time.monotonic() - started
            lag = {g: _lag(infra.bootstrap, group, ts) for g, (group, ts) in groups.items()}
            rss = {n: _rss_mb(pipe[n].proc.pid if pipe[n].proc else None) for n in STAGES}
            samples.append({"t": round(t, 1), "lag": lag, "rss_mb": rss})
            if synced_at is None:
                with contextlib.suppress(Exception):  # a missed scrape: the next sample
                    synced = metric_sum(scrape(collector_url), "depthflow_collector_synced_books")
                    if synced >= SYMBOLS_N:
                        synced_at = (t, time.time_ns() // 1000)
            if "start" not in marks and t >= WARMUP_S:
                marks["start"] = (t, {tp: _total(infra.bootstrap, tp) for tp in topics})
                cpu_marks["start"] = _cpu_by_process(_roots(), str(infra.dir))
                machine_marks["start"] = _machine_cpu()
            print(f"  e2e t={t:5.0f}s lag={lag} rss={rss}", file=sys.stderr, flush=True)
        marks["end"] = (
            time.monotonic() - started,
            {tp: _total(infra.bootstrap, tp) for tp in topics},
        )
        cpu_marks["end"] = _cpu_by_process(_roots(), str(infra.dir))
        machine_marks["end"] = _machine_cpu()
        _, sim_status = http_json(f"{pipe.sim_url}/sim/status")
        features_detail: dict[str, Any] = {}
        for _key, value in read_topic(infra.bootstrap, "status.v1"):
            beat = orjson.loads(value) if value else {}
            if beat.get("service") == "features":
                features_detail = beat.get("detail") or {}
        collector = scrape(pipe.metrics_url("collector-binance"))
        features_metrics = scrape(pipe.metrics_url("features"))

        def per_call_ms(name: str) -> float | None:
            n = metric_sum(features_metrics, f"{name}_count")
            return round(metric_sum(features_metrics, f"{name}_sum") / n * 1000, 2) if n else None

        features_calls = {
            "batch_ms_mean": per_call_ms("depthflow_features_batch_seconds"),
            "batches": metric_sum(features_metrics, "depthflow_features_batch_seconds_count"),
            "checkpoint_ms_mean": per_call_ms("depthflow_features_checkpoint_seconds"),
            "checkpoints": metric_sum(
                features_metrics, "depthflow_features_checkpoint_seconds_count"
            ),
        }
        # stop the market, let every stage drain
        pipe["sim"].stop()
        drained_at = time.monotonic()
        final_lag: dict[str, int] = {}
        while time.monotonic() - drained_at < 120:
            final_lag = {g: _lag(infra.bootstrap, group, ts) for g, (group, ts) in groups.items()}
            if all(v == 0 for v in final_lag.values()):
                break
            time.sleep(2)
        drain_s = round(time.monotonic() - drained_at, 1)
        (t0, start), (t1, end) = marks["start"], marks["end"]
        window = t1 - t0
        rates = {tp: round((end[tp] - start[tp]) / window, 1) for tp in topics}
        # cores each process used over the steady window (2 = the whole machine here)
        m0, m1 = machine_marks["start"], machine_marks["end"]
        busy_s, idle_s = m1[0] - m0[0], m1[1] - m0[1]
        cores = {
            n: round((cpu_marks["end"][n] - cpu_marks["start"].get(n, 0.0)) / window, 3)
            for n in cpu_marks["end"]
        }
        latencies = _latencies(infra.bootstrap, infra.dsn, steady_from_us)
        thirds = max(1, len(samples) // 3)

        def third(which: list[dict[str, Any]], part: str, key: str) -> float:
            vals = [s[part][key] for s in which if s[part].get(key) is not None]
            return sum(vals) / len(vals) if vals else 0.0

        first, last = samples[:thirds], samples[-thirds:]
        middle = samples[thirds : 2 * thirds]
        memory = {
            n: {
                "first_third_mb": round(third(first, "rss_mb", n), 1),
                "middle_third_mb": round(third(middle, "rss_mb", n), 1),
                "last_third_mb": round(third(last, "rss_mb", n), 1),
            }
            for n in STAGES
        }
        for m in memory.values():
            # growth: over the whole run, the symbols' sync and the buffers filling included;
            # steady_growth: middle third to last, once they are done (flat = under 5 %)
            for key, base in (("growth", "first_third_mb"), ("steady_growth", "middle_third_mb")):
                m[key] = round(m["last_third_mb"] / m[base] - 1, 3) if m[base] else None
        lag = {
            g: {
                "max": max(s["lag"][g] for s in samples),
                "first_third_avg": round(third(first, "lag", g)),
                "last_third_avg": round(third(last, "lag", g)),
                "after_drain": final_lag.get(g),
            }
            for g in groups
        }
        received = metric_sum(collector, "depthflow_collector_messages_received_total")
        depth_received = metric_sum(
            collector, "depthflow_collector_messages_received_total", kind="depth"
        )

        def pct(values: list[float]) -> dict[str, float | None]:
            return {
                f"p{int(q * 100)}": None if (v := _percentile(values, q)) is None else round(v, 2)
                for q in (0.5, 0.99)
            }

        after_sync = None
        if synced_at is not None:
            later = _latencies(infra.bootstrap, infra.dsn, synced_at[1])
            after_sync = {
                "synced_at_s": round(synced_at[0], 1),
                "orders": len(later["total"]),
                "exchange_to_order_sent": pct(later["to_sent"]),
                "exchange_to_ack": pct(later["total"]),
                "signal_to_order": pct(later["to_order"]),
                "exchange_to_signal": pct(later["to_signal"]),
            }

        return {
            "symbols": SYMBOLS_N,
            "seconds": SECONDS,
            "sim_push_phase": PUSH_PHASE,
            "window_s": round(window, 1),
            "throughput_msgs_per_s": {
                "exchange_messages": rates["md.depth.raw"],  # depth + trades, as received
                "md_book": rates["md.book"],
                "md_book_per_symbol": round(rates["md.book"] / SYMBOLS_N, 2),
                "features_v1": rates["features.v1"],
                "features_ratio_to_md_book": round(rates["features.v1"] / rates["md.book"], 3)
                if rates["md.book"]
                else None,
                "signals_v1": rates["signals.v1"],
                "orders_v1": rates["orders.v1"],
            },
            "sim_messages_sent": sim_status.get("messages_sent"),
            "collector_messages_received": received,
            "md_book_total_per_depth_message": round(end["md.book"] / depth_received, 4)
            if depth_received
            else None,
            "lag_records": lag,
            "drain_s": drain_s,
            "memory": memory,
            "cpu_cores": cores,
            # the whole machine over the same window: busy cores of os.cpu_count() (the
            # processes above plus interrupts and softirq, which no process is charged with)
            "machine_busy_cores": round(busy_s / window, 3),
            "machine_busy_fraction": round(busy_s / max(1e-9, busy_s + idle_s), 3),
            "features_worker": {**features_calls, "last_heartbeat": features_detail},
            "e2e_latency_ms": {
                "orders": len(latencies["total"]),
                **pct(latencies["total"]),
                "target_p50": 15,
                "target_p99": 50,
                "exchange_to_signal": pct(latencies["to_signal"]),
                "signal_to_order": pct(latencies["to_order"]),
                "exchange_to_order_sent": pct(latencies["to_sent"]),
                "stages": {
                    # md.book record time -> the features batch that took it (the worker's
                    # own window of recent books, from its last heartbeat)
                    "features_book_delay_ms": {
                        "p50": features_detail.get("book_delay_ms_p50"),
                        "p99": features_detail.get("book_delay_ms_p99"),
                    },
                    "exchange_to_collector": pct(latencies["to_collector"]),
                    "collector_to_vector": pct(latencies["to_vector"]),
                    "vector_to_signal": pct(latencies["to_decision"]),
                },
                # the same, for orders whose exchange event came after every symbol was in
                # sync (None: they never all were)
                "after_sync": after_sync,
                "paper_latency_ms": float(env.get("EXECUTOR_PAPER_LATENCY_MS", "20")),
                "features_merge_hold_ms": float(env.get("FEATURES_MERGE_HOLD_MS", "200")),
            },
        }
    finally:
        if pipe is not None:
            for name in reversed(STAGES):
                with contextlib.suppress(Exception):  # best effort on the way out
                    pipe[name].stop()
        infra.down()


if __name__ == "__main__":
    print(orjson.dumps(run(), option=orjson.OPT_INDENT_2).decode())
