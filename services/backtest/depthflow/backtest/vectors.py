"""Feature vectors of a whole loaded range, per symbol, before the replay (batch mode). Pure.

The backtest holds the range in memory, so instead of feeding every event through the
streaming ``FeatureState`` it can compute each symbol's vectors at once with the features'
vectorised ``compute_batch`` (bit-identical to streaming). What ``SymbolPipeline`` /
the streaming engine decide per event is reproduced exactly first:

- a book with ``seq <=`` the last accepted book's seq is **skipped**;
- a book the engine would refuse (a level not finite > 0, prices not strictly monotone, more
  than 20 levels, crossed, exchange time before the last accepted book's) is **rejected** and
  changes nothing; likewise a trade (price/qty not finite > 0, time before the last accepted
  trade's);
- ``FEATURES_MIN_EMIT_INTERVAL_MS`` thins the accepted books' vectors as the service does.

``compute_batch`` orders a symbol's events "by exchange time, a trade before a book on equal
times", which is the replay's merge order whenever the recorded book and trade streams are
each in time order (the merge never reorders a stream). A symbol whose recorded streams are
not (a record going back in time) is computed by the streaming engine instead, in the merge
order (``SymbolVectors.streamed``): exact either way.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter
from typing import Literal

import numpy as np

from depthflow.backtest.events import (
    BOOK,
    BookEvent,
    Event,
    SymbolStreams,
    TradeEvent,
    sort_key,
)
from depthflow.backtest.levels import COMPILED as COMPILED_LEVELS
from depthflow.backtest.levels import NotPlainLevels, book_levels
from depthflow.features.batch import BookArrays, TradeArrays, compute_batch
from depthflow.features.engine import FeatureState, InvalidInputError
from depthflow.features.names import FEATURE_SET_VERSION, N_FEATURES
from depthflow.features.orderbook import MAX_LEVELS
from depthflow.features.scaler import ActiveScaler
from depthflow.strategy.imbalance import ImbalanceStrategy
from depthflow.strategy.vectors import INVALID_FEATURE, NON_FINITE, Decision, VectorInput

FeaturesMode = Literal["stream", "batch"]

# per-book codes (``SymbolVectors.book_code``); >= 0 is the row of the emitted vector
SKIPPED = -3
REJECTED = -2
THINNED = -1

F = np.float64


@dataclass
class SymbolVectors:
    """One symbol's replay, precomputed: what became of each book and trade, and the vectors.

    ``book_code[i]`` for the book at stream position ``i``: ``SKIPPED``, ``REJECTED``,
    ``THINNED`` (accepted, not emitted) or the row of its vector in ``values``/``valid``.
    """

    key: str
    book_code: list[int]
    trade_ok: list[bool]
    values: np.ndarray  # (emitted, 110) float64
    valid: np.ndarray  # (emitted, 110) bool
    books: list[BookEvent]  # the emitted books, by row
    ts: np.ndarray  # (emitted,) int64: their exchange times
    top: np.ndarray  # (books, 2): best bid and ask price of every book (NaN: side empty)
    streamed: bool = False  # computed by the streaming engine (streams not in time order)


def _pack(
    books: Sequence[BookEvent], ts: np.ndarray | None = None
) -> tuple[BookArrays, np.ndarray]:
    """All books as (N, 20) arrays, and whether each passes the engine's per-book checks
    (levels finite > 0, strictly monotone, at most 20 per side, not crossed). ``ts``: the
    books' exchange times, when the caller has them already.

    The Python level lists are the one thing the batch mode has to touch per level: with
    ``levels`` compiled, one pass reads and checks them (``_pack_plain``), else (or for levels
    that are not plain float pairs) ``_pack_general``. Both give the same arrays."""
    if ts is None:
        ts = np.fromiter(map(attrgetter("ts"), books), np.int64, len(books))
    if COMPILED_LEVELS:
        packed = _pack_plain(books, ts)
        if packed is not None:
            return packed
    return _pack_general(books, ts)


def _pack_plain(books: Sequence[BookEvent], ts: np.ndarray) -> tuple[BookArrays, np.ndarray] | None:
    """``_pack`` through ``levels.book_levels``; None if a level is not a plain float pair."""
    n = len(books)
    ok = [True] * n
    counts = [0] * (2 * n)
    try:
        flat = np.fromiter(book_levels(books, ok, counts), F, 4 * MAX_LEVELS * n)
    except NotPlainLevels:
        return None
    levels = flat.reshape(n, 2, MAX_LEVELS, 2)
    bp, bq, ap, aq = (
        np.ascontiguousarray(levels[:, side, :, part]) for side in (0, 1) for part in (0, 1)
    )
    nb_na = np.array(counts, np.int64).reshape(n, 2)
    nb, na = np.ascontiguousarray(nb_na[:, 0]), np.ascontiguousarray(nb_na[:, 1])
    return BookArrays(ts, bp, bq, ap, aq, nb, na), np.array(ok, bool)


def _pack_general(books: Sequence[BookEvent], ts: np.ndarray) -> tuple[BookArrays, np.ndarray]:
    """``_pack`` with numpy: the levels read in one pass (``np.fromiter`` over every book's
    bids then asks), then checked as arrays; books with full sides (the usual top-20 case)
    directly on that buffer."""
    n = len(books)
    bid_lists = list(map(attrgetter("bids"), books))
    ask_lists = list(map(attrgetter("asks"), books))
    nb = np.fromiter(map(len, bid_lists), np.int64, n)
    na = np.fromiter(map(len, ask_lists), np.int64, n)
    ok = (nb <= MAX_LEVELS) & (na <= MAX_LEVELS)
    if not ok.all():  # refused anyway: pack them empty
        for i in np.nonzero(~ok)[0].tolist():
            bid_lists[i] = ask_lists[i] = ()
        nb = np.where(ok, nb, 0)
        na = np.where(ok, na, 0)
    per_book = nb + na
    total = int(per_book.sum())
    flat = np.fromiter(
        chain.from_iterable(
            chain.from_iterable(chain.from_iterable(zip(bid_lists, ask_lists, strict=True)))
        ),
        F,
    )
    if flat.shape != (2 * total,):
        raise ValueError("every book level must be a (price, qty) pair")
    full = bool(np.all(per_book == 2 * MAX_LEVELS))
    if full:
        levels = flat.reshape(n, 2 * MAX_LEVELS, 2)
    else:  # one scatter of the (price, qty) pairs to (book, side * 20 + level)
        rows = np.repeat(np.arange(n), per_book)
        k = np.arange(total) - np.repeat(np.cumsum(per_book) - per_book, per_book)
        nb_row = nb[rows]
        col = np.where(k < nb_row, k, k - nb_row + MAX_LEVELS)
        levels = np.zeros((n, 2 * MAX_LEVELS, 2), F)
        levels.reshape(-1, 2)[rows * (2 * MAX_LEVELS) + col] = flat.reshape(-1, 2)
    bp, bq, ap, aq = (
        np.ascontiguousarray(levels[:, side : side + MAX_LEVELS, part])
        for side in (0, MAX_LEVELS)
        for part in (0, 1)
    )
    if full:  # every value finite > 0 (a NaN fails both)
        values = flat.reshape(n, 4 * MAX_LEVELS)
        ok &= (values.min(axis=1) > 0.0) & (values.max(axis=1) < np.inf)
    cols = np.arange(MAX_LEVELS)[None, :]
    for p, q, count, descending in ((bp, bq, nb, True), (ap, aq, na, False)):
        wrong = ~(p[:, 1:] < p[:, :-1]) if descending else ~(p[:, 1:] > p[:, :-1])
        if not full:  # finite > 0 (a NaN fails both) where present; absent levels are zeros
            bad = ~((np.minimum(p, q) > 0.0) & (np.maximum(p, q) < np.inf))
            present = cols < count[:, None]
            bad &= present
            wrong &= present[:, 1:]
            ok &= ~np.any(bad, axis=1)
        ok &= ~np.any(wrong, axis=1)
    ok &= ~((nb > 0) & (na > 0) & (bp[:, 0] >= ap[:, 0]))
    return BookArrays(ts, bp, bq, ap, aq, nb, na), ok


def _accept_books(books: Sequence[BookEvent], static_ok: np.ndarray) -> list[int]:
    """The engine's sequential decision per book: skipped, rejected or accepted (0)."""
    codes = []
    last_seq: int | None = None
    last_ts: int | None = None
    for b, ok in zip(books, static_ok.tolist(), strict=True):
        seq = b.seq
        if last_seq is not None and seq <= last_seq:
            codes.append(SKIPPED)
        elif not ok or (last_ts is not None and b.ts < last_ts):
            codes.append(REJECTED)
        else:
            codes.append(0)
            last_seq = seq
            last_ts = b.ts
    return codes


