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


# Diff-depth aggregation intervals, in the order they are published within one tick.
_AGG_INTERVALS = (250, 100, 500)
# a wake time that never comes: nothing pending
NEVER = 1 << 62


def _next_boundary(now_ms: int, interval_ms: int, phase_ms: int) -> int:
    """The first push time after ``now_ms`` of a stream pushed every ``interval_ms`` at
    ``phase_ms`` (mod the interval) past the clock's round multiples."""
    return now_ms - (now_ms - phase_ms) % interval_ms + interval_ms


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
    topics: tuple[tuple[str, str], ...]  # (topic, stream name) of each speed at this interval
    active: tuple[tuple[str, str], ...] = ()  # those with subscribers (at the hub version seen)
    merged: dict[int, int] = field(default_factory=dict)
    first: int = 0
    last: int = 0
    last_ts: int = 0
    due_ms: int = 0


class BinancePublisher:
    """Diff depth, bookTicker and aggTrade streams of one symbol.

    ``publish`` is called on engine ticks; a tick may be skipped for this symbol when the
    outbox is empty, no subscription changed and ``now < wake_ms`` (nothing pending is
    due): such a tick would only have moved the aggregation boundaries, which the next call
    catches up on from ``last_ms`` (the previous tick's time)."""

    def __init__(self, market: Market, hub: Hub, phase_ms: int = 0) -> None:
        self.market = market
        self.hub = hub
        self.phase_ms = phase_ms  # when, within each interval, this symbol's depth is pushed
        inst = market.instrument
        self.inst = inst
        lower = inst.symbol.lower()
        self.sym = inst.symbol
        self.depth_topics = {s: (f"b:{lower}{s}", f"{lower}{s}") for s in BINANCE_DEPTH_SPEEDS}
        self.aggs = {
            ms: _DepthAgg(
                ms,
                tuple(self.depth_topics[s] for s, i in BINANCE_DEPTH_SPEEDS.items() if i == ms),
            )
            for ms in _AGG_INTERVALS
        }
        self._aggs = tuple(self.aggs.values())
        self.book_ticker = (f"b:{lower}@bookTicker", f"{lower}@bookTicker")
        self.agg_trade = (f"b:{lower}@aggTrade", f"{lower}@aggTrade")
        self._last_top: tuple[int, int, int, int] | None = None
        self.wake_ms = 0
        self._version = -1
        self._trades_on = self._per_update_on = self._ticker_on = False
        self._live_aggs: tuple[_DepthAgg, ...] = ()

    def _refresh(self) -> None:
        """Which of this symbol's topics have subscribers (they only change with
        ``hub.version``)."""
        subs = self.hub.subscribers
        self._version = self.hub.version
        self._trades_on = self.agg_trade[0] in subs
        self._per_update_on = self.depth_topics["@depth@0ms"][0] in subs
        self._ticker_on = self.book_ticker[0] in subs
        for agg in self._aggs:
            agg.active = tuple(t for t in agg.topics if t[0] in subs)
            if not agg.active:  # nobody reads it: nothing accumulates until someone does
                agg.merged.clear()
                agg.first = 0
                agg.due_ms = 0
        self._live_aggs = tuple(agg for agg in self._aggs if agg.active)

    def publish(self, out: Outbox, now_ms: int, last_ms: int | None = None) -> None:
        """Publish ``out`` for the tick at ``now_ms``; ``last_ms`` is the previous tick's
        time when ticks may have been skipped (see the class docstring)."""
        hub = self.hub
        if self._version != hub.version:
            self._refresh()
        # trades first: the exchange pushes a trade as it happens, a depth diff when its
        # interval ends, so a diff follows the trades it includes (the order the collector's
        # feed stamps and the features merge relies on)
        if out.trades and self._trades_on:
            ps, qs, sym = self.inst.price_str, self.inst.qty_str, self.sym
            topic, name = self.agg_trade
            for t in out.trades:
                hub.publish(
                    topic,
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
                    name,
                )
        events = out.events
        if events and self._per_update_on:
            topic, name = self.depth_topics["@depth@0ms"]
            self._per_update(out, topic, name, now_ms)
        wake = NEVER
        for agg in self._live_aggs:
            if last_ms is not None and agg.due_ms and last_ms >= agg.due_ms:
                # the skipped ticks (nothing pending) would have moved the boundary on
                agg.due_ms = _next_boundary(last_ms, agg.interval_ms, self.phase_ms)
            if events:
                merged = agg.merged
                if not agg.first:
                    agg.first = events[0][0]
                for _uid, changes, _ts in events:
                    for j in range(0, len(changes), 2):
                        merged[changes[j]] = changes[j + 1]
                agg.last, _changes, agg.last_ts = events[-1]
            if not agg.due_ms:
                agg.due_ms = _next_boundary(now_ms, agg.interval_ms, self.phase_ms)
            if now_ms >= agg.due_ms:
                agg.due_ms = _next_boundary(now_ms, agg.interval_ms, self.phase_ms)
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
                    for topic, name in agg.active:
                        hub.publish(topic, payload, name)
                    agg.merged = {}
                    agg.first = 0
            if agg.first and agg.due_ms < wake:
                wake = agg.due_ms
        self.wake_ms = wake
        if self._ticker_on:
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
    subscribed: bool = False  # "y:" + topic has subscribers (at the hub version seen)
    live: bool = False  # active and subscribed at the last publish: due_ms kept up since

    @property
    def hub_topic(self) -> str:
        return "y:" + self.topic


