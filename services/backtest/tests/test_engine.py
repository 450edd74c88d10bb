"""The fast path against the live code it reuses, without a broker: the same signals as the
features service's ``SymbolPipeline`` + the strategy's ``decide``; chunking and repetition
change nothing; a gap is frozen, never traded through; Tardis CSV input replays the same."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import orjson
import pytest

from depthflow.backtest.app import Backtest, LiveConfig, RunRequest, _chunks
from depthflow.backtest.config import BacktestSettings, RunConfig, StrategySpec
from depthflow.backtest.engine import BacktestEngine, EngineConfig, EngineResult
from depthflow.backtest.events import SymbolStreams, finalize, merge_symbols
from depthflow.backtest.report import build_metrics, metrics_json, trades_csv
from depthflow.backtest.sources import LoadStats
from depthflow.backtest.synthetic import synthetic_streams
from depthflow.backtest.vectors import FeaturesMode
from depthflow.common.schemas import FeatureVector
from depthflow.executor.fills import FillModelConfig
from depthflow.executor.risk import RiskLimits
from depthflow.features.names import FEATURE_SET_VERSION
from depthflow.features.pipeline import SymbolPipeline
from depthflow.strategy.config import RuntimeConfig
from depthflow.strategy.imbalance import ImbalanceStrategy
from depthflow.strategy.vectors import Decision, Refusal, VectorInput

RUNTIME = RuntimeConfig(cooldown_s=0.5, min_cluster_volume=0.0)


def engine_config(streams: Sequence[SymbolStreams], **fill: object) -> EngineConfig:
    start = min(s.books[0].ts for s in streams)
    return EngineConfig(
        fill=FillModelConfig(**fill),  # type: ignore[arg-type]
        risk=RiskLimits(),
        slippage_buffer_bps=20.0,
        min_emit_interval_us=0,
        starting_balance=100_000.0,
        returns_interval_us=10_000_000,
        trade_from_us=start,
    )


def replay(
    streams: Sequence[SymbolStreams],
    config: EngineConfig,
    strategy: object,
    chunk: int = 512,
    mode: FeaturesMode = "batch",
) -> EngineResult:
    engine = BacktestEngine(config, strategy, features_mode=mode)  # type: ignore[arg-type]
    engine.prepare(streams)
    for part in _chunks(merge_symbols(streams), chunk):
        engine.run_chunk(part)
    return engine.finish()


def run_config(streams: Sequence[SymbolStreams]) -> RunConfig:
    return RunConfig(
        source="kafka",
        exchange="binance",
        symbols=tuple(s.key.split(":")[1] for s in streams),
        from_us=0,
        to_us=1,
        strategy="imbalance",
        strategy_runtime=RUNTIME.model_dump(mode="json"),
        risk=RiskLimits().model_dump(mode="json"),
        fill_model=FillModelConfig().__dict__,
        starting_balance_usdt=100_000.0,
        returns_interval_s=10.0,
    )


@pytest.fixture(scope="module")
def two_symbols() -> list[SymbolStreams]:
    return [synthetic_streams("BTCUSDT", 3000, seed=3), synthetic_streams("ETHUSDT", 3000, seed=4)]


def live_signals(
    streams: Sequence[SymbolStreams], runtime: RuntimeConfig, min_interval_us: int = 0
) -> list[tuple[str, int, str, float, float, int]]:
    """What the live services decide: each symbol's md.book/md.trades through the features
    service's SymbolPipeline (offsets as Kafka would give them), every emitted vector through
    its features.v1 JSON, then the strategy service's check + batched decide."""
    vectors: list[VectorInput] = []
    for s in streams:
        pipe = SymbolPipeline("binance", s.key.split(":")[1], 3_600_000_000, min_interval_us)
        for off, t in enumerate(s.trades):
            pipe.add_trade(off, t.price, t.qty, t.is_buy, t.ts)
        for off, b in enumerate(s.books):
            pipe.add_book(off, b.seq, b.ts, b.local_ts, list(b.bids), list(b.asks), b.trace_id)
        pipe.hold_us = 0  # end of input: release everything, in canonical order
        out: list = []
        pipe.release(out, [], [], [])
        for v in out:
            if not v.emit:
                continue
            msg = {
                "exchange": "binance",
                "symbol": pipe.symbol,
                "feature_set": FEATURE_SET_VERSION,
                # plain lists or arrays, as the pipeline hands them out
                "values": np.asarray(v.values).tolist(),
                "normalized": np.asarray(v.values).tolist(),
                "valid": np.asarray(v.valid).tolist(),
                "book_seq": v.book_seq,
                "exchange_ts_us": v.exchange_ts_us,
                "local_ts_us": v.local_ts_us,
            }
            fv = FeatureVector.model_validate(orjson.loads(orjson.dumps(msg)))
            vectors.append(VectorInput.from_message(fv))
    vectors.sort(key=lambda v: (v.exchange_ts_us, v.key))
    strategy = ImbalanceStrategy(runtime)
    kept = [v for v in vectors if strategy.check(v) is None]
    out_signals = []
    for i in range(0, len(kept), 500):  # the service's consumer batches
        batch = kept[i : i + 500]
        for v, d in zip(batch, strategy.decide(batch), strict=True):
            if d is not None:
                out_signals.append(
                    (v.symbol, v.book_seq, d.side, d.strength, d.confidence, v.exchange_ts_us)
                )
    return out_signals


