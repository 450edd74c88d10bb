"""SymbolPipeline: whatever the interleaving of the two topics on arrival, the merged stream
equals the canonical replay; replays (offsets, seqs) change nothing; state round-trips."""

from __future__ import annotations

import json
import random

import numpy as np

from depthflow.features import FeatureState
from depthflow.features.pipeline import SymbolPipeline
from depthflow.features.synthetic import generate

from .conftest import replay

HOLD = 3_600_000_000


def _feed(pipe: SymbolPipeline, arrivals: list[tuple], out: list) -> None:
    for topic, off, e in arrivals:
        if topic == "b":
            pipe.add_book(off, e[5], e[3], e[4], e[1], e[2], f"t{e[5]}")
        else:
            pipe.add_trade(off, e[1], e[2], e[3], e[4])
        pipe.release(out, [], [], [])


def _arrivals(events: list[tuple], seed: int) -> list[tuple]:
    """The two topics' messages, each in order, randomly interleaved."""
    books = [("b", i, e) for i, e in enumerate(x for x in events if x[0] == "b")]
    trades = [("t", i, e) for i, e in enumerate(x for x in events if x[0] == "t")]
    rng = random.Random(seed)
    out = []
    while books or trades:
        src = books if (books and (not trades or rng.random() < 0.5)) else trades
        out.append(src.pop(0))
    return out


def test_any_interleaving_equals_the_canonical_replay_and_replays_are_skipped() -> None:
    series = generate(1500, seed=3, mean_gap_us=300_000)
    events = [*series.events, ("t", 100_000.0, 0.001, True, 10**18)]
    expected, expected_ok = replay(FeatureState(), series.events)
    arrivals = _arrivals(events, seed=1)
    half = len(arrivals) // 2
    pipe = SymbolPipeline("binance", "BTCUSDT", HOLD)
    out: list = []
    _feed(pipe, arrivals[:half], out)
    # checkpoint, "crash", restore, and replay from an earlier offset
    restored = SymbolPipeline.from_state(json.loads(json.dumps(pipe.to_state())), HOLD, 0)
    _feed(restored, arrivals[half // 2 :], out)
    assert [v.book_seq for v in out] == [e[5] for e in series.events if e[0] == "b"]
    np.testing.assert_allclose(np.array([v.values for v in out]), expected, rtol=1e-12)
    assert (np.array([v.valid for v in out]) == expected_ok).all()
    assert out[0].trace_id == f"t{out[0].book_seq}"


def test_min_emit_interval_thins_the_output_but_not_the_state() -> None:
    series = generate(300, seed=4, mean_gap_us=100_000)
    pipe = SymbolPipeline("binance", "BTCUSDT", 0, min_interval_us=1_000_000)
    out: list = []
    _feed(pipe, [("b" if e[0] == "b" else "t", i, e) for i, e in enumerate(series.events)], out)
    emitted = [v for v in out if v.emit]
    assert len(out) == 300 and 0 < len(emitted) < 100
    gaps = np.diff([v.exchange_ts_us for v in emitted])
    assert (gaps >= 1_000_000).all()