class BybitPublisher:
    """``orderbook.{1,50,200}`` snapshot+delta and ``publicTrade`` of one symbol.

    Ticks may be skipped as for ``BinancePublisher``: ``wake_ms`` is when an active stream
    next has something to push without new events (a book change not yet pushed, or the
    level-1 re-snapshot)."""

    def __init__(self, market: Market, hub: Hub, phase_ms: int = 0) -> None:
        self.market = market
        self.hub = hub
        self.phase_ms = phase_ms  # when, within each interval, this symbol's book is pushed
        self.inst = market.instrument
        self.sym = self.inst.symbol
        self.depths = {
            d: _BybitDepth(d, ms, f"orderbook.{d}.{self.sym}") for d, ms in BYBIT_DEPTHS.items()
        }
        self._depths = tuple(self.depths.values())
        self._depth_topics = tuple(st.hub_topic for st in self._depths)
        self.trade_topic = f"publicTrade.{self.sym}"
        self._trade_hub_topic = "y:" + self.trade_topic
        self._last_trade_price: int | None = None
        self._tick_dir = "ZeroPlusTick"
        self.wake_ms = 0
        self._version = -1
        self._trades_on = False
        # whether any book stream was live at the last publish, and at which hub version: a
        # stream only becomes active through a subscription (restart keeps live ones live)
        self._live_any = False
        self._live_version = -1

    def _refresh(self) -> None:
        subs = self.hub.subscribers
        self._version = self.hub.version
        self._trades_on = self._trade_hub_topic in subs
        for st, topic in zip(self._depths, self._depth_topics, strict=True):
            st.subscribed = topic in subs

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
            if st.active and self.hub.has(st.hub_topic):
                st.active = False
                self.hub.publish(st.hub_topic, self.snapshot_message(d, now_ms))
            else:
                st.active = False

    def publish(self, out: Outbox, now_ms: int, last_ms: int | None = None) -> None:
        """Publish ``out`` for the tick at ``now_ms``; ``last_ms`` is the previous tick's
        time when ticks may have been skipped."""
        hub = self.hub
        if self._version != hub.version:
            self._refresh()
        ps, qs = self.inst.price_str, self.inst.qty_str
        # trades first, as on Binance: a depth delta follows the trades it includes
        if out.trades:
            # the tick direction is state: it follows every trade, subscribed or not
            data: list[dict[str, object]] | None = [] if self._trades_on else None
            for t in out.trades:
                last = self._last_trade_price
                if last is not None and t.price != last:
                    self._tick_dir = "PlusTick" if t.price > last else "MinusTick"
                elif last is not None:
                    self._tick_dir = (
                        "ZeroPlusTick" if self._tick_dir.endswith("PlusTick") else "ZeroMinusTick"
                    )
                self._last_trade_price = t.price
                if data is not None:
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
            if data is not None:
                hub.publish(
                    self._trade_hub_topic,
                    orjson.dumps(
                        {"topic": self.trade_topic, "type": "snapshot", "ts": now_ms, "data": data}
                    ),
                )
        if not self._live_any and self._version == self._live_version:
            return  # no book stream was live and none became active since (no subscriptions)
        wake = NEVER
        live_any = False
        update_id = self.market.update_id
        for st, topic in zip(self._depths, self._depth_topics, strict=True):
            if not st.active:
                st.live = False
                continue
            if not st.subscribed:
                st.active = st.live = False
                continue
            if st.live and last_ms is not None and st.due_ms and last_ms >= st.due_ms:
                # the skipped ticks (book unchanged) would have moved the boundary on
                st.due_ms = _next_boundary(last_ms, st.interval_ms, self.phase_ms)
            st.live = True
            if now_ms >= st.due_ms:
                self._push(st, topic, now_ms)
            if st.seq != update_id and st.due_ms < wake:
                wake = st.due_ms  # a book change to push
            if st.depth == 1 and st.last_push_ms + BYBIT_L1_RESNAPSHOT_MS < wake:
                wake = st.last_push_ms + BYBIT_L1_RESNAPSHOT_MS
            live_any = True
        self.wake_ms = wake
        self._live_any, self._live_version = live_any, self._version

    def _push(self, st: _BybitDepth, topic: str, now_ms: int) -> None:
        """One interval's end: the delta since the last capture, if any."""
        hub = self.hub
        ps, qs = self.inst.price_str, self.inst.qty_str
        st.due_ms = _next_boundary(now_ms, st.interval_ms, self.phase_ms)
        old_b, old_a = st.bids, st.asks
        self._capture(st)
        db = [[ps(p), qs(q)] for p, q in sorted(st.bids.items(), reverse=True) if old_b.get(p) != q]
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
