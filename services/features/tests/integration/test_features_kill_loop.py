"""SIGKILL the features worker again and again at random moments while books and trades of
several symbols keep arriving, restart it each time, then let one last worker drain.

Guards the service's delivery guarantee end to end: every input book (exchange, symbol, seq)
has exactly one stored vector, equal to the batch computation over the whole input (a
checkpoint that lost or skipped anything shows up as a missing seq or as different numbers
after it), and the consumer group's committed offsets reach the end of both source topics
(nothing left uncommitted forever).

The trades are produced behind the books (``TRADE_DELAY`` events), so with the long merge
hold of these tests many books wait in the merge buffer at any moment: they live only in the
changelog-backed state until their vectors are computed, which is what a crash must not lose.

``DEPTHFLOW_KILL_CYCLES`` and ``DEPTHFLOW_KILL_SEED`` make a longer or a repeated soak run.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator

import numpy as np
from confluent_kafka import Consumer, TopicPartition

from depthflow.common.kafka import Producer
from depthflow.common.logging import trace_headers
from depthflow.common.schemas import BOOK, TRADES, symbol_key
from depthflow.common.testing import eventually
from depthflow.features.batch import compute_batch
from depthflow.features.synthetic import Series, generate

from .conftest import PARTITIONS, FeaturesEnv, book_value, closing_trade, trade_value

SYMBOLS = (
    ("binance", "BTCUSDT", 21),
    ("binance", "ETHUSDT", 22),
    ("bybit", "BTCUSDT", 23),
    ("bybit", "SOLUSDT", 24),
)
N_BOOKS = 900  # per symbol
TRADE_DELAY = 60  # a trade is produced this many events after its canonical position
KILL_CYCLES = int(os.environ.get("DEPTHFLOW_KILL_CYCLES", "10"))
SEED = int(os.environ.get("DEPTHFLOW_KILL_SEED", str(random.SystemRandom().randrange(1 << 30))))

Message = tuple[str, bytes, bytes, list[tuple[str, bytes]]]


def arrival_order(fe: FeaturesEnv, exchange: str, symbol: str, series: Series) -> list[Message]:
    """One symbol's messages in the order they are produced: books on time, trades late,
    and a closing trade that releases the last books waiting for the trade feed."""
    key = symbol_key(exchange, symbol)
    placed: list[tuple[int, Message]] = []
    for i, e in enumerate([*series.events, closing_trade(series.events)]):
        if e[0] == "t":
            value = TRADES.encode(trade_value(exchange, symbol, e, i))
            placed.append((i + TRADE_DELAY, (fe.trades, value, key, [])))
        else:
            value = BOOK.encode(book_value(exchange, symbol, e))
            headers = trace_headers(f"{symbol}-{e[5]}")
            placed.append((i, (fe.book, value, key, headers)))
    placed.sort(key=lambda x: x[0])  # stable: equal positions keep their order
    return [m for _, m in placed]


def interleaved_chunks(streams: list[list[Message]], n_chunks: int) -> Iterator[list[Message]]:
    """All symbols' messages, round-robin, in ``n_chunks`` roughly equal chunks."""
    merged: list[Message] = []
    its = [iter(s) for s in streams]
    while its:
        for it in list(its):
            m = next(it, None)
            if m is None:
                its.remove(it)
            else:
                merged.append(m)
    size = -(-len(merged) // n_chunks)
    for start in range(0, len(merged), size):
        yield merged[start : start + size]


def group_offsets(fe: FeaturesEnv) -> dict[str, tuple[int, int]]:
    """The worker's consumer group per source partition: (committed offset, end offset)."""
    consumer = Consumer(
        {**fe.kafka.confluent_config(), "group.id": fe.app_id, "enable.auto.commit": False}
    )
    try:
        tps = [TopicPartition(t, p) for t in (fe.book, fe.trades) for p in range(PARTITIONS)]
        out = {}
        for tp in consumer.committed(tps, timeout=10):
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            out[f"{tp.topic}[{tp.partition}]"] = (tp.offset if tp.offset >= 0 else low, high)
        return out
    finally:
        consumer.close()


def group_lag(fe: FeaturesEnv) -> dict[str, int]:
    """Committed-offset lag of the worker's consumer group per source partition."""
    return {tp: end - committed for tp, (committed, end) in group_offsets(fe).items()}


def committed_total(fe: FeaturesEnv) -> int:
    return sum(committed for committed, _ in group_offsets(fe).values())


def stored_by_symbol(fe: FeaturesEnv) -> dict[tuple[str, str], dict[int, tuple]]:
    import psycopg
    from psycopg import sql

    with psycopg.connect(fe.dsn) as conn:
        rows = conn.execute(
            sql.SQL('SELECT exchange, symbol, book_seq, "values", valid FROM {}.vectors').format(
                sql.Identifier(fe.schema)
            )
        ).fetchall()
    out: dict[tuple[str, str], dict[int, tuple]] = {}
    for ex, sym, seq, values, valid in rows:
        out.setdefault((ex, sym), {})[int(seq)] = (values, valid)
    return out


def test_repeated_kill9_loses_skips_and_duplicates_nothing(features_env: FeaturesEnv) -> None:
    fe = features_env
    rng = random.Random(SEED)
    series = {(ex, sym): generate(N_BOOKS, seed=s, mean_gap_us=200_000) for ex, sym, s in SYMBOLS}
    streams = [arrival_order(fe, ex, sym, series[(ex, sym)]) for ex, sym, _ in SYMBOLS]
    # each cycle gets its share of the input (three chunks), produced while the worker
    # starts, while it restores its state and at a random moment before it is killed
    per_cycle = 3
    chunks = list(interleaved_chunks(streams, KILL_CYCLES * per_cycle))
    producer = Producer(fe.kafka, client_id="test-features-kill-loop")

    def produce_next() -> None:
        if chunks:
            for topic, value, key, headers in chunks.pop(0):
                producer.produce(topic, value, key, headers=headers)
            producer.flush()

    kills = 0
    for cycle in range(KILL_CYCLES):
        worker = fe.worker(f"features-{cycle}", FEATURES_BATCH_MAX=str(rng.choice((50, 200))))
        worker.start()
        try:
            produce_next()
            worker.wait_healthy(90)
            before = fe.count("vectors")
            committed_before = committed_total(fe)
            produce_next()
            # processing has really started (partitions assigned, state restored): vectors
            # stored, or offsets committed (with many short cycles the books of the first
            # chunks all wait in the merge buffer for the delayed trades) ...
            try:
                eventually(
                    lambda b=before, c=committed_before: (
                        fe.count("vectors") > b or committed_total(fe) > c
                    ),
                    timeout=90,
                    interval=0.05,
                    what=f"progress in cycle {cycle} (seed {SEED})",
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}\nlag {group_lag(fe)}\n{worker.log_tail()}") from None
            # ... then kill at a random moment of it
            time.sleep(rng.uniform(0.0, 1.0))
            produce_next()
            time.sleep(rng.uniform(0.0, 1.5))
        finally:
            worker.kill9()
        kills += 1
    while chunks:
        produce_next()

    expected_books = sum(len(s.books.ts) for s in series.values())
    final = fe.worker("features-final")
    final.start()
    try:
        final.wait_healthy(90)
        try:
            eventually(
                lambda: fe.count("vectors") >= expected_books,
                timeout=150,
                what=f"every book stored after {kills} kills (seed {SEED})",
            )
            lag = eventually(
                lambda: (g := group_lag(fe)) and not any(g.values()) and g,
                timeout=30,
                what=f"committed offsets at the end of both topics (seed {SEED})",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nlag {group_lag(fe)}\n{final.log_tail()}") from None
        assert lag
        assert final.alive, final.log_tail()
    finally:
        final.stop()
    # a worker that crashed by itself would hide behind the kills
    crashed = [p.name for p in fe.log_dir.glob("features-*.log") if "Traceback" in p.read_text()]
    assert not crashed, f"tracebacks in {crashed} (seed {SEED})"

    stored = stored_by_symbol(fe)
    for ex, sym, _ in SYMBOLS:
        s = series[(ex, sym)]
        seqs = [int(e[5]) for e in s.events if e[0] == "b"]
        got = stored.get((ex, sym), {})
        missing = sorted(set(seqs) - set(got))
        assert not missing, (
            f"{ex} {sym}: {len(missing)} books without a vector, e.g. {missing[:10]} (seed {SEED})"
        )
        assert sorted(got) == seqs, f"{ex} {sym}: vectors for seqs not in the input (seed {SEED})"
        expected_v, expected_ok = compute_batch(s.books, s.trades)
        for i, seq in enumerate(seqs):
            np.testing.assert_allclose(
                np.asarray(got[seq][0], np.float64),
                expected_v[i],
                rtol=1e-9,
                atol=1e-9,
                err_msg=f"{ex} {sym} book_seq {seq} (index {i}, seed {SEED})",
            )
            assert (np.asarray(got[seq][1], bool) == expected_ok[i]).all()
    assert kills == KILL_CYCLES
