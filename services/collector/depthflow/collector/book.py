"""``LocalBook``: an L2 order book (price → quantity) with fast best prices and top-N.

Each side is an ascending list of its prices kept sorted with ``bisect``, a parallel list of
its levels (``PriceLevel`` objects, in the same order) and a dict from price to level: a
quantity change updates the level in place, inserting or removing a level is a C-level
memmove in both lists, and top-N is a list slice. Each level keeps its JSON (``[price,qty]``,
as orjson renders it) once asked for it, until its quantity changes, so rendering the top N
levels (``top_bids_json``) re-renders only the levels that changed.
``bids_top_dirty``/``asks_top_dirty`` say whether a change since the reader last cleared
them could have touched that side's best ``watch_levels`` levels, so a publisher can reuse
its rendering of the top levels when an update only moved deep levels.
Pure logic, no I/O.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Any, Final, final

import orjson

Level = tuple[float, float]
_INF: Final = float("inf")
_bisect_left: Final = bisect_left  # a C static once compiled, not a module dict lookup


@final
class PriceLevel:
    """One price of one side: its quantity and, once rendered, its JSON."""

    __slots__ = ("json", "price", "qty")

    def __init__(self, price: float, qty: float) -> None:
        self.price = price
        self.qty = qty
        self.json: bytes | None = None  # orjson.dumps((price, qty)); None when stale

    def render(self) -> bytes:
        json = self.json
        if json is None:
            json = self.json = orjson.dumps((self.price, self.qty))
        return json


def _render(levels: list[PriceLevel]) -> bytes:
    """``orjson.dumps([(price, qty), ...])`` from the levels' own renderings."""
    return b"[%s]" % b",".join([level.render() for level in levels])


