"""Instruments: tick and lot sizes, and exact conversion between integer ticks/lots and the
exchanges' decimal strings (prices and quantities travel as strings, never floats)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation


def _fmt(units: int, dp: int) -> str:
    if dp == 0:
        return str(units)
    sign = "-" if units < 0 else ""
    s = str(abs(units)).rjust(dp + 1, "0")
    return f"{sign}{s[:-dp]}.{s[-dp:]}"


@dataclass(frozen=True)
class Instrument:
    """A linear USDT perpetual. ``tick = tick_units * 10**-price_dp``,
    ``lot = lot_units * 10**-qty_dp``; the engine works in integer ticks and lots."""

    symbol: str
    base: str
    tick_units: int
    price_dp: int
    lot_units: int
    qty_dp: int
    start_price: float
    mean_order_lots: float
    quote: str = "USDT"
    _price_cache: dict[int, str] = field(default_factory=dict, compare=False, repr=False)
    _qty_cache: dict[int, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def tick_size(self) -> str:
        return _fmt(self.tick_units, self.price_dp)

    @property
    def lot_size(self) -> str:
        return _fmt(self.lot_units, self.qty_dp)

    @property
    def tick_decimal(self) -> Decimal:
        return Decimal(self.tick_units).scaleb(-self.price_dp)

    @property
    def lot_decimal(self) -> Decimal:
        return Decimal(self.lot_units).scaleb(-self.qty_dp)

    def price_str(self, ticks: int) -> str:
        cached = self._price_cache.get(ticks)
        if cached is None:
            cached = _fmt(ticks * self.tick_units, self.price_dp)
            if len(self._price_cache) < 1_000_000:
                self._price_cache[ticks] = cached
        return cached

    def qty_str(self, lots: int) -> str:
        cached = self._qty_cache.get(lots)
        if cached is None:
            cached = _fmt(lots * self.lot_units, self.qty_dp)
            if len(self._qty_cache) < 100_000:
                self._qty_cache[lots] = cached
        return cached

    def quote_str(self, ticks_times_lots: int) -> str:
        """A notional (price * qty) given as ticks * lots, exact."""
        return _fmt(
            ticks_times_lots * self.tick_units * self.lot_units, self.price_dp + self.qty_dp
        )

    def price_float(self, ticks: float) -> float:
        return ticks * self.tick_units / 10**self.price_dp

    def qty_float(self, lots: float) -> float:
        return lots * self.lot_units / 10**self.qty_dp

    def to_ticks(self, text: str) -> int | None:
        """Ticks for a decimal price string, or ``None`` if it is not a positive multiple
        of the tick size."""
        return _to_units(text, self.tick_decimal)

    def to_lots(self, text: str) -> int | None:
        """Lots for a decimal quantity string, or ``None`` if not a positive multiple."""
        return _to_units(text, self.lot_decimal)


def _to_units(text: str, step: Decimal) -> int | None:
    try:
        value = Decimal(str(text).strip())
    except (InvalidOperation, ValueError):
        return None
    if not value.is_finite() or value <= 0:
        return None
    units = value / step
    if units != units.to_integral_value():
        return None
    return int(units)


# Tick/lot sizes as on Binance USD-M (BTCUSDT 0.10/0.001, ETHUSDT 0.01/0.001, SOLUSDT 0.0100/1).
KNOWN: dict[str, tuple[int, int, int, int, float, float]] = {
    # symbol: tick_units, price_dp, lot_units, qty_dp, start_price, mean order size in lots
    "BTCUSDT": (10, 2, 1, 3, 60_000.0, 40.0),
    "ETHUSDT": (1, 2, 1, 3, 3_000.0, 400.0),
    "SOLUSDT": (100, 4, 1, 0, 150.0, 20.0),
    "BNBUSDT": (10, 3, 1, 2, 600.0, 50.0),
    "XRPUSDT": (1, 4, 1, 1, 0.6, 5000.0),
}


def instrument_for(symbol: str) -> Instrument:
    """The instrument for ``symbol``: known specs, or a generic one (tick 0.001, lot 0.1,
    start price 10) for any other ``…USDT`` symbol."""
    symbol = symbol.upper()
    spec = KNOWN.get(symbol, (1, 3, 1, 1, 10.0, 100.0))
    base = symbol[:-4] if symbol.endswith("USDT") else symbol
    return Instrument(symbol, base, *spec)
