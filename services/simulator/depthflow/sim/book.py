"""A price-level (L2) order book in integer ticks and lots, with queue positions for the
simulator's own accounts' resting orders. Pure: no I/O, no clock, no randomness.

Every mutation appends ``key, new_qty`` pairs to a caller's ``changes`` list, with
``key = price * 2 + side``; a quantity of 0 means the level was removed. Those pairs are
exactly what the diff streams publish and what the truth history replays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BID = 0
ASK = 1
NO_BID = -1
NO_ASK = 1 << 62
_SCAN_LIMIT = 64  # ticks to walk before falling back to max()/min() over the side


@dataclass(slots=True)
class RestingOrder:
    """An account's order resting at one level. ``ahead`` is the other traders' quantity
    queued between the previous account order at this level (or the front) and this one."""

    order_id: int
    side: int
    price: int
    remaining: int
    ahead: int = 0


@dataclass(slots=True)
class Match:
    """One level's worth of a taker's execution."""

    price: int
    qty: int
    maker_fills: list[tuple[RestingOrder, int]] = field(default_factory=list)


class Book:
    """Both sides of one symbol's book."""

    __slots__ = ("asks", "best_ask", "best_bid", "bids", "queues")

    def __init__(self) -> None:
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.best_bid = NO_BID
        self.best_ask = NO_ASK
        self.queues: dict[int, list[RestingOrder]] = {}  # key -> account orders, FIFO

    # -- reading -------------------------------------------------------------------------
    def side(self, side: int) -> dict[int, int]:
        return self.bids if side == BID else self.asks

    def top(self, side: int, depth: int) -> list[tuple[int, int]]:
        """Up to ``depth`` levels of one side, best first."""
        levels = self.bids if side == BID else self.asks
        if depth >= len(levels) or depth > 64:
            prices = sorted(levels, reverse=side == BID)[:depth]
        else:
            out: list[tuple[int, int]] = []
            p = self.best_bid if side == BID else self.best_ask
            step = -1 if side == BID else 1
            walked = 0
            while len(out) < depth and walked < 4 * depth + 64:
                q = levels.get(p)
                if q:
                    out.append((p, q))
                p += step
                walked += 1
            if len(out) == depth:
                return out
            prices = sorted(levels, reverse=side == BID)[:depth]
        return [(p, levels[p]) for p in prices]

    def user_qty(self, side: int, price: int) -> int:
        return sum(o.remaining for o in self.queues.get(price * 2 + side, ()))

    def check(self) -> None:
        """Raise ``AssertionError`` if an invariant is broken (used by tests)."""
        assert all(q > 0 for q in self.bids.values()), "non-positive bid level"
        assert all(q > 0 for q in self.asks.values()), "non-positive ask level"
        assert self.best_bid == (max(self.bids) if self.bids else NO_BID), "stale best bid"
        assert self.best_ask == (min(self.asks) if self.asks else NO_ASK), "stale best ask"
        assert self.best_bid < self.best_ask, "crossed book"
        for key, orders in self.queues.items():
            side, price = key & 1, key >> 1
            assert orders, "empty queue kept"
            assert sum(o.remaining for o in orders) <= self.side(side).get(price, 0)

    # -- writing -------------------------------------------------------------------------
    def _set(self, side: int, price: int, qty: int, changes: list[int]) -> None:
        levels = self.bids if side == BID else self.asks
        if qty > 0:
            levels[price] = qty
            if side == BID:
                if price > self.best_bid:
                    self.best_bid = price
            elif price < self.best_ask:
                self.best_ask = price
        else:
            del levels[price]
            if side == BID:
                if price == self.best_bid:
                    self.best_bid = self._next_bid(price)
            elif price == self.best_ask:
                self.best_ask = self._next_ask(price)
        changes.append(price * 2 + side)
        changes.append(qty)

    def _next_bid(self, price: int) -> int:
        if not self.bids:
            return NO_BID
        bids = self.bids
        for p in range(price - 1, price - 1 - _SCAN_LIMIT, -1):
            if p in bids:
                return p
        return max(bids)

    def _next_ask(self, price: int) -> int:
        if not self.asks:
            return NO_ASK
        asks = self.asks
        for p in range(price + 1, price + 1 + _SCAN_LIMIT):
            if p in asks:
                return p
        return min(asks)

    def add(self, side: int, price: int, qty: int, changes: list[int]) -> None:
        """Others' passive liquidity joins the back of a level (caller ensures it does not
        cross the opposite best)."""
        levels = self.bids if side == BID else self.asks
        self._set(side, price, levels.get(price, 0) + qty, changes)

    def add_resting(self, order: RestingOrder, changes: list[int]) -> None:
        """An account order joins the back of its level's queue."""
        levels = self.bids if order.side == BID else self.asks
        level = levels.get(order.price, 0)
        key = order.price * 2 + order.side
        queue = self.queues.setdefault(key, [])
        others = level - sum(o.remaining for o in queue)
        order.ahead = others - sum(o.ahead for o in queue)
        queue.append(order)
        self._set(order.side, order.price, level + order.remaining, changes)

    def remove_resting(self, order: RestingOrder, changes: list[int]) -> None:
        """Cancel an account order; the others behind it move up."""
        key = order.price * 2 + order.side
        queue = self.queues.get(key, [])
        if order not in queue:
            return
        i = queue.index(order)
        if i + 1 < len(queue):
            queue[i + 1].ahead += order.ahead
        queue.pop(i)
        if not queue:
            del self.queues[key]
        levels = self.bids if order.side == BID else self.asks
        self._set(order.side, order.price, levels[order.price] - order.remaining, changes)
        order.remaining = 0

    def cancel(self, side: int, price: int, qty: int, changes: list[int]) -> int:
        """Others cancel up to ``qty`` at a level (never the accounts' orders), from the back
        of the queue first. Returns the quantity cancelled."""
        levels = self.bids if side == BID else self.asks
        level = levels.get(price, 0)
        queue = self.queues.get(price * 2 + side)
        if queue:
            others = level - sum(o.remaining for o in queue)
            qty = min(qty, others)
            if qty <= 0:
                return 0
            behind = others - sum(o.ahead for o in queue)
            rest = qty - min(qty, behind)
            for o in reversed(queue):
                if rest <= 0:
                    break
                x = min(rest, o.ahead)
                o.ahead -= x
                rest -= x
        else:
            qty = min(qty, level)
            if qty <= 0:
                return 0
        self._set(side, price, level - qty, changes)
        return qty

    def take(self, taker_side: int, qty: int, limit: int | None, changes: list[int]) -> list[Match]:
        """A taker sweeps the opposite side from the best level, up to ``qty`` lots and (if
        given) no worse than ``limit``. Account orders at a level fill in queue order."""
        matches: list[Match] = []
        if taker_side == BID:
            levels = self.asks
            while qty > 0 and self.asks:
                price = self.best_ask
                if limit is not None and price > limit:
                    break
                qty -= self._take_level(ASK, price, levels[price], qty, matches, changes)
        else:
            levels = self.bids
            while qty > 0 and self.bids:
                price = self.best_bid
                if limit is not None and price < limit:
                    break
                qty -= self._take_level(BID, price, levels[price], qty, matches, changes)
        return matches

    def _take_level(
        self, side: int, price: int, level: int, want: int, matches: list[Match], changes: list[int]
    ) -> int:
        x = want if want < level else level
        match = Match(price, x)
        queue = self.queues.get(price * 2 + side)
        if queue:
            c = x
            for o in queue:
                if c <= 0:
                    break
                a = min(c, o.ahead)
                o.ahead -= a
                c -= a
                f = min(c, o.remaining)
                if f > 0:
                    o.remaining -= f
                    c -= f
                    match.maker_fills.append((o, f))
            kept = [o for o in queue if o.remaining > 0]
            if kept:
                # a filled order's leftover "ahead" (zero here) folds into the next one
                self.queues[price * 2 + side] = kept
            else:
                del self.queues[price * 2 + side]
        self._set(side, price, level - x, changes)
        matches.append(match)
        return x

    def copy_levels(self) -> tuple[dict[int, int], dict[int, int]]:
        return dict(self.bids), dict(self.asks)
