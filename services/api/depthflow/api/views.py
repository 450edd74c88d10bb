"""Bounded, in-memory latest-state views built from the services' topics. Pure: no I/O.

Each view is fed decoded messages by ``feed.TopicFeed`` and answered from by the routers.
Every collection has a bound (symbols, signals, orders), so a flood of new symbols or events
costs a fixed amount of memory: the least recently updated entries are dropped first.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from depthflow.common.schemas import Book, Control, Health, Heartbeat, OrderEvent, Signal

K = TypeVar("K")
V = TypeVar("V")


def now_us() -> int:
    return time.time_ns() // 1000


class BoundedMap(Generic[K, V]):
    """A dict that keeps the ``limit`` most recently written keys."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._data: OrderedDict[K, V] = OrderedDict()

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self._limit:
            self._data.popitem(last=False)

    def get(self, key: K) -> V | None:
        return self._data.get(key)

    def items(self) -> list[tuple[K, V]]:
        return list(self._data.items())

    def values(self) -> list[V]:
        return list(self._data.values())

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data


def symbol_of(symbol: str) -> str:
    return symbol.upper()


@dataclass
class BookState:
    book: Book
    updates: int = 0
    first_local_ts_us: int = 0


def book_metrics(book: Book, updates: int = 0, window_s: float = 0.0) -> dict[str, Any]:
    """Microstructure numbers of one book: the seed's base features, computed on read."""
    bid, ask = book.bid_price, book.ask_price
    mid = (bid + ask) / 2 if bid > 0 and ask > 0 else None
    spread = ask - bid if mid is not None else None

    def depth(levels: list[tuple[float, float]], n: int) -> float:
        return sum(qty for _, qty in levels[:n])

    def imbalance(n: int) -> float | None:
        b, a = depth(book.bids, n), depth(book.asks, n)
        return b / (b + a) if b + a > 0 else None

    tob = book.bid_qty + book.ask_qty
    micro = (bid * book.ask_qty + ask * book.bid_qty) / tob if mid is not None and tob > 0 else None
    return {
        "exchange": book.exchange,
        "symbol": book.symbol,
        "seq": book.seq,
        "bid_price": bid,
        "ask_price": ask,
        "mid_price": mid,
        "micro_price": micro,
        "spread_abs": spread,
        "spread_bps": spread / mid * 10_000 if mid and spread is not None else None,
        "depth_bid_5": depth(book.bids, 5),
        "depth_ask_5": depth(book.asks, 5),
        "depth_bid_20": depth(book.bids, 20),
        "depth_ask_20": depth(book.asks, 20),
        "imbalance_5": imbalance(5),
        "imbalance_20": imbalance(20),
        "updates": updates,
        "updates_per_s": updates / window_s if window_s > 0 else None,
        "exchange_ts_us": book.exchange_ts_us,
        "local_ts_us": book.local_ts_us,
        "age_s": max(0.0, (now_us() - book.local_ts_us) / 1e6),
    }


class MarketView:
    """Latest book per ``exchange:symbol`` and recent health events per symbol."""

    def __init__(self, max_symbols: int, health_kept: int = 50) -> None:
        self.books: BoundedMap[str, BookState] = BoundedMap(max_symbols)
        self.health: BoundedMap[str, deque[Health]] = BoundedMap(max_symbols)
        self.health_counts: BoundedMap[str, Counter[str]] = BoundedMap(max_symbols)
        self._health_kept = health_kept

    def on_book(self, book: Book) -> None:
        key = f"{book.exchange}:{book.symbol}"
        state = self.books.get(key)
        if state is None:
            state = BookState(book, 0, book.local_ts_us)
        state.book = book
        state.updates += 1
        self.books.put(key, state)

    def on_health(self, event: Health) -> None:
        key = f"{event.exchange}:{event.symbol}"
        events = self.health.get(key) or deque(maxlen=self._health_kept)
        events.append(event)
        self.health.put(key, events)
        counts = self.health_counts.get(key) or Counter()
        counts[event.kind] += 1
        self.health_counts.put(key, counts)

    def pairs(self) -> list[dict[str, Any]]:
        out = []
        for key, state in sorted(self.books.items()):
            exchange, _, symbol = key.partition(":")
            out.append(
                {
                    "exchange": exchange,
                    "symbol": symbol,
                    "seq": state.book.seq,
                    "age_s": max(0.0, (now_us() - state.book.local_ts_us) / 1e6),
                }
            )
        return out

    def books_for(self, symbol: str, exchange: str | None = None) -> list[BookState]:
        symbol = symbol_of(symbol)
        return [
            state
            for key, state in self.books.items()
            if state.book.symbol == symbol and (exchange is None or key.startswith(exchange + ":"))
        ]

    def metrics(self, state: BookState) -> dict[str, Any]:
        book = state.book
        window = (book.local_ts_us - state.first_local_ts_us) / 1e6
        key = f"{book.exchange}:{book.symbol}"
        health = self.health.get(key)
        counts = self.health_counts.get(key)
        return {
            **book_metrics(book, state.updates, window),
            "health_counts": dict(counts) if counts else {},
            "last_health": health[-1].model_dump(mode="json") if health else None,
        }

    def mid(self, symbol: str) -> float | None:
        for state in self.books_for(symbol):
            b = state.book
            if b.bid_price > 0 and b.ask_price > 0:
                return (b.bid_price + b.ask_price) / 2
        return None


