"""The sync state machines against a reference book history, with transport faults.

A random market is generated as a chain of diffs with the exchange's id rules; the transport
drops, duplicates and reorders them; snapshots come from the reference history "at the time
they are fetched". The properties: every book the machine hands out is exactly the reference
book at that update id, it is never crossed, and a gap always leads to a resync that ends
in a valid book again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from depthflow.collector.events import DepthUpdate
from depthflow.collector.sync import BinanceBookSync, BybitBookSync, Outcome, SyncState


@dataclass
class Market:
    diffs: list[DepthUpdate]
    truth: dict[int, tuple[dict[float, float], dict[float, float]]]


def make_market(rng: random.Random, exchange: str, n: int) -> Market:
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    truth = {}
    diffs = []
    last = 1000
    truth[last] = ({}, {})
    for _ in range(n):
        qty = [0.0, 1.0, 2.5, 3.0]
        b = [(rng.randint(1, 40) / 2, rng.choice(qty)) for _ in range(rng.randint(0, 4))]
        a = [(rng.randint(41, 80) / 2, rng.choice(qty)) for _ in range(rng.randint(0, 4))]
        first = last + 1
        new_last = first + (rng.randint(0, 3) if exchange == "binance" else 0)
        for p, q in b:
            if q:
                bids[p] = q
            else:
                bids.pop(p, None)
        for p, q in a:
            if q:
                asks[p] = q
            else:
                asks.pop(p, None)
        kind = "diff"
        diffs.append(DepthUpdate(exchange, "X", kind, first, new_last, last, 1, b, a))
        truth[new_last] = (dict(bids), dict(asks))
        last = new_last
    return Market(diffs, truth)


def transport(rng: random.Random, diffs: list[DepthUpdate], drop: float, dup: float, swap: float):
    out = []
    for d in diffs:
        if rng.random() < drop:
            continue
        out.append(d)
        if rng.random() < dup:
            out.append(d)
    # Swap disjoint neighbour pairs only: an update moves by at most one place, so every
    # reorder stays within the machines' window (sequential swaps could carry one update
    # arbitrarily far, which is a real gap and rightly resyncs).
    i = 0
    while i < len(out) - 1:
        if rng.random() < swap:
            out[i], out[i + 1] = out[i + 1], out[i]
            i += 1
        i += 1
    return out


def snapshot_of(market: Market, exchange: str, last_id: int) -> DepthUpdate:
    bids, asks = market.truth[last_id]
    prev = -1 if exchange == "binance" else last_id - 1
    return DepthUpdate(
        exchange,
        "X",
        "snapshot",
        last_id,
        last_id,
        prev,
        1,
        sorted(bids.items()),
        sorted(asks.items()),
    )


def run_machine(exchange: str, seed: int, n: int, drop: float, dup: float, swap: float):
    rng = random.Random(seed)
    market = make_market(rng, exchange, n)
    applied: list[int] = []
    mismatches: list[int] = []
    box: dict = {}

    def on_applied(update: DepthUpdate, prev_id: int) -> None:
        sync = box["sync"]
        bids, asks = market.truth[update.last_id]
        if sync.book.bids != bids or sync.book.asks != asks or sync.book.crossed():
            mismatches.append(update.last_id)
        applied.append(update.last_id)

    sync = (
        BinanceBookSync("X", on_applied, reorder_window=4)
        if exchange == "binance"
        else BybitBookSync("X", on_applied, reorder_window=4)
    )
    box["sync"] = sync
    delivered = transport(rng, market.diffs, drop, dup, swap)
    resyncs = 0
    newest = 1000  # newest id the "exchange" has produced (what a snapshot would show)
    want_snapshot = True
    for i, d in enumerate(delivered):
        newest = max(newest, d.last_id)
        if want_snapshot and (exchange == "bybit" or i % 3 == 0):
            # the snapshot is taken a little before some of the buffered events arrive
            snap_id = max(k for k in market.truth if k <= newest)
            if exchange == "binance":
                snap_id = max(k for k in market.truth if k <= max(1000, newest - rng.randint(0, 5)))
            outcome = sync.on_update(snapshot_of(market, exchange, snap_id))
            want_snapshot = sync.state is SyncState.WAITING or outcome in (
                Outcome.GAP,
                Outcome.STALE_SNAPSHOT,
                Outcome.CROSSED,
            )
        outcome = sync.on_update(d)
        if outcome in (Outcome.GAP, Outcome.STALE_SNAPSHOT, Outcome.CROSSED):
            resyncs += 1
            want_snapshot = True
        if exchange == "bybit" and sync.state is SyncState.WAITING:
            want_snapshot = True
    return market, applied, mismatches, resyncs, sync


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from(["binance", "bybit"]))
def test_lossless_transport_applies_every_update_exactly(seed: int, exchange: str) -> None:
    market, applied, mismatches, resyncs, sync = run_machine(exchange, seed, 150, 0, 0, 0)
    assert mismatches == []
    assert resyncs == 0
    assert sync.synced
    assert applied[-1] == market.diffs[-1].last_id
    assert applied == sorted(set(applied))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from(["binance", "bybit"]))
def test_duplicates_and_reorders_within_window_cause_no_resync(seed: int, exchange: str) -> None:
    market, applied, mismatches, resyncs, _sync = run_machine(exchange, seed, 150, 0, 0.1, 0.1)
    assert mismatches == []
    assert resyncs == 0
    assert applied[-1] == market.diffs[-1].last_id


@settings(max_examples=80, deadline=None)
@given(
    st.integers(0, 2**32),
    st.sampled_from(["binance", "bybit"]),
    st.floats(0.01, 0.2),
    st.floats(0, 0.2),
    st.floats(0, 0.3),
)
def test_faulty_transport_never_yields_a_wrong_book(seed, exchange, drop, dup, swap) -> None:
    _market, applied, mismatches, _resyncs, sync = run_machine(exchange, seed, 200, drop, dup, swap)
    assert mismatches == []
    assert applied == sorted(set(applied))  # strictly increasing: nothing applied twice
    if not sync.synced:
        assert len(sync.book) == 0  # an invalid book is empty, never half-right


def _d(first: int, last: int, prev: int, bids=(), asks=(), kind: str = "diff") -> DepthUpdate:
    return DepthUpdate("binance", "X", kind, first, last, prev, 1, list(bids), list(asks))


def test_binance_documented_sequence() -> None:
    seen: list[tuple[int, int]] = []
    sync = BinanceBookSync("X", lambda u, prev: seen.append((u.last_id, prev)))
    assert sync.on_update(_d(90, 95, 89)) is Outcome.BUFFERED
    assert sync.on_update(_d(96, 101, 95, [(1.0, 2.0)])) is Outcome.BUFFERED
    assert sync.on_update(_d(102, 104, 101, [], [(3.0, 1.0)])) is Outcome.BUFFERED
    snap = _d(100, 100, -1, [(1.0, 1.0)], [(2.0, 1.0)], kind="snapshot")
    assert sync.on_update(snap) is Outcome.APPLIED
    # 90..95 dropped (u < lastUpdateId), 96..101 brackets 100, then pu chain
    assert seen == [(101, 100), (104, 101)]
    assert sync.book.top_of_book() == (1.0, 2.0, 2.0, 1.0)
    assert sync.on_update(_d(105, 107, 104)) is Outcome.APPLIED
    assert sync.on_update(_d(105, 107, 104)) is Outcome.DUPLICATE
    # a lost event: pu 110 != 107; held in the window, then declared a gap
    sync.reorder_window = 0
    assert sync.on_update(_d(111, 112, 110)) is Outcome.GAP
    assert sync.state is SyncState.WAITING and len(sync.book) == 0
    assert "expected pu 107" in sync.last_problem


def test_binance_stale_snapshot_is_refused() -> None:
    sync = BinanceBookSync("X", lambda u, p: None, reorder_window=0)
    sync.on_update(_d(200, 210, 199))
    outcome = sync.on_update(_d(100, 100, -1, [(1.0, 1.0)], [(2.0, 1.0)], kind="snapshot"))
    assert outcome is Outcome.STALE_SNAPSHOT
    assert sync.state is SyncState.WAITING and list(sync.buffer)[-1].last_id == 210


def test_crossed_book_is_never_handed_out() -> None:
    seen: list[int] = []
    sync = BinanceBookSync("X", lambda u, p: seen.append(u.last_id))
    sync.on_update(_d(10, 10, -1, [(1.0, 1.0)], [(2.0, 1.0)], kind="snapshot"))
    assert sync.on_update(_d(9, 11, 8, [(2.5, 1.0)])) is Outcome.CROSSED
    assert seen == [] and sync.state is SyncState.WAITING and len(sync.book) == 0


def _b(u: int, kind: str = "diff", bids=(), asks=()) -> DepthUpdate:
    return DepthUpdate("bybit", "X", kind, u, u, u - 1, 1, list(bids), list(asks))


def test_bybit_snapshot_delta_and_restart() -> None:
    seen: list[tuple[int, int]] = []
    sync = BybitBookSync("X", lambda u, prev: seen.append((u.last_id, prev)), reorder_window=0)
    assert sync.on_update(_b(5)) is Outcome.IGNORED  # delta before any snapshot
    assert sync.on_update(_b(10, "snapshot", [(1.0, 1.0)], [(2.0, 1.0)])) is Outcome.APPLIED
    assert sync.on_update(_b(11, bids=[(1.5, 1.0)])) is Outcome.APPLIED
    assert sync.on_update(_b(11)) is Outcome.DUPLICATE
    assert sync.on_update(_b(11, "snapshot")) is Outcome.DUPLICATE  # re-sent snapshot
    # service restart: u=1 snapshot replaces everything
    assert sync.on_update(_b(1, "snapshot", [(5.0, 1.0)], [(6.0, 1.0)])) is Outcome.APPLIED
    assert sync.book.top_of_book() == (5.0, 1.0, 6.0, 1.0)
    assert sync.on_update(_b(2)) is Outcome.APPLIED
    assert sync.on_update(_b(4)) is Outcome.GAP
    assert seen == [(10, 0), (11, 10), (1, 11), (2, 1)]
    assert sync.state is SyncState.WAITING
