"""The venue interface and the report every adapter speaks.

Outcomes of a placement are three exceptions apart from success, and the executor treats
them differently:

* :class:`VenueRejected` — the venue answered and refused (a business rejection): the order
  is ``Rejected``.
* :class:`VenueUnavailable` — the request provably never left (breaker open, rate limiter
  blocked or banned): the order is ``Failed``.
* :class:`VenueUnknown` — sent, fate unknown (timeout, connection reset, HTTP 503 "unknown"):
  resolved only by querying the order by its client id, never by resending.

Order reports are cumulative (filled quantity and quote so far), so a lost, repeated or
reordered report never loses or double-counts a fill: the store applies only the increase.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from depthflow.executor.fsm import OrderState
from depthflow.executor.reconcile import OrderView, PositionView
from depthflow.executor.risk import Side, SymbolSpec


class VenueError(Exception):
    """Base of the venue outcomes."""


class VenueRejected(VenueError):
    """The venue refused the request (``code`` is the venue's)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"rejected {code}: {message}")
        self.code = code
        self.message = message


class VenueUnavailable(VenueError):
    """The request was not sent (breaker open, rate limited, banned)."""

    def __init__(self, reason: str, retry_in_s: float = 0.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_in_s = retry_in_s


class VenueUnknown(VenueError):
    """The request may or may not have been executed (timeout, 503 unknown)."""


@dataclass(frozen=True)
class NewOrder:
    """An order to place: a LIMIT (IOC for marketable signals) with our client id."""

    client_order_id: str
    symbol: str
    side: Side
    qty: float
    price: float
    time_in_force: str = "IOC"
    order_type: str = "LIMIT"


@dataclass(frozen=True)
class OrderReport:
    """A venue's word about one order: cumulative fill figures, plus the last trade when the
    report is about one execution (``trade_id`` then names it)."""

    client_order_id: str
    symbol: str
    state: OrderState
    venue_order_id: str = ""
    side: str = ""
    qty: float = 0.0
    filled_qty: float = 0.0
    filled_quote: float = 0.0
    trade_id: str = ""
    last_qty: float = 0.0
    last_price: float = 0.0
    last_fee: float | None = None
    cum_fee: float | None = None  # cumulative fee when the venue reports it (Bybit)
    liquidity: str = ""
    source: str = "rest"  # rest | stream | query | reconcile | paper
    ts_us: int = 0

    def view(self) -> OrderView:
        """The reconciliation view."""
        avg = self.filled_quote / self.filled_qty if self.filled_qty > 0 else None
        return OrderView(
            self.client_order_id,
            self.symbol,
            self.side,
            self.state,
            self.qty,
            self.filled_qty,
            self.venue_order_id,
            avg,
        )


ReportSink = Callable[[OrderReport], Awaitable[None]]


class Venue(abc.ABC):
    """One trading venue. ``start`` connects (and opens the user-data stream that calls the
    report sink); every method may raise the outcomes above."""

    name: str = "venue"
    exchange: str = "binance"
    taker_fee_rate: float = 0.0005

    def __init__(self) -> None:
        self._sink: ReportSink | None = None

    def on_report(self, sink: ReportSink) -> None:
        """Where asynchronous order reports (user-data stream, paper fills) go."""
        self._sink = sink

    async def _emit(self, report: OrderReport) -> None:
        if self._sink is not None:
            await self._sink(report)

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Disconnect."""

    @abc.abstractmethod
    async def symbol_spec(self, symbol: str) -> SymbolSpec:
        """Tick, lot and minimums of ``symbol``."""

    @abc.abstractmethod
    async def best_prices(self, symbol: str) -> tuple[float, float]:
        """Best bid and ask now (a REST call on live venues)."""

    @abc.abstractmethod
    async def place_order(self, order: NewOrder) -> OrderReport:
        """Send a new order; returns the venue's acknowledgement."""

    @abc.abstractmethod
    async def query_order(self, symbol: str, client_order_id: str) -> OrderReport | None:
        """The order by client id, or ``None`` when the venue does not know it."""

    @abc.abstractmethod
    async def open_orders(self) -> list[OrderReport]:
        """Every open order on the account."""

    @abc.abstractmethod
    async def positions(self) -> list[PositionView] | None:
        """Venue positions (``None``: the venue is us — paper)."""

    @abc.abstractmethod
    async def balances(self) -> dict[str, float] | None:
        """Venue balances by asset (``None`` for paper)."""

    def breaker_states(self) -> dict[str, str]:
        """State of each endpoint breaker (metrics, heartbeats)."""
        return {}
