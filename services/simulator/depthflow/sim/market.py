"""The market model: one symbol's book driven by stochastic order flow. Pure and
deterministic for a seed — no I/O, no clock (callers pass ``now_ms``).

Each internal update is one order-flow event (a limit arrival, a cancel, a marketable
order, or an account's order) and gets the next update id. Flow, per event:

* the reference price follows a GBM (``annual_vol``; one event is ``1/rate`` seconds);
* a limit order arrives on either side at a geometric distance from the reference
  (a fraction far out, uniformly over ``far_ticks``) — if it crosses, it trades first;
* a cancel hits a level at a geometric distance behind the best (or far out);
* a market order sweeps the other side; buys are likelier when the reference is above the
  mid, so the book follows the reference and imbalance/spread move as in real books.

Random numbers are drawn in numpy blocks and consumed from flat ``array``s, which keeps the
per-event cost to a few microseconds (lists of Python floats cost a cache miss or two per
number once hundreds of symbols take turns).
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field

import numpy as np

from depthflow.sim.book import ASK, BID, NO_ASK, NO_BID, Book, Match, RestingOrder
from depthflow.sim.history import BookHistory, top_levels
from depthflow.sim.instruments import Instrument

_BLOCK = 8192


@dataclass(frozen=True)
class FlowParams:
    """Intensities (as shares of events) and shapes of the order flow."""

    p_limit: float = 0.50
    p_cancel: float = 0.38  # the rest are market orders
    near_mean_ticks: float = 6.0
    p_far: float = 0.12
    far_ticks: int = 2500
    initial_levels: int = 2500  # ticks per side filled at start (~85% occupied)
    annual_vol: float = 0.8
    max_sweep_ticks: int = 50
    min_levels: int = 1100  # cancels turn into arrivals below this many levels per side


@dataclass(slots=True)
class Trade:
    """A taker's fill at one level (an ``aggTrade``)."""

    trade_id: int
    update_id: int
    price: int
    qty: int
    taker_side: int
    ts: int


@dataclass(slots=True)
class MakerFill:
    """An account order, resting in the book, filled by someone's taker order."""

    order: RestingOrder
    qty: int
    price: int
    trade_id: int
    ts: int


@dataclass
class Outbox:
    """What happened since the last ``drain``: updates, trades, account maker fills."""

    events: list[tuple[int, list[int], int]] = field(default_factory=list)  # id, changes, ts
    trades: list[Trade] = field(default_factory=list)
    maker_fills: list[MakerFill] = field(default_factory=list)