class LocalBook:
    """One symbol's L2 book. Quantities are absolute; a zero quantity removes the level."""

    __slots__ = (
        "_ask_levels",
        "_ask_prices",
        "_asks",
        "_bid_levels",
        "_bid_prices",
        "_bids",
        "asks_top_dirty",
        "bids_top_dirty",
        "watch_levels",
    )

    def __init__(self, watch_levels: int = 20) -> None:
        self._bids: dict[float, PriceLevel] = {}
        self._asks: dict[float, PriceLevel] = {}
        self._bid_prices: list[float] = []  # ascending; best bid is the last
        self._ask_prices: list[float] = []  # ascending; best ask is the first
        self._bid_levels: list[PriceLevel] = []  # in _bid_prices' order
        self._ask_levels: list[PriceLevel] = []
        self.watch_levels = watch_levels
        self.bids_top_dirty = True
        self.asks_top_dirty = True

    @property
    def bids(self) -> dict[float, float]:
        """The bid side as price → quantity (a copy)."""
        return {level.price: level.qty for level in self._bid_levels}

    @property
    def asks(self) -> dict[float, float]:
        """The ask side as price → quantity (a copy)."""
        return {level.price: level.qty for level in self._ask_levels}

    def clear(self) -> None:
        self._bids.clear()
        self._asks.clear()
        self._bid_prices.clear()
        self._ask_prices.clear()
        self._bid_levels.clear()
        self._ask_levels.clear()
        self.bids_top_dirty = self.asks_top_dirty = True

    def load(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Replace the whole book with a snapshot (a repeated price: the last one wins;
        zero quantities are skipped)."""
        bid_qty = {p: q for p, q in dict(bids).items() if q > 0.0}
        ask_qty = {p: q for p, q in dict(asks).items() if q > 0.0}
        self._bid_prices = sorted(bid_qty)
        self._ask_prices = sorted(ask_qty)
        self._bid_levels = [PriceLevel(p, bid_qty[p]) for p in self._bid_prices]
        self._ask_levels = [PriceLevel(p, ask_qty[p]) for p in self._ask_prices]
        self._bids = {level.price: level for level in self._bid_levels}
        self._asks = {level.price: level for level in self._ask_levels}
        self.bids_top_dirty = self.asks_top_dirty = True

    def apply(self, bids: list[Level], asks: list[Level]) -> None:
        """Apply one diff. Removing a level that is not in the book is normal (a no-op)."""
        n = self.watch_levels
        if bids:
            prices = self._bid_prices
            # a change at or above the n-th best bid (as it was before) can alter the top n
            if not self.bids_top_dirty:
                floor = prices[-n] if len(prices) >= n else -1.0
                for change in bids:
                    if change[0] >= floor:
                        self.bids_top_dirty = True
                        break
            _apply_side(self._bids, prices, self._bid_levels, bids)
        if asks:
            prices = self._ask_prices
            if not self.asks_top_dirty:
                ceiling = prices[n - 1] if len(prices) >= n else _INF
                for change in asks:
                    if change[0] <= ceiling:
                        self.asks_top_dirty = True
                        break
            _apply_side(self._asks, prices, self._ask_levels, asks)

    def best_bid(self) -> Level | None:
        if not self._bid_levels:
            return None
        level = self._bid_levels[-1]
        return level.price, level.qty

    def best_ask(self) -> Level | None:
        if not self._ask_levels:
            return None
        level = self._ask_levels[0]
        return level.price, level.qty

    def best_bid_level(self) -> PriceLevel | None:
        """The best bid's level (the book's own object: read it, don't keep it)."""
        return self._bid_levels[-1] if self._bid_levels else None

    def best_ask_level(self) -> PriceLevel | None:
        """The best ask's level (the book's own object: read it, don't keep it)."""
        return self._ask_levels[0] if self._ask_levels else None

    def top_of_book(self) -> tuple[float, float, float, float] | None:
        """(bid price, bid qty, ask price, ask qty), or None while a side is empty."""
        if not self._bid_levels or not self._ask_levels:
            return None
        bid = self._bid_levels[-1]
        ask = self._ask_levels[0]
        return bid.price, bid.qty, ask.price, ask.qty

    def top_bids(self, n: int) -> list[Level]:
        if n <= 0:
            return []
        return [(level.price, level.qty) for level in self._bid_levels[: -n - 1 : -1]]

    def top_asks(self, n: int) -> list[Level]:
        return [(level.price, level.qty) for level in self._ask_levels[: max(n, 0)]]

    def top_bids_json(self, n: int) -> bytes:
        """``orjson.dumps(self.top_bids(n))``, from the levels' cached renderings."""
        return _render(self._bid_levels[: -n - 1 : -1] if n > 0 else [])

    def top_asks_json(self, n: int) -> bytes:
        """``orjson.dumps(self.top_asks(n))``, from the levels' cached renderings."""
        return _render(self._ask_levels[: max(n, 0)])

    def crossed(self) -> bool:
        """True when the best bid is at or above the best ask: the book cannot be right."""
        return bool(self._bid_prices and self._ask_prices) and (
            self._bid_prices[-1] >= self._ask_prices[0]
        )

    def __len__(self) -> int:
        return len(self._bids) + len(self._asks)

    def check_invariants(self) -> None:
        """Assert the internal structures agree (tests)."""
        for side, prices, levels in (
            (self._bids, self._bid_prices, self._bid_levels),
            (self._asks, self._ask_prices, self._ask_levels),
        ):
            assert prices == sorted(side)
            assert [level.price for level in levels] == prices
            assert all(side[level.price] is level for level in levels)
            assert all(level.qty > 0 for level in levels)
            assert all(
                level.json is None or level.json == orjson.dumps((level.price, level.qty))
                for level in levels
            )


def _apply_side(
    side: dict[float, PriceLevel],
    prices: list[float],
    levels: list[PriceLevel],
    changes: list[tuple[Any, Any]],
) -> None:
    for change in changes:
        # the price stays the parser's float object (typed Any: compiled code would otherwise
        # box a new float for each use), so the dict and the price list share it
        price = change[0]
        qty: float = change[1]
        level = side.get(price)
        if qty == 0.0:
            if level is not None:
                del side[price]
                i = _bisect_left(prices, price)
                prices.pop(i)
                levels.pop(i)
        elif level is None:
            level = side[price] = PriceLevel(price, qty)
            i = _bisect_left(prices, price)
            prices.insert(i, price)
            levels.insert(i, level)
        elif level.qty != qty:
            level.qty = qty
            level.json = None
