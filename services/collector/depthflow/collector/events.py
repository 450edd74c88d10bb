"""Typed events the parsers produce. Plain slotted classes: they sit on the hot path."""

from __future__ import annotations

from dataclasses import dataclass

from depthflow.common.errors import DepthflowError

Level = tuple[float, float]


class ParseError(DepthflowError):
    """An exchange payload that is not a well-formed message of the protocol.

    The collector counts it, sends the raw bytes to ``dlq.collector`` and carries on.
    """

    def __init__(self, exchange: str, reason: str) -> None:
        super().__init__(f"malformed {exchange} message: {reason}")
        self.exchange = exchange
        self.reason = reason


@dataclass(slots=True)
class DepthUpdate:
    """A book change (``kind="diff"``) or a full book (``kind="snapshot"``).

    Ids, per exchange:
    - Binance diff: ``first_id`` = U, ``last_id`` = u, ``prev_id`` = pu.
    - Binance REST snapshot: ``first_id`` = ``last_id`` = lastUpdateId, ``prev_id`` = -1.
    - Bybit snapshot/delta: ``first_id`` = ``last_id`` = u, ``prev_id`` = u - 1; ``seq`` is
      Bybit's cross sequence.
    """

    exchange: str
    symbol: str
    kind: str
    first_id: int
    last_id: int
    prev_id: int
    exchange_ts_us: int
    bids: list[Level]
    asks: list[Level]
    seq: int = 0


@dataclass(slots=True)
class TradeEvent:
    """One trade; ``side`` is the taker's side (``buy``/``sell``)."""

    exchange: str
    symbol: str
    trade_id: str
    price: float
    qty: float
    side: str
    exchange_ts_us: int


@dataclass(slots=True)
class ControlMessage:
    """A protocol message that carries no market data: subscribe ack, pong, error reply."""

    exchange: str
    kind: str  # "ack" | "pong" | "error" | "other"
    detail: str = ""
