"""The 35 indicator features, updated incrementally once per closed 1-minute candle.

Recursive indicators (EMA, MACD, Wilder's RSI/ATR/ADX, OBV, A/D, VPT, NVI) keep O(1) state;
window indicators read at most the last 50 candles. Following the seed, every indicator is
flagged invalid (and carries its default) until 50 candles have closed; the recursions run
from the first candle so the values are warmed up by then.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from depthflow.features.candles import Candle, candle_from_list
from depthflow.features.names import MIN_CANDLES_INDICATORS, N_INDICATOR, channel_defaults

_EMA_PERIODS = (10, 20, 50, 12, 26)
_SCALARS = (
    "count",
    "macd_signal",
    "ntr",
    "atr",
    "s_tr",
    "s_pdm",
    "s_mdm",
    "seed_tr",
    "ndx",
    "seed_dx",
    "adx",
    "obv",
    "ad",
    "vpt",
    "nvi",
)


class IndicatorState:
    """Streaming state of the 35 indicators for one symbol."""

    def __init__(self) -> None:
        self.window: deque[Candle] = deque(maxlen=MIN_CANDLES_INDICATORS)
        self.count = 0
        self.ema: dict[int, float | None] = dict.fromkeys(_EMA_PERIODS)
        self.macd_hist: list[float] = []  # macd values until the signal is seeded
        self.macd_signal: float | None = None
        self.ntr = 0  # true ranges seen (from the 2nd candle)
        self.atr = 0.0
        self.s_tr = self.s_pdm = self.s_mdm = 0.0  # Wilder sums (TA-Lib style) for DI
        self.seed_tr = 0.0
        self.ndx = 0
        self.seed_dx = 0.0
        self.adx = 0.0
        self.rsi: dict[int, list[float]] = {14: [0.0, 0.0, 0], 28: [0.0, 0.0, 0]}
        self.stoch_k: deque[float] = deque(maxlen=3)
        self.obv = 0.0
        self.ad = 0.0
        self.vpt = 0.0
        self.nvi = 1000.0
        self.values: list[float] = channel_defaults("indicator")
        self.valid: list[bool] = [False] * N_INDICATOR

    def _ema(self, n: int, closes: list[float]) -> float | None:
        e = self.ema[n]
        c = closes[-1]
        if e is not None:
            a = 2.0 / (n + 1.0)
            e = a * c + (1.0 - a) * e
        elif len(closes) >= n:
            s = 0.0
            for x in closes[-n:]:
                s += x
            e = s / n
        self.ema[n] = e
        return e

    def on_candle(self, c: Candle) -> None:
        """Take one closed candle and refresh ``values``/``valid``."""
        w = self.window
        prev = w[-1] if w else None
        w.append(c)
        self.count += 1
        cl, h, lo, vol = c.close, c.high, c.low, c.volume
        closes = [k.close for k in w]
        for n in _EMA_PERIODS:
            self._ema(n, closes)
        # MACD
        e12, e26 = self.ema[12], self.ema[26]
        macd = e12 - e26 if e12 is not None and e26 is not None else None
        if macd is not None:
            if self.macd_signal is not None:
                a = 2.0 / 10.0
                self.macd_signal = a * macd + (1.0 - a) * self.macd_signal
            else:
                self.macd_hist.append(macd)
                if len(self.macd_hist) == 9:
                    s = 0.0
                    for x in self.macd_hist:
                        s += x
                    self.macd_signal = s / 9.0
                    self.macd_hist = []
        # Wilder: TR, DM, ATR, DI, ADX; RSI; OBV, VPT, NVI
        pdi = mdi = 0.0
        if prev is not None:
            pc = prev.close
            tr = max(h, pc) - min(lo, pc)
            up = h - prev.high
            dn = prev.low - lo
            pdm = up if up > dn and up > 0.0 else 0.0
            mdm = dn if dn > up and dn > 0.0 else 0.0
            self.ntr += 1
            if self.ntr <= 14:
                self.seed_tr += tr
                self.s_tr += tr
                self.s_pdm += pdm
                self.s_mdm += mdm
                if self.ntr == 14:
                    self.atr = self.seed_tr / 14.0
            else:
                self.atr = (self.atr * 13.0 + tr) / 14.0
                self.s_tr = self.s_tr - self.s_tr / 14.0 + tr
                self.s_pdm = self.s_pdm - self.s_pdm / 14.0 + pdm
                self.s_mdm = self.s_mdm - self.s_mdm / 14.0 + mdm
            if self.ntr >= 14:
                if self.s_tr > 0.0:
                    pdi = 100.0 * self.s_pdm / self.s_tr
                    mdi = 100.0 * self.s_mdm / self.s_tr
                dx = 100.0 * abs(pdi - mdi) / (pdi + mdi) if pdi + mdi > 0.0 else 0.0
                self.ndx += 1
                if self.ndx <= 14:
                    self.seed_dx += dx
                    if self.ndx == 14:
                        self.adx = self.seed_dx / 14.0
                else:
                    self.adx = (self.adx * 13.0 + dx) / 14.0
            ch = cl - pc
            g = ch if ch > 0.0 else 0.0
            ls = -ch if ch < 0.0 else 0.0
            for n, st in self.rsi.items():
                st[2] += 1
                m = st[2]
                if m < n:
                    st[0] += g
                    st[1] += ls
                elif m == n:
                    st[0] = (st[0] + g) / n
                    st[1] = (st[1] + ls) / n
                else:
                    st[0] = (st[0] * (n - 1) + g) / n
                    st[1] = (st[1] * (n - 1) + ls) / n
            if cl > pc:
                self.obv += vol
            elif cl < pc:
                self.obv -= vol
            self.vpt += vol * (cl / pc - 1.0)
            if vol < prev.volume:
                self.nvi *= cl / pc
        mfm = ((cl - lo) - (h - cl)) / (h - lo) if h > lo else 0.0
        self.ad += mfm * vol
        # stochastic %K history (needs 14 candles)
        nw = len(w)
        if nw >= 14:
            hh = lo_ = 0.0
            first = True
            for i in range(nw - 14, nw):
                k = w[i]
                if first:
                    hh, lo_ = k.high, k.low
                    first = False
                else:
                    if k.high > hh:
                        hh = k.high
                    if k.low < lo_:
                        lo_ = k.low
            stoch = 100.0 * (cl - lo_) / (hh - lo_) if hh > lo_ else 50.0
            will = -100.0 * (hh - cl) / (hh - lo_) if hh > lo_ else -50.0
            self.stoch_k.append(stoch)
        if self.count < MIN_CANDLES_INDICATORS:
            self.values = channel_defaults("indicator")
            self.valid = [False] * N_INDICATOR
            return
        # ---- 50+ candles: every window below is full
        v: list[float] = []
        ok = [True] * N_INDICATOR
        sums = {10: 0.0, 20: 0.0, 50: 0.0}
        for i in range(50):
            x = closes[i]
            sums[50] += x
            if i >= 30:
                sums[20] += x
                if i >= 40:
                    sums[10] += x
        sma10, sma20, sma50 = sums[10] / 10.0, sums[20] / 20.0, sums[50] / 50.0
        ema = self.ema
        e10, e20, e50 = ema[10], ema[20], ema[50]
        assert e10 is not None and e20 is not None and e50 is not None
        assert macd is not None and self.macd_signal is not None
        v += (
            sma10,
            sma20,
            sma50,
            e10,
            e20,
            e50,
            macd,
            self.macd_signal,
            macd - self.macd_signal,
            self.adx,
            pdi,
            mdi,
        )
        for n in (14, 28):
            ag, al, _ = self.rsi[n]
            if al > 0.0:
                v.append(100.0 - 100.0 / (1.0 + ag / al))
            else:
                v.append(100.0 if ag > 0.0 else 50.0)
        sk = self.stoch_k
        v += (stoch, (sk[0] + sk[1] + sk[2]) / 3.0, will)
        # CCI over 20 typical prices
        tps = [(k.high + k.low + k.close) / 3.0 for k in w]
        s = 0.0
        for x in tps[30:]:
            s += x
        m = s / 20.0
        md = 0.0
        for x in tps[30:]:
            md += abs(x - m)
        md /= 20.0
        v.append((tps[-1] - m) / (0.015 * md) if md > 0.0 else 0.0)
        v += (cl - closes[-11], 100.0 * (cl / closes[-13] - 1.0))
        # MFI over the last 14 typical-price changes
        pos = neg = 0.0
        for i in range(36, 50):
            mf = tps[i] * w[i].volume
            if tps[i] > tps[i - 1]:
                pos += mf
            elif tps[i] < tps[i - 1]:
                neg += mf
        if neg > 0.0:
            v.append(100.0 - 100.0 / (1.0 + pos / neg))
        else:
            v.append(100.0 if pos > 0.0 else 50.0)
        # Bollinger (population std over 20 closes)
        ss = 0.0
        for x in closes[30:]:
            d = x - sma20
            ss += d * d
        sd = math.sqrt(ss / 20.0)
        bu, bl = sma20 + 2.0 * sd, sma20 - 2.0 * sd
        v += (bu, sma20, bl, (bu - bl) / sma20, (cl - bl) / (bu - bl) if bu > bl else 0.5)
        v += (self.atr, e20 + 2.0 * self.atr, e20 - 2.0 * self.atr, self.obv)
        # VWAP over 50 candles, A/D, CMF over 20, VPT, NVI
        sn = sv = 0.0
        for k in w:
            sn += k.notional
            sv += k.volume
        if sv > 0.0:
            v.append(sn / sv)
        else:
            v.append(0.0)
            ok[30] = False
        v.append(self.ad)
        smv = sv20 = 0.0
        for i in range(30, 50):
            k = w[i]
            kv = k.volume
            if k.high > k.low:
                smv += ((k.close - k.low) - (k.high - k.close)) / (k.high - k.low) * kv
            sv20 += kv
        if sv20 > 0.0:
            v.append(smv / sv20)
        else:
            v.append(0.0)
            ok[32] = False
        v += (self.vpt, self.nvi)
        self.values = v
        self.valid = ok

    def to_state(self) -> dict[str, Any]:
        """Plain JSON-able state."""
        s: dict[str, Any] = {k: getattr(self, k) for k in _SCALARS}
        s["window"] = [list(c) for c in self.window]
        s["ema"] = [[n, e] for n, e in self.ema.items()]
        s["macd_hist"] = list(self.macd_hist)
        s["rsi"] = [[n, st[0], st[1], st[2]] for n, st in self.rsi.items()]
        s["stoch_k"] = list(self.stoch_k)
        s["values"] = list(self.values)
        s["valid"] = list(self.valid)
        return s

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> IndicatorState:
        """Inverse of ``to_state``."""
        o = cls()
        for k in _SCALARS:
            setattr(o, k, s[k])
        o.window.extend(candle_from_list(x) for x in s["window"])
        o.ema = {int(n): e for n, e in s["ema"]}
        o.macd_hist = [float(x) for x in s["macd_hist"]]
        o.rsi = {int(r[0]): [float(r[1]), float(r[2]), int(r[3])] for r in s["rsi"]}
        o.stoch_k.extend(float(x) for x in s["stoch_k"])
        o.values = [float(x) for x in s["values"]]
        o.valid = [bool(x) for x in s["valid"]]
        return o
