"""Venue adapters behind one async interface: paper (the backtests' fill model against the
live ``md.book``), Binance USD-M and Bybit v5 linear (signed REST + user-data stream)."""

from depthflow.executor.venues.base import (
    NewOrder,
    OrderReport,
    ReportSink,
    Venue,
    VenueError,
    VenueRejected,
    VenueUnavailable,
    VenueUnknown,
)

__all__ = [
    "NewOrder",
    "OrderReport",
    "ReportSink",
    "Venue",
    "VenueError",
    "VenueRejected",
    "VenueUnavailable",
    "VenueUnknown",
]
