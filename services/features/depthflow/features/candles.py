"""1-minute candles from trades (from book mid-prices when a minute has no trade) and the
25 candle features of the last closed candle.

Minutes are ``exchange_ts_us // 60_000_000``. The candle clock starts at the first minute
that carries a price (a trade, or a book with both sides). A minute closes when an event of
a later minute arrives; minutes with no trade and no mid in between become flat candles at
the previous close with zero volume. An event of an already closed minute (out of order)
is not counted in any candle.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, NamedTuple

from depthflow.features.names import N_CANDLE, channel_defaults

_LN2 = math.log(2.0)
_PARK = 1.0 / (4.0 * _LN2 * 20.0)
_GK = 2.0 * _LN2 - 1.0


class Candle(NamedTuple):
    """One closed 1-minute candle; ``notional`` = sum(price * qty) of its trades."""

    minute: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    notional: float
    trades: int


class CandleBuilder:
    """Aggregates trades and mid-prices into 1-minute candles."""

    def __init__(self) -> None:
        self.minute: int | None = None
        self.t = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # trade o, h, l, c, volume, notional
        self.n = 0
        self.m = [0.0, 0.0, 0.0, 0.0]  # mid o, h, l, c
        self.has_mid = False
        self.last_close: float | None = None
        self.late_events = 0

    def _close(self) -> Candle:
        mi = self.minute
        assert mi is not None
        if self.n:
            o, h, lo, c, v, nt = self.t
            cd = Candle(mi, o, h, lo, c, v, nt, self.n)
        elif self.has_mid:
            o, h, lo, c = self.m
            cd = Candle(mi, o, h, lo, c, 0.0, 0.0, 0)
        else:
            prev = self.last_close
            assert prev is not None
            cd = Candle(mi, prev, prev, prev, prev, 0.0, 0.0, 0)
        self.last_close = cd.close
        self.n = 0
        self.has_mid = False
        return cd

    def advance(self, minute: int, out: list[Candle]) -> bool:
        """Close every minute before ``minute`` into ``out``; False if ``minute`` is late."""
        cur = self.minute
        if cur is None:
            return True
        if minute <= cur:
            if minute < cur:
                self.late_events += 1
                return False
            return True
        out.append(self._close())
        for mi in range(cur + 1, minute):
            c = self.last_close
            assert c is not None
            out.append(Candle(mi, c, c, c, c, 0.0, 0.0, 0))
        self.minute = minute
        return True

    def on_trade(self, price: float, qty: float, minute: int, out: list[Candle]) -> None:
        """Add a trade; candles it closes are appended to ``out``."""
        if not self.advance(minute, out):
            return
        if self.minute is None:
            self.minute = minute
        t = self.t
        if self.n:
            if price > t[1]:
                t[1] = price
            if price < t[2]:
                t[2] = price
            t[3] = price
            t[4] += qty
            t[5] += price * qty
        else:
            t[0] = t[1] = t[2] = t[3] = price
            t[4] = qty
            t[5] = price * qty
        self.n += 1

    def on_book(self, mid: float | None, minute: int, out: list[Candle]) -> None:
        """Advance the clock to a book's minute and record its mid (None: a side is empty)."""
        if not self.advance(minute, out):
            return
        if mid is None:
            return
        if self.minute is None:
            self.minute = minute
        m = self.m
        if self.has_mid:
            if mid > m[1]:
                m[1] = mid
            if mid < m[2]:
                m[2] = mid
            m[3] = mid
        else:
            m[0] = m[1] = m[2] = m[3] = mid
            self.has_mid = True

    def to_state(self) -> dict[str, Any]:
        """Plain JSON-able state."""
        return {
            "minute": self.minute,
            "t": list(self.t),
            "n": self.n,
            "m": list(self.m),
            "has_mid": self.has_mid,
            "last_close": self.last_close,
            "late_events": self.late_events,
        }

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> CandleBuilder:
        """Inverse of ``to_state``."""
        b = cls()
        b.minute = s["minute"]
        b.t = [float(x) for x in s["t"]]
        b.n = int(s["n"])
        b.m = [float(x) for x in s["m"]]
        b.has_mid = bool(s["has_mid"])
        b.last_close = s["last_close"]
        b.late_events = int(s["late_events"])
        return b


