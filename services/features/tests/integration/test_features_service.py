"""The features worker end to end on real Kafka and PostgreSQL: books + trades in,
features.v1 out and stored (equal to the batch computation), garbage to dlq.features while
the service keeps going, and the fitted scaler picked up online."""

from __future__ import annotations

import numpy as np
import orjson
import psycopg
from confluent_kafka import Consumer
from psycopg import sql

from depthflow.common.kafka import Producer
from depthflow.common.schemas import FEATURES, symbol_key
from depthflow.common.testing import eventually
from depthflow.features.batch import compute_batch
from depthflow.features.names import N_FEATURES
from depthflow.features.synthetic import generate

from .conftest import FeaturesEnv, as_arrays, closing_trade, produce_events


def _consume_all(fe: FeaturesEnv, topic: str, expected: int, timeout: float = 60.0) -> list:
    consumer = Consumer(
        {
            **fe.kafka.confluent_config(),
            "group.id": f"t-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got: list = []

    def enough() -> bool:
        for m in consumer.consume(500, timeout=0.5):
            if m.error() is None:
                got.append(m)
        return len(got) >= expected

    try:
        eventually(enough, timeout=timeout, what=f"{expected} messages on {topic}")
    finally:
        consumer.close()
    return got


def test_books_and_trades_to_features_stored_dlq_and_scaler(features_env: FeaturesEnv) -> None:
    fe = features_env
    series = generate(600, seed=5, mean_gap_us=200_000, one_sided_every=150)
    events = series.events
    books = [e for e in events if e[0] == "b"]
    first = [e for e in events if (e[3] if e[0] == "b" else e[4]) <= books[399][3]]
    rest = events[len(first) :]
    produce_events(fe, "binance", "BTCUSDT", first)
    # garbage on both input topics, between good messages
    p = Producer(fe.kafka, client_id="garbage")
    key = symbol_key("binance", "BTCUSDT")
    p.produce(fe.book, b"\xff\x00not json", key)
    p.produce(fe.trades, b'{"schema_version": 1, "exchange": "binance"}', key)
    p.flush()
    # a crossed book (another symbol) decodes, but the engine refuses it
    crossed = ("b", [(101.0, 1.0)], [(100.0, 1.0)], books[0][3], books[0][4], 7)
    produce_events(fe, "binance", "ETHUSDT", [crossed, closing_trade([crossed])])

    worker = fe.worker().start()
    try:
        worker.wait_healthy(90)
        eventually(lambda: fe.count("vectors") >= 399, timeout=90, what="first part stored")
        # garbage went to the DLQ and the worker kept going
        letters = [orjson.loads(m.value()) for m in _consume_all(fe, fe.dlq, 3)]
        assert {lt["source_topic"] for lt in letters} == {fe.book, fe.trades}
        assert any(lt["value"] == b"\xff\x00not json".decode("latin-1") for lt in letters)
        assert any("crossed" in lt["error"] for lt in letters)
        assert worker.alive

        # fit a scaler on what is stored; the running worker picks it up
        from typer.testing import CliRunner

        from depthflow.features.cli import app as cli

        runner = CliRunner()
        env = {k: v for k, v in fe.env.items() if k.startswith(("POSTGRES_", "FEATURES_"))}
        res = runner.invoke(cli, ["fit-scaler", "--since", "0", "--until", str(2**62)], env=env)
        assert res.exit_code == 0, res.output
        version = res.output.split()[1].rstrip(":")
        # the worker re-reads the active scaler every FEATURES_SCALER_POLL_S: send the rest
        # only once it says so, or a fast worker may have stored them all unscaled
        eventually(
            lambda: "scaler activated" in worker.log_tail(200_000),  # the only scaler
            timeout=30,
            what="the worker activated the fitted scaler",
        )
        produce_events(fe, "binance", "BTCUSDT", [*rest, closing_trade(events)])
        rows = eventually(
            lambda: (r := fe.stored()) and len(r) == len(books) and r,
            timeout=90,
            what="every book stored",
        )
    finally:
        worker.stop()
    assert worker.proc is not None and worker.proc.returncode == 0, worker.log_tail()

    # stored vectors == batch mode over the same input, every book_seq exactly once
    expected_v, expected_ok = compute_batch(series.books, series.trades)
    got = as_arrays(rows)
    seqs = [b[5] for b in books]
    assert sorted(got) == seqs
    for i, seq in enumerate(seqs):
        np.testing.assert_allclose(got[seq][0], expected_v[i], rtol=1e-9, atol=1e-9)
        assert (got[seq][1] == expected_ok[i]).all()
    # the scaler: later vectors carry its version and normalised values, raw values kept
    scaled = [r for r in rows if r[4] == version]
    assert scaled, "no vector was normalised with the fitted scaler"
    with psycopg.connect(fe.dsn) as conn:
        mean, scale, active = conn.execute(
            sql.SQL("SELECT mean, scale, active FROM {}.scalers WHERE version = %s").format(
                sql.Identifier(fe.schema)
            ),
            (version,),
        ).fetchone()
    assert active
    r = scaled[-1]
    np.testing.assert_allclose(
        r[2], (np.asarray(r[1]) - mean) / np.asarray(scale), rtol=1e-9, atol=1e-9
    )

    # one features.v1 message per book, trace id propagated from the md.book header
    msgs = _consume_all(fe, fe.features, len(books))
    vec = FEATURES.decode(msgs[0].value())
    assert len(vec.values) == len(vec.normalized) == len(vec.valid) == N_FEATURES
    assert vec.feature_set == "v1"
    assert vec.trace_id == f"tr-{vec.book_seq}"
    assert dict(msgs[0].headers() or [])["trace-id"] == vec.trace_id.encode()
    assert {FEATURES.decode(m.value()).book_seq for m in msgs} == set(seqs)
    assert fe.count("candles") >= 2
