"""Position accounting for linear (USDT-margined) contracts.

A :class:`Position` is an immutable value; :meth:`Position.apply` returns the next value and
what the fill did (open, increase, reduce, close, flip). Quantities are signed (long > 0).
Average entry is the quantity-weighted mean of the fills that built the current side; PnL is
realised on the reduced quantity against that average; fees are accumulated separately
(``fees_paid``; a negative fee is a maker rebate).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

Side = Literal["buy", "sell"]

QTY_EPSILON = 1e-9
"""Quantities whose magnitude is below this (relative to the traded size) are zero: float
arithmetic (0.3 - 0.1 - 0.2) must not leave a dust position open."""


class FillKind(StrEnum):
    """What a fill did to the position."""

    OPEN = "open"
    INCREASE = "increase"
    REDUCE = "reduce"
    CLOSE = "close"
    FLIP = "flip"


@dataclass(frozen=True)
class PositionFill:
    """One execution against a position."""

    side: Side
    qty: float
    price: float
    fee: float = 0.0

    def __post_init__(self) -> None:
        if self.side not in ("buy", "sell"):
            raise ValueError(f"side must be buy or sell, got {self.side!r}")
        if not self.qty > 0:
            raise ValueError(f"qty must be > 0, got {self.qty}")
        if not self.price > 0:
            raise ValueError(f"price must be > 0, got {self.price}")

    @property
    def signed_qty(self) -> float:
        """Quantity with the sign of its direction (buy > 0)."""
        return self.qty if self.side == "buy" else -self.qty


@dataclass(frozen=True)
class PositionUpdate:
    """The result of applying one fill."""

    position: Position
    kind: FillKind
    realized_pnl: float  # realised by this fill, before fees
    closed_qty: float  # quantity of the previous side that this fill closed (>= 0)
    opened_qty: float  # quantity this fill added on the resulting side (>= 0)


@dataclass(frozen=True)
class Position:
    """A position in one symbol."""

    symbol: str
    qty: float = 0.0
    avg_entry_price: float = 0.0
    realized_pnl: float = 0.0
    fees_paid: float = 0.0

    @property
    def is_flat(self) -> bool:
        """Whether no quantity is held."""
        return self.qty == 0.0

    @property
    def side(self) -> Side | None:
        """``buy`` for a long, ``sell`` for a short, None when flat."""
        if self.qty > 0:
            return "buy"
        if self.qty < 0:
            return "sell"
        return None

    @property
    def net_realized_pnl(self) -> float:
        """Realised PnL after fees."""
        return self.realized_pnl - self.fees_paid

    def unrealized_pnl(self, mark_price: float) -> float:
        """PnL of the open quantity if it were closed at ``mark_price`` (fees excluded)."""
        return self.qty * (mark_price - self.avg_entry_price) if self.qty else 0.0

    def notional(self, mark_price: float) -> float:
        """Absolute exposure in quote currency at ``mark_price``."""
        return abs(self.qty) * mark_price

    def apply(self, fill: PositionFill) -> PositionUpdate:
        """Apply one fill: open, increase, reduce, close or flip."""
        # the next value built directly (all five fields), not with dataclasses.replace: the
        # same Position, several times cheaper (a backtest applies every fill)
        fees = self.fees_paid + fill.fee
        delta = fill.signed_qty
        if self.qty == 0.0:
            pos = Position(self.symbol, delta, fill.price, self.realized_pnl, fees)
            return PositionUpdate(pos, FillKind.OPEN, 0.0, 0.0, fill.qty)
        if (self.qty > 0) == (delta > 0):
            new_qty = self.qty + delta
            avg = (self.qty * self.avg_entry_price + delta * fill.price) / new_qty
            pos = Position(self.symbol, new_qty, avg, self.realized_pnl, fees)
            return PositionUpdate(pos, FillKind.INCREASE, 0.0, 0.0, fill.qty)
        held = abs(self.qty)
        closed = min(held, fill.qty)
        direction = 1.0 if self.qty > 0 else -1.0
        pnl = direction * closed * (fill.price - self.avg_entry_price)
        realized = self.realized_pnl + pnl
        rest = fill.qty - closed
        tolerance = QTY_EPSILON * max(1.0, held, fill.qty)
        if rest <= tolerance and held - closed > tolerance:
            pos = Position(
                self.symbol, direction * (held - closed), self.avg_entry_price, realized, fees
            )
            return PositionUpdate(pos, FillKind.REDUCE, pnl, closed, 0.0)
        if rest <= tolerance:
            pos = Position(self.symbol, 0.0, 0.0, realized, fees)
            return PositionUpdate(pos, FillKind.CLOSE, pnl, held, 0.0)
        pos = Position(self.symbol, -direction * rest, fill.price, realized, fees)
        return PositionUpdate(pos, FillKind.FLIP, pnl, held, rest)
