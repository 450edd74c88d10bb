"""Realistic synthetic top-20 books and trades from a seeded numpy generator.

For tests and benchmarks: a tick-grid random walk whose levels persist and re-size between
updates, with gaps in the ladder, bursts, quiet minutes, Poisson trades at the touch and,
optionally, the odd one-sided book.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from depthflow.features.batch import BookArrays, TradeArrays
from depthflow.features.orderbook import Level


@dataclass(frozen=True)
class Series:
    """A generated series in canonical replay order (``events``) and as batch arrays."""

    events: list[tuple]  # ("t", price, qty, is_buy, ts) | ("b", bids, asks, ts, local_ts, seq)
    books: BookArrays
    trades: TradeArrays


def generate(
    n_books: int,
    seed: int = 7,
    mean_gap_us: int = 150_000,
    tick: float = 0.1,
    one_sided_every: int = 0,
    quiet_minutes: int = 3,
) -> Series:
    """``n_books`` book updates (plus trades) starting at a 100,000.0 mid."""
    rng = np.random.default_rng(seed)
    qty: dict[int, float] = {}  # signed tick (+ ask, - bid, relative to 0) -> qty
    mid_t = 1_000_000  # mid in ticks
    ts = 1_700_000_000_000_000
    events: list[tuple] = []
    book_ts: list[int] = []
    book_list: list[tuple[list[Level], list[Level]]] = []
    t_ts: list[int] = []
    t_p: list[float] = []
    t_q: list[float] = []
    t_b: list[bool] = []
    quiet_at = {int(x) for x in rng.integers(n_books // 4, n_books, size=quiet_minutes)}
    for i in range(n_books):
        gap = int(rng.exponential(mean_gap_us)) + 1
        if rng.random() < 0.05:  # bursts: many updates within a millisecond
            gap = int(rng.integers(1, 1000))
        if i in quiet_at:
            gap += int(rng.integers(60, 200)) * 1_000_000
        ts += gap
        if rng.random() < 0.15:
            mid_t += int(rng.choice((-2, -1, 1, 2)))
        half = int(rng.integers(1, 4))
        best_bid = mid_t - half
        best_ask = mid_t + half
        bids: list[Level] = []
        asks: list[Level] = []
        u = rng.random((2, 60, 4))  # per side and candidate level: new, re-size, hole, wall
        fresh = np.round(rng.lognormal(0.0, 1.0, (2, 60)), 4) + 0.0001
        scale = rng.uniform(0.5, 1.5, (2, 60))
        for si, (side, start, step, out) in enumerate(
            ((-1, best_bid, -1, bids), (1, best_ask, 1, asks))
        ):
            k = start
            j = 0
            while len(out) < 20:
                key = side * k
                q = qty.get(key)
                uj = u[si, j]
                if q is None or uj[0] < 0.02:
                    q = float(fresh[si, j]) * (12.0 if uj[3] < 0.08 else 1.0)
                    qty[key] = q
                elif uj[1] < 0.1:
                    q = round(q * float(scale[si, j]), 4) + 0.0001
                    qty[key] = q
                if not out or uj[2] > 0.12:  # holes in the ladder
                    out.append((round(k * tick, 1), q))
                k += step
                j += 1
        if one_sided_every and i % one_sided_every == one_sided_every - 1:
            if rng.random() < 0.5:
                bids = []
            else:
                asks = asks[: int(rng.integers(0, 3))]
        # trades since the previous book, at the touch of the new book
        n_tr = int(rng.poisson(0.8))
        for j in range(n_tr):
            tt = ts - gap + 1 + int(j * (gap - 1) / n_tr)  # in (previous book, ts]
            buy = bool(rng.random() < 0.5)
            p = (best_ask if buy else best_bid) * tick
            q = float(np.round(rng.exponential(0.5), 4)) + 0.0001
            p = round(p, 1)
            events.append(("t", p, q, buy, tt))
            t_ts.append(tt)
            t_p.append(p)
            t_q.append(q)
            t_b.append(buy)
        events.append(("b", bids, asks, ts, ts + 700, i + 1))
        book_ts.append(ts)
        book_list.append((bids, asks))
    books = BookArrays.from_books(book_ts, book_list)
    trades = TradeArrays(
        np.asarray(t_ts, np.int64),
        np.asarray(t_p, np.float64),
        np.asarray(t_q, np.float64),
        np.asarray(t_b, bool),
    )
    return Series(events, books, trades)
