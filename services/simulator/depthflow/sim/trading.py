"""Accounts, orders, fills and positions, matched against the simulated books. Pure: no
I/O; the protocol adapters (``binance``, ``bybit``) map its errors to exchange codes.

One-way position mode, cross margin, USDT only. An account's orders share the books with
the simulated flow: a resting order has a queue position and fills when the flow trades
through it; a taker order sweeps levels (one fill per level) and pays the taker fee.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from depthflow.sim.book import ASK, BID, NO_ASK, NO_BID, RestingOrder
from depthflow.sim.market import MakerFill, Market

if TYPE_CHECKING:
    from depthflow.sim.config import SimSettings

ZERO = Decimal(0)


class TradingError(Exception):
    """An order request the exchange refuses. ``kind`` is protocol-neutral."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(detail or kind)
        self.kind = kind
        self.detail = detail


@dataclass
class Fill:
    qty: int
    price: int
    trade_id: int
    maker: bool
    fee: Decimal
    realized: Decimal
    ts: int


@dataclass
class Order:
    order_id: int
    client_id: str
    symbol: str
    side: int
    type: str  # LIMIT | MARKET
    tif: str  # GTC | IOC | FOK | GTX
    price: int | None
    qty: int
    reduce_only: bool
    origin: str
    created: int
    updated: int
    status: str = "NEW"
    filled: int = 0
    quote: int = 0  # sum of ticks * lots filled
    fees: Decimal = ZERO
    resting: RestingOrder | None = None
    fills: list[Fill] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")


@dataclass
class Position:
    qty: Decimal = ZERO  # signed, base asset
    entry: Decimal = ZERO
    realized: Decimal = ZERO
    updated: int = 0


@dataclass
class Account:
    api_key: str
    secret: str
    wallet: Decimal
    orders: dict[int, Order] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)
    updated: int = 0

    def position(self, symbol: str) -> Position:
        return self.positions.setdefault(symbol, Position())

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        return [
            o for o in self.orders.values() if o.is_open and (symbol is None or o.symbol == symbol)
        ]


@dataclass
class AccountEvent:
    """An order changed (``exec_type`` NEW/TRADE/CANCELED/EXPIRED); ``fill`` for trades."""

    account: Account
    order: Order
    exec_type: str
    fill: Fill | None
    ts: int
    status: str = ""  # the order's status, executed qty and quote right after this event
    filled: int = 0
    quote: int = 0

    def __post_init__(self) -> None:
        self.status = self.status or self.order.status
        self.filled = self.filled or self.order.filled
        self.quote = self.quote or self.order.quote


