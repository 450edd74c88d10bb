"""Pre-trade risk: limits, order sizing and exposure reservations.

Exposure is measured in USDT per symbol, worst case over the orders still working:
with ``P`` the signed position notional, ``B``/``S`` the notional of working buy/sell orders,
the symbol's exposure is ``max(|P + B|, |P - S|)`` — what it would be if every buy (or every
sell) filled. A symbol counts as an open position while that is above zero. So a working order
is counted from the moment it is reserved (before it is sent) until it fills (then it is part
of ``P``) or is released (rejected, cancelled, failed); fills at the reserved price never raise
the worst case, so limits checked at reservation time hold until the order is done.

:func:`evaluate` is the pure check over a snapshot; :class:`RiskLedger` keeps positions and
reservations and does check-and-reserve atomically (under a lock, no ``await`` inside), so any
number of concurrent signals can never take the book above the limits.

An order that does not raise its symbol's worst-case exposure (a reduce or close) is accepted
even under the kill switch or the daily loss limit: those stop new risk, not the way out.
Price moves can push existing exposure above a limit; then only risk-reducing orders pass.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import StrEnum
from functools import cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Side = Literal["buy", "sell"]
_EPS = 1e-9


class RiskLimits(BaseModel):
    """Risk configuration (frozen; unknown fields refused). Defaults are the seed's settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_open_positions: int = Field(default=5, ge=0)
    max_exposure_usdt: float = Field(default=10_000.0, ge=0)
    min_order_size_usdt: float = Field(default=5.0, ge=0)
    max_symbol_exposure_usdt: float = Field(
        default=10_000.0, ge=0, description="default per-symbol cap"
    )
    symbol_exposure_usdt: dict[str, float] = Field(
        default_factory=dict, description="per-symbol caps overriding the default"
    )
    daily_loss_limit_usdt: float = Field(default=500.0, ge=0)
    order_usdt_at_full_conviction: float = Field(
        default=1_000.0, gt=0, description="order notional for strength = confidence = 1"
    )

    def symbol_cap(self, symbol: str) -> float:
        """The exposure cap of ``symbol``."""
        return self.symbol_exposure_usdt.get(symbol, self.max_symbol_exposure_usdt)


@dataclass(frozen=True)
class SymbolSpec:
    """Venue trading rules of one symbol."""

    symbol: str
    tick_size: float
    lot_size: float
    min_qty: float = 0.0
    min_notional: float = 0.0

    def __post_init__(self) -> None:
        if not (self.tick_size > 0 and self.lot_size > 0):
            raise ValueError(f"{self.symbol}: tick_size and lot_size must be > 0")

    def round_qty(self, qty: float) -> float:
        """``qty`` rounded down to a whole number of lots (never sizes up)."""
        return _round_to_step(qty, self.lot_size, ROUND_FLOOR)

    def round_price(self, price: float, side: Side) -> float:
        """``price`` on the tick grid, rounded away from the market: buys down, sells up."""
        rounding = ROUND_FLOOR if side == "buy" else ROUND_CEILING
        return _round_to_step(price, self.tick_size, rounding)


def _round_to_step(value: float, step: float, rounding: str) -> float:
    # Decimal on the repr of both values: 0.3 / 0.1 must be 3 lots, not 2.
    d_step = _decimal_step(step)
    steps = (Decimal(repr(value)) / d_step).to_integral_value(rounding=rounding)
    return float(steps * d_step)


@cache
def _decimal_step(step: float) -> Decimal:
    # a venue has a handful of tick and lot sizes: converted once each
    return Decimal(repr(step))


class RejectReason(StrEnum):
    """Why the risk check refused an order."""

    INVALID = "invalid"
    DUPLICATE = "duplicate"
    BELOW_MIN_ORDER_SIZE = "below_min_order_size"
    BELOW_VENUE_MINIMUM = "below_venue_minimum"
    KILL_SWITCH = "kill_switch"
    DAILY_LOSS_LIMIT = "daily_loss_limit"
    MAX_OPEN_POSITIONS = "max_open_positions"
    MAX_EXPOSURE = "max_exposure"
    SYMBOL_EXPOSURE = "symbol_exposure"
    NO_HEADROOM = "no_headroom"


