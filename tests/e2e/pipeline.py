"""The whole depthflow pipeline as real processes on a private Kafka + PostgreSQL pair.

- ``PrivateInfra``: ``deploy/local/infra.sh`` with its own data dir (``DEPTHFLOW_LOCAL_DIR``)
  and free ports, so restarting Kafka or stopping PostgreSQL never touches the shared ones.
- ``ShellService``: one Procfile line of ``depthflow.common.runner`` run by ``/bin/sh`` as
  its own process group (start, wait healthy, ``kill -9``, SIGTERM) — the same command
  ``make run`` starts, so the faults hit the binaries users run.
- ``Pipeline``: the runner's process set on free ports.
- ``read_topic`` / ``committed_lag``: what Kafka really holds, read back with a confluent
  consumer from the beginning.
- ``Ledger``: the end-to-end accounting of every stage (``verify`` raises on any loss or
  duplicate), see its docstring for what "lost" means per stage.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from depthflow.common import runner
from depthflow.common.testing.infra import INFRA_SCRIPT, ROOT, kafka_ready, pg_ready
from depthflow.common.testing.processes import ServiceProcess, free_port
from depthflow.common.testing.topics import end_offsets, read_topic, reader

BIN = Path(sys.executable).parent
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
TARDIS_EXCHANGE = {"binance": "binance-futures", "bybit": "bybit"}
# The worker processes of the runner and the variable that moves each one's HTTP_PORT.
HTTP_PORT_VARS = {
    "collector-binance": "RUN_HTTP_PORT_COLLECTOR_BINANCE",
    "collector-bybit": "RUN_HTTP_PORT_COLLECTOR_BYBIT",
    "features": "RUN_HTTP_PORT_FEATURES",
    "strategy": "RUN_HTTP_PORT_STRATEGY",
    "executor": "RUN_HTTP_PORT_EXECUTOR",
}
ADMIN = ("admin", "depthflow-dev-password")  # the documented development login


# --------------------------------------------------------------------------- infrastructure


class PrivateInfra:
    """A Kafka broker and a PostgreSQL server of our own (``infra.sh`` on free ports)."""

    def __init__(self) -> None:
        # /tmp, world-traversable: infra.sh runs PostgreSQL as the postgres user under root.
        self.dir = Path(tempfile.mkdtemp(prefix="depthflow-e2e-"))
        self.dir.chmod(0o755)
        self.local = self.dir / "local"
        (self.local / "kafka").mkdir(parents=True)
        self.local.chmod(0o755)
        shared_jars = ROOT / ".local" / "kafka" / "libs"
        if (shared_jars / ".version").exists():  # reuse the fetched jars (read-only)
            (self.local / "kafka" / "libs").symlink_to(shared_jars)
        self.kafka_port = free_port()
        self.controller_port = free_port()
        self.pg_port = free_port()
        self.bootstrap = f"127.0.0.1:{self.kafka_port}"
        self.dsn = f"postgresql://depthflow:depthflow@127.0.0.1:{self.pg_port}/depthflow"
        self.env = {
            **os.environ,
            "DEPTHFLOW_LOCAL_DIR": str(self.local),
            "KAFKA_PORT": str(self.kafka_port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "PG_PORT": str(self.pg_port),
            "KAFKA_HEAP_OPTS": "-Xms256m -Xmx768m",
        }

    def infra(self, command: str, timeout: float = 300) -> None:
        proc = subprocess.run(
            ["bash", str(INFRA_SCRIPT), command],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert proc.returncode == 0, f"infra.sh {command} failed:\n{proc.stderr[-3000:]}"

    def up(self) -> PrivateInfra:
        self.infra("up", timeout=600)
        assert kafka_ready(self.bootstrap), f"private Kafka {self.bootstrap} does not answer"
        assert pg_ready(self.dsn), f"private PostgreSQL on {self.pg_port} does not answer"
        return self

    def down(self) -> None:
        try:
            self.infra("down")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def migrate(self) -> None:
        env = {**os.environ, "POSTGRES_DSN": self.dsn, "LOG_JSON": "true"}
        proc = subprocess.run(
            [str(BIN / "depthflow"), "migrate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, f"depthflow migrate failed:\n{proc.stderr[-3000:]}"


# --------------------------------------------------------------------------- processes


class ShellService(ServiceProcess):
    """One Procfile command, run by ``/bin/sh -c`` in its own process group."""

    def __init__(
        self, name: str, command: str, env: dict[str, str], cwd: Path, health_url: str | None
    ) -> None:
        super().__init__(name, [], env, cwd, health_url, cwd=cwd)
        self.shell_command = command

    def command(self) -> list[str]:
        return ["/bin/sh", "-c", self.shell_command]

    def wait_healthy(self, timeout: float = 120.0) -> None:
        super().wait_healthy(timeout)

    def stop(self, timeout: float = 45.0) -> int | None:
        return super().stop(timeout)

    def log_tail(self, chars: int = 4000) -> str:
        return super().log_tail(chars)


def pipeline_env(infra: PrivateInfra, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every process: the private broker/database and free ports for
    everything the runner would otherwise put on its fixed ports."""
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
        "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap,
        "POSTGRES_DSN": infra.dsn,
        "SIM_PORT": str(free_port()),
        "API_PORT": str(free_port()),
        "LOG_JSON": "true",
        "LOG_LEVEL": "INFO",
    }
    for var in HTTP_PORT_VARS.values():
        env[var] = str(free_port())
    env.update(extra or {})
    return env


