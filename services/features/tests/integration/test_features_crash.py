"""kill -9 the features worker mid-stream, restart it: the state comes back from the
changelog and the stored vectors continue with every book_seq exactly once and the same
numbers as a batch computation over the whole input (no warm-up gap, no duplicate)."""

from __future__ import annotations

import numpy as np
from confluent_kafka.admin import AdminClient

from depthflow.common.testing import eventually
from depthflow.features.batch import compute_batch
from depthflow.features.synthetic import generate

from .conftest import FeaturesEnv, as_arrays, closing_trade, produce_events


def test_kill9_mid_stream_then_restart_continues_without_gaps_or_duplicates(
    features_env: FeaturesEnv,
) -> None:
    fe = features_env
    series = generate(1200, seed=9, mean_gap_us=250_000)
    events = series.events
    books = [e for e in events if e[0] == "b"]
    cut = next(i for i, e in enumerate(events) if e[0] == "b" and e[5] == books[700][5])
    produce_events(fe, "bybit", "ETHUSDT", events[:cut])

    worker = fe.worker("features-1", FEATURES_BATCH_MAX="40").start()
    try:
        worker.wait_healthy(90)
        eventually(
            lambda: fe.count("vectors") >= 250,
            timeout=90,
            interval=0.02,
            what="worker busy with the first part",
        )
    finally:
        worker.kill9()  # mid-stream: no drain, no flush, no commit
    stored_at_kill = fe.count("vectors")
    assert 250 <= stored_at_kill <= 700

    produce_events(fe, "bybit", "ETHUSDT", [*events[cut:], closing_trade(events)])
    restarted = fe.worker("features-2", FEATURES_BATCH_MAX="40").start()
    try:
        restarted.wait_healthy(90)
        rows = eventually(
            lambda: (r := fe.stored()) and len(r) >= len(books) and r,
            timeout=120,
            what="every book stored after the restart",
        )
    finally:
        restarted.stop()

    seqs = [b[5] for b in books]
    got = as_arrays(rows)
    assert [int(r[0]) for r in rows] == seqs  # each once (primary key), none missing
    expected_v, expected_ok = compute_batch(series.books, series.trades)
    for i, seq in enumerate(seqs):
        np.testing.assert_allclose(
            got[seq][0], expected_v[i], rtol=1e-9, atol=1e-9, err_msg=f"book_seq {seq} (index {i})"
        )
        assert (got[seq][1] == expected_ok[i]).all(), f"validity of book_seq {seq}"
    # the state really lives in the changelog topic
    topics = AdminClient(fe.kafka.confluent_config()).list_topics(timeout=10).topics
    assert any(t.startswith(fe.app_id) and t.endswith("changelog") for t in topics)
    n = fe.count("candles")
    assert n >= 2