class Market:
    """One symbol's simulated market."""

    def __init__(
        self,
        instrument: Instrument,
        seed: int,
        rate: float,
        params: FlowParams | None = None,
        retain: int = 250_000,
        checkpoint_every: int = 10_000,
    ) -> None:
        self.instrument = instrument
        self.params = params or FlowParams()
        self.rate = rate
        sym_salt = sum((i + 1) * ord(c) for i, c in enumerate(instrument.symbol))
        self.rng = np.random.default_rng([seed, sym_salt])
        self.book = Book()
        self.update_id = 0
        self.trade_id = 0
        self.last_ts = 0
        self.ref = instrument.start_price * 10**instrument.price_dp / instrument.tick_units
        self._lo = max(10.0, self.ref / 8)
        self._hi = self.ref * 8
        self._i = _BLOCK
        self._fill_initial()
        self.history = BookHistory(self.book.bids, self.book.asks, 0, retain, checkpoint_every)
        self.outbox = Outbox()

    # -- setup -----------------------------------------------------------------------------
    def _fill_initial(self) -> None:
        p, n = self.params, self.params.initial_levels
        mid = int(self.ref)
        mean = self.instrument.mean_order_lots
        occupied = self.rng.random((2, n)) < 0.85
        sizes = self.rng.geometric(1 / (3 * mean), (2, n))
        ch: list[int] = []
        for d in range(n):
            scale = 1 + d // 200
            if occupied[0, d] and mid - 1 - d > 0:
                self.book.add(BID, mid - 1 - d, int(sizes[0, d]) * scale, ch)
            if occupied[1, d]:
                self.book.add(ASK, mid + 1 + d, int(sizes[1, d]) * scale, ch)
        del p

    def _refill(self) -> None:
        rng, p, b = self.rng, self.params, _BLOCK
        sigma = p.annual_vol * math.sqrt(1.0 / max(self.rate, 1e-3) / 31_536_000)
        # the same draws in the same order, float64 and int64 kept bit for bit
        gbm = np.exp(sigma * rng.standard_normal(b) - 0.5 * sigma * sigma)
        self._gbm = array("d", gbm.tobytes())
        self._u_type = array("d", rng.random(b).tobytes())
        self._u_side = array("d", rng.random(b).tobytes())
        near = rng.geometric(1 / p.near_mean_ticks, b)
        far = rng.integers(1, p.far_ticks, b)
        dist = np.where(rng.random(b) < p.p_far, far, near)
        self._dist = array("q", dist.astype(np.int64).tobytes())
        qty = rng.geometric(1 / self.instrument.mean_order_lots, b)
        self._qty = array("q", qty.astype(np.int64).tobytes())
        self._u_frac = array("d", rng.random(b).tobytes())
        self._i = 0

    # -- the model -------------------------------------------------------------------------
    def step(self, n: int, now_ms: int) -> None:
        """Run ``n`` order-flow events; results accumulate in the outbox."""
        book, p = self.book, self.params
        p_limit, p_cancel_cum = p.p_limit, p.p_limit + p.p_cancel
        for _ in range(n):
            i = self._i
            if i >= _BLOCK:
                self._refill()
                i = 0
            self._i = i + 1
            ref = self.ref * self._gbm[i]
            if ref < self._lo or ref > self._hi:
                ref = self.ref
            self.ref = ref
            u = self._u_type[i]
            side = BID if self._u_side[i] < 0.5 else ASK
            d = self._dist[i]
            qty = self._qty[i]
            changes: list[int] = []
            if u < p_limit or (u < p_cancel_cum and len(book.side(side)) < p.min_levels):
                ref_t = int(ref)
                if side == BID:
                    price = max(1, ref_t - d + 1)
                    if price >= book.best_ask:
                        self._taker(BID, qty, price, changes, now_ms)
                        rest = qty - sum(m.qty for m in self._last_matches)
                        if rest > 0:
                            book.add(BID, price, rest, changes)
                    else:
                        book.add(BID, price, qty, changes)
                else:
                    price = ref_t + d
                    if price <= book.best_bid:
                        self._taker(ASK, qty, price, changes, now_ms)
                        rest = qty - sum(m.qty for m in self._last_matches)
                        if rest > 0:
                            book.add(ASK, price, rest, changes)
                    else:
                        book.add(ASK, price, qty, changes)
            elif u < p_cancel_cum:
                levels = book.side(side)
                if side == BID:
                    best = book.best_bid
                    price = best - d + 1
                    while price not in levels and price < best:
                        price += 1
                else:
                    best = book.best_ask
                    price = best + d - 1
                    while price not in levels and price > best:
                        price -= 1
                level = levels.get(price, 0)
                if level:
                    frac = self._u_frac[i]
                    amount = level if frac < 0.35 else max(1, int(level * frac))
                    book.cancel(side, price, amount, changes)
            else:
                bb, ba = book.best_bid, book.best_ask
                if bb != NO_BID and ba != NO_ASK:
                    tilt = math.tanh((ref - (bb + ba) / 2) / 4.0)
                    buy = self._u_side[i] < 0.5 + 0.3 * tilt
                    if buy:
                        self._taker(BID, qty, ba + p.max_sweep_ticks, changes, now_ms)
                    else:
                        self._taker(ASK, qty, bb - p.max_sweep_ticks, changes, now_ms)
            self._commit(changes, now_ms)

    _last_matches: list[Match] = []

    def _taker(
        self, side: int, qty: int, limit: int | None, changes: list[int], now_ms: int
    ) -> list[Match]:
        matches = self.book.take(side, qty, limit, changes)
        uid = self.update_id + 1  # the update these changes will become
        out = self.outbox
        for m in matches:
            self.trade_id += 1
            out.trades.append(Trade(self.trade_id, uid, m.price, m.qty, side, now_ms))
            for order, f in m.maker_fills:
                out.maker_fills.append(MakerFill(order, f, m.price, self.trade_id, now_ms))
        self._last_matches = matches
        return matches

    def _commit(self, changes: list[int], now_ms: int) -> int | None:
        if not changes:
            return None
        self.update_id += 1
        self.last_ts = now_ms
        self.history.record(self.update_id, changes, self.book.bids, self.book.asks)
        self.outbox.events.append((self.update_id, changes, now_ms))
        return self.update_id

    # -- accounts' orders ----------------------------------------------------------------
    def execute(
        self, side: int, qty: int, limit: int | None, rest: RestingOrder | None, now_ms: int
    ) -> tuple[list[Match], int | None]:
        """An account's order: take up to ``qty`` (no worse than ``limit``); if ``rest`` is
        given, its ``remaining`` is set to what is left and it joins the book. Returns the
        matches (one per level) and the update id, or ``None`` if nothing changed."""
        changes: list[int] = []
        matches = self._taker(side, qty, limit, changes, now_ms)
        left = qty - sum(m.qty for m in matches)
        if rest is not None and left > 0:
            rest.remaining = left
            self.book.add_resting(rest, changes)
        return matches, self._commit(changes, now_ms)

    def cancel_resting(self, order: RestingOrder, now_ms: int) -> int | None:
        changes: list[int] = []
        self.book.remove_resting(order, changes)
        return self._commit(changes, now_ms)

    def would_cross(self, side: int, price: int) -> bool:
        return price >= self.book.best_ask if side == BID else price <= self.book.best_bid

    # -- reading ---------------------------------------------------------------------------
    def drain(self) -> Outbox:
        out, self.outbox = self.outbox, Outbox()
        return out

    def snapshot(self, depth: int) -> tuple[int, list[tuple[int, int]], list[tuple[int, int]]]:
        """The current book: (update id, bids best first, asks best first)."""
        return (self.update_id, self.book.top(BID, depth), self.book.top(ASK, depth))

    def truth(
        self, update_id: int | None, depth: int
    ) -> tuple[int, list[tuple[int, int]], list[tuple[int, int]]]:
        """The exact book after ``update_id`` (current if ``None``)."""
        if update_id is None or update_id == self.update_id:
            return self.snapshot(depth)
        bids, asks = self.history.book_at(update_id)
        b, a = top_levels(bids, asks, depth)
        return update_id, b, a

    def mid_ticks(self) -> float:
        return (self.book.best_bid + self.book.best_ask) / 2
