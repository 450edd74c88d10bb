"""Per-symbol streaming feature state: trades and book updates in, 110-value vectors out.

``FeatureState`` is what the features service keeps per symbol (in its changelog-backed table):
``on_trade`` for every trade, ``on_book`` for every book update (returns the vector), and
``to_state``/``from_state`` to persist it as a plain dict. Costs per book update are O(levels),
plus O(50) once per closed minute for the candle and indicator features.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import isfinite
from typing import Any

import numpy as np

from depthflow.features.candles import Candle, CandleBuilder, CandleFeatures
from depthflow.features.indicators import IndicatorState
from depthflow.features.names import CANDLE_US, FEATURE_SET_VERSION, N_FEATURES, defaults
from depthflow.features.orderbook import InvalidInputError, Level, OrderBookFeatures

STATE_VERSION = 1
_DEFAULTS = defaults()
_DEFAULT_LIST: list[float] = _DEFAULTS.tolist()

__all__ = ["STATE_VERSION", "FeatureState", "InvalidInputError"]


class FeatureState:
    """Streaming state of feature set v1 for one symbol.

    Event order matters and is the caller's: the batch mode defines the canonical order of a
    replay as "by exchange timestamp, a trade before a book on equal timestamps".
    """

    def __init__(self) -> None:
        self.orderbook = OrderBookFeatures()
        self.candles = CandleBuilder()
        self.candle_features = CandleFeatures()
        self.indicators = IndicatorState()
        self.last_seq: int | None = None
        self.last_exchange_ts_us: int | None = None
        self.last_local_ts_us: int | None = None
        self.n_books = 0
        self.n_trades = 0
        self._closed: list[Candle] = []
        # When a list, every candle that closes is also appended here (for storage); the
        # caller owns and drains it. Not part of the persisted state.
        self.candle_sink: list[Candle] | None = None

    def _take_candles(self) -> None:
        closed = self._closed
        if closed:
            for c in closed:
                self.candle_features.on_candle(c)
                self.indicators.on_candle(c)
            if self.candle_sink is not None:
                self.candle_sink.extend(closed)
            closed.clear()

    def on_trade(self, price: float, qty: float, is_buy: bool, exchange_ts_us: int) -> None:
        """Account one trade (``is_buy``: the taker bought). Raises ``InvalidInputError``
        (nothing changed) for a non-positive/non-finite price or qty or a timestamp going
        backwards."""
        self.orderbook.on_trade(price, qty, is_buy, exchange_ts_us)
        self.candles.on_trade(price, qty, exchange_ts_us // CANDLE_US, self._closed)
        self._take_candles()
        self.n_trades += 1

    def on_book(
        self,
        bids: Sequence[Level],
        asks: Sequence[Level],
        exchange_ts_us: int,
        local_ts_us: int,
        seq: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Apply one top-20 book update and return ``(values, valid)``.

        ``bids``/``asks`` are ``(price, qty)`` pairs best-first. ``values`` is float64[110],
        never NaN or inf; ``valid`` is bool[110]; where ``valid`` is False the value is the
        feature's documented default. Raises ``InvalidInputError`` (nothing changed) for an
        inconsistent book.
        """
        values, valid = self.on_book_lists(bids, asks, exchange_ts_us, local_ts_us, seq)
        return np.array(values, np.float64), np.array(valid, bool)

    def on_book_lists(
        self,
        bids: Sequence[Level],
        asks: Sequence[Level],
        exchange_ts_us: int,
        local_ts_us: int,
        seq: int,
    ) -> tuple[list[float], list[bool]]:
        """``on_book`` with plain lists instead of arrays (the streaming service stacks a
        whole batch into one array; two 110-element arrays per update cost more than the
        order-book features themselves). Same values, same guarantees."""
        vals: list[float] = []
        ok: list[bool] = []
        self.orderbook.on_book(bids, asks, exchange_ts_us, vals, ok)
        self.candles.on_book(vals[2] if ok[2] else None, exchange_ts_us // CANDLE_US, self._closed)
        self._take_candles()
        self.last_seq = seq
        self.last_exchange_ts_us = exchange_ts_us
        self.last_local_ts_us = local_ts_us
        self.n_books += 1
        vals += self.candle_features.values
        vals += self.indicators.values
        ok += self.candle_features.valid
        ok += self.indicators.valid
        total = sum(vals)
        if total - total != 0.0:  # an inf/NaN somewhere (or a sum overflowing): check each
            for i, x in enumerate(vals):
                if not isfinite(x):  # overflow on extreme inputs: default and flag
                    vals[i] = _DEFAULT_LIST[i]
                    ok[i] = False
        return vals, ok

    def to_state(self) -> dict[str, Any]:
        """The whole state as plain JSON-able values; ``from_state`` restores it exactly."""
        return {
            "state_version": STATE_VERSION,
            "feature_set": FEATURE_SET_VERSION,
            "orderbook": self.orderbook.to_state(),
            "candles": self.candles.to_state(),
            "candle_features": self.candle_features.to_state(),
            "indicators": self.indicators.to_state(),
            "last_seq": self.last_seq,
            "last_exchange_ts_us": self.last_exchange_ts_us,
            "last_local_ts_us": self.last_local_ts_us,
            "n_books": self.n_books,
            "n_trades": self.n_trades,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> FeatureState:
        """Rebuild a ``FeatureState`` from ``to_state`` output (also after a JSON trip)."""
        if (
            state.get("state_version") != STATE_VERSION
            or state.get("feature_set") != FEATURE_SET_VERSION
        ):
            raise ValueError(
                f"unsupported feature state {state.get('state_version')!r}/"
                f"{state.get('feature_set')!r}"
            )
        f = cls()
        f.orderbook = OrderBookFeatures.from_state(state["orderbook"])
        f.candles = CandleBuilder.from_state(state["candles"])
        f.candle_features = CandleFeatures.from_state(state["candle_features"])
        f.indicators = IndicatorState.from_state(state["indicators"])
        f.last_seq = state["last_seq"]
        f.last_exchange_ts_us = state["last_exchange_ts_us"]
        f.last_local_ts_us = state["last_local_ts_us"]
        f.n_books = int(state["n_books"])
        f.n_trades = int(state["n_trades"])
        return f


assert N_FEATURES == 110
