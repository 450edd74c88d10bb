"""Golden tests from recorded exchange message shapes, and fuzzing of every parser."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from depthflow.collector.events import ControlMessage, DepthUpdate, ParseError, TradeEvent
from depthflow.collector.parsers import (
    MAX_LEVELS,
    parse_binance_frame,
    parse_binance_snapshot,
    parse_bybit_frame,
    parse_bybit_snapshot,
)

GOLDEN = Path(__file__).parent / "golden"


def golden(name: str) -> bytes:
    return (GOLDEN / name).read_bytes().strip()


# ------------------------------------------------------------------ golden: Binance


def test_binance_combined_depth_update() -> None:
    ev = parse_binance_frame(golden("binance_depth_update_combined.json"))
    assert ev == DepthUpdate(
        "binance",
        "BTCUSDT",
        "diff",
        8389223011925,
        8389223028214,
        8389223011860,
        1758365738217000,
        [(115659.5, 0.0), (115659.4, 1.204), (115650.0, 12.5)],
        [(115688.4, 5.072), (115690.1, 0.0)],
    )


def test_binance_raw_stream_depth_update_and_text_frames() -> None:
    raw = golden("binance_depth_update_raw.json")
    for frame in (raw, raw.decode()):
        ev = parse_binance_frame(frame)
        assert isinstance(ev, DepthUpdate)
        assert (ev.first_id, ev.last_id, ev.prev_id) == (157, 160, 149)
        assert ev.bids == [(0.0024, 10.0)] and ev.asks == [(0.0026, 100.0)]


def test_binance_agg_trade_taker_side() -> None:
    ev = parse_binance_frame(golden("binance_agg_trade.json"))
    assert ev == [
        TradeEvent("binance", "BTCUSDT", "2839401233", 115660.1, 0.015, "sell", 1758365738229000)
    ]
    flipped = orjson.loads(golden("binance_agg_trade.json"))
    flipped["data"]["m"] = False
    trades = parse_binance_frame(orjson.dumps(flipped))
    assert isinstance(trades, list) and trades[0].side == "buy"


def test_binance_rest_snapshot() -> None:
    snap = parse_binance_snapshot(golden("binance_rest_depth.json"), "BTCUSDT")
    assert snap.kind == "snapshot" and snap.last_id == 1027024 and snap.first_id == 1027024
    assert snap.bids == [(4.0, 431.0), (3.99, 9.0)]
    assert snap.asks == [(4.000002, 12.0), (4.01, 18.0)]
    assert snap.exchange_ts_us == 1589436922972000


def test_binance_control_messages() -> None:
    assert parse_binance_frame(golden("binance_subscribe_ack.json")) == ControlMessage(
        "binance", "ack", "1"
    )
    err = parse_binance_frame(golden("binance_error.json"))
    assert isinstance(err, ControlMessage) and err.kind == "error"


def test_binance_rest_error_body_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="-1121"):
        parse_binance_snapshot(b'{"code":-1121,"msg":"Invalid symbol."}', "NOPE")


# ------------------------------------------------------------------ golden: Bybit


def test_bybit_snapshot_and_delta() -> None:
    snap = parse_bybit_frame(golden("bybit_orderbook_snapshot.json"))
    assert snap == DepthUpdate(
        "bybit",
        "BTCUSDT",
        "snapshot",
        18521288,
        18521288,
        18521287,
        1672304484978000,
        [(16493.5, 0.006), (16493.0, 0.1)],
        [(16611.0, 0.029), (16612.0, 0.213)],
        7961638724,
    )
    delta = parse_bybit_frame(golden("bybit_orderbook_delta.json"))
    assert isinstance(delta, DepthUpdate)
    assert delta.kind == "diff" and delta.last_id == 177400507 and delta.prev_id == 177400506
    assert (30240.0, 0.0) in delta.bids and len(delta.asks) == 7


def test_bybit_restart_snapshot_u1() -> None:
    snap = parse_bybit_frame(golden("bybit_orderbook_restart_u1.json"))
    assert isinstance(snap, DepthUpdate) and snap.kind == "snapshot" and snap.last_id == 1


def test_bybit_public_trades() -> None:
    trades = parse_bybit_frame(golden("bybit_public_trade.json"))
    assert trades == [
        TradeEvent(
            "bybit",
            "BTCUSDT",
            "20f43950-d8dd-5b31-9112-a178eb6023af",
            16578.5,
            0.001,
            "buy",
            1672304486865000,
        ),
        TradeEvent(
            "bybit",
            "BTCUSDT",
            "a5b1e3f0-3b1c-5e2d-8c47-0d9a5f3b7e11",
            16578.4,
            0.25,
            "sell",
            1672304486866000,
        ),
    ]


def test_bybit_control_and_rest() -> None:
    assert parse_bybit_frame(golden("bybit_subscribe_ack.json")) == ControlMessage(
        "bybit", "ack", "subscribe"
    )
    pong = parse_bybit_frame(golden("bybit_pong.json"))
    assert isinstance(pong, ControlMessage) and pong.kind == "pong"
    snap = parse_bybit_snapshot(golden("bybit_rest_orderbook.json"), "BTCUSDT")
    assert snap.last_id == 230704 and snap.bids == [(65485.47, 47.081)]
    with pytest.raises(ParseError):
        parse_bybit_snapshot(golden("bybit_rest_orderbook.json"), "ETHUSDT")


# ------------------------------------------------------------------ malformed, by hand


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"not json",
        b"[]",
        b"null",
        b"{}",
        b'{"stream":"x","data":[]}',
        b'{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,"u":2,"pu":0,"b":[],"a":{}}',
        b'{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,"u":2,"pu":0,"b":[["1","x"]],"a":[]}',
        b'{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,"u":2,"pu":0,"b":[["-1","1"]],"a":[]}',
        b'{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,"u":2,"pu":0,"b":[["nan","1"]],"a":[]}',
        b'{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,"u":2,"pu":0,"b":[["inf","1"]],"a":[]}',
        b'{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,"u":2,"pu":0,"b":[[1.0,"1"]],"a":[]}',
        b'{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,"u":2,"pu":0,"b":[["1","1","1"]],"a":[]}',
        b'{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":3,"u":2,"pu":0,"b":[],"a":[]}',
        b'{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":true,"u":2,"pu":0,"b":[],"a":[]}',
        b'{"e":"depthUpdate","E":1,"s":"btc usdt","U":1,"u":2,"pu":0,"b":[],"a":[]}',
        b'{"e":"depthUpdate","E":1,"U":1,"u":2,"pu":0,"b":[],"a":[]}',
        b'{"e":"aggTrade","E":1,"a":1,"s":"BTCUSDT","p":"0","q":"1","T":1,"m":true}',
        b'{"e":"aggTrade","E":1,"a":1,"s":"BTCUSDT","p":"1","q":"1","T":1,"m":"yes"}',
        b'{"e":7}',
    ],
)
def test_binance_malformed_frames_raise_parse_error(frame: bytes) -> None:
    with pytest.raises(ParseError):
        parse_binance_frame(frame)


def test_huge_arrays_are_refused() -> None:
    levels = [["1.0", "1.0"]] * (MAX_LEVELS + 1)
    frame = orjson.dumps(
        {"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 1, "u": 2, "pu": 0, "b": levels, "a": []}
    )
    with pytest.raises(ParseError, match="levels"):
        parse_binance_frame(frame)
    trades = [{"T": 1, "s": "BTCUSDT", "S": "Buy", "v": "1", "p": "1", "i": "x"}] * 10_001
    with pytest.raises(ParseError):
        parse_bybit_frame(orjson.dumps({"topic": "publicTrade.BTCUSDT", "data": trades}))


# ------------------------------------------------------------------ fuzzing

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=6), children, max_size=5)
    ),
    max_leaves=25,
)
FIELDS_BINANCE = ["e", "E", "T", "s", "U", "u", "pu", "b", "a", "p", "q", "m", "stream", "data"]
FIELDS_BYBIT = ["topic", "type", "ts", "cts", "data", "op", "success", "s", "b", "a", "u", "seq"]


def _mutations(golden_obj: dict, fields: list[str]) -> st.SearchStrategy[bytes]:
    def mutate(obj: dict, drop: list[str], replace: dict) -> bytes:
        out = dict(obj)
        inner = out.get("data") if isinstance(out.get("data"), dict) else None
        for name in drop:
            out.pop(name, None)
            if inner is not None:
                inner.pop(name, None)
        for name, value in replace.items():
            target = inner if inner is not None and name in inner else out
            target[name] = value
        return json.dumps(out).encode()

    return st.builds(
        mutate,
        st.just(golden_obj),
        st.lists(st.sampled_from(fields), max_size=3),
        st.dictionaries(st.sampled_from(fields), json_values, max_size=3),
    )


def _check(parse, frame) -> None:
    try:
        event = parse(frame)
    except ParseError:
        return
    assert isinstance(event, (DepthUpdate, ControlMessage, list))
    if isinstance(event, DepthUpdate):
        for price, qty in event.bids + event.asks:
            assert price > 0 and qty >= 0 and price < float("inf") and qty < float("inf")
        assert event.last_id >= event.first_id


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_fuzz_arbitrary_bytes_never_escape_parse_error(frame: bytes | str) -> None:
    _check(parse_binance_frame, frame)
    _check(parse_bybit_frame, frame)


@FUZZ
@given(json_values)
def test_fuzz_arbitrary_json_never_escapes_parse_error(value: object) -> None:
    # stdlib json: big integers and NaN/Infinity tokens, which orjson must refuse
    frame = json.dumps(value).encode()
    _check(parse_binance_frame, frame)
    _check(parse_bybit_frame, frame)


@FUZZ
@given(st.data())
def test_fuzz_mutated_golden_messages(data: st.DataObject) -> None:
    for name in (
        "binance_depth_update_combined.json",
        "binance_agg_trade.json",
        "binance_depth_update_raw.json",
    ):
        frame = data.draw(_mutations(orjson.loads(golden(name)), FIELDS_BINANCE))
        _check(parse_binance_frame, frame)
        with contextlib.suppress(ParseError):
            parse_binance_snapshot(frame, "BTCUSDT")
    for name in (
        "bybit_orderbook_delta.json",
        "bybit_public_trade.json",
        "bybit_orderbook_snapshot.json",
    ):
        frame = data.draw(_mutations(orjson.loads(golden(name)), FIELDS_BYBIT))
        _check(parse_bybit_frame, frame)


# ------------------------------------------------------------------ the price cache

decimal_text = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=8).map(str),
    st.sampled_from(["0", "0.0", "-1.5", "nan", "inf", "1e5", "1_0", " 2.5", "", "abc", "1e999"]),
)


@FUZZ
@given(st.lists(st.tuples(decimal_text, decimal_text), max_size=8))
def test_cached_prices_parse_exactly_as_uncached(levels: list[tuple[str, str]]) -> None:
    """A price string seen before gives the float (or the refusal) it gave the first time:
    each frame is parsed twice (the second time from the cache) and against float()."""
    frame = orjson.dumps(
        {"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 1, "u": 2, "pu": 0, "b": levels, "a": []}
    )
    outcomes = []
    for _ in range(2):
        try:
            outcomes.append(parse_binance_frame(frame).bids)  # type: ignore[union-attr]
        except ParseError:
            outcomes.append("refused")
    assert outcomes[0] == outcomes[1]
    expected: list[tuple[float, float]] | str = []
    for p, q in levels:
        try:
            price, qty = float(p), float(q)
        except ValueError:
            expected = "refused"
            break
        if not (0 < price < float("inf") and 0 <= qty < float("inf")):
            expected = "refused"
            break
        assert isinstance(expected, list)
        expected.append((price, qty))
    assert outcomes[0] == expected
