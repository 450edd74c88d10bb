"""Synthetic replay streams (tests and the benchmark) from the features' seeded generator."""

from __future__ import annotations

from depthflow.backtest.events import BookEvent, SymbolStreams, TradeEvent, finalize
from depthflow.features.synthetic import generate


def synthetic_streams(
    symbol: str,
    n_books: int,
    seed: int = 7,
    exchange: str = "binance",
    mean_gap_us: int = 150_000,
    start_shift_us: int = 0,
) -> SymbolStreams:
    """One symbol's books (linked ``prev_seq``) and trades, ~``mean_gap_us`` apart."""
    key = f"{exchange}:{symbol}"
    s = SymbolStreams(key)
    series = generate(n_books, seed=seed, mean_gap_us=mean_gap_us, quiet_minutes=0)
    prev = 0
    for e in series.events:
        if e[0] == "t":
            _, price, qty, is_buy, ts = e
            s.trades.append(
                TradeEvent(key, exchange, symbol, ts + start_shift_us, ts, price, qty, is_buy)
            )
        else:
            _, bids, asks, ts, local_ts, seq = e
            s.books.append(
                BookEvent(
                    key,
                    exchange,
                    symbol,
                    ts + start_shift_us,
                    local_ts + start_shift_us,
                    seq,
                    prev,
                    bids,
                    asks,
                    f"t{seq}",
                )
            )
            prev = seq
    return finalize(s)
