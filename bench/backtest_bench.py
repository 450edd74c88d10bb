"""Backtest fast path: book events/s through features + strategy (imbalance) + risk + fill
model, one process, one core, over generated books and trades of two symbols, in both
features modes:

- ``stream``: every event through the streaming ``FeatureState`` (the live engine);
- ``batch`` (the default): each symbol's vectors computed at once over the loaded range
  (``vectors.batch_symbol_vectors``: packing the books into arrays, the engine's accept/skip/
  refuse decisions, ``compute_batch``), the imbalance rule decided for all of them at once,
  then the event-time execution walk.

Both must give the same bytes (checked here on ``trades.csv`` and ``signals.csv``). Each path
is timed from the loaded streams to the finished result, the merge of the streams
(``events.merge_symbols``) excluded as before; ``with_merge`` includes it (what a real run
pays, ``run.json``'s replay time).

Ceilings measured in the same run, on the same events:

- ``decode``: ``orjson.loads`` of each book's md.book JSON (what reading the input costs at
  least, per book);
- ``features_only_stream``: the merged events through ``FeatureState`` alone;
- ``features_only_batch``: ``batch_symbol_vectors`` alone (the batch mode's feature part),
  and ``compute_batch_only`` its vectorised core on books already packed into arrays;
- ``merge_only``: the heap merge of the streams into one event-time list;
- ``pack_books``: the books' Python level lists into (N, 20) arrays (part of the batch mode).

A cProfile of a shorter run of each mode names where the time goes (top functions by own time).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from collections.abc import Callable
from typing import Any

import orjson

from depthflow.backtest.app import _chunks
from depthflow.backtest.engine import BacktestEngine, EngineConfig, EngineResult
from depthflow.backtest.events import Event, SymbolStreams, merge_symbols
from depthflow.backtest.report import signals_csv, trades_csv
from depthflow.backtest.synthetic import synthetic_streams
from depthflow.backtest.vectors import FeaturesMode, _pack, batch_symbol_vectors
from depthflow.executor.fills import FillModelConfig
from depthflow.executor.risk import RiskLimits
from depthflow.features.batch import compute_batch
from depthflow.features.engine import FeatureState
from depthflow.strategy.config import RuntimeConfig
from depthflow.strategy.imbalance import ImbalanceStrategy

RUNTIME = RuntimeConfig(cooldown_s=1.0, min_cluster_volume=0.0)
MODES: tuple[FeaturesMode, ...] = ("stream", "batch")


def _streams(n_books: int) -> list[SymbolStreams]:
    half = n_books // 2
    return [
        synthetic_streams("BTCUSDT", half, seed=11),
        synthetic_streams("ETHUSDT", half, seed=12),
    ]


def _engine(streams: list[SymbolStreams], mode: FeaturesMode) -> BacktestEngine:
    start = min(s.books[0].ts for s in streams)
    config = EngineConfig(
        FillModelConfig(), RiskLimits(), 20.0, 0, 100_000.0, 60_000_000, trade_from_us=start
    )
    return BacktestEngine(config, ImbalanceStrategy(RUNTIME), features_mode=mode)


def _full(
    mode: FeaturesMode, events: list[Event] | None, streams: list[SymbolStreams]
) -> tuple[float, float, EngineResult]:
    """One run: wall and CPU seconds; ``events`` None: the merge is part of the timed path."""
    engine = _engine(streams, mode)
    c0 = time.process_time()
    t0 = time.perf_counter()
    engine.prepare(streams)
    source = iter(events) if events is not None else merge_symbols(streams)
    for chunk in _chunks(source, 512):
        engine.run_chunk(chunk)
    result = engine.finish()
    return time.perf_counter() - t0, time.process_time() - c0, result


def _features_only_stream(events: list[Event]) -> float:
    states: dict[str, FeatureState] = {}
    t0 = time.perf_counter()
    for e in events:
        f = states.get(e.key)
        if f is None:
            f = states[e.key] = FeatureState()
        if e.kind == 0:
            f.on_trade(e.price, e.qty, e.is_buy, e.ts)  # type: ignore[union-attr]
        elif e.kind == 1:
            f.on_book(e.bids, e.asks, e.ts, e.local_ts, e.seq)  # type: ignore[union-attr]
    return time.perf_counter() - t0


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _decode(blobs: list[bytes]) -> float:
    loads = orjson.loads
    t0 = time.perf_counter()
    for b in blobs:
        loads(b)
    return time.perf_counter() - t0


def _profile(streams: list[SymbolStreams], mode: FeaturesMode, top: int = 10) -> list[str]:
    events = list(merge_symbols(streams))
    engine = _engine(streams, mode)
    prof = cProfile.Profile()
    prof.enable()
    engine.prepare(streams)
    for chunk in _chunks(iter(events), 512):
        engine.run_chunk(chunk)
    prof.disable()
    stats = pstats.Stats(prof, stream=io.StringIO())
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (file, line, name), (_cc, _nc, tt, _ct, _callers) in sorted(
        stats.stats.items(),  # type: ignore[attr-defined]
        key=lambda kv: -kv[1][2],
    )[:top]:
        short = (
            file.rsplit("/depthflow/", 1)[-1] if "/depthflow/" in file else file.rsplit("/", 1)[-1]
        )
        rows.append(f"{100 * tt / total:5.1f}% {short}:{line} {name}")
    return rows


def run(n_books: int = 20_000, rounds: int = 3) -> dict[str, Any]:
    """Best of ``rounds`` interleaved rounds for each path (the machine is shared)."""
    streams = _streams(n_books)
    events = list(merge_symbols(streams))
    books = sum(len(s.books) for s in streams)
    blobs = [
        orjson.dumps(
            {
                "schema_version": 1,
                "exchange": b.exchange,
                "symbol": b.symbol,
                "seq": b.seq,
                "prev_seq": b.prev_seq,
                "exchange_ts_us": b.ts,
                "local_ts_us": b.local_ts,
                "bids": b.bids,
                "asks": b.asks,
            }
        )
        for s in streams
        for b in s.books
    ]
    packed = [(_pack(s.books)[0], batch_symbol_vectors(s, 0)) for s in streams]
    best: dict[str, float] = {}
    samples: dict[str, list[float]] = {}
    outputs: dict[str, tuple[bytes, bytes]] = {}
    counts: dict[str, int] = {}

    def note(name: str, seconds: float) -> None:
        best[name] = min(best.get(name, float("inf")), seconds)
        samples.setdefault(name, []).append(seconds)

    for _ in range(rounds):
        for mode in MODES:
            dt, cpu, result = _full(mode, events, streams)
            note(mode, dt)
            note(f"{mode}_cpu", cpu)
            outputs[mode] = (trades_csv(result), signals_csv(result))
            counts = {"signals": len(result.signals), "fills": len(result.trades)}
            note(f"{mode}_with_merge", _full(mode, None, streams)[0])
        note("features_only_stream", _features_only_stream(events))
        note("features_only_batch", _timed(lambda: [batch_symbol_vectors(s, 0) for s in streams]))
        note(
            "compute_batch_only",
            _timed(
                lambda: [
                    compute_batch(arrays, _trades(s))
                    for (arrays, _), s in zip(packed, streams, strict=True)
                ]
            ),
        )
        note("pack_books", _timed(lambda: [_pack(s.books) for s in streams]))
        note("merge_only", _timed(lambda: list(merge_symbols(streams))))
        note("decode", _decode(blobs))

    def rate(name: str) -> int:
        return round(books / best[name])

    def spread(name: str) -> list[int]:
        return sorted(round(books / x) for x in samples[name])

    return {
        "books": books,
        "events": len(events),
        "rounds": rounds,
        "batch_equals_stream_bytes": outputs["stream"] == outputs["batch"],
        "fast_path_batch_book_events_per_s": rate("batch"),
        "fast_path_batch_all_events_per_s": round(len(events) / best["batch"]),
        "fast_path_batch_with_merge_book_events_per_s": rate("batch_with_merge"),
        "fast_path_stream_book_events_per_s": rate("stream"),
        "fast_path_stream_with_merge_book_events_per_s": rate("stream_with_merge"),
        "batch_vs_stream": round(best["stream"] / best["batch"], 2),
        # CPU time of this process: less disturbed by the other jobs on the machine
        "fast_path_batch_cpu_book_events_per_s": rate("batch_cpu"),
        "fast_path_stream_cpu_book_events_per_s": rate("stream_cpu"),
        "spread_book_events_per_s": {
            "batch": spread("batch"),
            "stream": spread("stream"),
            "batch_with_merge": spread("batch_with_merge"),
            "batch_cpu": spread("batch_cpu"),
            "stream_cpu": spread("stream_cpu"),
        },
        "ceiling_features_only_stream_book_events_per_s": rate("features_only_stream"),
        "ceiling_features_only_batch_book_events_per_s": rate("features_only_batch"),
        "ceiling_compute_batch_only_books_per_s": rate("compute_batch_only"),
        "ceiling_pack_books_per_s": rate("pack_books"),
        "ceiling_merge_only_book_events_per_s": rate("merge_only"),
        "ceiling_decode_book_json_per_s": rate("decode"),
        "fast_path_batch_vs_features_only_batch": round(
            best["features_only_batch"] / best["batch"], 3
        ),
        "fast_path_batch_vs_decode": round(best["decode"] / best["batch"], 3),
        "target_book_events_per_s": 100_000,
        "signals": counts.get("signals", 0),
        "fills": counts.get("fills", 0),
        "profile_batch_top_own_time": _profile(_streams(8_000), "batch"),
        "profile_stream_top_own_time": _profile(_streams(4_000), "stream", top=6),
    }


def _trades(s: SymbolStreams) -> Any:
    from depthflow.backtest.vectors import _accept_trades

    return _accept_trades(s.trades)[0]


if __name__ == "__main__":
    print(orjson.dumps(run(), option=orjson.OPT_INDENT_2).decode())