class SignalView:
    """The most recent signals, overall and latest per symbol."""

    def __init__(self, kept: int, max_symbols: int) -> None:
        self.recent: deque[Signal] = deque(maxlen=kept)
        self.latest: BoundedMap[str, Signal] = BoundedMap(max_symbols)
        self.total = 0

    def on_signal(self, signal: Signal) -> None:
        self.recent.append(signal)
        self.latest.put(f"{signal.exchange}:{signal.symbol}", signal)
        self.total += 1

    def query(self, symbol: str | None, side: str | None, limit: int) -> list[Signal]:
        out: list[Signal] = []
        for signal in reversed(self.recent):
            if symbol and signal.symbol != symbol_of(symbol):
                continue
            if side and signal.side != side:
                continue
            out.append(signal)
            if len(out) >= limit:
                break
        return out


@dataclass
class PositionState:
    exchange: str
    symbol: str
    qty: float = 0.0
    avg_price: float | None = None
    realized_pnl: float = 0.0
    fees_paid: float = 0.0
    updated_ts_us: int = 0
    source: str = "fills"


@dataclass
class ExecutionCounters:
    orders: int = 0
    fills: int = 0
    rejects: int = 0
    cancels: int = 0
    filled_qty: float = 0.0
    filled_notional: float = 0.0
    fees: float = 0.0
    by_status: Counter[str] = field(default_factory=Counter)
    reject_reasons: Counter[str] = field(default_factory=Counter)
    fill_latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))