@dataclass(frozen=True)
class OrderIntent:
    """An order about to be sent: ``price`` is the reference price its notional is valued at
    (the limit price, or for a market order the expected price plus a slippage buffer)."""

    client_order_id: str
    symbol: str
    side: Side
    qty: float
    price: float

    @property
    def notional(self) -> float:
        """``qty * price`` in USDT."""
        return self.qty * self.price


@dataclass(frozen=True)
class SymbolExposure:
    """Signed position notional and working-order notional of one symbol, in USDT."""

    position: float = 0.0
    pending_buy: float = 0.0
    pending_sell: float = 0.0

    @property
    def row(self) -> _Row:
        return (self.position, self.pending_buy, self.pending_sell)

    @property
    def worst_case(self) -> float:
        """Exposure if every working buy, or every working sell, filled."""
        return _worst(self.row)


# a symbol's (position, pending_buy, pending_sell) notional: SymbolExposure's fields as plain
# floats, so the ledger's hot path need not build a snapshot of frozen dataclasses
_Row = tuple[float, float, float]
_NO_ROW: _Row = (0.0, 0.0, 0.0)


def _worst(row: _Row) -> float:
    position, pending_buy, pending_sell = row
    return max(abs(position + pending_buy), abs(position - pending_sell))


def _with_order(row: _Row, side: Side, notional: float) -> _Row:
    """``row`` with one more working order."""
    position, pending_buy, pending_sell = row
    if side == "buy":
        return (position, pending_buy + notional, pending_sell)
    return (position, pending_buy, pending_sell + notional)


@dataclass(frozen=True)
class RiskState:
    """Account-wide inputs: the kill switch (from the API) and today's PnL in USDT."""

    kill_switch: bool = False
    daily_pnl: float = 0.0  # realised net of fees + unrealised, since the start of the UTC day


@dataclass(frozen=True)
class RiskDecision:
    """Accept, or reject with a reason and a human-readable detail for the audit log."""

    accepted: bool
    reason: RejectReason | None = None
    detail: str = ""
    exposure_after: float = 0.0
    open_positions_after: int = 0

    @staticmethod
    def reject(reason: RejectReason, detail: str) -> RiskDecision:
        """A refusal."""
        return RiskDecision(False, reason, detail)


_NO_EXPOSURE = SymbolExposure()


def _counted(e: SymbolExposure) -> bool:
    return e.worst_case > _EPS


def total_exposure(exposures: Mapping[str, SymbolExposure]) -> float:
    """Sum of worst-case exposures."""
    return sum(e.worst_case for e in exposures.values())


def open_positions(exposures: Mapping[str, SymbolExposure]) -> int:
    """Number of symbols with a position or a working order that could open one."""
    return sum(1 for e in exposures.values() if _counted(e))


def evaluate(
    exposures: Mapping[str, SymbolExposure],
    intent: OrderIntent,
    limits: RiskLimits,
    state: RiskState,
    spec: SymbolSpec | None = None,
) -> RiskDecision:
    """The pre-trade check of ``intent`` against a snapshot (pure)."""
    return _evaluate(
        intent.symbol,
        intent.side,
        intent.qty,
        intent.price,
        exposures.get(intent.symbol, _NO_EXPOSURE).row,
        total_exposure(exposures),
        open_positions(exposures),
        limits,
        state,
        spec,
    )