def _accept_trades(trades: Sequence[TradeEvent]) -> tuple[TradeArrays, np.ndarray]:
    """The engine's decision per trade (accepted or rejected) and the accepted ones."""
    return _accept_trade_arrays(*_fields(trades, *_TRADE_FIELDS))


_TRADE_FIELDS = (("ts", np.int64), ("price", F), ("qty", F), ("is_buy", bool))


def _accept_trade_arrays(
    ts: np.ndarray, price: np.ndarray, qty: np.ndarray, buy: np.ndarray
) -> tuple[TradeArrays, np.ndarray]:
    good = (price > 0.0) & (price < np.inf) & (qty > 0.0) & (qty < np.inf)
    # accepted: good and not before the last accepted trade (= the latest good one before it)
    latest = np.maximum.accumulate(np.where(good, ts, np.iinfo(np.int64).min))
    before = np.concatenate(([np.iinfo(np.int64).min], latest[:-1]))
    ok = good & (ts >= before)
    return TradeArrays(ts[ok], price[ok], qty[ok], buy[ok]), ok


def _fields(
    events: Sequence[BookEvent] | Sequence[TradeEvent], *spec: tuple[str, type]
) -> list[np.ndarray]:
    """The named fields of every event, one array each."""
    n = len(events)
    return [np.fromiter(map(attrgetter(name), events), dtype, n) for name, dtype in spec]