class Pipeline:
    """``make run``'s process set (``runner.PROCESSES``), each process on its own."""

    def __init__(self, infra: PrivateInfra, env: dict[str, str], workdir: Path) -> None:
        self.infra = infra
        self.env = env
        self.workdir = workdir
        self.sim_url = f"http://127.0.0.1:{env['SIM_PORT']}"
        self.api_url = f"http://127.0.0.1:{env['API_PORT']}"
        self.services: dict[str, ShellService] = {}
        for name, module, command in runner.PROCESSES:
            assert runner._exists(module), f"{module} is not installed: {name} cannot run"
            if name == "sim":
                health = f"{self.sim_url}/healthz"
            elif name == "api":
                health = f"{self.api_url}/healthz"
            else:
                health = f"http://127.0.0.1:{env[HTTP_PORT_VARS[name]]}/healthz"
            self.services[name] = ShellService(name, command, env, workdir, health)

    def __getitem__(self, name: str) -> ShellService:
        return self.services[name]

    def metrics_url(self, name: str) -> str:
        if name == "api":
            return f"{self.api_url}/metrics"
        return f"http://127.0.0.1:{self.env[HTTP_PORT_VARS[name]]}/metrics"

    def start(self) -> None:
        self.services["sim"].start().wait_healthy(60)
        for svc in self.services.values():
            if not svc.alive:
                svc.start()
        for svc in self.services.values():
            svc.wait_healthy(180)

    def assert_all_alive(self) -> None:
        for svc in self.services.values():
            svc.assert_alive()

    def stop(self) -> None:
        for name in reversed(list(self.services)):
            self.services[name].stop()


# --------------------------------------------------------------------------- HTTP helpers


def http_json(
    url: str, method: str = "GET", body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    data = orjson.dumps(body) if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:  # noqa: S310 - loopback
            return resp.status, orjson.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"null")


def login(api_url: str) -> str:
    status, body = http_json(
        f"{api_url}/auth/login", "POST", {"username": ADMIN[0], "password": ADMIN[1]}
    )
    assert status == 200, f"login with the documented admin failed: {status} {body}"
    return str(body["access_token"])


def scrape(url: str) -> dict[str, float]:
    """Prometheus text → {'name{labels}': value} (samples only)."""
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


