"""Hot-path decoding of md.book and md.trades values: orjson into plain tuples.

The schemas stay defined once, as pydantic models in ``depthflow.common.schemas``; validating
a 40-level book with ``Book.model_validate`` costs several times what orjson's parse does, so
the features service checks the shape itself for the common case and leaves everything else
to the model:

- a value whose keys, types and ranges are exactly what the producers write (ints as ints,
  floats as floats, levels as ``[price, qty]`` float pairs) is accepted by a few type checks;
  every value accepted this way is one the model accepts too, with the same field values;
- anything else (a missing or unknown key, an int where a float is expected, a string, an
  out-of-range number, a wrong ``schema_version``) goes through ``Topic.decode``, which either
  coerces it exactly as before or raises ``DecodeError`` with the model's reason (→ DLQ).

So decoding is exactly as strict as the model, just faster where nothing is unusual.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from depthflow.common.errors import DecodeError
from depthflow.common.schemas import BOOK, TRADES, Book, Topic, Trade

_EXCHANGES = frozenset(("binance", "bybit"))
_BOOK_REQUIRED = frozenset(
    (
        "exchange",
        "symbol",
        "seq",
        "prev_seq",
        "exchange_ts_us",
        "local_ts_us",
        "bid_price",
        "bid_qty",
        "ask_price",
        "ask_qty",
        "bids",
        "asks",
    )
)
_BOOK_FIELDS = frozenset(Book.model_fields)
_TRADE_FIELDS = frozenset(Trade.model_fields)
_TRADE_REQUIRED = _TRADE_FIELDS - {"schema_version", "feed_id", "feed_seq"}
_INF = float("inf")
_MAX_LEVELS = 20

assert _BOOK_REQUIRED <= _BOOK_FIELDS
assert {
    "trace_id",
    "cross_seq",
    "tob_changed",
    "feed_id",
    "trades_before",
    "schema_version",
} == _BOOK_FIELDS - _BOOK_REQUIRED


class BookIn(NamedTuple):
    """The md.book fields the features service uses. Levels are ``[price, qty]`` pairs."""

    exchange: str
    symbol: str
    seq: int
    exchange_ts_us: int
    local_ts_us: int
    bids: list[Any]
    asks: list[Any]
    trace_id: str
    feed_id: str
    trades_before: int


class TradeIn(NamedTuple):
    """The md.trades fields the features service uses."""

    exchange: str
    symbol: str
    price: float
    qty: float
    is_buy: bool
    exchange_ts_us: int
    feed_id: str
    feed_seq: int


def _parse(topic: Topic[Any], data: Any) -> dict[str, Any] | None:
    """The JSON object, or None when the value is not one (the model path says why)."""
    if data is None:
        return None
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(topic.name, f"not JSON ({exc})") from None
    return obj if type(obj) is dict else None


def _version_ok(obj: dict[str, Any]) -> bool:
    # Topic.decode refuses a missing or other schema_version before the model runs
    v = obj.get("schema_version")
    return type(v) is int and v == 1


def _levels_ok(levels: Any) -> bool:
    if type(levels) is not list or len(levels) > _MAX_LEVELS:
        return False
    for lv in levels:
        if type(lv) is not list or len(lv) != 2:
            return False
        p, q = lv
        if type(p) is not float or type(q) is not float:
            return False
    return True


def _book_fast(obj: dict[str, Any]) -> BookIn | None:
    keys = obj.keys()
    if not (_BOOK_REQUIRED <= keys <= _BOOK_FIELDS) or not _version_ok(obj):
        return None
    ex = obj["exchange"]
    sym = obj["symbol"]
    seq = obj["seq"]
    ts = obj["exchange_ts_us"]
    lts = obj["local_ts_us"]
    trace = obj.get("trace_id", "")
    feed = obj.get("feed_id", "")
    before = obj.get("trades_before", 0)
    bids = obj["bids"]
    asks = obj["asks"]
    if (
        type(ex) is not str
        or ex not in _EXCHANGES
        or type(sym) is not str
        or type(seq) is not int
        or type(obj["prev_seq"]) is not int
        or type(ts) is not int
        or type(lts) is not int
        or type(obj["bid_price"]) is not float
        or type(obj["bid_qty"]) is not float
        or type(obj["ask_price"]) is not float
        or type(obj["ask_qty"]) is not float
        or type(trace) is not str
        or type(obj.get("cross_seq", 0)) is not int
        or type(obj.get("tob_changed", True)) is not bool
        or type(feed) is not str
        or type(before) is not int
        or before < 0
        or not _levels_ok(bids)
        or not _levels_ok(asks)
    ):
        return None
    return BookIn(ex, sym, seq, ts, lts, bids, asks, trace, feed, before)


def _trade_fast(obj: dict[str, Any]) -> TradeIn | None:
    keys = obj.keys()
    if not (_TRADE_REQUIRED <= keys <= _TRADE_FIELDS) or not _version_ok(obj):
        return None
    ex = obj["exchange"]
    price = obj["price"]
    qty = obj["qty"]
    side = obj["side"]
    ts = obj["exchange_ts_us"]
    sym = obj["symbol"]
    feed = obj.get("feed_id", "")
    feed_seq = obj.get("feed_seq", 0)
    if (
        type(ex) is not str
        or ex not in _EXCHANGES
        or type(sym) is not str
        or type(feed) is not str
        or type(feed_seq) is not int
        or feed_seq < 0
        or type(obj["trade_id"]) is not str
        or type(price) is not float
        or not 0.0 < price < _INF
        or type(qty) is not float
        or not 0.0 < qty < _INF
        or (side != "buy" and side != "sell")
        or type(ts) is not int
        or type(obj["local_ts_us"]) is not int
    ):
        return None
    return TradeIn(ex, sym, price, qty, side == "buy", ts, feed, feed_seq)


def decode_book(data: Any) -> BookIn:
    """An md.book value as ``BookIn``; raises ``DecodeError`` exactly when ``BOOK.decode``
    would (then with its reason)."""
    obj = _parse(BOOK, data)
    if obj is not None:
        fast = _book_fast(obj)
        if fast is not None:
            return fast
    book = BOOK.decode(data)
    return BookIn(
        book.exchange,
        book.symbol,
        book.seq,
        book.exchange_ts_us,
        book.local_ts_us,
        [list(lv) for lv in book.bids],
        [list(lv) for lv in book.asks],
        book.trace_id,
        book.feed_id,
        book.trades_before,
    )


def decode_trade(data: Any) -> TradeIn:
    """An md.trades value as ``TradeIn``; raises ``DecodeError`` exactly when
    ``TRADES.decode`` would (then with its reason)."""
    obj = _parse(TRADES, data)
    if obj is not None:
        fast = _trade_fast(obj)
        if fast is not None:
            return fast
    trade = TRADES.decode(data)
    return TradeIn(
        trade.exchange,
        trade.symbol,
        trade.price,
        trade.qty,
        trade.side == "buy",
        trade.exchange_ts_us,
        trade.feed_id,
        trade.feed_seq,
    )