def _thin(ts: list[int], min_interval_us: int) -> list[bool]:
    if not min_interval_us:
        return [True] * len(ts)
    out = []
    last: int | None = None
    for t in ts:
        if last is None or t - last >= min_interval_us:
            out.append(True)
            last = t
        else:
            out.append(False)
    return out


def _in_time_order(ts: np.ndarray) -> bool:
    return bool(np.all(ts[1:] >= ts[:-1]))


def batch_symbol_vectors(streams: SymbolStreams, min_interval_us: int) -> SymbolVectors:
    """``streams`` (finalized: every event's ``idx`` is its stream position) precomputed with
    ``compute_batch``; falls back to ``stream_symbol_vectors`` when a stream is out of order."""
    books, trades = streams.books, streams.trades
    b_idx, b_ts, seq = _fields(books, ("idx", np.int64), ("ts", np.int64), ("seq", np.int64))
    t_idx, *trade_fields = _fields(trades, ("idx", np.int64), *_TRADE_FIELDS)
    if np.any(b_idx != np.arange(len(books))) or np.any(t_idx != np.arange(len(trades))):
        raise ValueError(f"{streams.key}: streams are not numbered (events.finalize)")
    if not (_in_time_order(b_ts) and _in_time_order(trade_fields[0])):
        return stream_symbol_vectors(streams, min_interval_us)
    arrays, static_ok = _pack(books, b_ts)
    if np.all(seq[1:] > seq[:-1]):  # in time order too: no book is skipped or comes late
        codes = np.where(static_ok, 0, REJECTED)
    else:
        codes = np.asarray(_accept_books(books, static_ok))
    tarr, trade_ok = _accept_trade_arrays(*trade_fields)
    sel = np.flatnonzero(codes == 0)
    if len(sel) == len(books):
        accepted = arrays
    else:
        accepted = BookArrays(
            arrays.ts[sel],
            arrays.bid_p[sel],
            arrays.bid_q[sel],
            arrays.ask_p[sel],
            arrays.ask_q[sel],
            arrays.n_bid[sel],
            arrays.n_ask[sel],
        )
    if len(sel):  # the accepted books and trades passed the engine's checks above
        values, valid = compute_batch(accepted, tarr, validated=True)
    else:
        values, valid = np.zeros((0, N_FEATURES), F), np.zeros((0, N_FEATURES), bool)
    emit = np.asarray(_thin(accepted.ts.tolist(), min_interval_us), bool)
    rows = np.flatnonzero(emit)
    codes[sel] = np.where(emit, np.cumsum(emit) - 1, THINNED)
    if len(rows) != len(emit):
        values, valid = values[rows], valid[rows]
    return SymbolVectors(
        streams.key,
        codes.tolist(),
        trade_ok.tolist(),
        values,
        valid,
        [books[i] for i in sel[rows].tolist()],
        accepted.ts[rows],
        np.stack(
            (
                np.where(arrays.n_bid > 0, arrays.bid_p[:, 0], np.nan),
                np.where(arrays.n_ask > 0, arrays.ask_p[:, 0], np.nan),
            ),
            axis=1,
        ),
    )


