import logging

import orjson

from depthflow.common.logging import (
    JsonFormatter,
    new_trace_id,
    set_trace_id,
    trace_from_headers,
    trace_headers,
)


def test_json_line_carries_trace_id_and_extras():
    tid = new_trace_id()
    token = set_trace_id(tid)
    try:
        record = logging.makeLogRecord(
            {
                "name": "x",
                "levelname": "INFO",
                "msg": "hello %s",
                "args": ("world",),
                "symbol": "BTCUSDT",
            }
        )
        doc = orjson.loads(JsonFormatter("collector").format(record))
    finally:
        set_trace_id("")
        del token
    assert doc["msg"] == "hello world"
    assert doc["trace_id"] == tid
    assert doc["symbol"] == "BTCUSDT"
    assert doc["service"] == "collector"


def test_trace_id_round_trips_through_kafka_headers():
    tid = new_trace_id()
    assert trace_from_headers(trace_headers(tid)) == tid
    assert trace_from_headers([("other", b"x")]) == ""
    assert trace_from_headers(None) == ""
