"""The 50 order-book features, incrementally, one top-20 book update at a time.

Each ``OrderBookFeatures.on_book`` call costs O(levels): a few passes over at most 20 levels
per side, plus O(1) amortised work on the trailing-window deques and exponentially weighted
(EW) accumulators that carry the temporal features. Plain Python floats are used on purpose:
for 20 levels they are several times faster than building numpy arrays.

Conventions (shared with ``batch``): bids best-first with strictly decreasing prices, asks
best-first with strictly increasing prices, every price and quantity finite and > 0, best bid
< best ask, book timestamps non-decreasing, trade timestamps non-decreasing. Anything else
raises ``InvalidInputError`` before any state changes ("corrupt data is worse than no data").
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

from depthflow.features.names import EW_MIN_OBS, EW_SPAN, N_ORDERBOOK, RATE_WINDOW_US

MAX_LEVELS = 20
ALPHA = 2.0 / (EW_SPAN + 1.0)
BETA = 1.0 - ALPHA
VAR_GAIN = BETA * ALPHA  # EW variance: v = VAR_GAIN * d*d + BETA * v
RATE_SECONDS = RATE_WINDOW_US / 1e6
AMIHUD_MIN_NOTIONAL = 1e-9
_INF = math.inf

# A (price, qty) pair: a 2-list as decoded from JSON, or a 2-tuple (synthetic data, batch).
Level = Sequence[float]


class InvalidInputError(ValueError):
    """A book or trade that breaks the input conventions; nothing was changed."""


def _scan(levels: Sequence[Level], descending: bool, side: str) -> tuple[float, ...]:
    """Validate one side and return (d5, d10, total, notional5, notional10, max_q_price)."""
    d5 = d10 = dt = l5 = l10 = 0.0
    best_q = -1.0
    best_p = 0.0
    last = -1.0
    i = 0
    for p, q in levels:
        if not (0.0 < p < _INF and 0.0 < q < _INF):
            raise InvalidInputError(f"{side} level {i}: price {p!r} qty {q!r} not finite > 0")
        if i and (p >= last if descending else p <= last):
            raise InvalidInputError(
                f"{side} prices not strictly {'de' if descending else 'in'}creasing at level {i}"
            )
        last = p
        dt += q
        if i < 10:
            pq = p * q
            d10 += q
            l10 += pq
            if i < 5:
                d5 += q
                l5 += pq
        if q > best_q:
            best_q = q
            best_p = p
        i += 1
    if i > MAX_LEVELS:
        raise InvalidInputError(f"{side}: {i} levels, at most {MAX_LEVELS}")
    return d5, d10, dt, l5, l10, best_p


def _clusters(levels: Sequence[Level], mean: float, large: float) -> tuple[float, ...]:
    """Runs of consecutive levels with q >= mean: (count, best price, best volume, large q)."""
    n = 0
    best_v = -1.0
    best_pv = 0.0
    cv = cpv = 0.0
    run = False
    big = 0.0
    for p, q in levels:
        if q >= large:
            big += q
        if q >= mean:
            if not run:
                n += 1
                cv = cpv = 0.0
                run = True
            cv += q
            cpv += p * q
        elif run:
            if cv > best_v:
                best_v = cv
                best_pv = cpv
            run = False
    if run and cv > best_v:
        best_v = cv
        best_pv = cpv
    return float(n), best_pv / best_v, best_v, big


class _Ew:
    """EW mean and variance of one series (first observation seeds the mean)."""

    __slots__ = ("m", "n", "v")

    def __init__(self) -> None:
        self.m = 0.0
        self.v = 0.0
        self.n = 0

    def add(self, x: float) -> None:
        if self.n:
            d = x - self.m
            self.m = ALPHA * x + BETA * self.m
            self.v = VAR_GAIN * (d * d) + BETA * self.v
        else:
            self.m = x
        self.n += 1

    def std(self) -> float | None:
        return math.sqrt(self.v) if self.n >= EW_MIN_OBS else None

    def dump(self) -> list[float]:
        return [self.m, self.v, float(self.n)]

    def load(self, s: Sequence[float]) -> None:
        self.m, self.v, self.n = float(s[0]), float(s[1]), int(s[2])


def ew_means_add(means: list[float], xs: Sequence[float], n: int) -> None:
    """EW-average each of ``xs`` into ``means`` in place (``n`` = observations so far)."""
    if n:
        for k, x in enumerate(xs):
            means[k] = ALPHA * x + BETA * means[k]
    else:
        means[:] = xs


class OrderBookFeatures:
    """Streaming state of the 50 order-book features for one symbol."""

    def __init__(self) -> None:
        self.bid_levels: dict[float, tuple[float, int]] = {}  # price -> (qty, first seen µs)
        self.ask_levels: dict[float, tuple[float, int]] = {}
        self.prev_best: tuple[float, float, float, float] | None = None  # b1, qb1, a1, qa1
        self.prev_mid: float | None = None
        self.first_book_ts: int | None = None
        self.last_book_ts: int | None = None
        self.books: deque[tuple[int, int, float, float]] = deque()  # ts, changes, churn b/a
        self.book_changes = 0
        self.book_churn_b = 0.0
        self.book_churn_a = 0.0
        self.trades: deque[tuple[int, float, bool]] = deque()  # ts, qty, taker buy
        self.trade_buy_q = 0.0
        self.trade_all_q = 0.0
        self.last_trade_ts: int | None = None
        self.last_trade_price: float | None = None
        self.last_dp: float | None = None
        self.last_es: float | None = None
        self.interval_sv = 0.0  # signed trade qty since the last book
        self.interval_notional = 0.0
        self.ew_ret = _Ew()
        self.ew_spread = _Ew()
        self.kyle = [0.0, 0.0, 0.0, 0.0]  # E[x], E[y], E[xy], E[xx]; x = signed qty, y = dmid
        self.kyle_n = 0
        self.amihud = [0.0, 0.0]  # E|r| (bps), E[notional]
        self.amihud_n = 0
        self.roll = [0.0, 0.0, 0.0]  # E[a], E[b], E[ab]; a = dp_t, b = dp_t-1
        self.roll_n = 0

    # -- trades ------------------------------------------------------------------------------

    def on_trade(self, price: float, qty: float, is_buy: bool, ts_us: int) -> None:
        """Account one trade (taker side ``is_buy``) in the trade-driven features."""
        if not (0.0 < price < _INF and 0.0 < qty < _INF):
            raise InvalidInputError(f"trade price {price!r} qty {qty!r} not finite > 0")
        if self.last_trade_ts is not None and ts_us < self.last_trade_ts:
            raise InvalidInputError(f"trade ts {ts_us} < previous {self.last_trade_ts}")
        self.last_trade_ts = ts_us
        self.trades.append((ts_us, qty, is_buy))
        if is_buy:
            self.trade_buy_q += qty
            self.interval_sv += qty
        else:
            self.interval_sv -= qty
        self.trade_all_q += qty
        self.interval_notional += price * qty
        mid = self.prev_mid
        self.last_es = 2.0 * abs(price - mid) / mid * 1e4 if mid is not None else None
        last = self.last_trade_price
        if last is not None:
            dp = price - last
            if self.last_dp is not None:
                b = self.last_dp
                ew_means_add(self.roll, (dp, b, dp * b), self.roll_n)
                self.roll_n += 1
            self.last_dp = dp
        self.last_trade_price = price

    # -- books -------------------------------------------------------------------------------

    def on_book(
        self,
        bids: Sequence[Level],
        asks: Sequence[Level],
        ts_us: int,
        values: list[float],
        valid: list[bool],
    ) -> None:
        """Apply one book update; append its 50 values and validity flags to the lists."""
        sb = _scan(bids, True, "bid")
        sa = _scan(asks, False, "ask")
        nb = len(bids)
        na = len(asks)
        if nb and na and bids[0][0] >= asks[0][0]:
            raise InvalidInputError(f"crossed book: bid {bids[0][0]} >= ask {asks[0][0]}")
        if self.last_book_ts is not None and ts_us < self.last_book_ts:
            raise InvalidInputError(f"book ts {ts_us} < previous {self.last_book_ts}")
        # ---- validated: state changes from here on
        if self.first_book_ts is None:
            self.first_book_ts = ts_us
        self.last_book_ts = ts_us
        warm = ts_us - self.first_book_ts >= RATE_WINDOW_US
        db5, db10, tb, lb5, lb10, sup = sb
        da5, da10, ta, la5, la10, res = sa
        both = nb > 0 and na > 0
        v = values
        ok = valid
        if both:
            b1, qb1 = bids[0]
            a1, qa1 = asks[0]
            spread = a1 - b1
            mid = (a1 + b1) / 2.0
            micro = (b1 * qa1 + a1 * qb1) / (qb1 + qa1)
            spread_rel = spread / mid * 1e4
            v += (spread, spread_rel, mid, micro)
            ok += (True, True, True, True)
        else:
            mid = spread_rel = 0.0
            b1 = qb1 = a1 = qa1 = 0.0
            v += (0.0, 0.0, 0.0, 0.0)
            ok += (False, False, False, False)
        if nb:
            v += (lb5 / db5, 0.0, lb10 / db10, 0.0)
        else:
            v += (0.0, 0.0, 0.0, 0.0)
        if na:
            v[-3] = la5 / da5
            v[-1] = la10 / da10
        ok += (nb > 0, na > 0, nb > 0, na > 0)
        v += (db5, da5, db10, da10, tb, ta)
        ok += (True, True, True, True, True, True)
        # book_depth_ratio, imbalance_5/10/total
        if ta > 0.0:
            v.append(tb / ta)
            ok.append(True)
        else:
            v.append(1.0)
            ok.append(False)
        if nb or na:
            v += ((db5 - da5) / (db5 + da5), (db10 - da10) / (db10 + da10), (tb - ta) / (tb + ta))
            ok += (True, True, True)
        else:
            v += (0.0, 0.0, 0.0)
            ok += (False, False, False)
        # price_pressure, volume_delta_5
        v += ((micro - mid) / mid * 1e4 if both else 0.0, db5 - da5)
        ok += (both, True)
        # order_flow_imbalance
        pb = self.prev_best
        if both and pb is not None:
            pb1, pqb1, pa1, pqa1 = pb
            e = 0.0
            if b1 >= pb1:
                e += qb1
            if b1 <= pb1:
                e -= pqb1
            if a1 <= pa1:
                e -= qa1
            if a1 >= pa1:
                e += pqa1
            v.append(e)
            ok.append(True)
        else:
            v.append(0.0)
            ok.append(False)
        self.prev_best = (b1, qb1, a1, qa1) if both else None

        # ---- level diff: churn, changes, ages
        changes = 0
        churn_b = churn_a = 0.0
        age_sum = 0
        ages: list[int] = []
        new_b: dict[float, tuple[float, int]] = {}
        old = self.bid_levels
        for p, q in bids:
            o = old.get(p)
            if o is None:
                changes += 1
                churn_b += q
                new_b[p] = (q, ts_us)
                ages.append(0)
            else:
                if o[0] != q:
                    changes += 1
                    churn_b += abs(q - o[0])
                new_b[p] = (q, o[1])
                a = ts_us - o[1]
                age_sum += a
                ages.append(a)
        for p, o in old.items():
            if p not in new_b:
                changes += 1
                churn_b += o[0]
        new_a: dict[float, tuple[float, int]] = {}
        old = self.ask_levels
        for p, q in asks:
            o = old.get(p)
            if o is None:
                changes += 1
                churn_a += q
                new_a[p] = (q, ts_us)
                ages.append(0)
            else:
                if o[0] != q:
                    changes += 1
                    churn_a += abs(q - o[0])
                new_a[p] = (q, o[1])
                a = ts_us - o[1]
                age_sum += a
                ages.append(a)
        for p, o in old.items():
            if p not in new_a:
                changes += 1
                churn_a += o[0]
        self.bid_levels = new_b
        self.ask_levels = new_a

        # ---- book window
        bw = self.books
        bw.append((ts_us, changes, churn_b, churn_a))
        self.book_changes += changes
        self.book_churn_b += churn_b
        self.book_churn_a += churn_a
        cut = ts_us - RATE_WINDOW_US
        while bw[0][0] <= cut:
            _, c0, cb0, ca0 = bw.popleft()
            self.book_changes -= c0
            self.book_churn_b -= cb0
            self.book_churn_a -= ca0
        tw = self.trades
        while tw and tw[0][0] <= cut:
            _, q0, buy0 = tw.popleft()
            if buy0:
                self.trade_buy_q -= q0
            self.trade_all_q -= q0
        if not tw:
            self.trade_buy_q = self.trade_all_q = 0.0

        # bid_intensity, ask_intensity, buy_sell_ratio
        if warm:
            v += (self.book_churn_b / RATE_SECONDS, self.book_churn_a / RATE_SECONDS)
            ok += (True, True)
        else:
            v += (0.0, 0.0)
            ok += (False, False)
        if warm and tw:
            v.append(self.trade_buy_q / self.trade_all_q)
            ok.append(True)
        else:
            v.append(0.5)
            ok.append(False)
        # smart_money_index and clusters
        n_all = nb + na
        mean_all = (tb + ta) / n_all if n_all else 0.0
        large = 2.0 * mean_all
        if nb:
            nbc, bcp, bcv, big_b = _clusters(bids, tb / nb, large)
        else:
            nbc = bcp = bcv = big_b = 0.0
        if na:
            nac, acp, acv, big_a = _clusters(asks, ta / na, large)
        else:
            nac = acp = acv = big_a = 0.0
        if both and big_b + big_a > 0.0:
            v.append((big_b - big_a) / (big_b + big_a))
        else:
            v.append(0.0)
        ok.append(both)
        hb = nb > 0
        ha = na > 0
        v += (bcp, bcv, acp, acv, nbc, nac, sup, res)
        ok += (hb, hb, ha, ha, hb, ha, hb, ha)
        if both:
            v += ((mid - sup) / mid * 1e4, (res - mid) / mid * 1e4)
        else:
            v += (0.0, 0.0)
        ok += (both, both)
        # liquidity_bid_5, liquidity_ask_5, liquidity_asymmetry
        v += (lb5, la5)
        ok += (True, True)
        if nb or na:
            v.append((lb5 - la5) / (lb5 + la5))
            ok.append(True)
        else:
            v.append(0.0)
            ok.append(False)
        # effective_spread
        es = self.last_es
        v.append(0.0 if es is None else es)
        ok.append(es is not None)

        # ---- per-interval observations: return, dmid, signed qty, notional
        pm = self.prev_mid
        sv = self.interval_sv
        notional = self.interval_notional
        self.interval_sv = self.interval_notional = 0.0
        if both:
            self.ew_spread.add(spread_rel)
            if pm is not None:
                r = math.log(mid / pm) * 1e4
                dm = mid - pm
                self.ew_ret.add(r)
                ew_means_add(self.kyle, (sv, dm, sv * dm, sv * sv), self.kyle_n)
                self.kyle_n += 1
                ew_means_add(self.amihud, (abs(r), notional), self.amihud_n)
                self.amihud_n += 1
            self.prev_mid = mid
        else:
            self.prev_mid = None
        # kyle_lambda
        ex, ey, exy, exx = self.kyle
        var_x = exx - ex * ex
        if self.kyle_n >= EW_MIN_OBS and exx > 0.0 and var_x > 1e-9 * exx:
            v.append((exy - ex * ey) / var_x)
            ok.append(True)
        else:
            v.append(0.0)
            ok.append(False)
        # amihud_illiquidity
        er, en = self.amihud
        if self.amihud_n >= EW_MIN_OBS and en > AMIHUD_MIN_NOTIONAL:
            v.append(1e6 * er / en)
            ok.append(True)
        else:
            v.append(0.0)
            ok.append(False)
        # roll_spread
        if self.roll_n >= EW_MIN_OBS:
            ea, eb, eab = self.roll
            cov = eab - ea * eb
            v.append(2.0 * math.sqrt(-cov) if cov < 0.0 else 0.0)
            ok.append(True)
        else:
            v.append(0.0)
            ok.append(False)
        # depth_imbalance_ratio
        if both:
            v.append(math.log(db10 / da10))
            ok.append(True)
        else:
            v.append(0.0)
            ok.append(False)
        # level_ttl_avg, level_ttl_std
        if warm and n_all:
            mean_age = age_sum / n_all
            ss = 0.0
            for a in ages:
                d = a - mean_age
                ss += d * d
            v += (mean_age / 1e6, math.sqrt(ss / n_all) / 1e6)
            ok += (True, True)
        else:
            v += (0.0, 0.0)
            ok += (False, False)
        # orderbook_volatility
        s = self.ew_ret.std()
        v.append(0.0 if s is None else s)
        ok.append(s is not None)
        # update_frequency, quote_intensity, trade_arrival_rate
        if warm:
            v += (len(bw) / RATE_SECONDS, self.book_changes / RATE_SECONDS, len(tw) / RATE_SECONDS)
            ok += (True, True, True)
        else:
            v += (0.0, 0.0, 0.0)
            ok += (False, False, False)
        # spread_volatility
        s = self.ew_spread.std()
        v.append(0.0 if s is None else s)
        ok.append(s is not None)

    # -- state -------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Everything as plain JSON-able values (lists, floats, ints, bools, None)."""
        return {
            "bid_levels": [[p, q, f] for p, (q, f) in self.bid_levels.items()],
            "ask_levels": [[p, q, f] for p, (q, f) in self.ask_levels.items()],
            "prev_best": None if self.prev_best is None else list(self.prev_best),
            "prev_mid": self.prev_mid,
            "first_book_ts": self.first_book_ts,
            "last_book_ts": self.last_book_ts,
            "books": [list(b) for b in self.books],
            "book_sums": [self.book_changes, self.book_churn_b, self.book_churn_a],
            "trades": [list(t) for t in self.trades],
            "trade_sums": [self.trade_buy_q, self.trade_all_q],
            "last_trade_ts": self.last_trade_ts,
            "last_trade_price": self.last_trade_price,
            "last_dp": self.last_dp,
            "last_es": self.last_es,
            "interval": [self.interval_sv, self.interval_notional],
            "ew_ret": self.ew_ret.dump(),
            "ew_spread": self.ew_spread.dump(),
            "kyle": [*self.kyle, self.kyle_n],
            "amihud": [*self.amihud, self.amihud_n],
            "roll": [*self.roll, self.roll_n],
        }

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> OrderBookFeatures:
        """Rebuild from ``to_state`` output; the restored object continues identically."""
        o = cls()
        o.bid_levels = {float(p): (float(q), int(f)) for p, q, f in s["bid_levels"]}
        o.ask_levels = {float(p): (float(q), int(f)) for p, q, f in s["ask_levels"]}
        pb = s["prev_best"]
        o.prev_best = None if pb is None else (pb[0], pb[1], pb[2], pb[3])
        o.prev_mid = s["prev_mid"]
        o.first_book_ts = s["first_book_ts"]
        o.last_book_ts = s["last_book_ts"]
        o.books = deque((int(t), int(c), float(b), float(a)) for t, c, b, a in s["books"])
        o.book_changes, o.book_churn_b, o.book_churn_a = (
            int(s["book_sums"][0]),
            float(s["book_sums"][1]),
            float(s["book_sums"][2]),
        )
        o.trades = deque((int(t), float(q), bool(b)) for t, q, b in s["trades"])
        o.trade_buy_q, o.trade_all_q = (float(x) for x in s["trade_sums"])
        o.last_trade_ts = s["last_trade_ts"]
        o.last_trade_price = s["last_trade_price"]
        o.last_dp = s["last_dp"]
        o.last_es = s["last_es"]
        o.interval_sv, o.interval_notional = (float(x) for x in s["interval"])
        o.ew_ret.load(s["ew_ret"])
        o.ew_spread.load(s["ew_spread"])
        *o.kyle, o.kyle_n = s["kyle"]
        o.kyle = [float(x) for x in o.kyle]
        o.kyle_n = int(o.kyle_n)
        *o.amihud, o.amihud_n = s["amihud"]
        o.amihud = [float(x) for x in o.amihud]
        o.amihud_n = int(o.amihud_n)
        *o.roll, o.roll_n = s["roll"]
        o.roll = [float(x) for x in o.roll]
        o.roll_n = int(o.roll_n)
        return o


assert N_ORDERBOOK == 50
