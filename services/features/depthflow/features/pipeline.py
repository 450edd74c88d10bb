"""Per-symbol stream processing around ``FeatureState``: merge, dedup, emit. No I/O.

``SymbolPipeline`` is what the service keeps per ``{exchange}:{symbol}`` in its changelog-backed
table:

- Merge: md.book and md.trades are two topics, so their interleaving on arrival is up to the
  consumer. A book enters the engine after every trade at or before its timestamp: the batch
  mode's canonical order ("by exchange timestamp, a trade before a book on equal
  timestamps"), so streaming output equals the batch computation. A book is ready as soon as
  no trade it should follow can still come:

  - the collector stamped it (``feed_id``, ``trades_before``) and this symbol's trades up to
    ``feed_seq == trades_before`` of the same feed are taken: everything the collector
    received before the book is here (no waiting in the steady state); or the trade stream
    has moved on to a later feed (that feed's collector crashed: what it sent is all here);
  - unstamped input: the trade feed has passed its timestamp, or the book has waited
    ``hold_us`` of exchange time (a later book arrived that much newer while the trade feed
    stayed behind). A stamped book waits ``hold_us`` only once the book stream has moved on
    to another feed (its collector crashed, perhaps before sending the trades it counted).

  A stamped book takes exactly the trades the collector received before it (and that are
  at or before its timestamp): a trade the collector received after the book never enters
  before it, even when it is older and already here. So the output depends only on the
  two topics' contents, never on how their messages interleave on arrival or which batch
  took them: a replay after a crash republishes identical vectors. Such a trade (the
  exchange delivered it after a newer book) enters before the next book and is counted
  (``late_trades``), as that is where streaming and the batch mode's timestamp order
  differ.
- Dedup: the Kafka offset of the last event taken from each topic is part of the state, and a
  book with ``seq <= last_seq`` is skipped; replays after a crash change nothing.
- ``to_state``/``from_state``: the whole thing, pending events included, as plain JSON.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from depthflow.features.candles import Candle
from depthflow.features.engine import FeatureState, InvalidInputError

PIPELINE_STATE_VERSION = 2  # 2: trades carry their feed stamps
# Trades kept waiting for a book at most; beyond it the oldest enter the engine (a book feed
# that stopped must not grow the state without bound).
MAX_PENDING_TRADES = 10_000
# Books kept waiting for the trade feed at most; beyond it the oldest are processed anyway
# (bounds the state a changelog record carries when the trades topic lags far behind).
MAX_PENDING_BOOKS = 2_000
# Trade feeds remembered per symbol (collector restarts; only the order of the last two matters).
MAX_FEEDS = 4


@dataclass(slots=True)
class PendingBook:
    offset: int
    seq: int
    ts: int
    local_ts: int
    bids: list[Any]
    asks: list[Any]
    trace_id: str
    feed_id: str = ""
    trades_before: int = 0

    def to_list(self) -> list[Any]:
        return [
            self.offset,
            self.seq,
            self.ts,
            self.local_ts,
            self.bids,
            self.asks,
            self.trace_id,
            self.feed_id,
            self.trades_before,
        ]


@dataclass(slots=True)
class Vector:
    """One computed feature vector, ready to normalise, publish and store (plain lists: the
    service stacks a batch of them into one array)."""

    book_seq: int
    exchange_ts_us: int
    local_ts_us: int
    values: list[float]
    valid: list[bool]
    trace_id: str
    compute_ns: int
    emit: bool


@dataclass(slots=True)
class Rejected:
    """A book the engine refused (inconsistent), with where it came from and why."""

    offset: int
    seq: int
    reason: str
    book: dict[str, Any]


class SymbolPipeline:
    """Merge, dedup and compute for one symbol."""

    def __init__(
        self, exchange: str, symbol: str, hold_us: int = 200_000, min_interval_us: int = 0
    ) -> None:
        self.exchange = exchange
        self.symbol = symbol
        self.hold_us = hold_us
        self.min_interval_us = min_interval_us
        self.engine = FeatureState()
        self.books: deque[PendingBook] = deque()
        self.trades: deque[list[Any]] = deque()  # [price, qty, is_buy, ts, feed_id, feed_seq]
        self.book_offset = -1
        self.trade_offset = -1
        self.book_wm: int | None = None  # newest book ts seen
        self.trade_wm: int | None = None  # newest trade ts seen
        self.last_pending_seq: int | None = None
        self.last_emit_ts: int | None = None
        self.skipped = 0
        # the collector feed of the last trade taken and its feed_seq (see the merge rule)
        # the trade stream's feeds in order of appearance (the last few; the last is the feed
        # of the last trade taken): a book's feed followed by another has all its trades here
        self.trade_feeds: list[str] = []
        self.trade_feed_seq = 0  # of the last trade taken
        self.late_trades = 0  # since the service last took the count (not checkpointed)

    # -- input ---------------------------------------------------------------------------

    def add_book(
        self,
        offset: int,
        seq: int,
        ts: int,
        local_ts: int,
        bids: list[Any],
        asks: list[Any],
        trace_id: str,
        feed_id: str = "",
        trades_before: int = 0,
    ) -> bool:
        """Queue a book; False when it was seen before (offset or seq not newer)."""
        if offset <= self.book_offset:
            return False
        self.book_offset = offset
        newest = self.last_pending_seq if self.books else self.engine.last_seq
        if newest is not None and seq <= newest:
            self.skipped += 1
            return False
        self.books.append(
            PendingBook(offset, seq, ts, local_ts, bids, asks, trace_id, feed_id, trades_before)
        )
        self.last_pending_seq = seq
        if self.book_wm is None or ts > self.book_wm:
            self.book_wm = ts
        return True

    def add_trade(
        self,
        offset: int,
        price: float,
        qty: float,
        is_buy: bool,
        ts: int,
        feed_id: str = "",
        feed_seq: int = 0,
    ) -> bool:
        """Queue a trade; False when it was seen before (offset not newer)."""
        if offset <= self.trade_offset:
            return False
        self.trade_offset = offset
        if feed_id:
            feeds = self.trade_feeds
            if not feeds or feeds[-1] != feed_id:
                if feed_id in feeds:
                    feeds.remove(feed_id)
                feeds.append(feed_id)
                del feeds[:-MAX_FEEDS]
            self.trade_feed_seq = feed_seq
        self.trades.append([price, qty, is_buy, ts, feed_id, feed_seq])
        if self.trade_wm is None or ts > self.trade_wm:
            self.trade_wm = ts
        return True

    # -- processing ----------------------------------------------------------------------

    def _ready(self, b: PendingBook) -> bool:
        """Whether no trade the book should follow can still come (the merge rule above)."""
        if self.hold_us == 0 or len(self.books) > MAX_PENDING_BOOKS:
            return True
        feed = b.feed_id
        if feed:
            if b.trades_before == 0:
                return True
            feeds = self.trade_feeds
            if feeds and feeds[-1] == feed:
                if self.trade_feed_seq >= b.trades_before:
                    return True
            elif feed in feeds:  # a later feed follows it in the trade topic
                return True
            if self.books[-1].feed_id == feed:  # its feed's books are still coming
                return False
        tw = self.trade_wm
        return (tw is not None and tw > b.ts) or (
            self.book_wm is not None and self.book_wm - b.ts >= self.hold_us
        )

    def _apply_trades_until(
        self, ts: int, rejects: list[str], feed_id: str = "", before: int = 0
    ) -> None:
        """Apply the queued trades at or before ``ts``, stopping at the first
        of feed ``feed_id`` the collector received after its ``before``-th. A trade at or before
        the last computed book is counted late."""
        trades = self.trades
        on_trade = self.engine.on_trade
        computed = self.engine.last_exchange_ts_us
        while trades:
            head = trades[0]
            if head[3] > ts or (feed_id and head[4] == feed_id and head[5] > before):
                break
            p, q, b, t, _, _ = trades.popleft()
            if computed is not None and t <= computed:
                self.late_trades += 1
            try:
                on_trade(p, q, b, t)
            except InvalidInputError as exc:
                rejects.append(f"trade at {t}: {exc}")

    def release(
        self,
        vectors: list[Vector],
        candles: list[Candle],
        rejected: list[Rejected],
        trade_rejects: list[str],
    ) -> None:
        """Process every queued event whose turn has come, appending the results."""
        engine = self.engine
        engine.candle_sink = candles
        try:
            books = self.books
            while books:
                b = books[0]
                if not self._ready(b):
                    break
                books.popleft()
                self._apply_trades_until(b.ts, trade_rejects, b.feed_id, b.trades_before)
                if engine.last_seq is not None and b.seq <= engine.last_seq:
                    self.skipped += 1
                    continue
                t0 = time.perf_counter_ns()
                try:
                    values, valid = engine.on_book_lists(b.bids, b.asks, b.ts, b.local_ts, b.seq)
                except InvalidInputError as exc:
                    rejected.append(
                        Rejected(
                            b.offset,
                            b.seq,
                            str(exc),
                            {"seq": b.seq, "exchange_ts_us": b.ts, "bids": b.bids, "asks": b.asks},
                        )
                    )
                    continue
                dt = time.perf_counter_ns() - t0
                emit = (
                    self.min_interval_us == 0
                    or self.last_emit_ts is None
                    or b.ts - self.last_emit_ts >= self.min_interval_us
                )
                if emit:
                    self.last_emit_ts = b.ts
                vectors.append(Vector(b.seq, b.ts, b.local_ts, values, valid, b.trace_id, dt, emit))
            if len(self.trades) > MAX_PENDING_TRADES:
                cut = self.trades[len(self.trades) - MAX_PENDING_TRADES - 1][3]
                self._apply_trades_until(cut, trade_rejects)
        finally:
            engine.candle_sink = None

    # -- persistence ---------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {
            "v": PIPELINE_STATE_VERSION,
            "exchange": self.exchange,
            "symbol": self.symbol,
            "engine": self.engine.to_state(),
            "books": [b.to_list() for b in self.books],
            "trades": list(self.trades),
            "book_offset": self.book_offset,
            "trade_offset": self.trade_offset,
            "book_wm": self.book_wm,
            "trade_wm": self.trade_wm,
            "last_pending_seq": self.last_pending_seq,
            "last_emit_ts": self.last_emit_ts,
            "skipped": self.skipped,
            "trade_feed_seq": self.trade_feed_seq,
            "trade_feeds": self.trade_feeds,
        }

    @classmethod
    def from_state(cls, s: dict[str, Any], hold_us: int, min_interval_us: int) -> SymbolPipeline:
        version = s.get("v")
        if version not in (1, PIPELINE_STATE_VERSION):
            raise ValueError(f"unsupported pipeline state version {version!r}")
        p = cls(s["exchange"], s["symbol"], hold_us, min_interval_us)
        p.engine = FeatureState.from_state(s["engine"])
        p.books = deque(PendingBook(*x) for x in s["books"])
        # version 1 kept trades without their stamps: they merge by timestamp alone
        p.trades = deque(t if len(t) == 6 else [*t, "", 0] for t in s["trades"])
        p.book_offset = int(s["book_offset"])
        p.trade_offset = int(s["trade_offset"])
        p.book_wm = s["book_wm"]
        p.trade_wm = s["trade_wm"]
        p.last_pending_seq = s["last_pending_seq"]
        p.last_emit_ts = s["last_emit_ts"]
        p.skipped = int(s["skipped"])
        # absent from states checkpointed before the feed stamps existed
        p.trade_feed_seq = int(s.get("trade_feed_seq", 0))
        old_feed = s.get("trade_feed", "")  # version 1: only the last trade's feed
        p.trade_feeds = list(s.get("trade_feeds", [old_feed] if old_feed else []))
        return p
