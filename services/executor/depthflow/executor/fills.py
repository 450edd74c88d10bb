"""The fill model shared by the paper venue and the backtests.

Deterministic, event-driven, no I/O: feed it orders, cancels, book snapshots (top-N levels,
``(price, qty)`` best first) and trade prints in time order; it returns fills and order
updates. Every assumption is a field of :class:`FillModelConfig`.

How an order is treated:

* It reaches the matching engine ``submit_latency_us`` after it was sent, and is matched
  against the latest book at that moment (the last snapshot at or before its arrival). Until
  a first book is seen it waits.
* The marketable part (all of a MARKET order; a LIMIT up to its price) takes liquidity level
  by level — slippage through the levels — paying the taker fee, plus an optional extra
  adverse ``taker_slippage_bps``. With ``consume_liquidity`` our own taking removes displayed
  quantity until the next snapshot, so two orders cannot take the same lot.
* What is left: MARKET and IOC are cancelled (expired); GTC rests at its price. Its queue
  ahead is ``queue_ahead_fraction`` times the displayed quantity at that price on its side when it
  arrives (0 for a price not displayed: inside the spread or beyond the depth).
* A resting order fills as maker: a trade at its price (taker on the other side) first eats
  the queue ahead, the excess fills us; a trade through its price (``fill_on_trade_through``)
  fills up to the trade's quantity; a book whose opposite side reaches its price
  (``fill_on_book_cross``) fills up to the displayed quantity there. With
  ``shrink_queue_on_level_decrease`` the queue ahead also never exceeds the displayed quantity
  at the price (cancellations ahead of us); off by default, which is the conservative choice.
* A cancel takes effect ``cancel_latency_us`` after it was sent; fills before that stand.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from depthflow.executor.fsm import OrderState

Side = Literal["buy", "sell"]
Level = tuple[float, float]
_REL_EPS = 1e-9


class OrderType(StrEnum):
    """Order types the model fills."""

    MARKET = "MARKET"
    LIMIT = "LIMIT"


class TimeInForce(StrEnum):
    """Time in force of a LIMIT order."""

    GTC = "GTC"
    IOC = "IOC"


class Liquidity(StrEnum):
    """Whether a fill added or removed liquidity."""

    MAKER = "maker"
    TAKER = "taker"


@dataclass(frozen=True)
class FillModelConfig:
    """Every assumption of the fill model. Fees are rates of notional (0.0005 = 5 bp); a
    negative maker rate is a rebate. Defaults: Binance USD-M regular tier."""

    submit_latency_us: int = 20_000
    cancel_latency_us: int = 20_000
    maker_fee_rate: float = 0.0002
    taker_fee_rate: float = 0.0005
    taker_slippage_bps: float = 0.0
    queue_ahead_fraction: float = 1.0
    shrink_queue_on_level_decrease: bool = False
    fill_on_trade_through: bool = True
    fill_on_book_cross: bool = True
    consume_liquidity: bool = True
    max_levels: int = 20

    def __post_init__(self) -> None:
        if self.submit_latency_us < 0 or self.cancel_latency_us < 0:
            raise ValueError("latencies must be >= 0")
        if not 0.0 <= self.queue_ahead_fraction <= 1.0:
            raise ValueError("queue_ahead_fraction must be in [0, 1]")
        if self.max_levels < 1:
            raise ValueError("max_levels must be >= 1")


@dataclass(frozen=True)
class BookSnapshot:
    """Top levels of a book at ``ts_us``, best first."""

    ts_us: int
    bids: Sequence[Level]
    asks: Sequence[Level]


@dataclass(frozen=True)
class TradePrint:
    """A public trade; ``side`` is the taker's side (a sell hits resting bids)."""

    ts_us: int
    price: float
    qty: float
    side: Side


@dataclass(frozen=True)
class SimOrder:
    """An order sent to the simulated venue at ``submit_ts_us``."""

    order_id: str
    side: Side
    order_type: OrderType
    qty: float
    submit_ts_us: int
    limit_price: float | None = None
    tif: TimeInForce = TimeInForce.GTC


@dataclass(frozen=True)
class Fill:
    """One execution; ``fee`` is in quote currency (positive = paid)."""

    order_id: str
    ts_us: int
    price: float
    qty: float
    fee: float
    liquidity: Liquidity


@dataclass(frozen=True)
class OrderUpdate:
    """A change of an order's state at the simulated venue."""

    order_id: str
    ts_us: int
    state: OrderState
    filled_qty: float
    avg_price: float | None
    reason: str = ""


SimEvent = Fill | OrderUpdate


@dataclass
class _Working:
    order: SimOrder
    arrived: bool = False
    filled: float = 0.0
    notional: float = 0.0
    queue_ahead: float = 0.0

    @property
    def remaining(self) -> float:
        return self.order.qty - self.filled

    @property
    def avg_price(self) -> float | None:
        return self.notional / self.filled if self.filled > 0 else None


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= _REL_EPS * max(abs(a), abs(b), 1.0)