def _evaluate(
    symbol: str,
    side: Side,
    qty: float,
    price: float,
    current: _Row,
    total: float,
    count: int,
    limits: RiskLimits,
    state: RiskState,
    spec: SymbolSpec | None,
) -> RiskDecision:
    """:func:`evaluate` on the symbol's exposure ``current``, the snapshot's ``total``
    exposure and ``count`` of open positions."""
    notional = qty * price
    if not (qty > 0 and price > 0 and math.isfinite(notional)):
        return RiskDecision.reject(RejectReason.INVALID, f"qty={qty} price={price}")
    if notional + _EPS < limits.min_order_size_usdt:
        return RiskDecision.reject(
            RejectReason.BELOW_MIN_ORDER_SIZE,
            f"{notional:.4f} USDT < MIN_ORDER_SIZE_USDT {limits.min_order_size_usdt}",
        )
    below_venue = spec is not None and (
        qty + _EPS < spec.min_qty or notional + _EPS < spec.min_notional
    )
    if spec is not None and below_venue:
        return RiskDecision.reject(
            RejectReason.BELOW_VENUE_MINIMUM,
            f"qty {qty} / {notional:.4f} USDT below venue min_qty {spec.min_qty} "
            f"/ min_notional {spec.min_notional}",
        )
    current_worst = _worst(current)
    after_worst = _worst(_with_order(current, side, notional))
    current_counted = current_worst > _EPS  # _counted(current)
    total_after = total - current_worst + after_worst
    count_after = count - current_counted + (after_worst > _EPS)
    if after_worst <= current_worst + _EPS:
        return RiskDecision(True, None, "does not raise exposure", total_after, count_after)
    if state.kill_switch:
        return RiskDecision.reject(RejectReason.KILL_SWITCH, "kill switch is on")
    if state.daily_pnl <= -limits.daily_loss_limit_usdt:
        return RiskDecision.reject(
            RejectReason.DAILY_LOSS_LIMIT,
            f"daily PnL {state.daily_pnl:.2f} <= -{limits.daily_loss_limit_usdt}",
        )
    if not current_counted and count_after > limits.max_open_positions:
        return RiskDecision.reject(
            RejectReason.MAX_OPEN_POSITIONS,
            f"{count_after} > MAX_OPEN_POSITIONS {limits.max_open_positions}",
        )
    if total_after > limits.max_exposure_usdt + _EPS:
        return RiskDecision.reject(
            RejectReason.MAX_EXPOSURE,
            f"{total_after:.2f} USDT > MAX_EXPOSURE_USDT {limits.max_exposure_usdt}",
        )
    cap = limits.symbol_cap(symbol)
    if after_worst > cap + _EPS:
        return RiskDecision.reject(
            RejectReason.SYMBOL_EXPOSURE,
            f"{symbol} {after_worst:.2f} USDT > cap {cap}",
        )
    return RiskDecision(True, None, "", total_after, count_after)


@dataclass(frozen=True)
class Sizing:
    """A sized order (``qty`` > 0), or why none could be sized."""

    qty: float
    price: float
    reason: RejectReason | None = None
    detail: str = ""

    @property
    def notional(self) -> float:
        """``qty * price``."""
        return self.qty * self.price


def headroom_usdt(
    exposures: Mapping[str, SymbolExposure], symbol: str, side: Side, limits: RiskLimits
) -> float:
    """The largest notional an order on ``symbol``/``side`` may add within the exposure caps."""
    return _headroom(
        exposures.get(symbol, _NO_EXPOSURE).row,
        total_exposure(exposures),
        open_positions(exposures),
        symbol,
        side,
        limits,
    )


def _headroom(
    current: _Row, total: float, count: int, symbol: str, side: Side, limits: RiskLimits
) -> float:
    """:func:`headroom_usdt` from the symbol's exposure and the snapshot's ``total`` exposure
    and ``count`` of open positions."""
    current_worst = _worst(current)
    if not current_worst > _EPS and count >= limits.max_open_positions:
        return 0.0
    others = total - current_worst
    bound = min(limits.symbol_cap(symbol), limits.max_exposure_usdt - others)
    position, pending_buy, pending_sell = current
    edge = position + pending_buy if side == "buy" else (pending_sell - position)
    return max(0.0, bound - edge)