def stream_symbol_vectors(streams: SymbolStreams, min_interval_us: int) -> SymbolVectors:
    """The same, event by event through ``FeatureState`` in the merge order (the reference,
    and the fallback for streams that are not in time order)."""
    books, trades = streams.books, streams.trades
    codes = [SKIPPED] * len(books)
    trade_ok = [False] * len(trades)
    f = FeatureState()
    vals: list[list[float]] = []
    oks: list[list[bool]] = []
    emitted: list[BookEvent] = []
    last_emit: int | None = None
    both: list[Sequence[Event]] = [books, trades]
    for e in heapq.merge(*both, key=sort_key):
        if e.kind == BOOK:
            assert isinstance(e, BookEvent)
            if f.last_seq is not None and e.seq <= f.last_seq:
                continue
            try:
                v, ok = f.on_book_lists(e.bids, e.asks, e.ts, e.local_ts, e.seq)
            except InvalidInputError:
                codes[e.idx] = REJECTED
                continue
            if min_interval_us and last_emit is not None and e.ts - last_emit < min_interval_us:
                codes[e.idx] = THINNED
                continue
            last_emit = e.ts
            codes[e.idx] = len(vals)
            vals.append(v)
            oks.append(ok)
            emitted.append(e)
        else:
            assert isinstance(e, TradeEvent)
            try:
                f.on_trade(e.price, e.qty, e.is_buy, e.ts)
                trade_ok[e.idx] = True
            except InvalidInputError:
                pass
    values = np.array(vals, F).reshape(len(vals), N_FEATURES)
    valid = np.array(oks, bool).reshape(len(oks), N_FEATURES)
    top = np.array(
        [(b.bids[0][0] if b.bids else np.nan, b.asks[0][0] if b.asks else np.nan) for b in books],
        F,
    ).reshape(len(books), 2)
    ts = np.array([b.ts for b in emitted], np.int64)
    return SymbolVectors(streams.key, codes, trade_ok, values, valid, emitted, ts, top, True)


# -- the imbalance rule over all of a symbol's vectors at once -------------------------------

BUY, SELL, HOLD = 0, 1, 2
_SIDES = ("buy", "sell", "hold")


def check_reasons(
    values: np.ndarray, normalized: np.ndarray, valid: np.ndarray, required: Sequence[int]
) -> list[str | None]:
    """``check_vector`` over every row (feature set and shape hold by construction): the
    refusal reason per row, or None."""
    names = (None, NON_FINITE, INVALID_FEATURE)
    return [names[r] for r in _check_codes(values, normalized, valid, required).tolist()]


def _check_codes(
    values: np.ndarray, normalized: np.ndarray, valid: np.ndarray, required: Sequence[int]
) -> np.ndarray:
    """``check_reasons`` as codes: 0 kept, 1 non-finite, 2 invalid feature."""
    idx = np.asarray(required, dtype=np.intp)
    finite = np.all(np.isfinite(values[:, idx]) & np.isfinite(normalized[:, idx]), axis=1)
    ok = np.all(valid[:, idx], axis=1)
    return np.where(~finite, 1, np.where(~ok, 2, 0))


