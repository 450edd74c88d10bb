"""FeedProcessor without a network: frames in, Kafka messages out (to a list)."""

from __future__ import annotations

from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from depthflow.collector.feed import FeedProcessor, TopicNames
from depthflow.common import schemas

GOLDEN = Path(__file__).parent / "golden"


class ListPublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []

    def produce(self, topic, value, key=None, headers=None, timestamp_ms=0) -> None:
        self.sent.append((topic, value, key))

    def on(self, topic: str) -> list[dict]:
        return [orjson.loads(v) for t, v, _ in self.sent if t == topic]


def _diff(u_first: int, u: int, pu: int, bids=(), asks=()) -> bytes:
    return orjson.dumps(
        {
            "stream": "btcusdt@depth@100ms",
            "data": {
                "e": "depthUpdate",
                "E": 1700000000000,
                "T": 1700000000000,
                "s": "BTCUSDT",
                "U": u_first,
                "u": u,
                "pu": pu,
                "b": list(bids),
                "a": list(asks),
            },
        }
    )


def test_binance_flow_publishes_raw_books_and_valid_schemas() -> None:
    pub = ListPublisher()
    wanted: list[tuple[str, str]] = []
    feed = FeedProcessor(
        "binance", ["BTCUSDT", "ETHUSDT"], pub, request_resync=lambda s, r: wanted.append((s, r))
    )
    frame = _diff(99, 101, 98, [["100.0", "2"]], [["101.0", "1"]])
    feed.on_frame(frame, "c1", 1_700_000_000_100_000)
    snap = orjson.dumps(
        {
            "lastUpdateId": 100,
            "E": 1,
            "T": 1,
            "bids": [["100.0", "1"]],
            "asks": [["101.0", "3"], ["102.0", "1"]],
        }
    )
    feed.on_snapshot_body("BTCUSDT", snap, "rest", 1_700_000_000_200_000)
    feed.on_frame(_diff(102, 102, 101, [], [["101.0", "0"]]), "c1", 1_700_000_000_300_000)
    raws = pub.on("md.depth.raw")
    assert [r["kind"] for r in raws] == ["ws", "snapshot", "ws"]
    assert raws[0]["payload"].encode() == frame  # byte for byte
    books = [schemas.BOOK.decode(v) for t, v, _ in pub.sent if t == "md.book"]
    assert [(b.seq, b.prev_seq) for b in books] == [(101, 100), (102, 101)]
    assert (books[0].bid_price, books[0].bid_qty, books[0].ask_price) == (100.0, 2.0, 101.0)
    assert books[1].asks == [(102.0, 1.0)] and books[1].tob_changed
    assert all(key == b"binance:BTCUSDT" for t, _, key in pub.sent if t == "md.book")
    # a gap on ETHUSDT resyncs ETHUSDT only
    feed.on_snapshot_body(
        "ETHUSDT",
        orjson.dumps({"lastUpdateId": 5, "bids": [["1", "1"]], "asks": [["2", "1"]]}),
        "rest",
        1,
    )
    eth = orjson.dumps(
        {
            "e": "depthUpdate",
            "E": 1,
            "T": 1,
            "s": "ETHUSDT",
            "U": 5,
            "u": 6,
            "pu": 4,
            "b": [],
            "a": [],
        }
    )
    feed.on_frame(eth, "c1", 2)
    feed.syncs["ETHUSDT"].reorder_window = 0
    feed.on_frame(
        orjson.dumps(
            {
                "e": "depthUpdate",
                "E": 1,
                "T": 1,
                "s": "ETHUSDT",
                "U": 9,
                "u": 9,
                "pu": 8,
                "b": [],
                "a": [],
            }
        ),
        "c1",
        3,
    )
    assert wanted == [("ETHUSDT", "gap")]
    assert feed.syncs["BTCUSDT"].synced and not feed.syncs["ETHUSDT"].synced
    kinds = [(h["symbol"], h["kind"]) for h in pub.on("md.health")]
    assert ("ETHUSDT", "gap") in kinds and ("ETHUSDT", "resync") in kinds
    assert all(sym == "ETHUSDT" for sym, k in kinds if k in ("gap", "resync"))
    for _, value, _ in [s for s in pub.sent if s[0] == "md.health"]:
        schemas.HEALTH.decode(value)


