"""The batch features mode gives byte-identical results to the stream mode.

``--features-mode batch`` computes each symbol's vectors over the whole loaded range with the
features' vectorised ``compute_batch`` (and decides the imbalance rule for all of them at
once); ``stream`` feeds every event through ``FeatureState``. Both are run here on the
synthetic generator (gaps, sequence breaks, trades, sparse trades, thinning), on the unit-test
fixtures and on hand-made anomalies (skipped, refused and out-of-order records), and every
deterministic output file must be equal byte for byte — and the vectors bit for bit.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from depthflow.backtest.app import Backtest, LiveConfig, RunRequest
from depthflow.backtest.config import BacktestSettings, StrategySpec
from depthflow.backtest.engine import BacktestEngine, EngineConfig, EngineResult
from depthflow.backtest.events import SymbolStreams, TradeEvent, finalize
from depthflow.backtest.report import (
    build_metrics,
    equity_csv,
    metrics_json,
    signals_csv,
    trades_csv,
)
from depthflow.backtest.sources import LoadStats
from depthflow.backtest.synthetic import synthetic_streams
from depthflow.backtest.vectors import (
    REJECTED,
    SKIPPED,
    FeaturesMode,
    batch_symbol_vectors,
    stream_symbol_vectors,
)
from depthflow.executor.risk import RiskLimits
from depthflow.features.names import N_FEATURES
from depthflow.features.scaler import ActiveScaler
from depthflow.strategy.config import RuntimeConfig
from depthflow.strategy.imbalance import ImbalanceStrategy
from depthflow.strategy.vectors import Decision, Refusal, VectorInput, check_vector

from .test_engine import RUNTIME, EveryBook, broken, engine_config, run_config, write_tardis

Outputs = tuple[bytes, bytes, bytes, bytes]


def outputs(result: EngineResult, streams: Sequence[SymbolStreams]) -> Outputs:
    metrics = build_metrics(run_config(streams), result, LoadStats())
    return (trades_csv(result), signals_csv(result), equity_csv(result), metrics_json(metrics))


def run_mode(
    make: Callable[[], list[SymbolStreams]],
    strategy: Callable[[], object],
    mode: FeaturesMode,
    config: Callable[[list[SymbolStreams]], EngineConfig] = engine_config,
    chunk: int = 512,
    scaler: ActiveScaler | None = None,
) -> tuple[Outputs, EngineResult, BacktestEngine]:
    streams = make()  # fresh objects per run: nothing shared between the two modes
    engine = BacktestEngine(config(streams), strategy(), scaler, features_mode=mode)  # type: ignore[arg-type]
    result = engine.replay(streams, chunk)
    return outputs(result, streams), result, engine


def assert_same_bytes(a: Outputs, b: Outputs) -> None:
    for name, x, y in zip(("trades", "signals", "equity", "metrics"), a, b, strict=True):
        assert x == y, f"{name} differs between stream and batch"


def two_with_gaps(n: int = 2500, mean_gap_us: int = 150_000) -> list[SymbolStreams]:
    """Two symbols: a recorded gap in one, a sequence break in the other, trades in both."""
    return [
        broken(synthetic_streams("BTCUSDT", n, seed=21, mean_gap_us=mean_gap_us), n // 2, "gap"),
        broken(synthetic_streams("ETHUSDT", n, seed=22, mean_gap_us=mean_gap_us), n // 3),
    ]


class Normalised:
    """A test strategy on the normalised vectors (the scaler path): sign of imbalance_5."""

    kind = "normalised"
    model_version = "t"
    required = (2, 15)

    def check(self, v: VectorInput) -> Refusal | None:
        return check_vector(v, self.required)

    def decide(self, batch: Sequence[VectorInput]) -> list[Decision | None]:
        return [
            Decision("buy" if v.normalized[15] > 0 else "sell", 0.5, 0.5, "t")
            if v.book_seq % 5 == 0
            else None
            for v in batch
        ]

    def configure(self, config: RuntimeConfig) -> None:
        pass


class AllFeatures:
    """A test strategy whose every decision depends on every bit of all 110 values and
    flags (as a model's would): a digest of the vector picks the side and the strength."""

    kind = "all-features"
    model_version = "t"

    def check(self, v: VectorInput) -> Refusal | None:
        return None

    def decide(self, batch: Sequence[VectorInput]) -> list[Decision | None]:
        out: list[Decision | None] = []
        for v in batch:
            digest = hashlib.sha256(v.values.tobytes() + v.valid.tobytes()).digest()
            if digest[0] % 8:
                out.append(None)
                continue
            side = "buy" if digest[1] % 2 else "sell"
            out.append(Decision(side, digest[2] / 255, 1.0, digest.hex()[:16]))
        return out

    def configure(self, config: RuntimeConfig) -> None:
        pass


STRATEGIES: dict[str, Callable[[], object]] = {
    "all-features": AllFeatures,
    "imbalance": lambda: ImbalanceStrategy(RUNTIME),
    "imbalance-defaults": lambda: ImbalanceStrategy(RuntimeConfig()),  # cluster minimum, cooldown
    "every-book": EveryBook,
}


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("min_interval_us", [0, 300_000])
def test_synthetic_with_gaps_and_trades(strategy: str, min_interval_us: int) -> None:
    def config(streams: list[SymbolStreams]) -> EngineConfig:
        return replace(
            engine_config(streams, submit_latency_us=200_000),
            min_emit_interval_us=min_interval_us,
        )

    a, ra, _ = run_mode(two_with_gaps, STRATEGIES[strategy], "stream", config)
    b, rb, eb = run_mode(two_with_gaps, STRATEGIES[strategy], "batch", config)
    assert_same_bytes(a, b)
    assert len(ra.gaps) == 2 and ra.counters["vectors"] > 1000
    assert eb.streamed_symbols == []  # the batch computation, not the fallback
    if strategy != "imbalance-defaults":
        assert len(ra.trades) > 20
    if strategy == "all-features":  # the reason carries the digest of the whole vector
        assert len({s.reason for s in ra.signals}) == len(ra.signals) > 100
    assert ra.counters == rb.counters and ra.refusals == rb.refusals


def test_sparse_trades_and_a_scaler() -> None:
    """Seconds between books: the trade window empties (the running sums restart) often."""

    def make() -> list[SymbolStreams]:
        return two_with_gaps(600, mean_gap_us=3_000_000)

    rng = np.random.default_rng(1)
    scaler = ActiveScaler("s1", rng.normal(size=N_FEATURES), rng.uniform(0.5, 2, N_FEATURES))
    for strategy in (lambda: ImbalanceStrategy(RUNTIME), Normalised):
        a, ra, _ = run_mode(make, strategy, "stream", scaler=scaler)
        b, _, _ = run_mode(make, strategy, "batch", scaler=scaler)
        assert_same_bytes(a, b)
        assert len(ra.signals) > 10


@pytest.mark.parametrize("chunk", [1, 100_000])
def test_chunking_in_batch_mode(chunk: int) -> None:
    a, _, _ = run_mode(two_with_gaps, STRATEGIES["imbalance"], "stream")
    b, _, _ = run_mode(two_with_gaps, STRATEGIES["imbalance"], "batch", chunk=chunk)
    assert_same_bytes(a, b)


@pytest.mark.parametrize("health", [None, "gap"])
def test_unit_fixtures_gap(health: str | None) -> None:
    """test_engine's gap fixture (an order always in flight when the gap comes)."""

    def make() -> list[SymbolStreams]:
        return [broken(synthetic_streams("BTCUSDT", 400, seed=5), 200, health)]

    def config(streams: list[SymbolStreams]) -> EngineConfig:
        return engine_config(streams, submit_latency_us=1_000_000)

    a, ra, _ = run_mode(make, EveryBook, "stream", config)
    b, _, _ = run_mode(make, EveryBook, "batch", config)
    assert_same_bytes(a, b)
    assert ra.gaps[0].cancelled_orders >= 1


def anomalies() -> list[SymbolStreams]:
    """Records the engine skips or refuses, in streams that stay in time order."""
    s = synthetic_streams("BTCUSDT", 1200, seed=8)
    books = s.books
    good = books[100]
    books[101].seq = good.seq  # a duplicate: skipped
    books[102].seq = good.seq - 5  # going back: skipped
    b = books[200]
    b.bids = [(b.asks[0][0] + 1.0, 1.0), *b.bids[1:]]  # crossed: refused
    b = books[300]
    b.asks = [b.asks[1], b.asks[0], *b.asks[2:]]  # not monotone: refused
    b = books[400]
    b.bids = [b.bids[0], (b.bids[1][0], math.nan), *b.bids[2:]]  # NaN quantity: refused
    b = books[500]
    b.asks = [*b.asks, *[(b.asks[-1][0] + i, 1.0) for i in range(1, 3)]]  # 21+ levels
    b = books[600]
    b.bids = [b.bids[0], (b.bids[1][0], 0.0), *b.bids[2:]]  # zero quantity: refused
    trades = s.trades
    trades[50].qty = 0.0  # refused trades
    trades[150].price = math.inf
    # a trade at exactly a book's time (it comes first) and a burst of equal times
    trades[250].ts = max(trades[249].ts, min(b.ts for b in books if b.ts >= trades[250].ts))
    streams = SymbolStreams(s.key, books, trades, [])
    return [finalize(streams)]


def out_of_order() -> list[SymbolStreams]:
    """A book and a trade recorded going back in time: both refused by the engine; the batch
    mode falls back to streaming for this symbol (its merge order is not the time order)."""
    s = synthetic_streams("BTCUSDT", 900, seed=9)
    s.books[300].ts = s.books[299].ts - 50_000
    s.trades[200].ts = s.trades[199].ts - 10_000
    other = synthetic_streams("ETHUSDT", 900, seed=10)
    return [finalize(SymbolStreams(s.key, s.books, s.trades, [])), other]


@pytest.mark.parametrize("make", [anomalies, out_of_order])
@pytest.mark.parametrize("strategy", ["imbalance", "every-book"])
def test_skipped_refused_and_out_of_order_records(
    make: Callable[[], list[SymbolStreams]], strategy: str
) -> None:
    a, ra, _ = run_mode(make, STRATEGIES[strategy], "stream")
    b, _, eb = run_mode(make, STRATEGIES[strategy], "batch")
    assert_same_bytes(a, b)
    c = ra.counters
    if make is anomalies:
        assert c["books_skipped"] == 2 and c["books_rejected"] == 5 and c["trades_rejected"] == 2
        assert eb.streamed_symbols == []
    else:
        assert c["books_rejected"] >= 1 and c["trades_rejected"] >= 1
        assert eb.streamed_symbols == ["binance:BTCUSDT"]


@pytest.mark.parametrize("make", [anomalies, two_with_gaps])
@pytest.mark.parametrize("min_interval_us", [0, 250_000])
def test_vectors_bit_for_bit(make: Callable[[], list[SymbolStreams]], min_interval_us: int) -> None:
    for st in make():
        want = stream_symbol_vectors(st, min_interval_us)
        got = batch_symbol_vectors(st, min_interval_us)
        assert not got.streamed
        assert got.book_code == want.book_code and got.trade_ok == want.trade_ok
        assert got.values.shape == want.values.shape and len(want.values) > 100
        assert np.array_equal(got.values.view(np.int64), want.values.view(np.int64))
        assert np.array_equal(got.valid, want.valid)
        assert [b.seq for b in got.books] == [b.seq for b in want.books]
    codes = stream_symbol_vectors(anomalies()[0], 0).book_code
    assert codes.count(SKIPPED) == 2 and codes.count(REJECTED) == 5


def test_the_cli_option_writes_the_same_files(tmp_path: Path) -> None:
    """The Tardis fixture through ``Backtest.run`` in both modes: the same bytes on disk."""
    streams = synthetic_streams("BTCUSDT", 1500, seed=6)
    books, trades = write_tardis(streams, tmp_path)
    start, end = streams.books[0].ts, streams.books[-1].ts + 1
    files = {}
    for mode in ("stream", "batch"):
        request = RunRequest(
            symbols=("BTCUSDT",),
            from_us=start + 30_000_000,  # with a warm-up before it
            to_us=end,
            warmup_s=30.0,
            strategy=StrategySpec.parse("imbalance"),
            source="tardis",
            tardis_files=(books, trades),
            output_dir=tmp_path / mode,
            store=False,
            features_mode=mode,  # type: ignore[arg-type]
        )
        live = LiveConfig(RUNTIME, RiskLimits(), 20.0, 0.0)
        outcome = Backtest(request, BacktestSettings(returns_interval_s=10.0), live).run()
        assert outcome.run["features_mode"] == mode
        files[mode] = {
            name: (tmp_path / mode / name).read_bytes()
            for name in ("trades.csv", "signals.csv", "equity.csv", "metrics.json")
        }
    assert files["stream"] == files["batch"]
    assert files["batch"]["trades.csv"].count(b"\n") > 10


def test_a_trade_event_has_no_book_fields() -> None:
    """Guard for the fixtures above: trades are TradeEvents (kind 0)."""
    assert isinstance(anomalies()[0].trades[0], TradeEvent)