def imbalance_offers(
    strategy: ImbalanceStrategy, key: str, values: np.ndarray, ts: np.ndarray
) -> list[int]:
    """Rows (of ``values``, the symbol's checked vectors in time order) at which
    ``strategy.decide`` publishes a decision, without calling it per row.

    ``ImbalanceStrategy`` keeps one state per symbol, the signal gate's last published side
    and time, and it changes only where the gate accepts an offer. Between two such rows the
    rule's side is a pure function of the row given that side, so it is evaluated for all
    rows for each of the three possible current sides, and the walk jumps from one accepted
    offer to the next: the first later row whose side differs from the current one and that
    is at least the cooldown after the previous offer (the gate's conditions)."""
    n = len(values)
    if n == 0:
        return []
    rule = strategy.rule
    x = values
    share = (x[:, strategy.feature] + 1.0) / 2.0
    from depthflow.strategy.imbalance import (
        ASK_CLUSTER_PRICE,
        ASK_CLUSTER_VOLUME,
        BID_CLUSTER_PRICE,
        BID_CLUSTER_VOLUME,
    )

    bid_cluster = x[:, BID_CLUSTER_VOLUME] * x[:, BID_CLUSTER_PRICE]
    ask_cluster = x[:, ASK_CLUSTER_VOLUME] * x[:, ASK_CLUSTER_PRICE]
    base = np.where(
        share >= rule.buy_threshold,
        np.where(bid_cluster >= rule.min_cluster_volume, BUY, HOLD),
        np.where(
            share <= rule.sell_threshold,
            np.where(ask_cluster >= rule.min_cluster_volume, SELL, HOLD),
            HOLD,
        ),
    )
    side_if = {
        BUY: np.where(share >= rule.buy_threshold - rule.hysteresis, BUY, base),
        SELL: np.where(share <= rule.sell_threshold + rule.hysteresis, SELL, base),
        HOLD: base,
    }
    # next_change[c][i]: the first row >= i whose side differs from c (n: none)
    rows = np.arange(n)
    next_change = {
        c: np.minimum.accumulate(np.where(side != c, rows, n)[::-1])[::-1]
        for c, side in side_if.items()
    }
    gate = strategy.gate
    cur = _SIDES.index(gate.current(key))
    last = gate.last_ts_us.get(key)
    cooldown = gate.cooldown_us
    # after an offer at row j, the gate is shut until the first row cooldown after it
    reopen = np.searchsorted(ts, ts + cooldown, side="left")
    offers = []
    pos = 0 if last is None else int(np.searchsorted(ts, last + cooldown, side="left"))
    while pos < n:
        j = int(next_change[cur][pos])
        if j >= n:
            break
        offers.append(j)
        cur = int(side_if[cur][j])
        pos = max(j + 1, int(reopen[j]))
    return offers


@dataclass
class SymbolDecisions:
    """Per row of a symbol's vectors: the refusal reason (None: kept) and, where the
    strategy published one, the vector and the decision."""

    refusal: list[str | None]
    decisions: dict[int, tuple[VectorInput, Decision]]


def decide_imbalance(
    strategy: ImbalanceStrategy, sv: SymbolVectors, scaler: ActiveScaler | None
) -> SymbolDecisions:
    """The strategy's checks and decisions for every vector of one symbol. The decisions
    themselves come from ``strategy.decide`` (the live code), called on the rows
    ``imbalance_offers`` finds: that gives the same decisions and leaves the strategy in the
    same state as deciding every row."""
    normalized = scaler.apply(sv.values) if scaler else sv.values
    codes = _check_codes(sv.values, normalized, sv.valid, strategy.required)
    names = (None, NON_FINITE, INVALID_FEATURE)
    refusal = [names[r] for r in codes.tolist()]
    rows = np.flatnonzero(codes == 0)
    kept = sv.values if len(rows) == len(codes) else sv.values[rows]
    scaler_version = scaler.version if scaler else ""
    decisions: dict[int, tuple[VectorInput, Decision]] = {}
    for j in imbalance_offers(strategy, sv.key, kept, sv.ts[rows]):
        r = int(rows[j])
        b = sv.books[r]
        v = VectorInput(
            b.exchange,
            b.symbol,
            FEATURE_SET_VERSION,
            b.seq,
            b.ts,
            sv.values[r],
            normalized[r],
            sv.valid[r],
            scaler_version,
            b.trace_id,
        )
        (d,) = strategy.decide([v])
        if d is None:  # the walk above and the live gate disagree: a bug, never guess
            raise RuntimeError(f"{sv.key} book {b.seq}: predicted a signal the strategy did not")
        decisions[r] = (v, d)
    return SymbolDecisions(refusal, decisions)
