"""`make run` on a fresh machine: within a minute books, features, signals and paper orders
appear in Kafka, PostgreSQL, the API and the metrics (issue 6 and issue 11's must-show).

The pipeline is started exactly as ``make run`` does — ``depthflow migrate`` then
``python -m depthflow.common.runner`` (honcho with the runner's Procfile) — against a fresh,
private Kafka broker and PostgreSQL server; the runner's ports are moved to free ones with
its documented environment overrides. The strategy runs with the product's defaults
(IMBALANCE_BUY_THRESHOLD 0.75, IMBALANCE_SELL_THRESHOLD 0.25, MIN_CLUSTER_VOLUME 10000):
the simulator's market crosses them within seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from depthflow.common.testing import eventually
from depthflow.common.testing.infra import ROOT

from .pipeline import (
    HTTP_PORT_VARS,
    SYMBOLS,
    PrivateInfra,
    db_count,
    http_json,
    login,
    metric_sum,
    pipeline_env,
    scrape,
    topic_size,
    topics_of,
)

FIRST_MINUTE_S = 60.0
# the services that publish heartbeats on status.v1 (the collector does not, yet)
HEARTBEATING = ("features", "strategy", "executor")


def test_make_run_brings_up_the_whole_pipeline_within_a_minute(
    private_infra: PrivateInfra, tmp_path: Any
) -> None:
    infra = private_infra
    app_id = f"e2e-smoke-{uuid.uuid4().hex[:8]}"
    env = pipeline_env(infra, {"DEPTHFLOW_LOCAL_DIR": str(infra.local), "FEATURES_APP_ID": app_id})
    api = f"http://127.0.0.1:{env['API_PORT']}"
    log_path = tmp_path / "runner.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "depthflow.common.runner"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = time.monotonic()

    def log_tail() -> str:
        return log_path.read_text(errors="replace")[-6000:]

    def within_first_minute(what: str, condition: Callable[[], Any]) -> Any:
        def check() -> Any:
            assert proc.poll() is None, f"the runner exited {proc.returncode}:\n{log_tail()}"
            return condition()

        left = max(1.0, FIRST_MINUTE_S - (time.monotonic() - started))
        value = eventually(check, timeout=left, interval=0.5, what=what)
        print(f"{what}: after {time.monotonic() - started:.1f} s")
        return value

    def topic_has(topic: str) -> bool:
        return topic in topics_of(infra.bootstrap) and topic_size(infra.bootstrap, topic) > 0

    try:
        # Kafka and PostgreSQL, stage by stage
        within_first_minute(
            "books in md.book and collector.orderbook_data",
            lambda: topic_has("md.book") and db_count(infra.dsn, "collector.orderbook_data"),
        )
        within_first_minute(
            "features in features.v1 and features.vectors",
            lambda: topic_has("features.v1") and db_count(infra.dsn, "features.vectors"),
        )
        within_first_minute(
            "signals in signals.v1 and strategy.signals",
            lambda: topic_has("signals.v1") and db_count(infra.dsn, "strategy.signals"),
        )
        within_first_minute(
            "paper orders in orders.v1 and executor.orders/fills",
            lambda: (
                topic_has("orders.v1")
                and db_count(infra.dsn, "executor.orders")
                and db_count(infra.dsn, "executor.fills")
            ),
        )

        # the API, logged in with the documented default admin
        token = login(api)

        def get(path: str) -> Any:
            status, body = http_json(f"{api}{path}", token=token)
            assert status == 200, f"GET {path}: {status} {body}"
            return body

        pairs = within_first_minute(
            "every pair has a live book in /data/pairs",
            lambda: (
                (p := get("/data/pairs")["pairs"])
                and all(x["exchanges"] == ["binance", "bybit"] for x in p)
                and p
            ),
        )
        assert {p["symbol"] for p in pairs} == set(SYMBOLS)
        for symbol in SYMBOLS:
            book = get(f"/data/orderbook/{symbol}")
            assert book["bids"] and book["asks"] and book["bid_price"] < book["ask_price"]
        metrics = get("/data/metrics")["metrics"]
        assert {(m["exchange"], m["symbol"]) for m in metrics} >= {
            (x, s) for x in ("binance", "bybit") for s in SYMBOLS
        }
        signals = within_first_minute(
            "signals in /trading/signals", lambda: get("/trading/signals?limit=50")["signals"]
        )
        assert all(s["strategy"] == "imbalance" for s in signals)
        assert any(s["side"] in ("buy", "sell") for s in signals), signals
        within_first_minute(
            "paper orders in /trading/execution-stats",
            lambda: get("/trading/execution-stats")["orders"] > 0,
        )
        stats = within_first_minute(
            "paper fills in /trading/execution-stats",
            lambda: (x := get("/trading/execution-stats"))["fills"] > 0 and x,
        )
        assert stats["fees"] > 0 and stats["filled_notional"] > 0, stats
        # positions may be flat at any given moment (a sell closes the buy before it)
        assert isinstance(get("/trading/positions")["positions"], list)
        balance = get("/trading/balance")
        assert {"realized_pnl", "unrealized_pnl", "fees_paid", "exposure_usdt"} <= set(balance)
        risk = get("/trading/risk-status")
        assert risk, risk
        status = within_first_minute(
            "features, strategy and executor running in /bot/status",
            lambda: (
                (b := {s["service"]: s for s in get("/bot/status")["services"]})
                and all(
                    b[n]["up"] and b[n]["state"] == "running"
                    for n in ("features", "strategy", "executor")
                )
                and b
            ),
        )
        print("bot status:", {n: (s["state"], s["up"]) for n, s in status.items()})

        # every service's /metrics
        port = {name: env[var] for name, var in HTTP_PORT_VARS.items()}
        expected = {
            "collector-binance": ("depthflow_collector_db_rows_total", {"table": "orderbook_data"}),
            "collector-bybit": (
                "depthflow_collector_messages_applied_total",
                {"exchange": "bybit"},
            ),
            "features": ("depthflow_features_vectors_total", {}),
            "strategy": ("depthflow_strategy_signals_total", {}),
            "executor": ("depthflow_executor_orders_total", {}),
        }
        for name, (metric, labels) in expected.items():
            url = f"http://127.0.0.1:{port[name]}/metrics"
            within_first_minute(
                f"{metric} > 0 on {name}'s /metrics",
                lambda url=url, metric=metric, labels=labels: (
                    metric_sum(scrape(url), metric, **labels) > 0
                ),
            )
        api_metrics = scrape(f"{api}/metrics")
        for topic in ("md.book", "signals.v1", "orders.v1", "status.v1"):
            assert metric_sum(api_metrics, "depthflow_api_consumed_total", topic=topic) > 0, topic
        assert proc.poll() is None, log_tail()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # honcho stops every process
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        shutil.rmtree(ROOT / f"{app_id}-data", ignore_errors=True)
    assert "Traceback" not in log_path.read_text(errors="replace"), log_tail()
