"""The books' level lists read once, for ``vectors._pack``: compiled with mypyc (``make
install``, ``deploy/local/build-native.sh``); pure Python when not compiled.

``book_levels`` yields every book's levels as ``np.fromiter`` wants them, (book, side, level,
price/qty) zero-padded to 20 levels, and in the same pass makes the engine's per-book checks.
Compiled, it is about twice as fast as flattening the nested lists with ``itertools.chain``
and checking the arrays afterwards: each level's floats are touched once, while in cache, and
yielded as the very objects of the input (no new floats). Uncompiled it is several times
slower than that, so ``vectors`` uses it only when ``COMPILED``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Final, cast

from depthflow.backtest.events import BookEvent

MAX_LEVELS: Final = 20  # depthflow.features.orderbook.MAX_LEVELS (a Final folds when compiled)
_INF: Final = math.inf
_ZERO: Final[object] = 0.0

COMPILED: Final = not __file__.endswith(".py")


class NotPlainLevels(Exception):
    """A level that is not a (price, qty) tuple or list of two floats: ``vectors._pack``
    reads those books the general way instead."""


def book_levels(books: Sequence[BookEvent], ok: list[bool], counts: list[int]) -> Iterator[object]:
    """Every book's 2 x 20 x (price, qty), bids then asks, best first, absent levels 0.0; a
    book with more than 20 levels on a side yields zeros only (it is refused anyway).

    Fills ``ok[i]`` (book ``i`` passes the engine's checks: every level finite > 0, prices
    strictly monotone, at most 20 levels a side, not crossed) and ``counts[2i]``,
    ``counts[2i + 1]`` (its bid and ask levels, 0 when refused for too many) as it goes;
    raises ``NotPlainLevels`` (only ever part way through) at the first level not plain."""
    width = MAX_LEVELS
    for i, b in enumerate(books):
        bids: Sequence[object] = b.bids
        asks: Sequence[object] = b.asks
        nb = len(bids)
        na = len(asks)
        good = True
        if nb > width or na > width:
            good = False
            bids = asks = ()
            nb = na = 0
        counts[2 * i] = nb
        counts[2 * i + 1] = na
        best_bid = 0.0
        for side in range(2):
            ask = side == 1
            last = 0.0
            j = 0
            for lvl in asks if ask else bids:
                # one branch per type: compiled, each indexes its type directly
                if isinstance(lvl, tuple):  # noqa: SIM114
                    if len(lvl) != 2:
                        raise NotPlainLevels
                    po = lvl[0]
                    qo = lvl[1]
                elif isinstance(lvl, list):
                    if len(lvl) != 2:
                        raise NotPlainLevels
                    po = lvl[0]
                    qo = lvl[1]
                else:
                    raise NotPlainLevels
                # yielded before the type test: narrowed to float, mypyc would box a copy
                yield po
                yield qo
                if type(po) is not float or type(qo) is not float:
                    raise NotPlainLevels
                p = cast(float, po)
                q = cast(float, qo)
                good = good and 0.0 < p < _INF and 0.0 < q < _INF  # a NaN fails both
                if j:
                    good = good and (p > last if ask else p < last)  # strictly monotone
                elif ask:
                    good = good and (nb == 0 or best_bid < p)  # not crossed
                else:
                    best_bid = p
                last = p
                j += 1
            for _ in range(2 * (width - j)):
                yield _ZERO
        ok[i] = good