def metric_sum(samples: dict[str, float], name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total


# --------------------------------------------------------------------------- Kafka helpers


def topic_size(bootstrap: str, topic: str) -> int:
    return sum(end_offsets(bootstrap, topic).values())


def committed_lag(bootstrap: str, group: str, topics: Iterable[str]) -> dict[str, tuple[int, int]]:
    """Per ``topic:partition`` the group has not committed to its end: (committed offset,
    end offset). An empty dict means the group is caught up."""
    admin_consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        lag: dict[str, tuple[int, int]] = {}
        for topic in topics:
            ends = end_offsets(bootstrap, topic)
            committed = admin_consumer.committed(
                [TopicPartition(topic, p) for p in ends], timeout=15
            )
            for tp in committed:
                done = tp.offset if tp.offset >= 0 else 0
                if ends[tp.partition] > done:
                    lag[f"{topic}:{tp.partition}"] = (done, ends[tp.partition])
        return lag
    finally:
        admin_consumer.close()


def message_at(bootstrap: str, topic: str, partition: int, offset: int) -> str:
    """A short description of one message (for failure reports)."""
    c = reader(bootstrap)
    try:
        c.assign([TopicPartition(topic, partition, offset)])
        for msg in c.consume(1, timeout=10):
            if msg.error():
                return f"error {msg.error()}"
            return (
                f"{topic}:{partition}@{msg.offset()} key={msg.key()!r} value={msg.value()[:160]!r}"
            )
        return f"{topic}:{partition}@{offset}: nothing"
    finally:
        c.close()


def produce_raw(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    errors: list[Any] = []
    p.produce(topic, value, key, on_delivery=lambda err, _msg: err and errors.append(err))
    assert p.flush(30) == 0 and not errors, f"poison to {topic} not delivered: {errors}"


def topics_of(bootstrap: str) -> set[str]:
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=15).topics)


def decode_all(messages: list[tuple[bytes | None, bytes | None]]) -> tuple[list[dict], int]:
    """(decoded JSON objects, how many did not decode)."""
    good: list[dict] = []
    bad = 0
    for _key, value in messages:
        try:
            obj = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            bad += 1
            continue
        if isinstance(obj, dict) and obj.get("schema_version") == 1:
            good.append(obj)
        else:
            bad += 1
    return good, bad


# --------------------------------------------------------------------------- the accounting


