"""Replay events and their deterministic merge into one event-time stream. No I/O.

Every source (Kafka topics, md.depth.raw rebuilt through the collector's sync machines,
Tardis CSV files) produces, per symbol, a book stream, a trade stream and a health stream,
each in the order it was recorded. ``merge`` interleaves them by

    (exchange time, "exchange:SYMBOL", kind: trade < book < health, position in its stream)

which is total and depends on nothing but the input, so two runs see the same order. A
stream's own order is never changed (``heapq.merge`` only ever takes a stream's head), so a
symbol's books enter in recorded order after every trade at or before their timestamp — the
features service's canonical merge ("a trade before a book on equal timestamps").

Health events are recorded on the collector's wall clock (``ts_us``), books on both clocks.
``place_health`` gives each health event the exchange time of the last book of its symbol
received (``local_ts_us``) at or before it, so it sorts right after that book; a recorded
sequence discontinuity in md.book (``prev_seq`` not the previous ``seq``) adds a synthetic
``seq_gap`` health event at the same place.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

TRADE = 0
BOOK = 1
HEALTH = 2

# Health kinds after which a symbol's book is not valid until its next md.book.
INVALIDATING = frozenset({"gap", "crossed", "stale", "resync", "disconnect", "seq_gap"})


@dataclass(slots=True)
class BookEvent:
    key: str  # "exchange:SYMBOL"
    exchange: str
    symbol: str
    ts: int  # exchange time, µs
    local_ts: int
    seq: int
    prev_seq: int
    bids: Sequence[Any]  # (price, qty) best first
    asks: Sequence[Any]
    trace_id: str = ""
    idx: int = 0  # position in its stream
    kind: int = BOOK


@dataclass(slots=True)
class TradeEvent:
    key: str
    exchange: str
    symbol: str
    ts: int
    local_ts: int
    price: float
    qty: float
    is_buy: bool  # the taker bought
    idx: int = 0
    kind: int = TRADE


@dataclass(slots=True)
class HealthEvent:
    key: str
    exchange: str
    symbol: str
    ts: int  # exchange-time placement (see ``place_health``)
    local_ts: int  # as recorded (collector wall clock)
    health: str  # gap, resync, stale, crossed, seq_gap, synced, ...
    detail: str = ""
    placed: bool = False  # ts already on the exchange clock (synthetic events)
    idx: int = 0
    kind: int = HEALTH


Event = BookEvent | TradeEvent | HealthEvent


@dataclass
class SymbolStreams:
    """One symbol's recorded streams, each in recorded order."""

    key: str
    books: list[BookEvent] = field(default_factory=list)
    trades: list[TradeEvent] = field(default_factory=list)
    health: list[HealthEvent] = field(default_factory=list)


def sort_key(e: Event) -> tuple[int, str, int, int]:
    """The merge order: exchange time, symbol, kind (trade < book < health), stream position."""
    return (e.ts, e.key, e.kind, e.idx)


def detect_seq_gaps(books: Sequence[BookEvent]) -> list[HealthEvent]:
    """Synthetic ``seq_gap`` events where a book's ``prev_seq`` does not continue the previous
    book's ``seq``. Streams without sequence links (every ``prev_seq`` 0, e.g. Tardis imports)
    have none; Bybit's snapshot after a resync (``prev_seq`` 0 after linked deltas) is one."""
    out: list[HealthEvent] = []
    prev: BookEvent | None = None
    for b in books:
        if prev is not None and (b.prev_seq != 0 or prev.prev_seq != 0) and b.prev_seq != prev.seq:
            out.append(
                HealthEvent(
                    b.key,
                    b.exchange,
                    b.symbol,
                    prev.ts,
                    prev.local_ts,
                    "seq_gap",
                    f"book seq {b.seq} has prev_seq {b.prev_seq}, previous book seq {prev.seq}",
                    placed=True,
                )
            )
        prev = b
    return out


def place_health(books: Sequence[BookEvent], health: Iterable[HealthEvent]) -> list[HealthEvent]:
    """Give each recorded health event the exchange time of the last book received at or
    before it (by the collector's clock), so it sorts right after that book; before the first
    book, just before the first book. Events already ``placed`` keep their time."""
    locals_ = [b.local_ts for b in books]
    out = []
    for h in health:
        if not h.placed and books:
            i = bisect_right(locals_, h.local_ts) - 1
            h.ts = books[i].ts if i >= 0 else books[0].ts - 1
            h.placed = True
        out.append(h)
    return out


def finalize(streams: SymbolStreams, seq_gaps: bool = True) -> SymbolStreams:
    """Place health events, add sequence gaps, number every stream (``idx``)."""
    health = place_health(streams.books, streams.health)
    if seq_gaps:
        health += detect_seq_gaps(streams.books)
    # stable: recorded events first on equal times, synthetic ones after them
    health.sort(key=lambda h: h.ts)
    streams.health = health
    _number(streams.books)
    _number(streams.trades)
    _number(streams.health)
    return streams


def _number(part: Sequence[Event]) -> None:
    for i, e in enumerate(part):
        e.idx = i


def merge(streams: Iterable[Sequence[Event]]) -> Iterator[Event]:
    """Interleave streams in ``sort_key`` order without reordering any one stream."""
    return heapq.merge(*streams, key=sort_key)


def merge_symbols(symbols: Iterable[SymbolStreams]) -> Iterator[Event]:
    """Every symbol's books, trades and health events as one event-time stream."""
    parts: list[Sequence[Event]] = []
    for s in sorted(symbols, key=lambda s: s.key):
        parts += [s.books, s.trades, s.health]
    return merge(parts)
