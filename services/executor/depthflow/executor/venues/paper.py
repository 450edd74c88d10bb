"""The paper venue: orders filled by the backtests' fill model (``fills.FillSimulator``)
against the live ``md.book`` top-20 levels this venue consumes — latency, slippage through
the levels, queue position for passive orders, partial fills and fees.

Its order book of our orders lives in this process; after a restart the venue does not know
the orders of the previous run, so a ``Pending`` order found at start resolves to ``Failed``
(it was never matched) and positions/balances are the executor's own (``positions()`` and
``balances()`` return ``None``: there is no other truth to reconcile with).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from depthflow.common.schemas import BOOK, Book
from depthflow.common.settings import KafkaSettings
from depthflow.executor.fills import (
    BookSnapshot,
    Fill,
    FillModelConfig,
    FillSimulator,
    OrderType,
    OrderUpdate,
    SimEvent,
    SimOrder,
    TimeInForce,
)
from depthflow.executor.fsm import ORDER_TERMINAL_STATES, OrderState
from depthflow.executor.reconcile import PositionView
from depthflow.executor.risk import SymbolSpec
from depthflow.executor.venues.base import (
    NewOrder,
    OrderReport,
    Venue,
    VenueRejected,
    VenueUnavailable,
)
from depthflow.executor.venues.common import partitions_of

log = logging.getLogger(__name__)

# Binance USD-M trading rules of the usual symbols; anything else gets a fine grid.
KNOWN_SPECS: dict[str, SymbolSpec] = {
    "BTCUSDT": SymbolSpec("BTCUSDT", 0.1, 0.001, 0.001, 5.0),
    "ETHUSDT": SymbolSpec("ETHUSDT", 0.01, 0.001, 0.001, 5.0),
    "SOLUSDT": SymbolSpec("SOLUSDT", 0.01, 1.0, 1.0, 5.0),
}


def _now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class _PaperOrder:
    order: NewOrder
    venue_order_id: str
    state: OrderState = OrderState.PLACED
    filled: float = 0.0
    quote: float = 0.0

    def report(self, source: str, **fill: Any) -> OrderReport:
        """This order now; ``fill`` carries the last fill's fields (trade id, qty, price,
        fee, liquidity) when a fill caused the report."""
        return OrderReport(
            self.order.client_order_id,
            self.order.symbol,
            self.state,
            self.venue_order_id,
            self.order.side,
            self.order.qty,
            self.filled,
            self.quote,
            source=source,
            ts_us=_now_us(),
            **fill,
        )


class PaperVenue(Venue):
    """Simulated fills against the live book of ``exchange``."""

    name = "paper"

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        book_topic: str,
        exchange: str = "binance",
        config: FillModelConfig | None = None,
        warmup: int = 200,
        max_book_age_s: float = 30.0,
        fetch_min_bytes: int,
        fetch_max_wait_ms: int,
    ) -> None:
        super().__init__()
        self._fetch = {"fetch_min_bytes": fetch_min_bytes, "fetch_max_wait_ms": fetch_max_wait_ms}
        self.exchange = exchange
        self._kafka = kafka
        self._topic = book_topic
        self.config = config or FillModelConfig()
        self.taker_fee_rate = self.config.taker_fee_rate
        self._warmup = warmup
        self._max_age_s = max_book_age_s
        self._books: dict[str, tuple[Book, float]] = {}
        # the newest md.book value of a symbol whose fill model is idle, not yet decoded:
        # (value, monotonic time seen, book time); decoded when the symbol is next needed
        self._raw: dict[str, tuple[bytes, float, int]] = {}
        self._key_prefix = f"{exchange}:".encode()
        self._sims: dict[str, FillSimulator] = {}
        self._orders: dict[str, _PaperOrder] = {}
        self._last_ts: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._trade_ids = itertools.count(1)
        self._consumer: AIOKafkaConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._emit_queue: asyncio.Queue[OrderReport] = asyncio.Queue()
        self.books_seen = 0

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            **self._kafka.aiokafka_config(),
            enable_auto_commit=False,
            group_id=None,
            client_id="executor-paper-book",
            **self._fetch,
        )
        await self._consumer.start()
        parts = await partitions_of(self._consumer, self._topic)
        if not parts:
            await self._consumer.stop()
            raise VenueUnavailable(f"book topic {self._topic!r} does not exist")
        tps = [TopicPartition(self._topic, p) for p in sorted(parts)]
        self._consumer.assign(tps)
        ends = await self._consumer.end_offsets(tps)
        begins = await self._consumer.beginning_offsets(tps)
        for tp in tps:
            self._consumer.seek(tp, max(begins[tp], ends[tp] - self._warmup))
        self._tasks = [
            asyncio.create_task(self._consume(), name="paper-book"),
            asyncio.create_task(self._emitter(), name="paper-reports"),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._consumer is not None:
            await self._consumer.stop()

    async def wait_for_book(self, symbol: str, timeout: float = 10.0) -> None:
        """Wait until a book of ``symbol`` has been seen (tests, start-up)."""
        deadline = time.monotonic() + timeout
        while symbol not in self._books and symbol not in self._raw:
            if time.monotonic() > deadline:
                raise VenueUnavailable(f"no {self.exchange} book of {symbol}")
            await asyncio.sleep(0.02)

    # ---- the book feed ------------------------------------------------------------------
    async def _consume(self) -> None:
        """Every md.book of this exchange. A symbol with nothing working in its fill model
        only needs its newest book, so that one is kept as received and decoded when the
        symbol is next needed (most books of most symbols are never decoded)."""
        assert self._consumer is not None
        prefix = self._key_prefix
        while True:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=500)
            for records in batch.values():
                for rec in records:
                    key = rec.key
                    if key is not None and key.startswith(prefix) and rec.value is not None:
                        symbol = key[len(prefix) :].decode(errors="replace")
                        sim = self._sims.get(symbol)
                        if sim is None or sim.idle:
                            self.books_seen += 1
                            self._raw[symbol] = (rec.value, time.monotonic(), self._ts(symbol))
                            continue
                    book = self._decode(rec.value)
                    if book is not None and book.exchange == self.exchange:
                        self.books_seen += 1
                        self._raw.pop(book.symbol, None)
                        self._on_book(book, time.monotonic(), self._ts(book.symbol))

    @staticmethod
    def _decode(value: bytes | None) -> Book | None:
        try:
            return BOOK.decode(value)
        except Exception as exc:
            log.warning("bad md.book record", extra={"error": str(exc)[:200]})
            return None

    def _materialise(self, symbol: str) -> None:
        """Decode the symbol's book kept undecoded, if any (a bad one leaves the previous)."""
        raw = self._raw.pop(symbol, None)
        if raw is None:
            return
        value, seen, ts = raw
        book = self._decode(value)
        if book is not None and book.exchange == self.exchange and book.symbol == symbol:
            self._on_book(book, seen, ts)

    def _ts(self, symbol: str) -> int:
        ts = max(_now_us(), self._last_ts.get(symbol, 0))
        self._last_ts[symbol] = ts
        return ts

    def _sim(self, symbol: str) -> FillSimulator:
        sim = self._sims.get(symbol)
        if sim is None:
            sim = self._sims[symbol] = FillSimulator(self.config)
        return sim

    def _on_book(self, book: Book, seen: float, ts_us: int) -> None:
        self._books[book.symbol] = (book, seen)
        snap = BookSnapshot(
            ts_us,
            [(price, qty) for price, qty in book.bids],
            [(price, qty) for price, qty in book.asks],
        )
        self._handle(self._sim(book.symbol).on_book(snap))

    def latest_book(self, symbol: str) -> Book | None:
        self._materialise(symbol)
        entry = self._books.get(symbol)
        return entry[0] if entry else None

    # ---- fill model events ---------------------------------------------------------------
    def _handle(self, events: list[SimEvent]) -> None:
        for ev in events:
            po = self._orders.get(ev.order_id)
            if po is None:
                continue
            if isinstance(ev, Fill):
                po.filled += ev.qty
                po.quote += ev.qty * ev.price
                done = po.filled >= po.order.qty * (1 - 1e-9)
                po.state = OrderState.FILLED if done else OrderState.PARTIALLY_FILLED
                self._emit_queue.put_nowait(
                    po.report(
                        "paper",
                        trade_id=f"paper-{next(self._trade_ids)}",
                        last_qty=ev.qty,
                        last_price=ev.price,
                        last_fee=ev.fee,
                        liquidity=ev.liquidity.value,
                    )
                )
            elif isinstance(ev, OrderUpdate):
                if po.state in ORDER_TERMINAL_STATES and po.state == ev.state:
                    continue
                po.state = ev.state
                self._emit_queue.put_nowait(po.report("paper"))

    async def _emitter(self) -> None:
        while True:
            report = await self._emit_queue.get()
            try:
                await self._emit(report)
            except Exception:
                log.exception(
                    "paper report not applied", extra={"client_order_id": report.client_order_id}
                )

    def _advance_later(self, symbol: str, delay_s: float) -> None:
        def fire() -> None:
            self._handle(self._sim(symbol).advance(self._ts(symbol)))

        asyncio.get_running_loop().call_later(delay_s, fire)

    # ---- the venue interface --------------------------------------------------------------
    async def symbol_spec(self, symbol: str) -> SymbolSpec:
        return KNOWN_SPECS.get(symbol) or SymbolSpec(symbol, 1e-4, 1e-4, 0.0, 0.0)

    async def best_prices(self, symbol: str) -> tuple[float, float]:
        self._materialise(symbol)
        entry = self._books.get(symbol)
        if entry is None:
            raise VenueUnavailable(f"no {self.exchange} book of {symbol} yet")
        book, seen = entry
        if time.monotonic() - seen > self._max_age_s:
            raise VenueUnavailable(f"{symbol} book is stale")
        return book.bid_price, book.ask_price

    async def place_order(self, order: NewOrder) -> OrderReport:
        if order.client_order_id in self._orders:
            raise VenueRejected("duplicate", f"client order id {order.client_order_id} exists")
        self._materialise(order.symbol)
        if order.symbol not in self._books:
            raise VenueRejected("no_book", f"no book of {order.symbol}")
        po = _PaperOrder(order, f"paper-{next(self._ids)}")
        self._orders[order.client_order_id] = po
        sim_order = SimOrder(
            order.client_order_id,
            order.side,
            OrderType.LIMIT if order.order_type == "LIMIT" else OrderType.MARKET,
            order.qty,
            self._ts(order.symbol),
            order.price if order.order_type == "LIMIT" else None,
            TimeInForce.IOC if order.time_in_force == "IOC" else TimeInForce.GTC,
        )
        events = self._sim(order.symbol).submit(sim_order)
        ack = po.report("rest")
        self._handle(events)
        self._advance_later(order.symbol, self.config.submit_latency_us / 1e6 + 0.001)
        return ack

    async def query_order(self, symbol: str, client_order_id: str) -> OrderReport | None:
        po = self._orders.get(client_order_id)
        return po.report("query") if po else None

    async def open_orders(self) -> list[OrderReport]:
        return [
            po.report("reconcile")
            for po in self._orders.values()
            if po.state not in ORDER_TERMINAL_STATES
        ]

    async def positions(self) -> list[PositionView] | None:
        return None

    async def balances(self) -> dict[str, float] | None:
        return None
