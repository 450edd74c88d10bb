"""``LocalBook``: an L2 order book (price → quantity) with fast best prices and top-N.

Each side is a dict (price → qty) plus an ascending list of its prices kept sorted with
``bisect``; inserting or removing a level is a C-level memmove, top-N is a list slice.
``bids_top_dirty``/``asks_top_dirty`` say whether a change since the reader last cleared
them could have touched that side's best ``watch_levels`` levels, so a publisher can reuse
its rendering of the top levels when an update only moved deep levels.
Pure logic, no I/O.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable

Level = tuple[float, float]
_INF = float("inf")


class LocalBook:
    """One symbol's L2 book. Quantities are absolute; a zero quantity removes the level."""

    __slots__ = (
        "_ask_prices",
        "_bid_prices",
        "asks",
        "asks_top_dirty",
        "bids",
        "bids_top_dirty",
        "watch_levels",
    )

    def __init__(self, watch_levels: int = 20) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self._bid_prices: list[float] = []  # ascending; best bid is the last
        self._ask_prices: list[float] = []  # ascending; best ask is the first
        self.watch_levels = watch_levels
        self.bids_top_dirty = True
        self.asks_top_dirty = True

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self._bid_prices.clear()
        self._ask_prices.clear()
        self.bids_top_dirty = self.asks_top_dirty = True

    def load(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Replace the whole book with a snapshot (a repeated price: the last one wins;
        zero quantities are skipped)."""
        self.bids = {p: q for p, q in dict(bids).items() if q > 0.0}
        self.asks = {p: q for p, q in dict(asks).items() if q > 0.0}
        self._bid_prices = sorted(self.bids)
        self._ask_prices = sorted(self.asks)
        self.bids_top_dirty = self.asks_top_dirty = True

    def apply(self, bids: list[Level], asks: list[Level]) -> None:
        """Apply one diff. Removing a level that is not in the book is normal (a no-op)."""
        n = self.watch_levels
        if bids:
            side = self.bids
            prices = self._bid_prices
            # a change at or above the n-th best bid (as it was before) can alter the top n
            if not self.bids_top_dirty:
                floor = prices[-n] if len(prices) >= n else -1.0
                for price, _ in bids:
                    if price >= floor:
                        self.bids_top_dirty = True
                        break
            for price, qty in bids:
                if qty == 0.0:
                    if side.pop(price, None) is not None:
                        del prices[bisect_left(prices, price)]
                else:
                    if price not in side:
                        insort(prices, price)
                    side[price] = qty
        if asks:
            side = self.asks
            prices = self._ask_prices
            if not self.asks_top_dirty:
                ceiling = prices[n - 1] if len(prices) >= n else _INF
                for price, _ in asks:
                    if price <= ceiling:
                        self.asks_top_dirty = True
                        break
            for price, qty in asks:
                if qty == 0.0:
                    if side.pop(price, None) is not None:
                        del prices[bisect_left(prices, price)]
                else:
                    if price not in side:
                        insort(prices, price)
                    side[price] = qty

    def best_bid(self) -> Level | None:
        if not self._bid_prices:
            return None
        price = self._bid_prices[-1]
        return price, self.bids[price]

    def best_ask(self) -> Level | None:
        if not self._ask_prices:
            return None
        price = self._ask_prices[0]
        return price, self.asks[price]

    def top_of_book(self) -> tuple[float, float, float, float] | None:
        """(bid price, bid qty, ask price, ask qty), or None while a side is empty."""
        if not self._bid_prices or not self._ask_prices:
            return None
        bp = self._bid_prices[-1]
        ap = self._ask_prices[0]
        return bp, self.bids[bp], ap, self.asks[ap]

    def top_bids(self, n: int) -> list[Level]:
        if n <= 0:
            return []
        prices = self._bid_prices[: -n - 1 : -1]  # the last n, best first
        return list(zip(prices, map(self.bids.__getitem__, prices), strict=True))

    def top_asks(self, n: int) -> list[Level]:
        prices = self._ask_prices[: max(n, 0)]
        return list(zip(prices, map(self.asks.__getitem__, prices), strict=True))

    def crossed(self) -> bool:
        """True when the best bid is at or above the best ask: the book cannot be right."""
        return bool(self._bid_prices and self._ask_prices) and (
            self._bid_prices[-1] >= self._ask_prices[0]
        )

    def __len__(self) -> int:
        return len(self.bids) + len(self.asks)

    def check_invariants(self) -> None:
        """Assert the internal structures agree (tests)."""
        assert self._bid_prices == sorted(self.bids)
        assert self._ask_prices == sorted(self.asks)
        assert all(q > 0 for q in self.bids.values())
        assert all(q > 0 for q in self.asks.values())
