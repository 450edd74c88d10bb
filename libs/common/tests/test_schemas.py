import contextlib

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from depthflow.common import schemas
from depthflow.common.errors import DecodeError


def _book(**over):
    value = dict(
        schema_version=1,
        exchange="binance",
        symbol="BTCUSDT",
        seq=10,
        prev_seq=9,
        exchange_ts_us=1,
        local_ts_us=2,
        bid_price=100.0,
        bid_qty=1.0,
        ask_price=101.0,
        ask_qty=2.0,
        bids=[(100.0, 1.0)],
        asks=[(101.0, 2.0)],
    )
    value.update(over)
    return value


def test_every_design_topic_is_defined_once():
    names = [t.name for t in schemas.ALL_TOPICS]
    assert names == [
        "md.depth.raw",
        "md.book",
        "md.trades",
        "md.health",
        "features.v1",
        "signals.v1",
        "orders.v1",
        "control.v1",
        "status.v1",
    ]
    assert schemas.CONTROL.config()["cleanup.policy"] == "compact"
    assert schemas.dlq_topic("collector").name == "dlq.collector"


def test_round_trip_from_dict_and_model():
    data = schemas.BOOK.encode(_book())
    book = schemas.BOOK.decode(data)
    assert book.seq == 10 and book.asks[0] == (101.0, 2.0)
    assert schemas.BOOK.decode(schemas.BOOK.encode(book)) == book


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"\x00\xffnot json", "not JSON"),
        (b"[1,2,3]", "expected a JSON object"),
        (None, "empty"),
        (orjson.dumps(_book(schema_version=99)), "schema_version"),
        (orjson.dumps(_book(seq="ten")), "seq"),
        (orjson.dumps({**_book(), "surprise": 1}), "surprise"),
        (orjson.dumps(_book(exchange="kraken")), "exchange"),
    ],
)
def test_garbage_raises_a_typed_error(raw, reason):
    with pytest.raises(DecodeError, match=reason):
        schemas.BOOK.decode(raw)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_escape_as_other_errors(raw):
    for topic in schemas.ALL_TOPICS:
        with contextlib.suppress(DecodeError):
            topic.decode(raw)


def test_symbol_key():
    assert schemas.symbol_key("bybit", "ETHUSDT") == b"bybit:ETHUSDT"