class OrderView:
    """Latest state per order, positions and execution counters from ``orders.v1``.

    Positions: a ``position`` event is taken as the executor's statement of the position
    (``detail.qty`` signed, ``detail.avg_price``, ``detail.realized_pnl``); until one arrives
    for a symbol the position is accumulated from its ``fill`` events.
    """

    def __init__(self, kept: int, max_symbols: int) -> None:
        self.orders: BoundedMap[str, OrderEvent] = BoundedMap(kept)
        self.positions: BoundedMap[str, PositionState] = BoundedMap(max_symbols)
        self.stats = ExecutionCounters()
        self.balance_detail: dict[str, Any] | None = None
        self._created_ts: BoundedMap[str, int] = BoundedMap(kept)

    def on_order(self, event: OrderEvent) -> None:
        key = f"{event.exchange}:{event.symbol}"
        stats = self.stats
        if event.event_type == "order":
            if event.client_order_id not in self._created_ts:
                stats.orders += 1
                self._created_ts.put(event.client_order_id, event.ts_us)
            stats.by_status[event.status] += 1
            if event.status in ("canceled", "cancelled"):
                stats.cancels += 1
            self.orders.put(event.client_order_id, event)
        elif event.event_type == "reject":
            stats.rejects += 1
            stats.reject_reasons[str(event.detail.get("reason", event.status))[:64]] += 1
            self.orders.put(event.client_order_id, event)
        elif event.event_type == "fill":
            self._on_fill(key, event)
        elif event.event_type == "position":
            self._on_position(key, event)
        if isinstance(event.detail.get("balance"), dict):
            self.balance_detail = {"ts_us": event.ts_us, **event.detail["balance"]}

    def _on_fill(self, key: str, event: OrderEvent) -> None:
        stats = self.stats
        qty = event.qty if event.qty > 0 else event.filled_qty
        price = event.price if event.price is not None else event.avg_price
        stats.fills += 1
        stats.fees += event.fee
        if qty > 0 and price:
            stats.filled_qty += qty
            stats.filled_notional += qty * price
        created = self._created_ts.get(event.client_order_id)
        if created is not None and event.ts_us >= created:
            stats.fill_latency_ms.append((event.ts_us - created) / 1000)
        position = self.positions.get(key) or PositionState(event.exchange, event.symbol)
        position.fees_paid += event.fee
        position.updated_ts_us = event.ts_us
        if position.source == "fills" and qty > 0 and price:
            signed = qty if event.side == "buy" else -qty
            old = position.qty
            new = old + signed
            if old == 0 or (old > 0) == (signed > 0):
                position.avg_price = (
                    (abs(old) * (position.avg_price or 0) + qty * price) / abs(new) if new else None
                )
            else:
                closed = min(abs(old), qty)
                position.realized_pnl += (
                    closed * (price - (position.avg_price or price)) * (1 if old > 0 else -1)
                )
                if abs(new) < 1e-12:
                    new, position.avg_price = 0.0, None
                elif (new > 0) != (old > 0):
                    position.avg_price = price
            position.qty = new
        self.positions.put(key, position)

    def _on_position(self, key: str, event: OrderEvent) -> None:
        detail = event.detail
        position = self.positions.get(key) or PositionState(event.exchange, event.symbol)
        position.source = "executor"
        qty = detail.get("qty", event.filled_qty if event.side == "buy" else -event.filled_qty)
        position.qty = float(qty) if isinstance(qty, (int, float)) else position.qty
        avg = detail.get("avg_price", event.avg_price)
        position.avg_price = float(avg) if isinstance(avg, (int, float)) else None
        pnl = detail.get("realized_pnl")
        if isinstance(pnl, (int, float)):
            position.realized_pnl = float(pnl)
        position.updated_ts_us = event.ts_us
        self.positions.put(key, position)


@dataclass(frozen=True)
class ServiceStatus:
    service: str
    state: str
    ready: bool
    up: bool
    age_s: float | None
    instances: list[dict[str, Any]]


class StatusView:
    """Latest heartbeat per ``service:instance`` and latest desired state per service."""

    def __init__(self, stale_s: float, max_instances: int = 1000) -> None:
        self._stale_s = stale_s
        self.heartbeats: BoundedMap[str, Heartbeat] = BoundedMap(max_instances)
        self.controls: BoundedMap[str, Control] = BoundedMap(max_instances)

    def on_heartbeat(self, beat: Heartbeat) -> None:
        self.heartbeats.put(f"{beat.service}:{beat.instance}", beat)

    def on_control(self, control: Control) -> None:
        self.controls.put(control.service, control)

    def service(self, name: str, now: int | None = None) -> ServiceStatus:
        """A service's real state: ``down`` when no instance has beaten within the stale
        window; otherwise the best state among its live instances."""
        now = now_us() if now is None else now
        instances: list[dict[str, Any]] = []
        for beat in self.heartbeats.values():
            if beat.service != name:
                continue
            age = max(0.0, (now - beat.ts_us) / 1e6)
            live = age <= self._stale_s
            instances.append(
                {
                    "instance": beat.instance,
                    "state": beat.state if live else "down",
                    "reported_state": beat.state,
                    "ready": beat.ready and live,
                    "age_s": round(age, 3),
                    "detail": beat.detail,
                }
            )
        alive = [i for i in instances if i["state"] != "down"]
        ages = [i["age_s"] for i in instances]
        if not alive:
            state = "down" if instances else "unknown"
        else:
            order = ["running", "paused", "starting", "stopping", "stopped", "failed"]
            state = min((i["state"] for i in alive), key=order.index)
        return ServiceStatus(
            service=name,
            state=state,
            ready=any(i["ready"] for i in alive),
            up=bool(alive) and state not in ("failed", "stopped"),
            age_s=min(ages) if ages else None,
            instances=instances,
        )

    def known_services(self) -> set[str]:
        return {b.service for b in self.heartbeats.values()} | {
            c.service for c in self.controls.values()
        }
