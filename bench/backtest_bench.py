"""Backtest fast path: book events/s through features + strategy (imbalance) + risk + fill
model, one process, one core, over generated books and trades of two symbols.

Ceilings measured in the same run, on the same events:

- ``decode``: ``orjson.loads`` of each book's md.book JSON (what reading the input costs at
  least, per book);
- ``features_only``: the merged events through ``FeatureState`` alone (the 110 features are
  the bulk of the work; nothing downstream can be faster than this).

A cProfile of a shorter run names where the time goes (top functions by own time).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from typing import Any

import orjson

from depthflow.backtest.app import _chunks
from depthflow.backtest.engine import BacktestEngine, EngineConfig
from depthflow.backtest.events import Event, SymbolStreams, merge_symbols
from depthflow.backtest.synthetic import synthetic_streams
from depthflow.executor.fills import FillModelConfig
from depthflow.executor.risk import RiskLimits
from depthflow.features.engine import FeatureState
from depthflow.strategy.config import RuntimeConfig
from depthflow.strategy.imbalance import ImbalanceStrategy

RUNTIME = RuntimeConfig(cooldown_s=1.0, min_cluster_volume=0.0)


def _streams(n_books: int) -> list[SymbolStreams]:
    half = n_books // 2
    return [
        synthetic_streams("BTCUSDT", half, seed=11),
        synthetic_streams("ETHUSDT", half, seed=12),
    ]


def _engine(streams: list[SymbolStreams]) -> BacktestEngine:
    start = min(s.books[0].ts for s in streams)
    config = EngineConfig(
        FillModelConfig(), RiskLimits(), 20.0, 0, 100_000.0, 60_000_000, trade_from_us=start
    )
    return BacktestEngine(config, ImbalanceStrategy(RUNTIME))


def _full(events: list[Event], streams: list[SymbolStreams]) -> tuple[float, dict[str, int]]:
    engine = _engine(streams)
    t0 = time.perf_counter()
    for chunk in _chunks(iter(events), 512):
        engine.run_chunk(chunk)
    result = engine.finish()
    return time.perf_counter() - t0, {
        "signals": len(result.signals),
        "fills": len(result.trades),
    }


def _features_only(events: list[Event]) -> float:
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


def _decode(blobs: list[bytes]) -> float:
    loads = orjson.loads
    t0 = time.perf_counter()
    for b in blobs:
        loads(b)
    return time.perf_counter() - t0


def _profile(streams: list[SymbolStreams], top: int = 8) -> list[str]:
    events = list(merge_symbols(streams))
    engine = _engine(streams)
    prof = cProfile.Profile()
    prof.enable()
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
    full_s = feat_s = dec_s = float("inf")
    counts: dict[str, int] = {}
    for _ in range(rounds):
        dt, counts = _full(events, streams)
        full_s = min(full_s, dt)
        feat_s = min(feat_s, _features_only(events))
        dec_s = min(dec_s, _decode(blobs))
    full = books / full_s
    feat = books / feat_s
    dec = books / dec_s
    return {
        "books": books,
        "events": len(events),
        "fast_path_book_events_per_s": round(full),
        "fast_path_all_events_per_s": round(len(events) / full_s),
        "ceiling_features_only_book_events_per_s": round(feat),
        "ceiling_decode_book_json_per_s": round(dec),
        "fast_path_vs_features_only": round(full / feat, 3),
        "fast_path_vs_decode": round(full / dec, 4),
        "target_book_events_per_s": 100_000,
        "signals": counts.get("signals", 0),
        "fills": counts.get("fills", 0),
        "profile_top_own_time": _profile(_streams(4_000)),
    }


if __name__ == "__main__":
    print(orjson.dumps(run(), option=orjson.OPT_INDENT_2).decode())
