"""Vectorised batch mode: feature set v1 over a stored or replayed series of books and trades.

Gives the same numbers as feeding the series through ``FeatureState``, bit for bit: every
sum is accumulated in the streaming order (running window sums replay the streaming adds and
subtracts as one sequential ``cumsum`` over the interleaved operations), logarithms use
``math.log`` like the streaming code (numpy's vectorised ``log`` can differ in the last bit)
and every formula keeps the streaming operation order. The backtest relies on this (its batch
mode must give byte-identical results). The canonical event order of a series is "by
exchange timestamp, a trade before a book on equal timestamps".

Order-book features are numpy over (N, 20) level arrays, the per-book part a block of
``BLOCK_ROWS`` books at a time (its temporaries stay in cache instead of being fresh memory
the size of the series, whose page faults cost about as much as the arithmetic);
exponentially weighted features use ``scipy.signal.lfilter`` (the same recursion as the
streaming code); candles are built vectorised and the once-per-minute candle/indicator
recursions reuse the streaming classes over the K << N candles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from scipy.signal import lfilter

from depthflow.features.candles import Candle, CandleFeatures
from depthflow.features.indicators import IndicatorState
from depthflow.features.names import (
    CANDLE_US,
    EW_MIN_OBS,
    N_FEATURES,
    N_ORDERBOOK,
    RATE_WINDOW_US,
    defaults,
)
from depthflow.features.orderbook import (
    ALPHA,
    AMIHUD_MIN_NOTIONAL,
    BETA,
    MAX_LEVELS,
    RATE_SECONDS,
    VAR_GAIN,
    InvalidInputError,
    Level,
)

F = np.float64


@dataclass(frozen=True)
class BookArrays:
    """N books as zero-padded (N, 20) arrays, best level first; ``n_bid``/``n_ask`` counts."""

    ts: np.ndarray
    bid_p: np.ndarray
    bid_q: np.ndarray
    ask_p: np.ndarray
    ask_q: np.ndarray
    n_bid: np.ndarray
    n_ask: np.ndarray

    @classmethod
    def from_books(
        cls, ts: Sequence[int], books: Sequence[tuple[Sequence[Level], Sequence[Level]]]
    ) -> BookArrays:
        """Pack ``(bids, asks)`` level lists into arrays."""
        n = len(books)
        arr = {k: np.zeros((n, MAX_LEVELS), F) for k in ("bp", "bq", "ap", "aq")}
        nb = np.zeros(n, np.int64)
        na = np.zeros(n, np.int64)
        for i, (bids, asks) in enumerate(books):
            if len(bids) > MAX_LEVELS or len(asks) > MAX_LEVELS:
                raise InvalidInputError(f"book {i}: more than {MAX_LEVELS} levels")
            nb[i] = len(bids)
            na[i] = len(asks)
            if bids:
                b = np.asarray(bids, F)
                arr["bp"][i, : len(bids)] = b[:, 0]
                arr["bq"][i, : len(bids)] = b[:, 1]
            if asks:
                a = np.asarray(asks, F)
                arr["ap"][i, : len(asks)] = a[:, 0]
                arr["aq"][i, : len(asks)] = a[:, 1]
        return cls(np.asarray(ts, np.int64), arr["bp"], arr["bq"], arr["ap"], arr["aq"], nb, na)


@dataclass(frozen=True)
class TradeArrays:
    """K trades: exchange timestamps (non-decreasing), prices, quantities, taker-buy flags."""

    ts: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    is_buy: np.ndarray


def _validate(b: BookArrays, t: TradeArrays) -> None:
    cols = np.arange(MAX_LEVELS)
    for name, p, q, n, sign in (
        ("bid", b.bid_p, b.bid_q, b.n_bid, -1.0),
        ("ask", b.ask_p, b.ask_q, b.n_ask, 1.0),
    ):
        m = cols[None, :] < n[:, None]
        good = np.isfinite(p) & np.isfinite(q) & (p > 0) & (q > 0)
        if np.any(m & ~good):
            raise InvalidInputError(f"{name} level not finite > 0")
        step = sign * np.diff(p, axis=1)
        if np.any(m[:, 1:] & (step <= 0)):
            raise InvalidInputError(f"{name} prices not strictly monotone")
    both = (b.n_bid > 0) & (b.n_ask > 0)
    if np.any(both & (b.bid_p[:, 0] >= b.ask_p[:, 0])):
        raise InvalidInputError("crossed book")
    if np.any(np.diff(b.ts) < 0) or np.any(np.diff(t.ts) < 0):
        raise InvalidInputError("timestamps must be non-decreasing")
    if np.any(~(np.isfinite(t.price) & np.isfinite(t.qty) & (t.price > 0) & (t.qty > 0))):
        raise InvalidInputError("trade price/qty not finite > 0")


def _log(x: np.ndarray) -> np.ndarray:
    """``math.log`` elementwise: the streaming code's logarithm, to the last bit."""
    return np.fromiter(map(math.log, x.tolist()), F, len(x))


