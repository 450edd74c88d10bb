"""Turn the engine's outbox into each protocol's market-data messages.

Topics are ``b:<binance stream name>`` and ``y:<bybit topic>``; nothing is built for a topic
nobody subscribes to.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from depthflow.sim.book import ASK, BID
from depthflow.sim.instruments import Instrument
from depthflow.sim.market import Market, Outbox
from depthflow.sim.streams import Hub

# Binance diff-depth cadences: stream suffix -> interval in ms (0 = every update)
BINANCE_DEPTH_SPEEDS: dict[str, int] = {
    "@depth": 250,
    "@depth@250ms": 250,
    "@depth@100ms": 100,
    "@depth@500ms": 500,
    "@depth@0ms": 0,
}
# Bybit linear orderbook depths -> push interval in ms
BYBIT_DEPTHS: dict[int, int] = {1: 10, 50: 20, 200: 100}
BYBIT_L1_RESNAPSHOT_MS = 3000


def _levels(inst: Instrument, merged: dict[int, int]) -> tuple[list[list[str]], list[list[str]]]:
    bids: list[list[str]] = []
    asks: list[list[str]] = []
    ps, qs = inst.price_str, inst.qty_str
    for key in sorted(merged):
        (asks if key & 1 else bids).append([ps(key >> 1), qs(merged[key])])
    bids.reverse()
    return bids, asks


@dataclass
class _DepthAgg:
    interval_ms: int
    merged: dict[int, int] = field(default_factory=dict)
    first: int = 0
    last: int = 0
    last_ts: int = 0
    due_ms: int = 0


class BinancePublisher:
    """Diff depth, bookTicker and aggTrade streams of one symbol."""

    def __init__(self, market: Market, hub: Hub) -> None:
        self.market = market
        self.hub = hub
        inst = market.instrument
        self.inst = inst
        lower = inst.symbol.lower()
        self.sym = inst.symbol
        self.depth_topics = {s: (f"b:{lower}{s}", f"{lower}{s}") for s in BINANCE_DEPTH_SPEEDS}
        self.aggs = {ms: _DepthAgg(ms) for ms in {100, 250, 500}}
        self.book_ticker = (f"b:{lower}@bookTicker", f"{lower}@bookTicker")
        self.agg_trade = (f"b:{lower}@aggTrade", f"{lower}@aggTrade")
        self._last_top: tuple[int, int, int, int] | None = None

    def publish(self, out: Outbox, now_ms: int) -> None:
        hub = self.hub
        # trades first: the exchange pushes a trade as it happens, a depth diff when its
        # interval ends, so a diff follows the trades it includes (the order the collector's
        # feed stamps and the features merge relies on)
        if out.trades and hub.has(self.agg_trade[0]):
            ps, qs, sym = self.inst.price_str, self.inst.qty_str, self.sym
            for t in out.trades:
                hub.publish(
                    self.agg_trade[0],
                    orjson.dumps(
                        {
                            "e": "aggTrade",
                            "E": now_ms,
                            "s": sym,
                            "a": t.trade_id,
                            "p": ps(t.price),
                            "q": qs(t.qty),
                            "f": t.trade_id,
                            "l": t.trade_id,
                            "T": t.ts,
                            "m": t.taker_side == ASK,
                        }
                    ),
                    self.agg_trade[1],
                )
        if out.events:
            topic, name = self.depth_topics["@depth@0ms"]
            if hub.has(topic):
                self._per_update(out, topic, name, now_ms)
        for agg in self.aggs.values():
            speeds = [s for s, ms in BINANCE_DEPTH_SPEEDS.items() if ms == agg.interval_ms]
            active = [self.depth_topics[s] for s in speeds if hub.has(self.depth_topics[s][0])]
            if not active:
                agg.merged.clear()
                agg.first = 0
                agg.due_ms = 0
                continue
            for uid, changes, ts in out.events:
                if not agg.first:
                    agg.first = uid
                merged = agg.merged
                for j in range(0, len(changes), 2):
                    merged[changes[j]] = changes[j + 1]
                agg.last, agg.last_ts = uid, ts
            if not agg.due_ms:
                agg.due_ms = now_ms - now_ms % agg.interval_ms + agg.interval_ms
            if now_ms >= agg.due_ms:
                agg.due_ms = now_ms - now_ms % agg.interval_ms + agg.interval_ms
                if agg.first:
                    bids, asks = _levels(self.inst, agg.merged)
                    payload = orjson.dumps(
                        {
                            "e": "depthUpdate",
                            "E": now_ms,
                            "T": agg.last_ts,
                            "s": self.sym,
                            "U": agg.first,
                            "u": agg.last,
                            "pu": agg.first - 1,
                            "b": bids,
                            "a": asks,
                        }
                    )
                    for topic, name in active:
                        hub.publish(topic, payload, name)
                    agg.merged = {}
                    agg.first = 0
        if hub.has(self.book_ticker[0]):
            self._book_ticker(now_ms)

    def _per_update(self, out: Outbox, topic: str, name: str, now_ms: int) -> None:
        inst, sym, hub = self.inst, self.sym, self.hub
        for uid, changes, ts in out.events:
            merged = {changes[j]: changes[j + 1] for j in range(0, len(changes), 2)}
            bids, asks = _levels(inst, merged)
            hub.publish(
                topic,
                orjson.dumps(
                    {
                        "e": "depthUpdate",
                        "E": now_ms,
                        "T": ts,
                        "s": sym,
                        "U": uid,
                        "u": uid,
                        "pu": uid - 1,
                        "b": bids,
                        "a": asks,
                    }
                ),
                name,
            )

    def _book_ticker(self, now_ms: int) -> None:
        book = self.market.book
        bb, ba = book.best_bid, book.best_ask
        if not book.bids or not book.asks:
            return
        top = (bb, book.bids[bb], ba, book.asks[ba])
        if top == self._last_top:
            return
        self._last_top = top
        ps, qs = self.inst.price_str, self.inst.qty_str
        self.hub.publish(
            self.book_ticker[0],
            orjson.dumps(
                {
                    "e": "bookTicker",
                    "u": self.market.update_id,
                    "E": now_ms,
                    "T": self.market.last_ts,
                    "s": self.sym,
                    "b": ps(bb),
                    "B": qs(top[1]),
                    "a": ps(ba),
                    "A": qs(top[3]),
                }
            ),
            self.book_ticker[1],
        )


@dataclass
class _BybitDepth:
    depth: int
    interval_ms: int
    topic: str
    active: bool = False
    u: int = 0
    seq: int = 0
    cts: int = 0
    bids: dict[int, int] = field(default_factory=dict)
    asks: dict[int, int] = field(default_factory=dict)
    due_ms: int = 0
    last_push_ms: int = 0


class BybitPublisher:
    """``orderbook.{1,50,200}`` snapshot+delta and ``publicTrade`` of one symbol."""

    def __init__(self, market: Market, hub: Hub) -> None:
        self.market = market
        self.hub = hub
        self.inst = market.instrument
        self.sym = self.inst.symbol
        self.depths = {
            d: _BybitDepth(d, ms, f"orderbook.{d}.{self.sym}") for d, ms in BYBIT_DEPTHS.items()
        }
        self.trade_topic = f"publicTrade.{self.sym}"
        self._last_trade_price: int | None = None
        self._tick_dir = "ZeroPlusTick"

    def _capture(self, st: _BybitDepth) -> None:
        book = self.market.book
        st.bids = dict(book.top(BID, st.depth))
        st.asks = dict(book.top(ASK, st.depth))
        st.seq = self.market.update_id
        st.cts = self.market.last_ts

    def _message(
        self, st: _BybitDepth, kind: str, bids: list[list[str]], asks: list[list[str]], now_ms: int
    ) -> bytes:
        return orjson.dumps(
            {
                "topic": st.topic,
                "type": kind,
                "ts": now_ms,
                "data": {"s": self.sym, "b": bids, "a": asks, "u": st.u, "seq": st.seq},
                "cts": st.cts,
            }
        )

    def snapshot_message(self, depth: int, now_ms: int) -> bytes:
        """The snapshot a new subscriber of ``orderbook.{depth}`` starts from."""
        st = self.depths[depth]
        if not st.active:
            st.active = True
            st.u += 1
            self._capture(st)
            st.last_push_ms = now_ms
        ps, qs = self.inst.price_str, self.inst.qty_str
        bids = [[ps(p), qs(q)] for p, q in sorted(st.bids.items(), reverse=True)]
        asks = [[ps(p), qs(q)] for p, q in sorted(st.asks.items())]
        return self._message(st, "snapshot", bids, asks, now_ms)

    def restart(self, now_ms: int) -> None:
        """Simulate a Bybit service restart: every active stream sends a ``u=1`` snapshot."""
        for d, st in self.depths.items():
            st.u = 0
            if st.active and self.hub.has("y:" + st.topic):
                st.active = False
                self.hub.publish("y:" + st.topic, self.snapshot_message(d, now_ms))
            else:
                st.active = False

    def publish(self, out: Outbox, now_ms: int) -> None:
        hub = self.hub
        ps, qs = self.inst.price_str, self.inst.qty_str
        # trades first, as on Binance: a depth delta follows the trades it includes
        if out.trades:
            data = []
            for t in out.trades:
                last = self._last_trade_price
                if last is not None and t.price != last:
                    self._tick_dir = "PlusTick" if t.price > last else "MinusTick"
                elif last is not None:
                    self._tick_dir = (
                        "ZeroPlusTick" if self._tick_dir.endswith("PlusTick") else "ZeroMinusTick"
                    )
                self._last_trade_price = t.price
                data.append(
                    {
                        "T": t.ts,
                        "s": self.sym,
                        "S": "Buy" if t.taker_side == BID else "Sell",
                        "v": qs(t.qty),
                        "p": ps(t.price),
                        "L": self._tick_dir,
                        "i": f"{self.sym}-{t.trade_id}",
                        "BT": False,
                        "seq": t.update_id,
                    }
                )
            if hub.has("y:" + self.trade_topic):
                hub.publish(
                    "y:" + self.trade_topic,
                    orjson.dumps(
                        {"topic": self.trade_topic, "type": "snapshot", "ts": now_ms, "data": data}
                    ),
                )
        for st in self.depths.values():
            topic = "y:" + st.topic
            if not st.active:
                continue
            if not hub.has(topic):
                st.active = False
                continue
            if now_ms < st.due_ms:
                continue
            st.due_ms = now_ms - now_ms % st.interval_ms + st.interval_ms
            old_b, old_a = st.bids, st.asks
            self._capture(st)
            db = [
                [ps(p), qs(q)]
                for p, q in sorted(st.bids.items(), reverse=True)
                if old_b.get(p) != q
            ]
            db += [[ps(p), "0"] for p in sorted(old_b, reverse=True) if p not in st.bids]
            da = [[ps(p), qs(q)] for p, q in sorted(st.asks.items()) if old_a.get(p) != q]
            da += [[ps(p), "0"] for p in sorted(old_a) if p not in st.asks]
            if db or da:
                st.u += 1
                st.last_push_ms = now_ms
                hub.publish(topic, self._message(st, "delta", db, da, now_ms))
            elif st.depth == 1 and now_ms - st.last_push_ms >= BYBIT_L1_RESNAPSHOT_MS:
                st.last_push_ms = now_ms
                hub.publish(
                    topic,
                    self._message(
                        st,
                        "snapshot",
                        [[ps(p), qs(q)] for p, q in st.bids.items()],
                        [[ps(p), qs(q)] for p, q in st.asks.items()],
                        now_ms,
                    ),
                )
