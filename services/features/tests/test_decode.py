"""The hot-path decoder accepts exactly what the pydantic models accept, with the same values,
and refuses (``DecodeError``) exactly what they refuse."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from depthflow.common.errors import DecodeError
from depthflow.common.schemas import BOOK, TRADES
from depthflow.features.decode import decode_book, decode_trade


def _book(**over: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "schema_version": 1,
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "seq": 11,
        "prev_seq": 10,
        "exchange_ts_us": 1_700_000_000_000_000,
        "local_ts_us": 1_700_000_000_000_500,
        "bid_price": 100.0,
        "bid_qty": 1.5,
        "ask_price": 100.5,
        "ask_qty": 2.0,
        "bids": [[100.0, 1.5], [99.5, 3.0]],
        "asks": [[100.5, 2.0], [101.0, 0.25]],
    }
    value.update(over)
    return {k: v for k, v in value.items() if v is not _DROP}


def _trade(**over: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "schema_version": 1,
        "exchange": "bybit",
        "symbol": "ETHUSDT",
        "trade_id": "t-1",
        "price": 3000.5,
        "qty": 0.1,
        "side": "sell",
        "exchange_ts_us": 1_700_000_000_000_000,
        "local_ts_us": 1_700_000_000_000_100,
    }
    value.update(over)
    return {k: v for k, v in value.items() if v is not _DROP}


_DROP = object()

BOOKS = [
    _book(),
    _book(trace_id="abc", cross_seq=5, tob_changed=False),
    _book(bids=[], asks=[]),
    _book(bids=[[100, 1]], asks=[[101.0, 2]]),  # ints: coerced by the model
    _book(seq=11.0),  # a float seq: the model's lax int
    _book(tob_changed=1),
    _book(bids=[[100.0, 1.0]] * 21),  # too many levels
    _book(bids=[[100.0, 1.0, 3.0]]),
    _book(bids=[["100.0", "1.0"]]),
    _book(bids=[[100.0, None]]),
    _book(bids="nope"),
    _book(exchange="kraken"),
    _book(symbol=5),
    _book(schema_version=2),
    _book(schema_version=_DROP),
    _book(schema_version=True),
    _book(seq=_DROP),
    _book(extra_field=1),
    _book(trace_id=7),
    _book(local_ts_us="1"),
]
TRADES_ = [
    _trade(),
    _trade(side="buy", price=1, qty=2),
    _trade(price=0.0),
    _trade(qty=-1.0),
    _trade(side="BUY"),
    _trade(side=1),
    _trade(trade_id=5),
    _trade(exchange="okx"),
    _trade(schema_version=_DROP),
    _trade(unknown=True),
    _trade(exchange_ts_us=1.5),
]


def _model_or_error(topic: Any, raw: bytes) -> Any:
    try:
        return topic.decode(raw)
    except DecodeError as exc:
        return exc


@pytest.mark.parametrize("value", BOOKS)
def test_book_decoding_matches_the_model(value: dict[str, Any]) -> None:
    raw = orjson.dumps(value)
    expected = _model_or_error(BOOK, raw)
    if isinstance(expected, DecodeError):
        with pytest.raises(DecodeError) as err:
            decode_book(raw)
        assert str(err.value) == str(expected)
        return
    got = decode_book(raw)
    assert (got.exchange, got.symbol, got.seq) == (expected.exchange, expected.symbol, expected.seq)
    assert (got.exchange_ts_us, got.local_ts_us) == (expected.exchange_ts_us, expected.local_ts_us)
    assert got.trace_id == expected.trace_id
    for side, model_side in ((got.bids, expected.bids), (got.asks, expected.asks)):
        assert [tuple(lv) for lv in side] == list(model_side)
        assert all(type(x) is float for lv in side for x in lv)


@pytest.mark.parametrize("value", TRADES_)
def test_trade_decoding_matches_the_model(value: dict[str, Any]) -> None:
    raw = orjson.dumps(value)
    expected = _model_or_error(TRADES, raw)
    if isinstance(expected, DecodeError):
        with pytest.raises(DecodeError) as err:
            decode_trade(raw)
        assert str(err.value) == str(expected)
        return
    got = decode_trade(raw)
    assert (got.exchange, got.symbol, got.price, got.qty) == (
        expected.exchange,
        expected.symbol,
        expected.price,
        expected.qty,
    )
    assert type(got.price) is float and type(got.qty) is float
    assert got.is_buy == (expected.side == "buy")
    assert got.exchange_ts_us == expected.exchange_ts_us


@pytest.mark.parametrize("raw", [None, b"", b"\xff\x00not json", b"[1, 2]", b'"s"', b"null"])
def test_garbage_raises_the_models_error(raw: bytes | None) -> None:
    for topic, decode in ((BOOK, decode_book), (TRADES, decode_trade)):
        expected = _model_or_error(topic, raw)
        assert isinstance(expected, DecodeError)
        with pytest.raises(DecodeError) as err:
            decode(raw)
        assert str(err.value) == str(expected)