def _done(w: _Working) -> bool:
    return w.remaining <= _REL_EPS * max(w.order.qty, 1.0)


@dataclass
class FillSimulator:
    """The fill model for one symbol. Feed events in time order; each call returns what
    happened, also in time order."""

    config: FillModelConfig = field(default_factory=FillModelConfig)
    _book: BookSnapshot | None = field(default=None, repr=False)
    _orders: dict[str, _Working] = field(default_factory=dict, repr=False)
    _timeline: list[tuple[int, int, str, str]] = field(default_factory=list, repr=False)
    _seq: int = 0
    _consumed: dict[tuple[Side, float], float] = field(default_factory=dict, repr=False)
    _now_us: int = 0
    _seen: set[str] = field(default_factory=set, repr=False)

    @property
    def idle(self) -> bool:
        """No order working or in flight: a new book only replaces the current one."""
        return not self._orders and not self._timeline

    # --- inputs ------------------------------------------------------------------------

    def submit(self, order: SimOrder) -> list[SimEvent]:
        """Send an order; it reaches the engine after the submit latency.

        An order id seen before (open or done) is rejected: a resend never makes a second
        order."""
        reason = _invalid(order)
        if order.order_id in self._seen:
            reason = f"duplicate order id {order.order_id}"
        if reason:
            return [
                OrderUpdate(
                    order.order_id, order.submit_ts_us, OrderState.REJECTED, 0.0, None, reason
                )
            ]
        self._seen.add(order.order_id)
        self._orders[order.order_id] = _Working(order)
        self._schedule(order.submit_ts_us + self.config.submit_latency_us, "arrive", order.order_id)
        return self.advance(order.submit_ts_us)

    def cancel(self, order_id: str, ts_us: int) -> list[SimEvent]:
        """Request a cancel at ``ts_us``; it takes effect after the cancel latency."""
        out = self.advance(ts_us)
        if order_id in self._orders:
            self._schedule(ts_us + self.config.cancel_latency_us, "cancel", order_id)
        return out

    def on_book(self, book: BookSnapshot) -> list[SimEvent]:
        """A new snapshot: orders that arrived before it see the previous one."""
        out = self._run_until(book.ts_us, inclusive=False)
        self._book = BookSnapshot(
            book.ts_us,
            tuple(book.bids[: self.config.max_levels]),
            tuple(book.asks[: self.config.max_levels]),
        )
        self._consumed.clear()
        self._now_us = max(self._now_us, book.ts_us)
        out += self._run_until(book.ts_us, inclusive=True)
        for w in list(self._orders.values()):
            if w.arrived:
                out += self._rest_against_book(w, book.ts_us)
        return out

    def on_trade(self, trade: TradePrint) -> list[SimEvent]:
        """A public trade: may advance resting orders' queues and fill them."""
        out = self.advance(trade.ts_us)
        for w in list(self._orders.values()):
            if w.arrived and w.order.side != trade.side:
                out += self._rest_against_trade(w, trade)
        return out

    def advance(self, ts_us: int) -> list[SimEvent]:
        """Let time pass to ``ts_us`` (arrivals and cancels that are due)."""
        out = self._run_until(ts_us, inclusive=True)
        self._now_us = max(self._now_us, ts_us)
        return out

    def open_order_ids(self) -> list[str]:
        """Orders not yet done (including those still in flight)."""
        return list(self._orders)

    # --- internals ---------------------------------------------------------------------

    def _schedule(self, ts_us: int, what: str, order_id: str) -> None:
        self._seq += 1
        heapq.heappush(self._timeline, (ts_us, self._seq, what, order_id))

    def _run_until(self, ts_us: int, *, inclusive: bool) -> list[SimEvent]:
        out: list[SimEvent] = []
        while self._timeline and self._book is not None:
            t, _, what, oid = self._timeline[0]
            if t > ts_us or (t == ts_us and not inclusive):
                break
            heapq.heappop(self._timeline)
            w = self._orders.get(oid)
            if w is None:
                continue  # already done
            if what == "arrive":
                out += self._arrive(w, t)
            else:
                out += self._finish(w, t, OrderState.CANCELLED, "cancelled")
        return out

    def _finish(self, w: _Working, ts: int, state: OrderState, reason: str) -> list[SimEvent]:
        del self._orders[w.order.order_id]
        if state == OrderState.CANCELLED and w.filled <= 0 and not w.arrived:
            reason = f"{reason} before reaching the engine"
        return [OrderUpdate(w.order.order_id, ts, state, w.filled, w.avg_price, reason)]

    def _fill(self, w: _Working, ts: int, price: float, qty: float, liq: Liquidity) -> Fill:
        rate = self.config.maker_fee_rate if liq == Liquidity.MAKER else self.config.taker_fee_rate
        w.filled += qty
        w.notional += price * qty
        return Fill(w.order.order_id, ts, price, qty, price * qty * rate, liq)

    def _status(self, w: _Working, ts: int) -> list[SimEvent]:
        if _done(w):
            return self._finish(w, ts, OrderState.FILLED, "")
        return []

    def _arrive(self, w: _Working, ts: int) -> list[SimEvent]:
        assert self._book is not None
        w.arrived = True
        o = w.order
        out: list[SimEvent] = []
        levels = self._book.asks if o.side == "buy" else self._book.bids
        sign = 1.0 if o.side == "buy" else -1.0
        slip = 1.0 + sign * self.config.taker_slippage_bps / 10_000.0
        for price, qty in levels:
            if _done(w):
                break
            if o.order_type == OrderType.LIMIT:
                assert o.limit_price is not None
                if sign * (price - o.limit_price) > 0 and not _same(price, o.limit_price):
                    break
            key: tuple[Side, float] = ("sell" if o.side == "buy" else "buy", price)
            available = qty - self._consumed.get(key, 0.0)
            take = min(w.remaining, available)
            if take <= 0:
                continue
            if self.config.consume_liquidity:
                self._consumed[key] = self._consumed.get(key, 0.0) + take
            out.append(self._fill(w, ts, price * slip, take, Liquidity.TAKER))
        if _done(w):
            return out + self._finish(w, ts, OrderState.FILLED, "")
        if o.order_type == OrderType.MARKET:
            return out + self._finish(w, ts, OrderState.CANCELLED, "book exhausted")
        if o.tif == TimeInForce.IOC:
            return out + self._finish(w, ts, OrderState.CANCELLED, "IOC remainder expired")
        assert o.limit_price is not None
        own = self._book.bids if o.side == "buy" else self._book.asks
        displayed = next((q for p, q in own if _same(p, o.limit_price)), 0.0)
        w.queue_ahead = displayed * self.config.queue_ahead_fraction
        state = OrderState.PARTIALLY_FILLED if w.filled > 0 else OrderState.PLACED
        return [*out, OrderUpdate(o.order_id, ts, state, w.filled, w.avg_price, "resting")]

    def _rest_against_trade(self, w: _Working, trade: TradePrint) -> list[SimEvent]:
        o = w.order
        assert o.limit_price is not None
        if trade.ts_us < o.submit_ts_us + self.config.submit_latency_us:
            return []
        sign = 1.0 if o.side == "buy" else -1.0
        if _same(trade.price, o.limit_price):
            ahead_used = min(w.queue_ahead, trade.qty)
            w.queue_ahead -= ahead_used
            qty = min(w.remaining, trade.qty - ahead_used)
        elif sign * (o.limit_price - trade.price) > 0 and self.config.fill_on_trade_through:
            w.queue_ahead = 0.0
            qty = min(w.remaining, trade.qty)
        else:
            return []
        if qty <= 0:
            return []
        fill = self._fill(w, trade.ts_us, o.limit_price, qty, Liquidity.MAKER)
        return [fill, *self._partial_or_done(w, trade.ts_us)]

    def _rest_against_book(self, w: _Working, ts: int) -> list[SimEvent]:
        assert self._book is not None
        o = w.order
        assert o.limit_price is not None
        sign = 1.0 if o.side == "buy" else -1.0
        if self.config.shrink_queue_on_level_decrease:
            own = self._book.bids if o.side == "buy" else self._book.asks
            displayed = next((q for p, q in own if _same(p, o.limit_price)), 0.0)
            w.queue_ahead = min(w.queue_ahead, displayed * self.config.queue_ahead_fraction)
        if not self.config.fill_on_book_cross:
            return []
        opposite = self._book.asks if o.side == "buy" else self._book.bids
        crossing = sum(
            q for p, q in opposite if sign * (o.limit_price - p) > 0 or _same(p, o.limit_price)
        )
        if crossing <= 0:
            return []
        w.queue_ahead = 0.0
        qty = min(w.remaining, crossing)
        fill = self._fill(w, ts, o.limit_price, qty, Liquidity.MAKER)
        return [fill, *self._partial_or_done(w, ts)]

    def _partial_or_done(self, w: _Working, ts: int) -> list[SimEvent]:
        if _done(w):
            return self._finish(w, ts, OrderState.FILLED, "")
        return [
            OrderUpdate(
                w.order.order_id, ts, OrderState.PARTIALLY_FILLED, w.filled, w.avg_price, ""
            )
        ]


def _invalid(order: SimOrder) -> str:
    if not order.qty > 0:
        return f"qty must be > 0, got {order.qty}"
    if order.order_type == OrderType.LIMIT and not (order.limit_price and order.limit_price > 0):
        return "LIMIT order needs a positive limit_price"
    if order.order_type == OrderType.MARKET and order.limit_price is not None:
        return "MARKET order takes no limit_price"
    return ""
