"""The deterministic event-time merge, health placement and sequence-gap detection."""

from __future__ import annotations

from depthflow.backtest.events import (
    BOOK,
    HEALTH,
    TRADE,
    BookEvent,
    HealthEvent,
    SymbolStreams,
    TradeEvent,
    detect_seq_gaps,
    finalize,
    merge_symbols,
)


def book(sym: str, ts: int, seq: int, prev: int, local: int | None = None) -> BookEvent:
    key = f"binance:{sym}"
    levels_b = [(100.0, 1.0)]
    levels_a = [(101.0, 1.0)]
    return BookEvent(key, "binance", sym, ts, local or ts + 5, seq, prev, levels_b, levels_a)


def trade(sym: str, ts: int, price: float = 100.5) -> TradeEvent:
    return TradeEvent(f"binance:{sym}", "binance", sym, ts, ts + 5, price, 1.0, True)


def label(e: object) -> tuple[str, int, int]:
    return (e.symbol, e.kind, e.ts)  # type: ignore[attr-defined]


def test_merge_orders_by_time_then_symbol_then_kind() -> None:
    a = SymbolStreams(
        "binance:BTCUSDT",
        [book("BTCUSDT", 10, 1, 0), book("BTCUSDT", 20, 2, 1)],
        [trade("BTCUSDT", 10), trade("BTCUSDT", 15)],
    )
    b = SymbolStreams("binance:ETHUSDT", [book("ETHUSDT", 10, 7, 6)], [trade("ETHUSDT", 5)])
    # given in the "wrong" symbol order: the merge does not depend on it
    out = [label(e) for e in merge_symbols([finalize(b), finalize(a)])]
    assert out == [
        ("ETHUSDT", TRADE, 5),
        ("BTCUSDT", TRADE, 10),  # a trade before a book on equal timestamps
        ("BTCUSDT", BOOK, 10),
        ("ETHUSDT", BOOK, 10),  # equal time: BTCUSDT before ETHUSDT
        ("BTCUSDT", TRADE, 15),
        ("BTCUSDT", BOOK, 20),
    ]


def test_merge_never_reorders_a_stream() -> None:
    # a book whose timestamp goes backwards keeps its recorded place (the live pipeline
    # would hand it to the engine in arrival order too, which refuses it)
    s = SymbolStreams(
        "binance:BTCUSDT",
        [book("BTCUSDT", 30, 1, 0), book("BTCUSDT", 20, 2, 1), book("BTCUSDT", 40, 3, 2)],
        [trade("BTCUSDT", 25), trade("BTCUSDT", 35)],
    )
    out = [(e.kind, e.ts) for e in merge_symbols([finalize(s)])]
    assert [x for x in out if x[0] == BOOK] == [(BOOK, 30), (BOOK, 20), (BOOK, 40)]
    assert out == [(TRADE, 25), (BOOK, 30), (BOOK, 20), (TRADE, 35), (BOOK, 40)]


def test_equal_keys_keep_stream_position() -> None:
    s = SymbolStreams("binance:BTCUSDT", [], [trade("BTCUSDT", 10, p) for p in (1.0, 2.0, 3.0)])
    assert [e.price for e in merge_symbols([finalize(s)])] == [1.0, 2.0, 3.0]  # type: ignore[union-attr]


def test_seq_gaps_are_found_only_where_links_break() -> None:
    books = [book("X", 10, 5, 4), book("X", 20, 6, 5), book("X", 30, 9, 8), book("X", 40, 10, 9)]
    gaps = detect_seq_gaps(books)
    assert [(g.health, g.ts) for g in gaps] == [("seq_gap", 20)]  # right after the last good one
    # no links at all (Tardis imports): no gaps
    assert detect_seq_gaps([book("X", 10, 5, 0), book("X", 20, 9, 0)]) == []
    # Bybit's snapshot after a resync has prev_seq 0 after linked deltas: a gap
    assert len(detect_seq_gaps([book("X", 10, 5, 4), book("X", 20, 1, 0)])) == 1


def test_health_is_placed_after_the_last_book_received_before_it() -> None:
    books = [
        book("X", 1_000, 1, 0, local=1_100),
        book("X", 2_000, 2, 1, local=2_100),
        book("X", 3_000, 7, 6, local=3_100),
    ]
    health = [
        HealthEvent("binance:X", "binance", "X", 2_500, 2_500, "gap"),
        HealthEvent("binance:X", "binance", "X", 50, 50, "synced"),
    ]
    s = finalize(SymbolStreams("binance:X", books, [], health))
    placed = [(h.health, h.ts) for h in s.health]
    # synced: before the first book; gap: after book 2; seq_gap (6 != 2): after book 2 too
    assert placed == [("synced", 999), ("gap", 2_000), ("seq_gap", 2_000)]
    order = [(e.kind, e.ts) for e in merge_symbols([s])]
    assert order == [
        (HEALTH, 999),
        (BOOK, 1_000),
        (BOOK, 2_000),
        (HEALTH, 2_000),
        (HEALTH, 2_000),
        (BOOK, 3_000),
    ]