def size_order(
    exposures: Mapping[str, SymbolExposure],
    *,
    symbol: str,
    side: Side,
    strength: float,
    confidence: float,
    price: float,
    spec: SymbolSpec,
    limits: RiskLimits,
) -> Sizing:
    """Size an order from signal conviction, capped by the headroom, rounded to lot and tick.

    Notional = ``order_usdt_at_full_conviction * strength * confidence``, capped by
    :func:`headroom_usdt`; the price is put on the tick grid away from the market and the
    quantity rounded down to whole lots, so rounding never takes the order above a limit.
    """
    return _size(
        headroom_usdt(exposures, symbol, side, limits),
        side,
        strength,
        confidence,
        price,
        spec,
        limits,
    )


def _size(
    room: float,
    side: Side,
    strength: float,
    confidence: float,
    price: float,
    spec: SymbolSpec,
    limits: RiskLimits,
) -> Sizing:
    """:func:`size_order` with the headroom ``room``."""
    px = spec.round_price(price, side)
    if not px > 0:
        return Sizing(0.0, px, RejectReason.INVALID, f"price {price} rounds to {px}")
    conviction = min(1.0, max(0.0, strength)) * min(1.0, max(0.0, confidence))
    target = limits.order_usdt_at_full_conviction * conviction
    qty = spec.round_qty(min(target, room) / px)
    if qty <= 0 or qty * px + _EPS < limits.min_order_size_usdt:
        reason = RejectReason.NO_HEADROOM if room < target else RejectReason.BELOW_MIN_ORDER_SIZE
        return Sizing(0.0, px, reason, f"target {target:.2f} USDT, headroom {room:.2f} USDT")
    if qty + _EPS < spec.min_qty or qty * px + _EPS < spec.min_notional:
        return Sizing(0.0, px, RejectReason.BELOW_VENUE_MINIMUM, f"qty {qty} at {px}")
    return Sizing(qty, px)


@dataclass
class _Reservation:
    symbol: str
    side: Side
    remaining_qty: float
    price: float


@dataclass
class _Holding:
    qty: float = 0.0
    mark: float = 0.0