def backtest_signals(result: EngineResult) -> list[tuple[str, int, str, float, float, int]]:
    return [(s.symbol, s.book_seq, s.side, s.strength, s.confidence, s.ts) for s in result.signals]


MODES = pytest.mark.parametrize("mode", ["stream", "batch"])


@MODES
def test_signals_equal_the_live_pipeline_and_strategy(
    two_symbols: list[SymbolStreams], mode: FeaturesMode
) -> None:
    result = replay(two_symbols, engine_config(two_symbols), ImbalanceStrategy(RUNTIME), mode=mode)
    want = live_signals(two_symbols, RUNTIME)
    assert len(want) > 50
    assert {x[2] for x in want} == {"buy", "sell", "hold"}
    assert backtest_signals(result) == want
    assert result.counters["vectors"] == 6000 and len(result.trades) > 20


@MODES
def test_min_emit_interval_matches_the_features_service(
    two_symbols: list[SymbolStreams], mode: FeaturesMode
) -> None:
    cfg = replace(engine_config(two_symbols), min_emit_interval_us=400_000)
    result = replay(two_symbols, cfg, ImbalanceStrategy(RUNTIME), mode=mode)
    want = live_signals(two_symbols, RUNTIME, min_interval_us=400_000)
    assert result.counters["vectors"] < 6000
    assert backtest_signals(result) == want and len(want) > 10


@MODES
def test_chunking_and_repetition_change_no_byte(
    two_symbols: list[SymbolStreams], mode: FeaturesMode
) -> None:
    outputs = []
    for chunk in (1, 7, 512, 100_000):
        streams = [
            synthetic_streams("BTCUSDT", 1500, seed=3),
            synthetic_streams("ETHUSDT", 1500, seed=4),
        ]
        result = replay(
            streams, engine_config(streams), ImbalanceStrategy(RUNTIME), chunk, mode=mode
        )
        metrics = build_metrics(run_config(streams), result, LoadStats())
        outputs.append((trades_csv(result), metrics_json(metrics)))
    assert len(outputs[0][0].splitlines()) > 10
    assert all(o == outputs[0] for o in outputs)


class EveryBook:
    """A test strategy: buy on even books, sell on odd ones, full conviction."""

    kind = "every-book"
    model_version = "t"

    def check(self, v: VectorInput) -> Refusal | None:
        return None

    def decide(self, batch: Sequence[VectorInput]) -> list[Decision | None]:
        return [Decision("buy" if v.book_seq % 2 == 0 else "sell", 1.0, 1.0, "t") for v in batch]

    def configure(self, config: RuntimeConfig) -> None:
        pass


def broken(streams: SymbolStreams, at: int, health: str | None = None) -> SymbolStreams:
    """The same streams with the sequence broken before book ``at`` (or a health event)."""
    books = streams.books
    if health is None:
        for b in books[at:]:
            b.seq += 1000
            b.prev_seq += 1000
        books[at].prev_seq -= 1000 - 1  # links to nothing recorded
        s = SymbolStreams(streams.key, books, streams.trades, [])
    else:
        h = books[at - 1]
        from depthflow.backtest.events import HealthEvent

        ev = HealthEvent(h.key, h.exchange, h.symbol, h.local_ts + 1, h.local_ts + 1, health)
        s = SymbolStreams(streams.key, books, streams.trades, [ev])
    return finalize(s)