class Exchange:
    """All accounts and their orders over the simulator's markets."""

    def __init__(self, markets: dict[str, Market], settings: SimSettings) -> None:
        self.markets = markets
        self.leverage = Decimal(settings.leverage)
        self.maker_fee = Decimal(str(settings.maker_fee))
        self.taker_fee = Decimal(str(settings.taker_fee))
        self.accounts: dict[str, Account] = {}
        self.add_account(
            settings.api_key,
            settings.api_secret.get_secret_value(),
            Decimal(str(settings.starting_balance)),
        )
        self._ids = itertools.count(1_000_000_001)
        self._resting: dict[int, Order] = {}
        self.events: list[AccountEvent] = []
        self.listeners: list[Callable[[list[AccountEvent]], None]] = []
        self.user_stream_delay_s = 0.0  # fault: account events reach the streams this late
        self._held: deque[tuple[float, list[AccountEvent]]] = deque()

    def add_account(self, key: str, secret: str, balance: Decimal) -> Account:
        acct = Account(key, secret, balance)
        self.accounts[key] = acct
        return acct

    # -- money ----------------------------------------------------------------------------
    def price_dec(self, symbol: str, ticks: int | float) -> Decimal:
        inst = self.markets[symbol].instrument
        return (Decimal(ticks) * inst.tick_decimal).normalize()

    def qty_dec(self, symbol: str, lots: int) -> Decimal:
        return Decimal(lots) * self.markets[symbol].instrument.lot_decimal

    def mark(self, symbol: str) -> Decimal:
        m = self.markets[symbol]
        bb, ba = m.book.best_bid, m.book.best_ask
        if bb == NO_BID or ba == NO_ASK:
            return self.price_dec(symbol, int(m.ref))
        return self.price_dec(symbol, bb) + (self.price_dec(symbol, ba - bb) / 2)

    def unrealized(self, acct: Account, symbol: str) -> Decimal:
        pos = acct.positions.get(symbol)
        if not pos or not pos.qty:
            return ZERO
        return (self.mark(symbol) - pos.entry) * pos.qty

    def position_margin(self, acct: Account) -> Decimal:
        return sum((abs(p.qty) * p.entry / self.leverage for p in acct.positions.values()), ZERO)

    def order_margin(self, acct: Account) -> Decimal:
        total = ZERO
        for o in acct.open_orders():
            if o.price is not None and not o.reduce_only:
                total += (
                    self.qty_dec(o.symbol, o.qty - o.filled)
                    * self.price_dec(o.symbol, o.price)
                    / self.leverage
                )
        return total

    def available(self, acct: Account) -> Decimal:
        upnl = sum((self.unrealized(acct, s) for s in acct.positions), ZERO)
        return acct.wallet + min(upnl, ZERO) - self.position_margin(acct) - self.order_margin(acct)

    # -- orders ---------------------------------------------------------------------------
    def place(
        self,
        acct: Account,
        symbol: str,
        side: int,
        otype: str,
        qty: int,
        price: int | None,
        tif: str,
        reduce_only: bool,
        client_id: str,
        origin: str,
        now: int,
    ) -> Order:
        """Validate, match and (for GTC limits) rest an order. Raises ``TradingError``."""
        market = self.markets.get(symbol)
        if market is None:
            raise TradingError("unknown_symbol")
        if any(o.client_id == client_id for o in acct.open_orders()):
            raise TradingError("duplicate_client_id")
        pos = acct.position(symbol)
        if reduce_only:
            pos_lots = int(pos.qty / market.instrument.lot_decimal)
            if (side == BID and pos_lots >= 0) or (side == ASK and pos_lots <= 0):
                raise TradingError("reduce_only_rejected")
            qty = min(qty, abs(pos_lots))
        else:
            ref = (
                price
                if price is not None
                else (market.book.best_ask if side == BID else market.book.best_bid)
            )
            if ref in (NO_ASK, NO_BID):
                ref = int(market.ref)
            need = self.qty_dec(symbol, qty) * self.price_dec(symbol, ref) / self.leverage
            opposing = (pos.qty < 0) if side == BID else (pos.qty > 0)
            if not opposing and need > self.available(acct):
                raise TradingError("insufficient_margin")
        if tif == "GTX" and price is not None and market.would_cross(side, price):
            raise TradingError("post_only_would_match")
        order = Order(
            next(self._ids),
            client_id,
            symbol,
            side,
            otype,
            tif,
            price,
            qty,
            reduce_only,
            origin,
            now,
            now,
        )
        acct.orders[order.order_id] = order
        self.events.append(AccountEvent(acct, order, "NEW", None, now))
        if tif == "FOK" and self._liquidity(market, side, price, qty) < qty:
            self._finish(acct, order, "EXPIRED", now)
            return order
        rest = None
        if otype == "LIMIT" and tif in ("GTC", "GTX"):
            rest = RestingOrder(order.order_id, side, price or 0, 0)
        matches, _uid = market.execute(side, qty, price, rest, now)
        trade_id = market.trade_id - len(matches)
        for m in matches:
            trade_id += 1
            self._fill(acct, order, m.qty, m.price, trade_id, False, now)
        if rest is not None and rest.remaining > 0:
            order.resting = rest
            self._resting[order.order_id] = order
        elif order.filled < order.qty:
            self._finish(acct, order, "EXPIRED", now)
        return order

    def _liquidity(self, market: Market, side: int, limit: int | None, want: int) -> int:
        levels = market.book.asks if side == BID else market.book.bids
        total = 0
        for p, q in market.book.top(ASK if side == BID else BID, len(levels)):
            if limit is not None and (p > limit if side == BID else p < limit):
                break
            total += q
            if total >= want:
                break
        return total

    def _fill(
        self,
        acct: Account,
        order: Order,
        qty: int,
        price: int,
        trade_id: int,
        maker: bool,
        now: int,
    ) -> None:
        sym = order.symbol
        q = self.qty_dec(sym, qty)
        px = self.price_dec(sym, price)
        fee = (q * px * (self.maker_fee if maker else self.taker_fee)).quantize(
            Decimal("0.00000001")
        )
        pos = acct.position(sym)
        d = q if order.side == BID else -q
        realized = ZERO
        if pos.qty == 0 or (pos.qty > 0) == (d > 0):
            pos.entry = (abs(pos.qty) * pos.entry + q * px) / (abs(pos.qty) + q)
            pos.qty += d
        else:
            closed = min(abs(pos.qty), q)
            realized = closed * (px - pos.entry) * (1 if pos.qty > 0 else -1)
            was_long = pos.qty > 0
            pos.qty += d
            if pos.qty == 0:
                pos.entry = ZERO
            elif (pos.qty > 0) != was_long:
                pos.entry = px
        pos.realized += realized
        pos.updated = now
        acct.wallet += realized - fee
        acct.updated = now
        order.filled += qty
        order.quote += qty * price
        order.fees += fee
        order.updated = now
        order.status = "FILLED" if order.filled >= order.qty else "PARTIALLY_FILLED"
        fill = Fill(qty, price, trade_id, maker, fee, realized, now)
        order.fills.append(fill)
        self.events.append(AccountEvent(acct, order, "TRADE", fill, now))
        if order.status == "FILLED":
            self._resting.pop(order.order_id, None)
            order.resting = None

    def _finish(self, acct: Account, order: Order, status: str, now: int) -> None:
        order.status = status
        order.updated = now
        self.events.append(AccountEvent(acct, order, status, None, now))

    def on_maker_fills(self, symbol: str, fills: list[MakerFill], now: int) -> None:
        for mf in fills:
            order = self._resting.get(mf.order.order_id)
            if order is None:
                continue
            acct = self._owner(order)
            if acct is not None:
                self._fill(acct, order, mf.qty, mf.price, mf.trade_id, True, now)

    def _owner(self, order: Order) -> Account | None:
        for acct in self.accounts.values():
            if acct.orders.get(order.order_id) is order:
                return acct
        return None

    def find(
        self, acct: Account, symbol: str, order_id: int | None, client_id: str | None
    ) -> Order:
        if order_id is not None:
            o = acct.orders.get(order_id)
            if o is not None and o.symbol == symbol:
                return o
        elif client_id:
            hits = [
                o for o in acct.orders.values() if o.client_id == client_id and o.symbol == symbol
            ]
            if hits:
                return max(hits, key=lambda o: o.order_id)
        raise TradingError("unknown_order")

    def cancel(
        self, acct: Account, symbol: str, order_id: int | None, client_id: str | None, now: int
    ) -> Order:
        order = self.find(acct, symbol, order_id, client_id)
        if not order.is_open:
            raise TradingError("unknown_order")
        if order.resting is not None:
            self.markets[symbol].cancel_resting(order.resting, now)
            self._resting.pop(order.order_id, None)
            order.resting = None
        self._finish(acct, order, "CANCELED", now)
        return order

    def flush(self, now: float | None = None) -> None:
        """Hand the accumulated account events to the listeners (user-data streams), in
        order, each batch once ``user_stream_delay_s`` has passed (``now``: monotonic s)."""
        now = time.monotonic() if now is None else now
        if self.events:
            self._held.append((now + self.user_stream_delay_s, self.events))
            self.events = []
        ready: list[AccountEvent] = []
        while self._held and self._held[0][0] <= now:
            ready += self._held.popleft()[1]
        if ready:
            for listener in self.listeners:
                listener(ready)