def db_rows(dsn: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        return list(conn.execute(query).fetchall())


def db_count(dsn: str, table: str) -> int:
    return int(db_rows(dsn, f"SELECT count(*) FROM {table}")[0][0])


@dataclass
class Ledger:
    """Every stage's input (Kafka, read back from the beginning) against its output.

    What "lost" and "duplicated" mean, stage by stage (checked once the pipeline is drained):

    - collector sink: every md.book message with ``tob_changed`` has exactly one
      ``collector.orderbook_data`` row keyed (exchange, symbol, exchange timestamp, update id)
      and there is no row without such a message; likewise md.health ↔ ``book_health``.
    - features: every distinct (exchange, symbol, seq) of a decodable md.book message has
      exactly one stored vector (``features.vectors``, book_seq) unless the features service
      dead-lettered that book; no vector without a book; features.v1 carries exactly the
      stored vectors (repeats only as identical copies: at-least-once).
    - strategy: every signal on signals.v1 is one row of ``strategy.signals`` and vice versa;
      signal ids are unique and each refers to a stored vector.
    - executor: every buy/sell signal id on signals.v1 has exactly one ``executor.signals``
      row (hold is ignored); every order comes from one signal, its client order id is
      ``ids.client_order_id(signal_id)``, no signal has two orders, every order is terminal;
      every ``order_events`` row is published and orders.v1 carries exactly those events.
    """

    bootstrap: str
    dsn: str
    merge_hold_ms: float = 200.0  # FEATURES_MERGE_HOLD_MS
    problems: list[str] = field(default_factory=list)
    figures: dict[str, int] = field(default_factory=dict)

    def _check(self, ok: bool, message: str) -> None:
        if not ok:
            self.problems.append(message)

    @staticmethod
    def _diff(name: str, want: set[Any], got: set[Any]) -> str:
        lost, extra = want - got, got - want

        def summary(keys: set[Any]) -> str:
            if not keys or not isinstance(next(iter(keys)), tuple) or len(next(iter(keys))) < 3:
                return str(sorted(keys)[:5])
            by: dict[tuple[Any, ...], list[Any]] = {}
            for k in keys:
                by.setdefault(k[:-1], []).append(k[-1])
            return "; ".join(
                f"{g}: {len(v)} in [{min(v)}..{max(v)}] e.g. {sorted(v)[:8]}"
                for g, v in sorted(by.items())
            )

        return (
            f"{name}: {len(lost)} lost ({summary(lost)}), "
            f"{len(extra)} unexpected ({summary(extra)})"
        )

    def verify(self) -> dict[str, int]:
        from depthflow.executor.ids import client_order_id

        b, dsn, check = self.bootstrap, self.dsn, self._check
        books, bad_books = decode_all(read_topic(b, "md.book"))
        health, _ = decode_all(read_topic(b, "md.health"))
        feats, _ = decode_all(read_topic(b, "features.v1"))
        signals, _ = decode_all(read_topic(b, "signals.v1"))
        orders, _ = decode_all(read_topic(b, "orders.v1"))
        dlq_features, _ = decode_all(read_topic(b, "dlq.features"))

        # collector sink
        want_rows = Counter(
            (TARDIS_EXCHANGE[x["exchange"]], x["symbol"], x["exchange_ts_us"], x["seq"])
            for x in books
            if x.get("tob_changed", True)
        )
        got_rows = db_rows(
            dsn,
            'SELECT exchange, symbol, "timestamp", update_id FROM collector.orderbook_data',
        )
        got_set = set(got_rows)
        check(len(got_rows) == len(got_set), "orderbook_data holds duplicate keys")
        check(
            set(want_rows) == got_set,
            self._diff("md.book → orderbook_data", set(want_rows), got_set),
        )
        want_health = {(x["exchange"], x["symbol"], x["ts_us"], x["kind"]) for x in health}
        got_health = set(
            db_rows(dsn, "SELECT exchange, symbol, ts_us, kind FROM collector.book_health")
        )
        check(
            want_health == got_health,
            self._diff("md.health → book_health", want_health, got_health),
        )

        # features
        dead_books = set()
        for letter in dlq_features:
            if letter.get("source_topic") == "md.book" and letter.get("value"):
                try:
                    v = orjson.loads(letter["value"].encode("latin-1"))
                    dead_books.add((v["exchange"], v["symbol"], v["seq"]))
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    continue
        want_vectors = {(x["exchange"], x["symbol"], x["seq"]) for x in books} - dead_books
        vec_rows = db_rows(
            dsn, "SELECT exchange, symbol, book_seq FROM features.vectors WHERE feature_set = 'v1'"
        )
        got_vectors = set(vec_rows)
        check(len(vec_rows) == len(got_vectors), "features.vectors holds duplicate keys")
        # Once the sources stop, a symbol's last books stay in the features merge buffer
        # (checkpointed in its changelog) until a book merge_hold_ms newer arrives: those
        # are pending, not lost. Anything older must be stored.
        last_ts: dict[tuple[str, str], int] = {}
        for x in books:
            sym = (x["exchange"], x["symbol"])
            last_ts[sym] = max(last_ts.get(sym, 0), x["exchange_ts_us"])
        hold_us = int(self.merge_hold_ms * 1000)
        pending = {
            (x["exchange"], x["symbol"], x["seq"])
            for x in books
            if x["exchange_ts_us"] + hold_us > last_ts[(x["exchange"], x["symbol"])]
        } - got_vectors
        check(
            want_vectors - pending == got_vectors,
            self._diff("md.book → features.vectors", want_vectors - pending, got_vectors),
        )
        published: dict[tuple[str, str, int], bytes] = {}
        for x in feats:
            key = (x["exchange"], x["symbol"], x["book_seq"])
            body = orjson.dumps({k: x[k] for k in ("values", "valid", "exchange_ts_us")})
            check(
                published.setdefault(key, body) == body,
                f"features.v1 repeats {key} with different values",
            )
        check(
            set(published) == got_vectors,
            self._diff("features.v1 ↔ features.vectors", got_vectors, set(published)),
        )

        # strategy
        topic_signals = {}
        for x in signals:
            prev = topic_signals.setdefault(x["signal_id"], x)
            check(
                (prev["side"], prev["book_seq"]) == (x["side"], x["book_seq"]),
                f"signals.v1 repeats {x['signal_id']} with a different decision",
            )
        strat_rows = db_rows(
            dsn, "SELECT signal_id, exchange, symbol, book_seq, side FROM strategy.signals"
        )
        got_signals = {r[0] for r in strat_rows}
        check(len(strat_rows) == len(got_signals), "strategy.signals holds duplicate ids")
        check(
            set(topic_signals) == got_signals,
            self._diff("strategy.signals ↔ signals.v1", got_signals, set(topic_signals)),
        )
        orphan = {(r[1], r[2], r[3]) for r in strat_rows} - got_vectors
        check(not orphan, f"signals on books without a stored vector: {sorted(orphan)[:3]}")

        # executor
        tradeable = {sid for sid, x in topic_signals.items() if x["side"] != "hold"}
        ex_signals = db_rows(
            dsn, "SELECT signal_id, decision, client_order_id FROM executor.signals"
        )
        got_ex = {r[0] for r in ex_signals}
        check(got_ex == tradeable, self._diff("signals.v1 → executor.signals", tradeable, got_ex))
        order_rows = db_rows(
            dsn, "SELECT client_order_id, signal_id, state, filled_qty FROM executor.orders"
        )
        per_signal = Counter(r[1] for r in order_rows)
        dup = [sid for sid, n in per_signal.items() if n > 1]
        check(not dup, f"signals with more than one order: {dup[:3]}")
        wrong_id = [r for r in order_rows if r[0] != client_order_id(r[1])]
        check(
            not wrong_id, f"orders whose client id is not derived from the signal: {wrong_id[:3]}"
        )
        ordered = {r[0] for r in ex_signals if r[1] == "order"}
        check(
            ordered == set(per_signal),
            self._diff("executor.signals(order) ↔ executor.orders", ordered, set(per_signal)),
        )
        open_orders = [r for r in order_rows if r[2] in ("Pending", "Placed", "PartiallyFilled")]
        check(not open_orders, f"orders not terminal after the drain: {open_orders[:3]}")
        fills = dict(
            db_rows(
                dsn,
                "SELECT client_order_id, sum(qty) FROM executor.fills GROUP BY client_order_id",
            )
        )
        bad_fill = [r for r in order_rows if abs(fills.get(r[0], 0.0) - r[3]) > 1e-9]
        check(not bad_fill, f"fills do not add up to the orders' filled qty: {bad_fill[:3]}")
        events = db_rows(
            dsn, "SELECT event_id, published_at IS NOT NULL FROM executor.order_events"
        )
        unpublished = [e for e, pub in events if not pub]
        check(not unpublished, f"order events never published: {unpublished[:3]}")
        got_events = {x["event_id"] for x in orders}
        want_events = {e for e, _ in events}
        check(
            got_events == want_events,
            self._diff("executor.order_events ↔ orders.v1", want_events, got_events),
        )

        self.figures = {
            "md.book": len(books),
            "md.book_undecodable": bad_books,
            "orderbook_data": len(got_set),
            "book_health": len(got_health),
            "features.vectors": len(got_vectors),
            "features_dead_lettered_books": len(dead_books),
            "books_pending_in_merge_buffer": len(pending),
            "signals": len(got_signals),
            "tradeable_signals": len(tradeable),
            "orders": len(order_rows),
            "filled_orders": sum(1 for r in order_rows if r[2] == "Filled"),
            "order_events": len(want_events),
        }
        assert not self.problems, "pipeline lost or duplicated data:\n" + "\n".join(self.problems)
        return self.figures
