"""Parsers of Binance USD-M futures and Bybit v5 linear market-data messages.

Pure functions from the bytes/text an exchange sent to typed events. Every deviation from the
protocol — not JSON, a missing or mistyped field, a non-finite or negative number, an absurdly
large array — raises ``ParseError``; nothing is silently dropped or guessed.

Protocol references (the shapes in ``tests/golden`` follow them):
- Binance USD-M "Diff. Book Depth Streams" (``e=depthUpdate``: E, T, s, U, u, pu, b, a),
  "Aggregate Trade Streams" (``e=aggTrade``: E, s, a, p, q, f, l, T, m), REST
  ``GET /fapi/v1/depth`` (lastUpdateId, E, T, bids, asks), combined streams wrap each event
  as ``{"stream": ..., "data": ...}``.
- Bybit v5 public linear ``orderbook.{depth}.{symbol}`` (type snapshot/delta; data s, b, a,
  u, seq; ts, cts), ``publicTrade.{symbol}`` (data[]: T, s, S, v, p, i, ...), REST
  ``GET /v5/market/orderbook`` (result: s, b, a, ts, u, seq, cts).
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

import orjson

from depthflow.collector.events import ControlMessage, DepthUpdate, Level, ParseError, TradeEvent

MAX_FRAME_BYTES: Final = 4 * 1024 * 1024
MAX_LEVELS: Final = 10_000
MAX_TRADES: Final = 10_000
_SYMBOL: Final = re.compile(r"^[A-Z0-9][A-Z0-9_\-]{0,39}$")
_INF: Final = math.inf
_NAN: Final = math.nan
_loads: Final = orjson.loads  # a C static once compiled, not a module attribute lookup
# Decimal-string → float is most of a depth message's parsing cost, and a market's price
# strings repeat (levels near the touch are updated over and over): each price string is
# converted and checked once, then looked up. Bounded: emptied when full. Quantity strings
# repeat less (but "0" and small sizes do): the same, in their own, smaller cache.
_PRICE_CACHE_MAX: Final = 1 << 18
_QTY_CACHE_MAX: Final = 1 << 16
_prices: Final[dict[str, float]] = {}
_quantities: Final[dict[str, float]] = {}
_symbols: Final[set[str]] = set()  # symbol strings already checked

Frame = str | bytes | bytearray | memoryview
TradeBatch = list[TradeEvent]
BinanceEvent = DepthUpdate | TradeBatch | ControlMessage
BybitEvent = DepthUpdate | TradeBatch | ControlMessage


def _load(exchange: str, frame: Frame) -> dict[str, Any]:
    if len(frame) > MAX_FRAME_BYTES:
        raise ParseError(exchange, f"frame of {len(frame)} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        obj = _loads(frame)
    except orjson.JSONDecodeError as exc:
        raise ParseError(exchange, f"not JSON ({exc})") from None
    if type(obj) is not dict:
        raise ParseError(exchange, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _int(exchange: str, obj: dict[str, Any], field: str, minimum: int = 0) -> int:
    try:
        value = obj[field]
    except KeyError:
        raise ParseError(exchange, f"missing field {field!r}") from None
    if type(value) is not int or value < minimum:
        raise ParseError(exchange, f"field {field!r} is not an integer >= {minimum}: {value!r:.60}")
    return value


def _symbol(exchange: str, obj: dict[str, Any], field: str) -> str:
    value = obj.get(field)
    if type(value) is str and value in _symbols:
        return value
    if type(value) is not str or not _SYMBOL.match(value):
        raise ParseError(exchange, f"field {field!r} is not a symbol: {value!r:.60}")
    if len(_symbols) >= 100_000:
        _symbols.clear()
    _symbols.add(value)
    return value


def _number(exchange: str, value: Any, field: str, positive: bool) -> float:
    if type(value) is not str:
        raise ParseError(exchange, f"{field} is not a decimal string: {value!r:.60}")
    try:
        number = float(value)
    except ValueError:
        raise ParseError(exchange, f"{field} is not a decimal: {value!r:.60}") from None
    if not (0.0 < number < _INF if positive else 0.0 <= number < _INF):
        raise ParseError(exchange, f"{field} out of range: {value!r:.60}")
    return number


def _levels(exchange: str, obj: dict[str, Any], field: str) -> list[Level]:
    """``[["price", "qty"], ...]`` → ``[(price, qty), ...]``; price > 0, qty >= 0, finite."""
    try:
        raw = obj[field]
    except KeyError:
        raise ParseError(exchange, f"missing field {field!r}") from None
    if type(raw) is not list:
        raise ParseError(exchange, f"field {field!r} is not a list")
    if len(raw) > MAX_LEVELS:
        raise ParseError(exchange, f"field {field!r} has {len(raw)} levels (max {MAX_LEVELS})")
    # Any-typed on purpose: compiled, a float-typed value would be unboxed and re-boxed
    # (a new float object) for every tuple; this way each level holds the cached objects.
    out: list[Any] = []
    prices = _prices
    quantities = _quantities
    for level in raw:
        if type(level) is not list or len(level) != 2:
            raise ParseError(exchange, f"{field} level is not a [price, qty] pair: {level!r:.60}")
        p, q = level
        # Fast path: well-formed strings already seen (a dict lookup each); then well-formed
        # strings not seen yet; the checks below reject everything else.
        if type(p) is str and type(q) is str:
            price: Any = prices.get(p)
            if price is None:
                value = _decimal(p)
                if 0.0 < value < _INF:
                    if len(prices) >= _PRICE_CACHE_MAX:
                        prices.clear()
                    price = prices[p] = value
            qty: Any = quantities.get(q)
            if qty is None:
                value = _decimal(q)
                if 0.0 <= value < _INF:
                    if len(quantities) >= _QTY_CACHE_MAX:
                        quantities.clear()
                    qty = quantities[q] = value
            if price is not None and qty is not None:
                out.append((price, qty))
                continue
        _number(exchange, p, f"{field} price", positive=True)
        _number(exchange, q, f"{field} qty", positive=False)
    return out


def _decimal(text: str) -> float:
    """``float(text)``, or NaN when it is not a decimal."""
    try:
        return float(text)
    except ValueError:
        return _NAN


# ---------------------------------------------------------------------------- Binance


def _binance_depth(event: dict[str, Any]) -> DepthUpdate:
    ex = "binance"
    first, last, prev, ts = event.get("U"), event.get("u"), event.get("pu"), event.get("E")
    # one test for the usual case; otherwise field by field, for the right error
    if not (
        type(first) is int
        and type(last) is int
        and type(prev) is int
        and type(ts) is int
        and 0 <= first <= last
        and prev >= -1
        and ts >= 0
    ):
        first = _int(ex, event, "U")
        last = _int(ex, event, "u")
        prev = _int(ex, event, "pu", minimum=-1)
        if last < first:
            raise ParseError(ex, f"u {last} < U {first}")
        _symbol(ex, event, "s")  # checked before E, as always
        ts = _int(ex, event, "E")
    return DepthUpdate(
        "binance",
        _symbol(ex, event, "s"),
        "diff",
        first,
        last,
        prev,
        ts * 1000,
        _levels(ex, event, "b"),
        _levels(ex, event, "a"),
    )


def _binance_agg_trade(event: dict[str, Any]) -> TradeBatch:
    ex = "binance"
    maker = event.get("m")
    if type(maker) is not bool:
        raise ParseError(ex, f"field 'm' is not a boolean: {maker!r:.60}")
    return [
        TradeEvent(
            "binance",
            _symbol(ex, event, "s"),
            str(_int(ex, event, "a")),
            _number(ex, event.get("p"), "p", positive=True),
            _number(ex, event.get("q"), "q", positive=True),
            # m: the buyer is the maker, so the taker sold.
            "sell" if maker else "buy",
            _int(ex, event, "T") * 1000,
        )
    ]


def parse_binance_frame(frame: Frame) -> BinanceEvent:
    """A Binance USD-M WebSocket frame (raw or combined stream) → a typed event."""
    ex = "binance"
    obj = _load(ex, frame)
    data = obj.get("data")
    if "stream" in obj:
        if type(data) is not dict or type(obj["stream"]) is not str:
            raise ParseError(ex, "combined-stream frame without a 'data' object")
        obj = data
    kind = obj.get("e")
    if kind == "depthUpdate":
        return _binance_depth(obj)
    if kind == "aggTrade":
        return _binance_agg_trade(obj)
    if kind is None:
        if "result" in obj and "id" in obj:
            return ControlMessage(ex, "ack", str(obj.get("id")))
        if "code" in obj or "error" in obj:
            return ControlMessage(ex, "error", orjson.dumps(obj).decode()[:500])
        raise ParseError(ex, "no event type 'e'")
    if type(kind) is not str:
        raise ParseError(ex, f"event type is not a string: {kind!r:.60}")
    return ControlMessage(ex, "other", kind[:100])


def parse_binance_snapshot(frame: Frame, symbol: str) -> DepthUpdate:
    """The body of ``GET /fapi/v1/depth?symbol=...`` → a snapshot of ``symbol``."""
    ex = "binance"
    obj = _load(ex, frame)
    if "code" in obj and "lastUpdateId" not in obj:
        raise ParseError(ex, f"REST error {obj.get('code')!r}: {str(obj.get('msg'))[:200]}")
    last = _int(ex, obj, "lastUpdateId")
    ts = obj.get("E", 0)
    if type(ts) is not int or ts < 0:
        raise ParseError(ex, f"field 'E' is not an integer >= 0: {ts!r:.60}")
    return DepthUpdate(
        "binance",
        symbol,
        "snapshot",
        last,
        last,
        -1,
        ts * 1000,
        _levels(ex, obj, "bids"),
        _levels(ex, obj, "asks"),
    )


# ---------------------------------------------------------------------------- Bybit


def _bybit_book(obj: dict[str, Any], kind: str) -> DepthUpdate:
    ex = "bybit"
    data = obj.get("data")
    if type(data) is not dict:
        raise ParseError(ex, "orderbook message without a 'data' object")
    u = _int(ex, data, "u", minimum=1)
    seq = data.get("seq", 0)
    if type(seq) is not int:
        raise ParseError(ex, f"field 'seq' is not an integer: {seq!r:.60}")
    return DepthUpdate(
        "bybit",
        _symbol(ex, data, "s"),
        kind,
        u,
        u,
        u - 1,
        _int(ex, obj, "ts") * 1000,
        _levels(ex, data, "b"),
        _levels(ex, data, "a"),
        seq,
    )


def _bybit_trades(obj: dict[str, Any]) -> TradeBatch:
    ex = "bybit"
    data = obj.get("data")
    if type(data) is not list:
        raise ParseError(ex, "publicTrade message without a 'data' list")
    if len(data) > MAX_TRADES:
        raise ParseError(ex, f"publicTrade batch of {len(data)} trades (max {MAX_TRADES})")
    trades: TradeBatch = []
    for item in data:
        if type(item) is not dict:
            raise ParseError(ex, "publicTrade item is not an object")
        side = item.get("S")
        if side not in ("Buy", "Sell"):
            raise ParseError(ex, f"field 'S' is not Buy/Sell: {side!r:.60}")
        trade_id = item.get("i")
        if type(trade_id) is not str or not trade_id or len(trade_id) > 64:
            raise ParseError(ex, f"field 'i' is not a trade id: {trade_id!r:.60}")
        trades.append(
            TradeEvent(
                "bybit",
                _symbol(ex, item, "s"),
                trade_id,
                _number(ex, item.get("p"), "p", positive=True),
                _number(ex, item.get("v"), "v", positive=True),
                "buy" if side == "Buy" else "sell",
                _int(ex, item, "T") * 1000,
            )
        )
    return trades


def parse_bybit_frame(frame: Frame) -> BybitEvent:
    """A Bybit v5 public WebSocket frame → a typed event."""
    ex = "bybit"
    obj = _load(ex, frame)
    topic = obj.get("topic")
    if topic is None:
        op = obj.get("op")
        if op in ("ping", "pong"):
            return ControlMessage(ex, "pong", str(obj.get("conn_id", ""))[:100])
        if op in ("subscribe", "unsubscribe"):
            if obj.get("success") is True:
                return ControlMessage(ex, "ack", op)
            return ControlMessage(ex, "error", str(obj.get("ret_msg", ""))[:500])
        raise ParseError(ex, "neither 'topic' nor a known 'op'")
    if type(topic) is not str:
        raise ParseError(ex, f"topic is not a string: {topic!r:.60}")
    if topic.startswith("orderbook."):
        kind = obj.get("type")
        if kind == "snapshot":
            return _bybit_book(obj, "snapshot")
        if kind == "delta":
            return _bybit_book(obj, "diff")
        raise ParseError(ex, f"orderbook type is not snapshot/delta: {kind!r:.60}")
    if topic.startswith("publicTrade."):
        return _bybit_trades(obj)
    return ControlMessage(ex, "other", topic[:100])


def parse_bybit_snapshot(frame: Frame, symbol: str) -> DepthUpdate:
    """The body of ``GET /v5/market/orderbook?category=linear&symbol=...``."""
    ex = "bybit"
    obj = _load(ex, frame)
    if obj.get("retCode") != 0:
        raise ParseError(ex, f"REST error {obj.get('retCode')!r}: {str(obj.get('retMsg'))[:200]}")
    result = obj.get("result")
    if type(result) is not dict:
        raise ParseError(ex, "REST orderbook without a 'result' object")
    if _symbol(ex, result, "s") != symbol:
        raise ParseError(ex, f"REST orderbook for {result.get('s')!r}, asked {symbol!r}")
    u = _int(ex, result, "u", minimum=1)
    return DepthUpdate(
        "bybit",
        symbol,
        "snapshot",
        u,
        u,
        u - 1,
        _int(ex, result, "ts") * 1000,
        _levels(ex, result, "b"),
        _levels(ex, result, "a"),
        int(result.get("seq", 0) or 0),
    )


def frame_symbol_hint(frame: Frame) -> str:
    """Best-effort symbol of a frame that failed to parse (for the DLQ key); ``""`` if none."""
    text = frame if isinstance(frame, str) else bytes(frame[:4096]).decode("utf-8", "replace")
    match = re.search(r'"s"\s*:\s*"([A-Z0-9_\-]{1,40})"', text[:4096])
    return match.group(1) if match else ""