@MODES
@pytest.mark.parametrize("health", [None, "gap"])
def test_a_gap_freezes_the_symbol_and_is_never_traded_through(
    health: str | None, mode: FeaturesMode
) -> None:
    streams = [broken(synthetic_streams("BTCUSDT", 400, seed=5), 200, health)]
    # 1 s latency: an order is always in flight when the gap comes
    cfg = engine_config(streams, submit_latency_us=1_000_000)
    result = replay(streams, cfg, EveryBook(), mode=mode)
    assert len(result.gaps) == 1
    gap = result.gaps[0]
    before, after = streams[0].books[199], streams[0].books[200]
    assert (gap.start_ts, gap.end_ts) == (before.ts, after.ts)
    assert gap.kinds == (["seq_gap"] if health is None else ["gap"])
    assert gap.cancelled_orders >= 1
    cancelled = [o for o in result.orders if o.reason.startswith("book invalid")]
    assert len(cancelled) == gap.cancelled_orders
    assert all(o.submit_ts <= before.ts and o.filled_qty == 0 for o in cancelled)
    # fills before and after, none while the book was invalid
    fills = [t.ts for t in result.trades]
    assert any(t < gap.start_ts for t in fills) and any(t > gap.end_ts for t in fills)
    assert not [t for t in fills if gap.start_ts < t < gap.end_ts]
    metrics = build_metrics(run_config(streams), result, LoadStats())
    assert metrics["gaps"]["count"] == 1 and metrics["gaps"]["fills_while_invalid"] == 0
    assert metrics["gaps"]["cancelled_orders"] == gap.cancelled_orders


def write_tardis(streams: SymbolStreams, folder: Path) -> tuple[Path, Path]:
    """book_snapshot_25 and trades CSVs of ``streams`` (Tardis exchange id binance-futures)."""
    books = folder / "book_snapshot_25.csv"
    trades = folder / "trades.csv"
    sym = streams.key.split(":")[1]
    with books.open("w", newline="") as fh:
        w = csv.writer(fh)
        head = ["exchange", "symbol", "timestamp", "local_timestamp"]
        for i in range(25):
            head += [
                f"asks[{i}].price",
                f"asks[{i}].amount",
                f"bids[{i}].price",
                f"bids[{i}].amount",
            ]
        w.writerow(head)
        for b in streams.books:
            row: list[object] = ["binance-futures", sym, b.ts, b.local_ts]
            for i in range(25):
                for levels in (b.asks, b.bids):
                    row += [repr(levels[i][0]), repr(levels[i][1])] if i < len(levels) else ["", ""]
            w.writerow(row)
    with trades.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["exchange", "symbol", "timestamp", "local_timestamp", "id", "side", "price", "amount"]
        )
        for n, t in enumerate(streams.trades):
            w.writerow(
                [
                    "binance-futures",
                    sym,
                    t.ts,
                    t.local_ts,
                    n,
                    "buy" if t.is_buy else "sell",
                    repr(t.price),
                    repr(t.qty),
                ]
            )
    return books, trades


def test_tardis_csv_input_replays_the_same(tmp_path: Path) -> None:
    streams = synthetic_streams("BTCUSDT", 1500, seed=6)
    books, trades = write_tardis(streams, tmp_path)
    # Tardis books carry no links: the seq is the local timestamp, as the collector imports it
    for b in streams.books:
        b.seq = b.local_ts
        b.prev_seq = 0
    direct = replay([streams], engine_config([streams]), ImbalanceStrategy(RUNTIME))
    start, end = streams.books[0].ts, streams.books[-1].ts + 1
    request = RunRequest(
        symbols=("BTCUSDT",),
        from_us=start,
        to_us=end,
        strategy=StrategySpec.parse("imbalance"),
        source="tardis",
        tardis_files=(books, trades),
        output_dir=tmp_path / "out",
        store=False,
    )
    live = LiveConfig(RUNTIME, RiskLimits(), 20.0, 0.0)
    outcome = Backtest(request, BacktestSettings(returns_interval_s=10.0), live).run()
    assert backtest_signals(outcome.result) == backtest_signals(direct)
    assert len(direct.signals) > 20
    in_range = sum(1 for t in streams.trades if start <= t.ts < end)
    assert outcome.metrics["input"]["per_input"] == {str(books): 1500, str(trades): in_range}
    for name in ("trades.csv", "metrics.json", "equity.png", "report.html", "run.json"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    html = (tmp_path / "out" / "report.html").read_text()
    assert "data:image/png;base64," in html and "submit_latency_us" in html
    assert (tmp_path / "out" / "equity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@MODES
def test_a_book_with_an_empty_side_marks_what_it_has_and_never_crashes(mode: FeaturesMode) -> None:
    streams = synthetic_streams("BTCUSDT", 300, seed=9)
    for b in streams.books[100:110]:
        b.asks = []
    for b in streams.books[0:3]:  # nothing to buy at before the first ask
        b.asks = []
    streams = finalize(SymbolStreams(streams.key, streams.books, streams.trades, []))
    result = replay([streams], engine_config([streams]), EveryBook(), mode=mode)
    by_seq = {r.book_seq: r.outcome for r in result.signals}
    first_buys = [s for s in (b.seq for b in streams.books[0:3]) if s % 2 == 0 and s in by_seq]
    assert first_buys and all(by_seq[s] == "refused:no_market" for s in first_buys)
    assert result.trades  # it traded once both sides were quoted