@dataclass
class RiskLedger:
    """Positions and reserved working orders, with atomic check-and-reserve.

    Life of an order: :meth:`try_reserve` before it is stored and sent; :meth:`on_fill` for
    every execution; :meth:`release` when it ends (rejected, cancelled, failed, or filled —
    releasing a fully filled order is a no-op). Rebuild with :meth:`restore` after a restart or
    a reconciliation.
    """

    limits: RiskLimits
    state: RiskState = field(default_factory=RiskState)
    _holdings: dict[str, _Holding] = field(default_factory=dict, repr=False)
    _reserved: dict[str, _Reservation] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def exposures(self) -> dict[str, SymbolExposure]:
        """The current snapshot, per symbol."""
        with self._lock:
            return self._exposures()

    def _exposures(self) -> dict[str, SymbolExposure]:
        return {symbol: SymbolExposure(*row) for symbol, row in self._rows().items()}

    def try_reserve(self, intent: OrderIntent, spec: SymbolSpec | None = None) -> RiskDecision:
        """Check ``intent`` and, if accepted, reserve its exposure — one atomic step.

        A client order id already reserved is refused as a duplicate.
        """
        with self._lock:
            if intent.client_order_id in self._reserved:
                return RiskDecision.reject(RejectReason.DUPLICATE, intent.client_order_id)
            decision = evaluate(self._exposures(), intent, self.limits, self.state, spec)
            if decision.accepted:
                self._reserved[intent.client_order_id] = _Reservation(
                    intent.symbol, intent.side, intent.qty, intent.price
                )
            return decision

    def size_and_reserve(
        self,
        client_order_id: str,
        *,
        symbol: str,
        side: Side,
        strength: float,
        confidence: float,
        price: float,
        spec: SymbolSpec,
    ) -> tuple[Sizing, RiskDecision]:
        """:func:`size_order` then :meth:`try_reserve` under one lock (no stale headroom)."""
        with self._lock:
            if client_order_id in self._reserved:
                dup = RiskDecision.reject(RejectReason.DUPLICATE, client_order_id)
                return Sizing(0.0, price, RejectReason.DUPLICATE), dup
            # the snapshot's figures, once for both steps (the snapshot cannot change in
            # between): exactly what size_order and evaluate compute from _exposures()
            rows = self._rows()
            current = rows.get(symbol, _NO_ROW)
            worst = [_worst(r) for r in rows.values()]
            total = sum(worst)  # total_exposure: the same sum in the same order
            count = sum(1 for w in worst if w > _EPS)  # open_positions
            limits = self.limits
            sizing = _size(
                _headroom(current, total, count, symbol, side, limits),
                side,
                strength,
                confidence,
                price,
                spec,
                limits,
            )
            if sizing.reason is not None:
                return sizing, RiskDecision.reject(sizing.reason, sizing.detail)
            decision = _evaluate(
                symbol,
                side,
                sizing.qty,
                sizing.price,
                current,
                total,
                count,
                limits,
                self.state,
                spec,
            )
            if decision.accepted:
                self._reserved[client_order_id] = _Reservation(
                    symbol, side, sizing.qty, sizing.price
                )
            return sizing, decision

    def _rows(self) -> dict[str, _Row]:
        """Each symbol's exposure as a plain row (``_exposures`` wraps them): the position
        first, then every reservation in order (the total's float sum follows this order)."""
        out: dict[str, _Row] = {}
        for symbol, h in self._holdings.items():
            if h.qty:
                out[symbol] = (h.qty * h.mark, 0.0, 0.0)
        for r in self._reserved.values():  # _with_order, inlined: once per working order
            position, pending_buy, pending_sell = out.get(r.symbol, _NO_ROW)
            if r.side == "buy":
                out[r.symbol] = (position, pending_buy + r.remaining_qty * r.price, pending_sell)
            else:
                out[r.symbol] = (position, pending_buy, pending_sell + r.remaining_qty * r.price)
        return out

    def release(self, client_order_id: str) -> bool:
        """Drop what is left of a reservation (order rejected, cancelled, failed or done)."""
        with self._lock:
            return self._reserved.pop(client_order_id, None) is not None

    def on_fill(
        self, client_order_id: str, symbol: str, side: Side, qty: float, price: float
    ) -> None:
        """Move ``qty`` from the order's reservation into the position (one atomic step).

        Fills of unknown orders (placed outside the executor) only change the position.
        """
        with self._lock:
            r = self._reserved.get(client_order_id)
            if r is not None:
                r.remaining_qty = max(0.0, r.remaining_qty - qty)
            h = self._holdings.setdefault(symbol, _Holding())
            h.qty += qty if side == "buy" else -qty
            if abs(h.qty) <= _EPS * max(1.0, qty):
                h.qty = 0.0
            h.mark = price  # the latest execution is the freshest mark we have

    def set_mark(self, symbol: str, price: float) -> None:
        """Revalue ``symbol``'s position at ``price``."""
        with self._lock:
            self._holdings.setdefault(symbol, _Holding()).mark = price

    def set_position(self, symbol: str, qty: float, mark: float) -> None:
        """Overwrite one position (from reconciliation with the venue)."""
        with self._lock:
            self._holdings[symbol] = _Holding(qty, mark)

    def set_state(self, state: RiskState) -> None:
        """Replace the kill switch / daily PnL inputs."""
        with self._lock:
            self.state = state

    def restore(
        self, positions: Iterable[tuple[str, float, float]], working: Iterable[OrderIntent]
    ) -> None:
        """Replace everything: positions as ``(symbol, signed qty, mark)`` and working orders
        with their remaining quantity (after a restart or reconciliation)."""
        with self._lock:
            self._holdings = {s: _Holding(q, m) for s, q, m in positions}
            self._reserved = {
                w.client_order_id: _Reservation(w.symbol, w.side, w.qty, w.price) for w in working
            }

    def reserved_ids(self) -> frozenset[str]:
        """Client order ids holding a reservation."""
        with self._lock:
            return frozenset(self._reserved)
