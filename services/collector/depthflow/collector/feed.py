"""``FeedProcessor``: exchange frames in, Kafka messages out — parse → book → publish.

No sockets here: the service hands it each frame with its receive time and connection id,
and it publishes through anything with the ``Producer.produce`` signature. That keeps the
whole synchronisation path testable without a network and benchmarkable on its own.

Per frame:
- ``md.depth.raw`` gets the payload text byte for byte (plus receive time and connection);
  REST snapshots go there too (``kind="snapshot"``), so every book can be rebuilt later.
- depth updates go through the symbol's sync machine; after each applied update that leaves
  a valid book, ``md.book`` gets top-of-book + top-N levels with ``tob_changed``.
- trades go to ``md.trades``; gaps, resyncs, crossed/stale books to ``md.health``.
- the feed stamps its output (``feed_id``: random per processor): each trade carries its
  1-based index among this symbol's trades (``feed_seq``), each book how many of them were
  published before it (``trades_before``). A consumer merging the two topics then knows when
  it holds every trade the collector received before a book, without waiting on the clock.
- a malformed frame goes to ``dlq.collector`` with its raw bytes; it is counted, never fatal.

The processor asks for resyncs through ``request_resync(symbol, reason)``; the service
fetches a snapshot (Binance) or resubscribes (Bybit) and feeds the result back.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, final

import orjson

from depthflow.collector.events import ControlMessage, DepthUpdate, ParseError, TradeEvent
from depthflow.collector.metrics import CollectorMetrics, HotHistogram
from depthflow.collector.parsers import (
    Frame,
    frame_symbol_hint,
    parse_binance_frame,
    parse_binance_snapshot,
    parse_bybit_frame,
    parse_bybit_snapshot,
)
from depthflow.collector.sync import (
    RESYNC_OUTCOMES,
    BinanceBookSync,
    BookSync,
    BybitBookSync,
    Outcome,
    SyncState,
)
from depthflow.common.logging import TRACE_HEADER

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]

# read once per message: module-level finals are C statics in the compiled module
_APPLIED: Final = Outcome.APPLIED
_SYNCED: Final = SyncState.SYNCED
_TRACE_HEADER: Final = TRACE_HEADER


class Publisher(Protocol):
    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Headers | None = None,
        timestamp_ms: int = 0,
    ) -> None: ...


@dataclass(frozen=True)
class TopicNames:
    """Where the collector publishes (configurable so tests use fresh topics)."""

    depth_raw: str = "md.depth.raw"
    book: str = "md.book"
    trades: str = "md.trades"
    health: str = "md.health"
    dlq: str = "dlq.collector"


@dataclass
class FeedStats:
    frames: int = 0
    depth_updates: int = 0
    applied: int = 0
    books_published: int = 0
    tob_changes: int = 0
    trades: int = 0
    parse_errors: int = 0
    gaps: int = 0
    resyncs: int = 0
    duplicates: int = 0
    held: int = 0
    control: int = 0
    unknown_symbol: int = 0
    resyncs_by_symbol: dict[str, int] = field(default_factory=dict)


def now_us() -> int:
    return time.time_ns() // 1000


@final
class _SymbolState:
    """One symbol's hot-path state: its sync machine and book, what was last published
    (top of book, the rendered top N of each side, reused while that side's top N is
    untouched) and plain-int metric counts (handed to Prometheus by ``flush_metrics``)."""

    def __init__(self, symbol: str, key: bytes, sync: BookSync) -> None:
        self.symbol = symbol
        self.key = key
        self.sync = sync
        self.book = sync.book  # the same object for the sync's whole life (load/clear mutate it)
        # the last published top of book (bid price, bid qty, ask price, ask qty)
        self.has_tob = False
        self.bid_price = self.bid_qty = self.ask_price = self.ask_qty = 0.0
        self.bids_json: orjson.Fragment | None = None
        self.asks_json: orjson.Fragment | None = None
        self.received = 0
        self.applied = 0
        # md.trades of this symbol published by this feed so far (the last one's feed_seq)
        self.trades_published = 0


class FeedProcessor:
    """Synchronised books for one exchange's symbols, published to Kafka."""

    def __init__(
        self,
        exchange: str,
        symbols: list[str] | tuple[str, ...],
        publisher: Publisher,
        topics: TopicNames | None = None,
        *,
        book_levels: int = 20,
        reorder_window: int = 32,
        metrics: CollectorMetrics | None = None,
        request_resync: Callable[[str, str], None] | None = None,
    ) -> None:
        if exchange not in ("binance", "bybit"):
            raise ValueError(f"unknown exchange {exchange!r}")
        self.exchange = exchange
        self.topics = topics or TopicNames()
        self.publisher = publisher
        self.book_levels = book_levels
        self.metrics = metrics
        self.request_resync = request_resync or (lambda _s, _r: None)
        self.stats = FeedStats()
        self._parse_snapshot = (
            parse_binance_snapshot if exchange == "binance" else parse_bybit_snapshot
        )
        self.syncs: dict[str, BinanceBookSync | BybitBookSync] = {}
        self._keys: dict[str, bytes] = {}
        self._states: dict[str, _SymbolState] = {}
        self._binance = exchange == "binance"
        self.last_event_monotonic: dict[str, float] = {}
        # the exchange-wide id of the last published book: Binance u, Bybit seq
        self.last_book_id: dict[str, int] = {}
        self._trace_prefix = os.urandom(8).hex()
        self._trace_n = 0
        self._raw_head: dict[tuple[str, str, str], bytes] = {}
        # exchange latency, observed inline (HotHistogram.observe without the call)
        self._latency: HotHistogram | None = metrics.latency if metrics is not None else None
        self._latency_bounds: tuple[float, ...] = (
            self._latency.bounds if self._latency is not None else ()
        )
        self._latency_counts: list[int] = self._latency.counts if self._latency is not None else []
        # monotonic time of each symbol's last applied update (the book_age gauge reads it)
        self._last_applied = metrics.last_applied if metrics is not None else {}
        # the frame being handled (read by the on_applied callback)
        self._recv_us = 0
        self._now = time.monotonic()
        for symbol in symbols:
            self._add_symbol(symbol, reorder_window)

    def _add_symbol(self, symbol: str, reorder_window: int) -> None:
        key = self._keys[symbol] = f"{self.exchange}:{symbol}".encode()
        cls = BinanceBookSync if self.exchange == "binance" else BybitBookSync
        sync = self.syncs[symbol] = cls(symbol, lambda _u, _p: None, reorder_window)
        state = self._states[symbol] = _SymbolState(symbol, key, sync)
        state.book.watch_levels = self.book_levels
        # on_applied(update, prev_id) → _publish_book(state, update, prev_id)
        sync.on_applied = functools.partial(self._publish_book, state)
        self.last_event_monotonic[symbol] = time.monotonic()

    # ------------------------------------------------------------------ frames

    def on_frame(self, frame: Frame, conn_id: str, recv_us: int) -> Outcome | None:
        """Handle one WebSocket frame. Never raises for bad input (it is dead-lettered)."""
        self.stats.frames += 1
        try:
            event = parse_binance_frame(frame) if self._binance else parse_bybit_frame(frame)
        except ParseError as exc:
            self._dead_letter(frame, f"ws:{self.exchange}", conn_id, str(exc), recv_us)
            return None
        if type(event) is DepthUpdate:
            return self._on_depth(event, frame, conn_id, recv_us, "ws")
        if type(event) is list:
            self._on_trades(event, frame, conn_id, recv_us)
            return None
        assert isinstance(event, ControlMessage)
        self.stats.control += 1
        if event.kind == "error":
            log.warning(
                "exchange replied with an error", extra={"conn_id": conn_id, "detail": event.detail}
            )
        return None

    def on_snapshot_body(
        self, symbol: str, body: bytes | str, conn_id: str, recv_us: int
    ) -> Outcome | None:
        """Handle a REST snapshot body fetched for ``symbol``."""
        try:
            snap = self._parse_snapshot(body, symbol)
        except ParseError as exc:
            self._dead_letter(body, f"rest:{self.exchange}", conn_id, str(exc), recv_us)
            self.request_resync(symbol, "bad snapshot")
            return None
        return self._on_depth(snap, body, conn_id, recv_us, "snapshot")

    def _on_depth(
        self, update: DepthUpdate, frame: Frame, conn_id: str, recv_us: int, kind: str
    ) -> Outcome | None:
        symbol = update.symbol
        state = self._states.get(symbol)
        if state is None:
            self.stats.unknown_symbol += 1
            return None
        self.stats.depth_updates += 1
        self._publish_raw(state.key, update.exchange, symbol, kind, conn_id, recv_us, frame)
        state.received += 1
        latency = self._latency
        if latency is not None and update.exchange_ts_us and kind == "ws":
            seconds = (recv_us - update.exchange_ts_us) / 1e6
            if seconds < 0.0:
                seconds = 0.0
            # HotHistogram.observe, inlined
            self._latency_counts[bisect_left(self._latency_bounds, seconds)] += 1
            latency.sum += seconds
        self._now = self.last_event_monotonic[symbol] = time.monotonic()
        self._recv_us = recv_us
        self._trace_n += 1  # this frame's trace id: _trace_prefix + _trace_n in hex
        sync = state.sync
        was_synced = sync.state is _SYNCED
        outcome = sync.on_update(update)
        if outcome is not _APPLIED or not was_synced:  # not the steady state
            self._after_update(symbol, sync, outcome, was_synced, conn_id)
        return outcome

    def _after_update(
        self,
        symbol: str,
        sync: BookSync,
        outcome: Outcome,
        was_synced: bool,
        conn_id: str,
    ) -> None:
        if outcome in RESYNC_OUTCOMES:
            self._on_broken(symbol, outcome, sync.last_problem, conn_id)
        elif outcome is Outcome.DUPLICATE:
            self.stats.duplicates += 1
        elif outcome is Outcome.HELD:
            self.stats.held += 1
        if not was_synced and sync.synced:
            self.health(symbol, "synced", f"book valid from update {sync.last_id}", conn_id)

    def _on_broken(self, symbol: str, outcome: Outcome, problem: str, conn_id: str) -> None:
        # a snapshot older than the stream is a gap between the two
        kind = "crossed" if outcome is Outcome.CROSSED else "gap"
        if outcome is Outcome.GAP:
            self.stats.gaps += 1
            if self.metrics is not None:
                self.metrics.gaps.labels(self.exchange, symbol).inc()
        self.health(symbol, kind, problem, conn_id)
        self.start_resync(symbol, outcome.value, conn_id, invalidate=False)

    def start_resync(
        self, symbol: str, reason: str, conn_id: str = "", *, invalidate: bool = True
    ) -> None:
        """Invalidate one symbol's book (if still valid), publish it, and ask for a resync."""
        sync = self.syncs[symbol]
        if invalidate and sync.synced:
            sync.invalidate(reason)
        self.stats.resyncs += 1
        self.stats.resyncs_by_symbol[symbol] = self.stats.resyncs_by_symbol.get(symbol, 0) + 1
        if self.metrics is not None:
            self.metrics.resyncs.labels(self.exchange, symbol, reason).inc()
        self.health(symbol, "resync", reason, conn_id)
        self.request_resync(symbol, reason)

    def _on_trades(
        self, trades: list[TradeEvent], frame: Frame, conn_id: str, recv_us: int
    ) -> None:
        if not trades:
            return
        symbol = trades[0].symbol
        if symbol not in self.syncs:
            self.stats.unknown_symbol += 1
            return
        key = self._keys[symbol]
        self._publish_raw(key, self.exchange, symbol, "trade", conn_id, recv_us, frame)
        produce = self.publisher.produce
        topic = self.topics.trades
        state = self._states[symbol]
        feed_id = self._trace_prefix
        for t in trades:
            if t.symbol != symbol:
                continue  # one frame carries one topic; anything else is not ours to key
            state.trades_published += 1
            produce(
                topic,
                orjson.dumps(
                    {
                        "schema_version": 1,
                        "exchange": t.exchange,
                        "symbol": t.symbol,
                        "trade_id": t.trade_id,
                        "price": t.price,
                        "qty": t.qty,
                        "side": t.side,
                        "exchange_ts_us": t.exchange_ts_us,
                        "local_ts_us": recv_us,
                        "feed_id": feed_id,
                        "feed_seq": state.trades_published,
                    }
                ),
                key,
            )
        self.stats.trades += len(trades)
        if self.metrics is not None:
            self.metrics.received_for(symbol, "trade").inc(len(trades))

    # ------------------------------------------------------------------ outputs

    def _publish_raw(
        self,
        key: bytes,
        exchange: str,
        symbol: str,
        kind: str,
        conn_id: str,
        recv_us: int,
        frame: Frame,
    ) -> None:
        if isinstance(frame, str):
            payload = frame
        elif isinstance(frame, bytes):
            payload = frame.decode()
        else:
            payload = bytes(frame).decode()
        # The same JSON object orjson.dumps of the dict would give, without building the
        # dict: a cached head per (symbol, kind, connection), then the two variable fields.
        head_key = (symbol, kind, conn_id)
        head = self._raw_head.get(head_key)
        if head is None:
            if len(self._raw_head) > 10_000:
                self._raw_head.clear()
            head = self._raw_head[head_key] = (
                orjson.dumps(
                    {
                        "schema_version": 1,
                        "exchange": exchange,
                        "symbol": symbol,
                        "kind": kind,
                        "conn_id": conn_id,
                    }
                )[:-1]
                + b',"recv_ts_us":'
            )
        self.publisher.produce(
            self.topics.depth_raw,
            b'%s%d,"payload":%s}' % (head, recv_us, orjson.dumps(payload)),
            key,
        )

    def _publish_book(self, state: _SymbolState, update: DepthUpdate, prev_id: int) -> None:
        stats = self.stats
        stats.applied += 1
        state.applied += 1
        symbol = state.symbol
        self._last_applied[symbol] = self._now
        book = state.book
        bid = book.best_bid_level()
        ask = book.best_ask_level()
        if bid is None or ask is None:
            return  # a side is empty: nothing to quote, nothing published
        bid_price, bid_qty, ask_price, ask_qty = bid.price, bid.qty, ask.price, ask.qty
        changed = (
            not state.has_tob
            or bid_price != state.bid_price
            or bid_qty != state.bid_qty
            or ask_price != state.ask_price
            or ask_qty != state.ask_qty
        )
        if changed:
            state.has_tob = True
            state.bid_price, state.bid_qty = bid_price, bid_qty
            state.ask_price, state.ask_qty = ask_price, ask_qty
            stats.tob_changes += 1
        # render each side's top N only when the book says it may have changed
        bids = state.bids_json
        if bids is None or book.bids_top_dirty:
            bids = state.bids_json = orjson.Fragment(book.top_bids_json(self.book_levels))
            book.bids_top_dirty = False
        asks = state.asks_json
        if asks is None or book.asks_top_dirty:
            asks = state.asks_json = orjson.Fragment(book.top_asks_json(self.book_levels))
            book.asks_top_dirty = False
        # (%-formatting: a third of an f-string's cost once compiled)
        trace = "%s%016x" % (self._trace_prefix, self._trace_n)  # noqa: UP031
        self.publisher.produce(
            self.topics.book,
            orjson.dumps(
                {
                    "schema_version": 1,
                    "exchange": self.exchange,
                    "symbol": symbol,
                    "seq": update.last_id,
                    "prev_seq": prev_id,
                    "exchange_ts_us": update.exchange_ts_us,
                    "local_ts_us": self._recv_us,
                    "bid_price": bid_price,
                    "bid_qty": bid_qty,
                    "ask_price": ask_price,
                    "ask_qty": ask_qty,
                    "bids": bids,
                    "asks": asks,
                    "trace_id": trace,
                    "cross_seq": update.seq,
                    "tob_changed": changed,
                    "feed_id": self._trace_prefix,
                    "trades_before": state.trades_published,
                }
            ),
            state.key,
            [(_TRACE_HEADER, trace.encode())],
        )
        stats.books_published += 1
        self.last_book_id[symbol] = update.seq or update.last_id

    def flush_metrics(self) -> None:
        """Hand the per-symbol counts kept as plain ints on the hot path to Prometheus
        (the service calls this every 100 ms; a scrape lags by at most that)."""
        metrics = self.metrics
        if metrics is None:
            return
        for symbol, state in self._states.items():
            if state.received:
                metrics.received_for(symbol, "depth").inc(state.received)
                state.received = 0
            if state.applied:
                metrics.applied_for(symbol).inc(state.applied)
                state.applied = 0

    def health(self, symbol: str, kind: str, detail: str = "", conn_id: str = "") -> None:
        """Publish one book-health event."""
        self.publisher.produce(
            self.topics.health,
            orjson.dumps(
                {
                    "schema_version": 1,
                    "exchange": self.exchange,
                    "symbol": symbol,
                    "kind": kind,
                    "detail": detail[:1000],
                    "ts_us": now_us(),
                    "conn_id": conn_id,
                }
            ),
            self._keys.get(symbol) or f"{self.exchange}:{symbol}".encode(),
        )
        if kind not in ("synced",):
            log.info(
                "book health",
                extra={
                    "exchange": self.exchange,
                    "symbol": symbol,
                    "kind": kind,
                    "detail": detail[:300],
                },
            )

    def _dead_letter(
        self, frame: Frame, source: str, conn_id: str, error: str, recv_us: int
    ) -> None:
        self.stats.parse_errors += 1
        if self.metrics is not None:
            self.metrics.parse_errors.labels(self.exchange).inc()
        raw = frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else bytes(frame)
        symbol = frame_symbol_hint(frame)
        value: dict[str, Any] = {
            "schema_version": 1,
            "service": "collector",
            "source_topic": source,
            "partition": -1,
            "offset": self.stats.frames,
            "key": f"{self.exchange}:{symbol}" if symbol else conn_id,
            "value": raw.decode("latin-1"),
            "error": error[:2000],
            "ts_us": recv_us,
        }
        self.publisher.produce(self.topics.dlq, orjson.dumps(value), source.encode())
        log.warning(
            "malformed exchange message dead-lettered",
            extra={"exchange": self.exchange, "conn_id": conn_id, "error": error[:300]},
        )

    # ------------------------------------------------------------------ housekeeping

    def stale_symbols(self, now: float, stale_after_s: float) -> list[str]:
        """Symbols whose stream has been silent for ``stale_after_s`` seconds."""
        return [s for s, t in self.last_event_monotonic.items() if now - t >= stale_after_s]

    def mark_stale(self, symbol: str, silent_s: float, conn_id: str = "") -> None:
        """A connected but silent stream: publish it and resync that symbol."""
        self.health(symbol, "stale", f"no update for {silent_s:.1f}s", conn_id)
        self.last_event_monotonic[symbol] = time.monotonic()
        self.start_resync(symbol, "stale", conn_id)