def _window_sums(x: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """The streaming running sum of a trailing book window, bit for bit.

    Streaming: at book ``i`` the accumulator gets ``+x[i]``, then ``-x[j]`` for every book
    ``j`` leaving the window (``lo[i-1] <= j < lo[i]``), in that order, and is read. Those
    operations laid out in their streaming order and summed with ``np.cumsum`` (sequential,
    not pairwise) give the same floats."""
    n = len(x)
    if n == 0:
        return x.astype(F)
    lo_prev = np.concatenate(([0], lo[:-1]))
    idx = np.arange(n)
    ops = np.empty(n + int(lo[-1]), F)
    ops[idx + lo_prev] = x
    j = np.arange(int(lo[-1]))
    ops[np.searchsorted(lo, j, side="right") + 1 + j] = -x[j]
    return np.cumsum(ops)[idx + lo]


def _trade_window_sums(
    weights: Sequence[np.ndarray], k_hi: np.ndarray, k_lo: np.ndarray
) -> list[np.ndarray]:
    """The streaming trade-window accumulators (one per ``weights``) as read at each book.

    Streaming: each trade adds its weight when it arrives (trades ``k_hi[i-1] <= j < k_hi[i]``
    arrive before book ``i``); book ``i`` subtracts the weights of the trades leaving the
    window (``k_lo[i-1] <= j < k_lo[i]``) and resets the accumulators to 0.0 when the window is
    empty. Laid out in that order, summed per segment between resets with ``np.cumsum``."""
    n = len(k_hi)
    n_add = int(k_hi[-1]) if n else 0
    n_sub = int(k_lo[-1]) if n else 0
    total = n_add + n_sub
    out = [np.zeros(n, F) for _ in weights]
    if total == 0:
        return out
    ja = np.arange(n_add)
    k_lo_prev = np.concatenate(([0], k_lo))
    pos_add = ja + k_lo_prev[np.searchsorted(k_hi, ja, side="right")]
    js = np.arange(n_sub)
    pos_sub = js + k_hi[np.searchsorted(k_lo, js, side="right")]
    end = k_hi + k_lo  # exclusive end of book i's operations
    reset = k_lo == k_hi
    starts = np.unique(np.concatenate(([0], end[reset])))
    starts = starts[starts < total]
    bounds = np.append(starts, total)
    read = np.maximum(end - 1, 0)
    for k, w in enumerate(weights):
        ops = np.empty(total, F)
        ops[pos_add] = w[:n_add]
        ops[pos_sub] = -w[:n_sub]
        acc = np.empty(total, F)
        for a, b in pairwise(bounds.tolist()):
            np.cumsum(ops[a:b], out=acc[a:b])
        out[k] = np.where(end > 0, acc[read], 0.0)
    return out


def _ew_mean(x: np.ndarray) -> np.ndarray:
    """y0 = x0, y_i = ALPHA x_i + BETA y_(i-1): the streaming recursion."""
    if len(x) == 0:
        return x.astype(F)
    y = np.empty(len(x), F)
    y[0] = x[0]
    if len(x) > 1:
        y[1:], _ = lfilter([ALPHA], [1.0, -BETA], x[1:], zi=[BETA * x[0]])
    return y


def _ew_var(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """v0 = 0, v_i = VAR_GAIN (x_i - m_(i-1))^2 + BETA v_(i-1)."""
    v = np.zeros(len(x), F)
    if len(x) > 1:
        d = x[1:] - m[:-1]
        v[1:], _ = lfilter([VAR_GAIN], [1.0, -BETA], d * d, zi=[0.0])
    return v


def _at_obs(obs: np.ndarray, series: np.ndarray, min_obs: int) -> tuple[np.ndarray, np.ndarray]:
    """For each row: index into the compressed series of the latest observation, and whether
    at least ``min_obs`` observations exist."""
    c = np.cumsum(obs)
    return np.maximum(c - 1, 0), c >= min_obs


def _side_sums(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, ...]:
    """The streaming ``_scan`` sums, level by level; ``p``, ``q`` level-major (20, N).

    The depth and notional to 5 and 10 levels are the running totals after 5 and 10 levels:
    the same adds from 0.0 in the same order as separate sums."""
    n = p.shape[1]
    dt = np.zeros(n, F)
    depth = []
    for j in range(MAX_LEVELS):
        np.add(dt, q[j], out=dt)
        if j in (4, 9):
            depth.append(dt.copy())
    pq = p[:10] * q[:10]
    lt = np.zeros(n, F)
    notional = []
    for j in range(10):
        np.add(lt, pq[j], out=lt)
        if j == 4:
            notional.append(lt.copy())
    return depth[0], depth[1], dt, notional[0], lt


def _first_largest(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per row of (N, 20) ``p``, ``q``: the price of the first level of the largest quantity
    (streaming's support/resistance; an empty side gives its padding, 0.0)."""
    return p[np.arange(len(p)), np.argmax(q, axis=1)]


def _div(a: np.ndarray, b: np.ndarray, where: np.ndarray, default: float = 0.0) -> np.ndarray:
    out = np.full(np.broadcast(a, b).shape, default, F)
    np.divide(a, b, out=out, where=where)
    return out


def _clusters(
    p: np.ndarray, q: np.ndarray, mask: np.ndarray, mean: np.ndarray, large: np.ndarray
) -> tuple[np.ndarray, ...]:
    """The streaming ``_clusters`` for every row at once, level by level (the same adds in the
    same order): runs of consecutive present levels with q >= mean, the first run of the
    largest volume (price ``best_pv / best_v`` as streaming computes it), the large-q sum.
    ``p``, ``q``, ``mask`` level-major (20, N)."""
    width, n = p.shape
    inn = mask & (q >= mean)
    # the run's volume and notional, two running sums at once, level by level (reset to 0.0
    # outside a run: x * 0.0 and x * 1.0 are exactly np.where(in, x, 0.0) for the finite
    # x >= 0 here)
    keep = inn.astype(F)[:, None, :]
    acc = np.empty((width, 2, n), F)
    acc[:, 0] = q
    np.multiply(p, q, out=acc[:, 1])
    acc *= keep  # level 0: 0.0 + x is x
    for j in range(1, width):
        np.add(acc[j - 1], acc[j], out=acc[j])
        acc[j] *= keep[j]
    # the large-q sum, level by level from level 0 (an absent level, q = 0, adds 0.0)
    large_q = np.where(q >= large, q, 0.0)
    big = large_q[0].copy()
    for j in range(1, width):
        big += large_q[j]
    cv, cpv = acc[:, 0], acc[:, 1]
    end = inn.copy()  # the run ends at this level
    end[:-1] &= ~inn[1:]
    at_end = np.where(end, cv, -1.0)
    best_v = at_end.max(axis=0)  # -1.0: no run
    # the first level holding that volume (level 0 when there is no run): rank the hits
    # 20, 19, ... and take the highest
    hit = (at_end == best_v).view(np.uint8)
    hit *= np.arange(width, 0, -1, dtype=np.uint8)[:, None]
    first = width - hit.max(axis=0)
    best_pv = cpv[first, np.arange(n)]
    count = end.view(np.uint8).sum(axis=0, dtype=np.uint8).astype(F)
    return count, best_pv / best_v, best_v, big


def _by_price(p: np.ndarray, mask: np.ndarray, pv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A stable order of the present levels ``pv`` (of ``p`` where ``mask``) that puts equal
    prices next to each other, and ``pv`` in that order.

    Exchange prices sit on a tick grid: numbered on a grid step no wider than the narrowest
    gap between two levels of a book, they fit 16 bits over a day's range, and numpy sorts
    16-bit keys by radix, several times faster than floats. The numbering is checked (no two
    different prices share a number); a range too wide or a failed check sorts the floats."""
    gaps = np.diff(p, axis=1)
    if not mask.all():
        gaps = gaps[mask[:, 1:]]
    if len(pv) > 1 and gaps.size:
        lo = pv.min()
        g_max, g_min = gaps.max(), gaps.min()  # one side's books: all of one sign
        step = -g_max if g_max < 0.0 else g_min if g_min > 0.0 else np.abs(gaps).min()
        if step > 0.0 and (pv.max() - lo) / step < 60_000.0:
            x = np.subtract(pv, lo)
            np.divide(x, step, out=x)
            np.rint(x, out=x)
            key = x.astype(np.uint16)
            order = np.argsort(key, kind="stable")
            ks = key[order]
            ps = pv[order]
            if not np.any((ks[1:] == ks[:-1]) & (ps[1:] != ps[:-1])):
                return order, ps
    order = np.argsort(pv, kind="stable")
    return order, pv[order]


def _level_diff(
    ts: np.ndarray, p: np.ndarray, q: np.ndarray, mask: np.ndarray, age0: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: level changes and quantity churn; per level (rows, 20): its age in µs (0 where
    absent). Row 0 has no predecessor here; ``age0`` is the age its levels already have (the
    previous block's last row, when the block starts with that row again).

    A level continues one of the previous book when the previous book has its price: ordering
    the present levels by price (stable: rows stay in order within a price) puts each right
    after its predecessor. The churn is summed in the streaming order: the present levels
    best first, then the levels that left, in the previous book's order."""
    n, width = p.shape
    if mask.all():
        pv, qv = p.ravel(), q.ravel()
        order, ps = _by_price(p, mask, pv)
        ent = order  # row-major position of each ordered level
    else:
        sel = np.flatnonzero(mask)
        pv, qv = p.ravel()[sel], q.ravel()[sel]
        order, ps = _by_price(p, mask, pv)
        ent = sel[order]
    m = len(ent)
    rs = ent // width
    qs = qv[order]
    cont = np.zeros(m, bool)
    if m > 1:
        np.equal(ps[1:], ps[:-1], out=cont[1:])
        cont[1:] &= np.subtract(rs[1:], rs[:-1]) == 1
    # per row, the churn terms in the streaming order: column i of a level-major
    # (2 * width, rows + 1) table holds row i's levels (new: q; continued: |q - q_prev|, 0.0
    # when unchanged), then the levels of row i - 1 it removed (q; 0.0 where continued).
    # Quantities are > 0: a term is nonzero exactly when it is a change.
    new = qs.copy()
    if m > 1:
        dq = np.subtract(qs[1:], qs[:-1])
        np.abs(dq, out=dq)
        new[1:] = np.where(cont[1:], dq, qs[1:])
    gone = qs.copy()
    gone[:-1] *= ~cont[1:]
    at = rs * -width
    at += ent  # the level
    at *= n + 1
    at += rs  # (level, row)
    table = np.zeros((2 * width, n + 1), F)
    flat = table.reshape(-1)
    flat[at] = new
    at += width * (n + 1) + 1  # (width + level, row + 1)
    flat[at] = gone
    changes = (table[:, :n] != 0.0).view(np.uint8).sum(axis=0, dtype=np.uint8).astype(np.int64)
    churn_row = np.zeros(n, F)
    for j in range(2 * width):  # + 0.0 for an absent or unchanged level changes nothing
        np.add(churn_row, table[j, :n], out=churn_row)
    # age: time since the first row of the level's run of consecutive rows (a run that starts
    # at row 0 started age0 earlier)
    starts = np.flatnonzero(~cont)
    first = ent[starts]
    seen_at = ts[rs[starts]]
    head = first < width
    seen_at[head] -= age0[first[head]]
    seen = np.repeat(seen_at, np.diff(np.append(starts, m)))
    age = np.zeros(n * width, np.int64)
    ts_at = ts[rs]
    ts_at -= seen
    age[ent] = ts_at
    return changes, churn_row, age.reshape(n, width)


# Rows per block of the per-book pass: its (rows, 20) temporaries stay in cache and are
# reused instead of being fresh (page-faulting) memory the size of the whole series.
BLOCK_ROWS = 2048

_SIDE = ("d5", "d10", "t", "l5", "l10", "top", "n_clusters", "cluster_p", "cluster_v", "big")
_PER_BOOK = (*(f"bid_{x}" for x in _SIDE), *(f"ask_{x}" for x in _SIDE), "mean_age", "ss")


@dataclass(frozen=True)
class _BookRows:
    """The per-book part of the features: one value per book for each name of ``_PER_BOOK``
    (``bid_``/``ask_`` + ``_SIDE``), and per side the level changes and the churn."""

    f: dict[str, np.ndarray]
    changes: tuple[np.ndarray, np.ndarray]
    churn: tuple[np.ndarray, np.ndarray]


def _book_rows(books: BookArrays, block: int) -> _BookRows:
    """Side sums, clusters, level diffs and level ages, ``block`` books at a time: the (rows,
    20) temporaries stay in cache and are reused instead of being fresh (page-faulting) memory
    the size of the series. The level diff of a block's first book needs the book before it:
    each block starts one book early (its results for that book are the previous block's)
    and carries the ages of that book's levels."""
    ts = books.ts
    n = len(ts)
    f = {name: np.empty(n, F) for name in _PER_BOOK}
    changes = (np.empty(n, np.int64), np.empty(n, np.int64))
    churn = (np.empty(n, F), np.empty(n, F))
    age0 = (np.zeros(MAX_LEVELS, np.int64), np.zeros(MAX_LEVELS, np.int64))
    cols = np.arange(MAX_LEVELS)
    for r0 in range(0, n, block):
        r1 = min(r0 + block, n)
        s = slice(r0, r1)
        k = 1 if r0 else 0  # the level diffs start at the book before the block
        h = slice(r0 - k, r1)
        nb, na = books.n_bid[s], books.n_ask[s]
        n_all = nb + na
        sides = (
            ("bid", books.bid_p, books.bid_q, books.n_bid),
            ("ask", books.ask_p, books.ask_q, books.n_ask),
        )
        # level-major copies: a level's column is contiguous for the level-by-level sums
        level_major = [
            (np.ascontiguousarray(p[s].T), np.ascontiguousarray(q[s].T)) for _, p, q, _ in sides
        ]
        present = [cols[:, None] < cnt[s] for _, _, _, cnt in sides]  # level-major (20, rows)
        totals = []
        for (side, p, q, _), (p_lm, q_lm) in zip(sides, level_major, strict=True):
            for x, v in zip(("d5", "d10", "t", "l5", "l10"), _side_sums(p_lm, q_lm), strict=True):
                f[f"{side}_{x}"][s] = v
            f[f"{side}_top"][s] = _first_largest(p[s], q[s])
            totals.append(f[f"{side}_t"][s])
        large = 2.0 * _div(totals[0] + totals[1], n_all.astype(F), n_all > 0)
        ages = []
        for i, (side, p, q, cnt) in enumerate(sides):
            mean = _div(totals[i], cnt[s].astype(F), cnt[s] > 0)
            p_lm, q_lm = level_major[i]
            for x, v in zip(
                ("n_clusters", "cluster_p", "cluster_v", "big"),
                _clusters(p_lm, q_lm, present[i], mean, large),
                strict=True,
            ):
                f[f"{side}_{x}"][s] = v
            c, r, age = _level_diff(ts[h], p[h], q[h], cols < cnt[h, None], age0[i])
            changes[i][s] = c[k:]
            churn[i][s] = r[k:]
            age0[i][:] = age[-1]
            ages.append(age[k:])
        # level ages: the streaming sums over bids then asks, best level first
        age_sum = ages[0].sum(axis=1) + ages[1].sum(axis=1)
        mean_age = _div(age_sum.astype(F), n_all.astype(F), n_all > 0)
        ss = np.zeros(r1 - r0, F)
        d = np.empty((MAX_LEVELS, r1 - r0), F)  # level-major: a level's row is contiguous
        for age, mask in zip(ages, present, strict=True):
            np.subtract(age.T, mean_age, out=d)
            dd = np.where(mask, d * d, 0.0)
            for j in range(MAX_LEVELS):  # + 0.0 for an absent level changes nothing
                np.add(ss, dd[j], out=ss)
        f["mean_age"][s] = mean_age
        f["ss"][s] = ss
    return _BookRows(f, changes, churn)


def compute_batch(
    books: BookArrays, trades: TradeArrays, validated: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Feature vectors for every book of a series: ``(values (N, 110), valid (N, 110))``.

    The input must follow the conventions (``InvalidInputError`` otherwise); ``validated``: the
    caller has already checked exactly that (the backtest's packing does), skip the check."""
    if not validated:
        _validate(books, trades)
    ts = books.ts
    n = len(ts)
    out = np.empty((n, N_FEATURES), F)  # every cell is written below
    ok = np.empty((n, N_FEATURES), bool)
    if n == 0:
        return out, ok
    nb, na = books.n_bid, books.n_ask
    hb, ha = nb > 0, na > 0
    both = hb & ha
    anys = hb | ha
    rows = _book_rows(books, BLOCK_ROWS)
    f = rows.f
    db5, db10, tb, lb5, lb10, sup = (f[f"bid_{x}"] for x in ("d5", "d10", "t", "l5", "l10", "top"))
    da5, da10, ta, la5, la10, res = (f[f"ask_{x}"] for x in ("d5", "d10", "t", "l5", "l10", "top"))
    b1, qb1 = books.bid_p[:, 0], books.bid_q[:, 0]
    a1, qa1 = books.ask_p[:, 0], books.ask_q[:, 0]
    spread = np.where(both, a1 - b1, 0.0)
    mid = np.where(both, (a1 + b1) / 2.0, 0.0)
    micro = _div(b1 * qa1 + a1 * qb1, qb1 + qa1, both)
    spread_rel = _div(spread, mid, both) * 1e4
    warm = ts - ts[0] >= RATE_WINDOW_US

    cols_out: list[tuple[np.ndarray, np.ndarray]] = []

    def put(v: np.ndarray, valid: np.ndarray) -> None:
        cols_out.append((v, valid))

    t_all = np.ones(n, bool)
    put(spread, both)
    put(spread_rel, both)
    put(mid, both)
    put(micro, both)
    put(_div(lb5, db5, hb), hb)
    put(_div(la5, da5, ha), ha)
    put(_div(lb10, db10, hb), hb)
    put(_div(la10, da10, ha), ha)
    for x in (db5, da5, db10, da10, tb, ta):
        put(x, t_all)
    put(_div(tb, ta, ta > 0, 1.0), ta > 0)
    put(_div(db5 - da5, db5 + da5, anys), anys)
    put(_div(db10 - da10, db10 + da10, anys), anys)
    put(_div(tb - ta, tb + ta, anys), anys)
    put(np.where(both, _div(micro - mid, mid, both) * 1e4, 0.0), both)
    put(db5 - da5, t_all)
    # order flow imbalance
    ofi_ok = np.zeros(n, bool)
    ofi_ok[1:] = both[1:] & both[:-1]
    pb1, pqb1, pa1, pqa1 = (np.roll(x, 1) for x in (b1, qb1, a1, qa1))
    e = (
        np.where(b1 >= pb1, qb1, 0.0)
        - np.where(b1 <= pb1, pqb1, 0.0)
        - np.where(a1 <= pa1, qa1, 0.0)
        + np.where(a1 >= pa1, pqa1, 0.0)
    )
    put(np.where(ofi_ok, e, 0.0), ofi_ok)
    # level diffs and the book window
    (ch_b, ch_a), (churn_b, churn_a) = rows.changes, rows.churn
    lo = np.searchsorted(ts, ts - RATE_WINDOW_US, side="right")
    idx = np.arange(n)
    n_win = idx - lo + 1

    def win(x: np.ndarray) -> np.ndarray:
        cs = np.concatenate(([0.0], np.cumsum(x)))
        return cs[idx + 1] - cs[lo]

    put(np.where(warm, _window_sums(churn_b, lo) / RATE_SECONDS, 0.0), warm)
    put(np.where(warm, _window_sums(churn_a, lo) / RATE_SECONDS, 0.0), warm)
    # trades: window, assignment to books
    tts = trades.ts
    k_hi = np.searchsorted(tts, ts, side="right")
    k_lo = np.searchsorted(tts, ts - RATE_WINDOW_US, side="right")
    t_cnt = k_hi - k_lo
    buy_q = np.where(trades.is_buy, trades.qty, 0.0)
    sum_buy, sum_all = _trade_window_sums((buy_q, trades.qty.astype(F)), k_hi, k_lo)
    bs_ok = warm & (t_cnt > 0)
    put(_div(sum_buy, sum_all, bs_ok, 0.5), bs_ok)
    # smart money, clusters, support/resistance
    n_all = nb + na
    nbc, bcp, bcv, big_b = (f[f"bid_{x}"] for x in ("n_clusters", "cluster_p", "cluster_v", "big"))
    nac, acp, acv, big_a = (f[f"ask_{x}"] for x in ("n_clusters", "cluster_p", "cluster_v", "big"))
    smi_ok = both & (big_b + big_a > 0)
    put(_div(big_b - big_a, big_b + big_a, smi_ok), both)
    put(bcp, hb)
    put(bcv, hb)
    put(acp, ha)
    put(acv, ha)
    put(nbc, hb)
    put(nac, ha)
    put(np.where(hb, sup, 0.0), hb)
    put(np.where(ha, res, 0.0), ha)
    put(_div(mid - sup, mid, both) * 1e4, both)
    put(_div(res - mid, mid, both) * 1e4, both)
    put(lb5, t_all)
    put(la5, t_all)
    put(_div(lb5 - la5, lb5 + la5, anys), anys)
    # effective spread of the last trade before each book
    k = len(tts)
    tb_idx = np.searchsorted(ts, tts, side="left") - 1
    t_mid_ok = (tb_idx >= 0) & both[np.maximum(tb_idx, 0)]
    t_mid = np.where(t_mid_ok, mid[np.maximum(tb_idx, 0)], 1.0)
    es_t = np.where(t_mid_ok, 2.0 * np.abs(trades.price - t_mid) / t_mid * 1e4, 0.0)
    last_t = k_hi - 1
    es_ok = (last_t >= 0) & (t_mid_ok[np.maximum(last_t, 0)] if k else False)
    put(np.where(es_ok, es_t[np.maximum(last_t, 0)] if k else 0.0, 0.0), es_ok)
    # interval observations between consecutive books
    assign = np.searchsorted(ts, tts, side="left")
    in_range = assign < n
    signed = np.where(trades.is_buy, trades.qty, -trades.qty)
    sv = np.bincount(assign[in_range], weights=signed[in_range], minlength=n)
    notional = np.bincount(
        assign[in_range], weights=(trades.price * trades.qty)[in_range], minlength=n
    )
    obs = np.zeros(n, bool)
    obs[1:] = both[1:] & both[:-1]
    oi = np.nonzero(obs)[0]
    ratio = mid[oi] / mid[oi - 1]
    r = np.zeros(len(oi), F)  # math.log(1.0) is 0.0: the log only where the mid moved
    moved = ratio != 1.0
    r[moved] = _log(ratio[moved]) * 1e4
    dm = mid[oi] - mid[oi - 1]
    x, y = sv[oi], dm
    ex, ey, exy, exx = _ew_mean(x), _ew_mean(y), _ew_mean(x * y), _ew_mean(x * x)
    at, enough = _at_obs(obs, ex, EW_MIN_OBS)
    if len(oi):
        exr, eyr, exyr, exxr = ex[at], ey[at], exy[at], exx[at]
        var_x = exxr - exr * exr
        ky_ok = enough & (exxr > 0) & (var_x > 1e-9 * exxr)
        put(_div(exyr - exr * eyr, var_x, ky_ok), ky_ok)
        er, en = _ew_mean(np.abs(r))[at], _ew_mean(notional[oi])[at]
        am_ok = enough & (en > AMIHUD_MIN_NOTIONAL)
        put(np.where(am_ok, _div(1e6 * er, en, am_ok), 0.0), am_ok)
    else:
        put(np.zeros(n, F), np.zeros(n, bool))
        put(np.zeros(n, F), np.zeros(n, bool))
    # roll spread over trades
    if k >= 3:
        dp = np.diff(trades.price)
        a_, b_ = dp[1:], dp[:-1]
        ea, eb, eab = _ew_mean(a_), _ew_mean(b_), _ew_mean(a_ * b_)
        n_obs = np.maximum(last_t - 1, 0)
        rl_ok = n_obs >= EW_MIN_OBS
        j = np.maximum(n_obs - 1, 0)
        cov = eab[j] - ea[j] * eb[j]
        put(np.where(rl_ok & (cov < 0), 2.0 * np.sqrt(np.where(cov < 0, -cov, 0.0)), 0.0), rl_ok)
    else:
        put(np.zeros(n, F), np.zeros(n, bool))
    put(np.where(both, _log(_div(db10, da10, both, 1.0)), 0.0), both)
    ttl_ok = warm & (n_all > 0)
    mean_age, ss = f["mean_age"], f["ss"]
    put(np.where(ttl_ok, mean_age / 1e6, 0.0), ttl_ok)
    put(np.where(ttl_ok, np.sqrt(_div(ss, n_all.astype(F), n_all > 0)) / 1e6, 0.0), ttl_ok)
    # orderbook volatility (returns), rates, spread volatility
    if len(oi):
        vr = _ew_var(r, _ew_mean(r))
        put(np.where(enough, np.sqrt(vr[at]), 0.0), enough)
    else:
        put(np.zeros(n, F), np.zeros(n, bool))
    put(np.where(warm, n_win / RATE_SECONDS, 0.0), warm)
    put(np.where(warm, win(ch_b + ch_a) / RATE_SECONDS, 0.0), warm)
    put(np.where(warm, t_cnt / RATE_SECONDS, 0.0), warm)
    si = np.nonzero(both)[0]
    if len(si):
        sr = spread_rel[si]
        vs = _ew_var(sr, _ew_mean(sr))
        at_s, en_s = _at_obs(both, vs, EW_MIN_OBS)
        put(np.where(en_s, np.sqrt(vs[at_s]), 0.0), en_s)
    else:
        put(np.zeros(n, F), np.zeros(n, bool))
    assert len(cols_out) == N_ORDERBOOK
    dflt = defaults()
    # by feature first (contiguous rows), then transposed block by block
    by_feature = np.empty((N_ORDERBOOK, n), F)
    ok_by_feature = np.empty((N_ORDERBOOK, n), bool)
    for i, (v, valid) in enumerate(cols_out):
        ok_by_feature[i] = valid
        by_feature[i] = np.where(valid, v, dflt[i])
    # candles and the candle/indicator channels: rows of a table by closed candles
    table_v, table_ok, m0 = _candle_tables(ts, mid, both, trades)
    closed = np.clip(ts // CANDLE_US - m0, 0, len(table_v) - 1) if m0 is not None else None
    for r0 in range(0, n, BLOCK_ROWS):
        rows_in = slice(r0, min(r0 + BLOCK_ROWS, n))
        v_blk, ok_blk = out[rows_in], ok[rows_in]
        v_blk[:, :N_ORDERBOOK] = by_feature[:, rows_in].T
        ok_blk[:, :N_ORDERBOOK] = ok_by_feature[:, rows_in].T
        if closed is not None:
            v_blk[:, N_ORDERBOOK:] = table_v[closed[rows_in]]
            ok_blk[:, N_ORDERBOOK:] = table_ok[closed[rows_in]]
        else:
            v_blk[:, N_ORDERBOOK:] = dflt[N_ORDERBOOK:]
            ok_blk[:, N_ORDERBOOK:] = False
        bad = ~np.isfinite(v_blk)
        if bad.any():
            v_blk[bad] = np.broadcast_to(dflt, v_blk.shape)[bad]
            ok_blk[bad] = False
    return out, ok


def _candle_tables(
    ts: np.ndarray, mid: np.ndarray, both: np.ndarray, t: TradeArrays
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Rows i = the candle and indicator channels after i closed candles (row 0: none)."""
    bm = ts // CANDLE_US
    tm = t.ts // CANDLE_US
    firsts = []
    if len(tm):
        firsts.append(int(tm[0]))
    if both.any():
        firsts.append(int(bm[np.argmax(both)]))
    dflt = defaults()[N_ORDERBOOK:]
    if not firsts:
        return dflt[None, :], np.zeros((1, len(dflt)), bool), None
    m0 = min(firsts)
    kc = max(int(bm[-1]) - m0, 0)  # closed candles needed by the last book
    rows_v = np.empty((kc + 1, len(dflt)), F)
    rows_ok = np.zeros((kc + 1, len(dflt)), bool)
    rows_v[0] = dflt
    if kc == 0:
        return rows_v, rows_ok, m0
    # trades per minute
    sel = (tm >= m0) & (tm < m0 + kc)
    mi = (tm[sel] - m0).astype(np.int64)
    price, qty = t.price[sel], t.qty[sel]
    cnt = np.bincount(mi, minlength=kc)
    vol = np.bincount(mi, weights=qty, minlength=kc)
    notional = np.bincount(mi, weights=price * qty, minlength=kc)
    to = np.zeros(kc, F)
    th = np.zeros(kc, F)
    tl = np.zeros(kc, F)
    tc = np.zeros(kc, F)
    if len(mi):
        u, first = np.unique(mi, return_index=True)
        last = np.append(first[1:], len(mi)) - 1
        to[u], tc[u] = price[first], price[last]
        th[u] = np.maximum.reduceat(price, first)
        tl[u] = np.minimum.reduceat(price, first)
    # mids per minute
    bsel = both & (bm >= m0) & (bm < m0 + kc)
    bmi = (bm[bsel] - m0).astype(np.int64)
    mids = mid[bsel]
    mo = np.zeros(kc, F)
    mh = np.zeros(kc, F)
    ml = np.zeros(kc, F)
    mc = np.zeros(kc, F)
    has_mid = np.zeros(kc, bool)
    if len(bmi):
        u, first = np.unique(bmi, return_index=True)
        last = np.append(first[1:], len(bmi)) - 1
        mo[u], mc[u] = mids[first], mids[last]
        mh[u] = np.maximum.reduceat(mids, first)
        ml[u] = np.minimum.reduceat(mids, first)
        has_mid[u] = True
    has_t = cnt > 0
    o = np.where(has_t, to, np.where(has_mid, mo, np.nan))
    h = np.where(has_t, th, mh)
    lo = np.where(has_t, tl, ml)
    c = np.where(has_t, tc, np.where(has_mid, mc, np.nan))
    # flat minutes: forward-fill the previous close
    filled = ~np.isnan(c)
    src = np.maximum.accumulate(np.where(filled, np.arange(kc), 0))
    flat = ~filled
    c = c[src]
    o = np.where(flat, c, o)
    h = np.where(flat, c, h)
    lo = np.where(flat, c, lo)
    cf = CandleFeatures()
    ind = IndicatorState()
    for i in range(kc):
        cd = Candle(
            m0 + i,
            float(o[i]),
            float(h[i]),
            float(lo[i]),
            float(c[i]),
            float(vol[i]),
            float(notional[i]),
            int(cnt[i]),
        )
        cf.on_candle(cd)
        ind.on_candle(cd)
        rows_v[i + 1] = cf.values + ind.values
        rows_ok[i + 1] = cf.valid + ind.valid
    return rows_v, rows_ok, m0