def candle_from_list(x: list[Any]) -> Candle:
    """A candle from its serialised list form."""
    return Candle(
        int(x[0]),
        float(x[1]),
        float(x[2]),
        float(x[3]),
        float(x[4]),
        float(x[5]),
        float(x[6]),
        int(x[7]),
    )


class CandleFeatures:
    """The 25 candle features of the last closed candle (recomputed once per candle)."""

    def __init__(self) -> None:
        self.window: deque[Candle] = deque(maxlen=21)
        self.count = 0
        self.values: list[float] = channel_defaults("candle")
        self.valid: list[bool] = [False] * N_CANDLE

    def on_candle(self, c: Candle) -> None:
        """Take one closed candle and refresh ``values``/``valid``."""
        w = self.window
        w.append(c)
        self.count += 1
        o, h, lo, cl, vol = c.open, c.high, c.low, c.close, c.volume
        tp = (h + lo + cl) / 3.0
        rng = h - lo
        body = abs(cl - o)
        upper = h - max(o, cl)
        lower = min(o, cl) - lo
        v: list[float] = [o, h, lo, cl, vol, tp]
        ok: list[bool] = [True] * 6
        prev = w[-2] if len(w) >= 2 else None
        if prev is not None:
            ret = cl / prev.close - 1.0
            v += (ret, math.log(cl / prev.close))
            ok += (True, True)
        else:
            ret = 0.0
            v += (0.0, 0.0)
            ok += (False, False)
        v += (rng, cl - o, upper, lower, body)
        ok += (True, True, True, True, True)
        # realized, parkinson, garman-klass over 20 candles
        if len(w) >= 21:
            s = 0.0
            for i in range(1, 21):
                r = math.log(w[i].close / w[i - 1].close)
                s += r * r
            v.append(math.sqrt(s))
            ok.append(True)
        else:
            v.append(0.0)
            ok.append(False)
        if self.count >= 20:
            sp = sg = sv = 0.0
            for i in range(len(w) - 20, len(w)):
                k = w[i]
                hl = math.log(k.high / k.low)
                co = math.log(k.close / k.open)
                sp += hl * hl
                sg += 0.5 * hl * hl - _GK * co * co
                sv += k.volume
            v += (math.sqrt(sp * _PARK), math.sqrt(max(0.0, sg / 20.0)))
            ok += (True, True)
            vma = sv / 20.0
            if vma > 0.0:
                v.append(vol / vma)
                ok.append(True)
            else:
                v.append(1.0)
                ok.append(False)
        else:
            v += (0.0, 0.0, 1.0)
            ok += (False, False, False)
        if prev is not None and prev.volume > 0.0:
            v.append(vol / prev.volume - 1.0)
            ok.append(True)
        else:
            v.append(0.0)
            ok.append(False)
        v.append(ret * vol)
        ok.append(prev is not None)
        if vol > 0.0:
            v.append(c.notional / vol)
            ok.append(True)
        else:
            v.append(0.0)
            ok.append(False)
        v.append(tp * vol)
        ok.append(True)
        if rng > 0.0:
            v.append(1.0 - body / rng)
            v.append(lower / rng if lower >= 2.0 * body and upper <= body else 0.0)
            ok += (True, True)
        else:
            v += (0.0, 0.0)
            ok += (False, False)
        if prev is not None:
            eng = 0.0
            pd = prev.close - prev.open
            cd = cl - o
            if (
                (pd > 0.0 > cd or pd < 0.0 < cd)
                and min(o, cl) <= min(prev.open, prev.close)
                and max(o, cl) >= max(prev.open, prev.close)
            ):
                eng = math.copysign(1.0 - abs(pd) / body, cd)
            v += (eng, (o - prev.close) / prev.close * 1e4)
            ok += (True, True)
        else:
            v += (0.0, 0.0)
            ok += (False, False)
        self.values = v
        self.valid = ok

    def to_state(self) -> dict[str, Any]:
        """Plain JSON-able state."""
        return {
            "window": [list(c) for c in self.window],
            "count": self.count,
            "values": list(self.values),
            "valid": list(self.valid),
        }

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> CandleFeatures:
        """Inverse of ``to_state``."""
        f = cls()
        f.window.extend(candle_from_list(x) for x in s["window"])
        f.count = int(s["count"])
        f.values = [float(x) for x in s["values"]]
        f.valid = [bool(x) for x in s["valid"]]
        return f