def test_trades_are_normalised() -> None:
    pub = ListPublisher()
    feed = FeedProcessor("bybit", ["BTCUSDT"], pub)
    feed.on_frame((GOLDEN / "bybit_public_trade.json").read_bytes(), "c", 5)
    trades = [schemas.TRADES.decode(v) for t, v, _ in pub.sent if t == "md.trades"]
    assert [(t.side, t.qty) for t in trades] == [("buy", 0.001), ("sell", 0.25)]
    assert pub.on("md.depth.raw")[0]["kind"] == "trade"


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.binary(max_size=200)
        | st.sampled_from(
            [
                b'{"e":"depthUpdate"}',
                b'{"topic":"orderbook.50.BTCUSDT","type":"delta","data":{}}',
                b'{"stream":"x","data":{"e":"aggTrade","s":"BTCUSDT"}}',
                b"\xff\xfe",
            ]
        ),
        max_size=10,
    )
)
def test_bad_frames_are_dead_lettered_and_the_feed_keeps_working(frames: list[bytes]) -> None:
    for exchange in ("binance", "bybit"):
        pub = ListPublisher()
        feed = FeedProcessor(exchange, ["BTCUSDT"], pub, TopicNames(dlq="dlq.test"))
        for frame in frames:
            feed.on_frame(frame, "c", 1)
        letters = [schemas.dlq_topic("x").model.model_validate(d) for d in pub.on("dlq.test")]
        assert len(letters) == feed.stats.parse_errors
        for letter in letters:
            assert letter.value is not None
        assert all(letter.value.encode("latin-1") in frames for letter in letters)
        # and it still works
        good = (
            GOLDEN
            / (
                "binance_depth_update_raw.json"
                if exchange == "binance"
                else "bybit_orderbook_snapshot.json"
            )
        ).read_bytes()
        feed.on_frame(good, "c", 2)
        assert feed.stats.depth_updates == 1


def test_books_are_stamped_with_the_trades_published_before_them() -> None:
    pub = ListPublisher()
    feed = FeedProcessor("binance", ["BTCUSDT"], pub)
    feed.on_frame(_diff(99, 101, 98, [["100.0", "2"]], [["101.0", "1"]]), "c1", 1)
    snap = orjson.dumps(
        {"lastUpdateId": 100, "E": 1, "T": 1, "bids": [["100.0", "1"]], "asks": [["101.0", "3"]]}
    )
    feed.on_snapshot_body("BTCUSDT", snap, "rest", 2)
    trade = orjson.dumps(
        {
            "stream": "btcusdt@aggTrade",
            "data": {
                "e": "aggTrade",
                "E": 1700000000000,
                "s": "BTCUSDT",
                "a": 7,
                "p": "100.5",
                "q": "0.1",
                "f": 7,
                "l": 7,
                "T": 1700000000000,
                "m": False,
            },
        }
    )
    feed.on_frame(trade, "c1", 3)
    feed.on_frame(trade, "c1", 4)
    feed.on_frame(_diff(102, 102, 101, [], [["101.0", "2"]]), "c1", 5)
    books = [schemas.BOOK.decode(v) for t, v, _ in pub.sent if t == "md.book"]
    trades = [schemas.TRADES.decode(v) for t, v, _ in pub.sent if t == "md.trades"]
    assert [t.feed_seq for t in trades] == [1, 2]
    assert [b.trades_before for b in books] == [0, 2]
    feeds = {b.feed_id for b in books} | {t.feed_id for t in trades}
    assert len(feeds) == 1 and len(feeds.pop()) == 16
    # another processor (a restarted collector) is another feed
    other = ListPublisher()
    FeedProcessor("binance", ["BTCUSDT"], other).on_frame(trade, "c1", 6)
    assert orjson.loads(other.sent[-1][1])["feed_id"] != trades[0].feed_id
