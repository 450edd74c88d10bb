"""Pre-trade risk: limits, sizing, reservations under bursts of concurrent signals."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from depthflow.executor.ids import client_order_id
from depthflow.executor.risk import (
    OrderIntent,
    RejectReason,
    RiskLedger,
    RiskLimits,
    RiskState,
    SymbolExposure,
    SymbolSpec,
    evaluate,
    open_positions,
    size_order,
    total_exposure,
)

LIMITS = RiskLimits()  # the seed's 5 positions / 10000 USDT / 5 USDT
SPEC = SymbolSpec("BTCUSDT", tick_size=0.1, lot_size=0.001, min_qty=0.001, min_notional=5.0)


def intent(coid: str, symbol: str, side: str, qty: float, price: float) -> OrderIntent:
    return OrderIntent(coid, symbol, side, qty, price)  # type: ignore[arg-type]


def test_defaults_are_the_seed_settings() -> None:
    assert (LIMITS.max_open_positions, LIMITS.max_exposure_usdt, LIMITS.min_order_size_usdt) == (
        5,
        10_000.0,
        5.0,
    )
    with pytest.raises(ValueError):
        RiskLimits(max_open_positon=3)  # type: ignore[call-arg]  # typo refused


def test_min_order_size_and_venue_minimum() -> None:
    d = evaluate({}, intent("a", "BTCUSDT", "buy", 0.0001, 40_000), LIMITS, RiskState())
    assert d.reason == RejectReason.BELOW_MIN_ORDER_SIZE  # 4 USDT
    spec = SymbolSpec("X", 0.1, 1.0, min_qty=10, min_notional=0)
    d = evaluate({}, intent("a", "X", "buy", 5, 2.0), LIMITS, RiskState(), spec)
    assert d.reason == RejectReason.BELOW_VENUE_MINIMUM
    assert evaluate({}, intent("a", "X", "buy", 0, 2.0), LIMITS, RiskState()).reason == (
        RejectReason.INVALID
    )


def test_max_open_positions() -> None:
    ex = {f"S{i}": SymbolExposure(position=100.0) for i in range(5)}
    d = evaluate(ex, intent("a", "NEW", "buy", 1, 100), LIMITS, RiskState())
    assert d.reason == RejectReason.MAX_OPEN_POSITIONS
    # adding to an existing position is fine
    assert evaluate(ex, intent("a", "S0", "buy", 1, 100), LIMITS, RiskState()).accepted


def test_max_exposure_and_symbol_cap() -> None:
    ex = {"A": SymbolExposure(position=9_000.0)}
    d = evaluate(ex, intent("a", "B", "buy", 11, 100), LIMITS, RiskState())
    assert d.reason == RejectReason.MAX_EXPOSURE
    assert evaluate(ex, intent("a", "B", "buy", 10, 100), LIMITS, RiskState()).accepted
    capped = RiskLimits(symbol_exposure_usdt={"B": 500.0})
    d = evaluate(ex, intent("a", "B", "buy", 6, 100), capped, RiskState())
    assert d.reason == RejectReason.SYMBOL_EXPOSURE


def test_kill_switch_and_daily_loss_block_new_risk_not_exits() -> None:
    ex = {"A": SymbolExposure(position=1_000.0)}
    for state, reason in [
        (RiskState(kill_switch=True), RejectReason.KILL_SWITCH),
        (RiskState(daily_pnl=-600), RejectReason.DAILY_LOSS_LIMIT),
    ]:
        assert evaluate(ex, intent("a", "A", "buy", 1, 100), LIMITS, state).reason == reason
        assert evaluate(ex, intent("a", "B", "sell", 1, 100), LIMITS, state).reason == reason
        # selling 1000 USDT of a 1000 USDT long is the way out: allowed
        assert evaluate(ex, intent("a", "A", "sell", 10, 100), LIMITS, state).accepted


def test_worst_case_counts_working_orders_both_ways() -> None:
    e = SymbolExposure(position=1_000.0, pending_buy=500.0, pending_sell=3_000.0)
    assert e.worst_case == 2_000.0  # all sells fill: short 2000
    ex = {"A": e}
    assert total_exposure(ex) == 2_000.0 and open_positions(ex) == 1


def test_sizing_from_conviction_rounds_down_to_lots_and_ticks() -> None:
    s = size_order(
        {},
        symbol="BTCUSDT",
        side="buy",
        strength=0.5,
        confidence=0.8,
        price=40_000.07,
        spec=SPEC,
        limits=LIMITS,
    )
    assert s.reason is None
    assert s.price == 40_000.0  # buy rounded down to the tick
    assert s.qty == 0.01  # 400 USDT / 40000 = 0.01
    sell = size_order(
        {},
        symbol="BTCUSDT",
        side="sell",
        strength=1,
        confidence=1,
        price=40_000.01,
        spec=SPEC,
        limits=LIMITS,
    )
    assert sell.price == 40_000.1 and sell.qty == 0.024  # 1000 / 40000.1 = 0.02499.. -> 0.024
    assert sell.notional <= 1_000


def test_sizing_capped_by_headroom_and_refused_when_none() -> None:
    ex = {"A": SymbolExposure(position=9_900.0)}
    s = size_order(
        ex,
        symbol="BTCUSDT",
        side="buy",
        strength=1,
        confidence=1,
        price=40_000,
        spec=SPEC,
        limits=LIMITS,
    )
    assert s.qty == 0.002 and s.notional <= 100  # 100 USDT of headroom
    ex = {"A": SymbolExposure(position=9_998.0)}
    s = size_order(
        ex,
        symbol="BTCUSDT",
        side="buy",
        strength=1,
        confidence=1,
        price=40_000,
        spec=SPEC,
        limits=LIMITS,
    )
    assert s.reason == RejectReason.NO_HEADROOM
    weak = size_order(
        {},
        symbol="BTCUSDT",
        side="buy",
        strength=0.001,
        confidence=1,
        price=40_000,
        spec=SPEC,
        limits=LIMITS,
    )
    assert weak.reason == RejectReason.BELOW_MIN_ORDER_SIZE


def test_lot_rounding_is_exact_in_decimal() -> None:
    spec = SymbolSpec("X", tick_size=0.01, lot_size=0.1)
    assert spec.round_qty(0.3) == 0.3  # float 0.3/0.1 = 2.9999999999999996
    assert spec.round_price(1.005, "sell") == 1.01 and spec.round_price(1.005, "buy") == 1.0


def test_ledger_reservation_lifecycle() -> None:
    ledger = RiskLedger(RiskLimits(max_exposure_usdt=1_000))
    assert ledger.try_reserve(intent("o1", "A", "buy", 6, 100)).accepted
    assert ledger.try_reserve(intent("o1", "A", "buy", 1, 100)).reason == RejectReason.DUPLICATE
    assert ledger.try_reserve(intent("o2", "B", "buy", 5, 100)).reason == RejectReason.MAX_EXPOSURE
    ledger.on_fill("o1", "A", "buy", 2, 100)
    assert ledger.exposures()["A"] == SymbolExposure(200.0, 400.0, 0.0)
    ledger.release("o1")  # rest cancelled
    assert ledger.exposures()["A"] == SymbolExposure(200.0, 0.0, 0.0)
    assert ledger.try_reserve(intent("o2", "B", "buy", 5, 100)).accepted
    ledger.set_state(RiskState(kill_switch=True))
    assert ledger.try_reserve(intent("o3", "C", "buy", 1, 10)).reason == RejectReason.KILL_SWITCH
    assert ledger.try_reserve(intent("o4", "A", "sell", 2, 100)).accepted  # close A
    ledger.on_fill("o4", "A", "sell", 2, 100)
    assert "A" not in ledger.exposures() or ledger.exposures()["A"].worst_case == 0


def test_size_and_reserve() -> None:
    ledger = RiskLedger(LIMITS)
    sizing, decision = ledger.size_and_reserve(
        client_order_id("sig-1"),
        symbol="BTCUSDT",
        side="buy",
        strength=1,
        confidence=1,
        price=40_000,
        spec=SPEC,
    )
    assert decision.accepted and sizing.qty == 0.025
    sizing, decision = ledger.size_and_reserve(
        client_order_id("sig-1"),
        symbol="BTCUSDT",
        side="buy",
        strength=1,
        confidence=1,
        price=40_000,
        spec=SPEC,
    )
    assert decision.reason == RejectReason.DUPLICATE  # a replayed signal reserves nothing more
    assert ledger.reserved_ids() == {client_order_id("sig-1")}


SYMBOLS = [f"SYM{i}USDT" for i in range(12)]
PRICE = {s: 10.0 * (i + 1) for i, s in enumerate(SYMBOLS)}

op = st.one_of(
    st.tuples(
        st.just("order"),
        st.sampled_from(SYMBOLS),
        st.sampled_from(["buy", "sell"]),
        st.floats(0.05, 4_000),
    ),
    st.tuples(st.just("fill"), st.integers(0, 200), st.floats(0.0, 1.0), st.just(0.0)),
    st.tuples(st.just("release"), st.integers(0, 200), st.just(0.0), st.just(0.0)),
)


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(op, min_size=1, max_size=80))
def test_limits_hold_under_any_sequence(ops: list[tuple]) -> None:  # type: ignore[type-arg]
    """Bursts of orders on many symbols, interleaved with fills and releases, at fixed prices:
    worst-case exposure and the number of positions never exceed the limits."""
    ledger = RiskLedger(LIMITS)
    accepted: list[OrderIntent] = []
    left: dict[str, float] = {}
    for i, (kind, a, b, c) in enumerate(ops):
        if kind == "order":
            price = PRICE[a]
            it = intent(f"o{i}", a, b, round(c / price, 3) or 0.001, price)
            if ledger.try_reserve(it).accepted:
                accepted.append(it)
                left[it.client_order_id] = it.qty
        elif kind == "fill" and accepted:
            it = accepted[a % len(accepted)]
            if it.client_order_id in ledger.reserved_ids():  # a venue never overfills
                qty = left[it.client_order_id] * b
                left[it.client_order_id] -= qty
                ledger.on_fill(it.client_order_id, it.symbol, it.side, qty, it.price)
        elif kind == "release" and accepted:
            ledger.release(accepted[a % len(accepted)].client_order_id)
        ex = ledger.exposures()
        assert total_exposure(ex) <= LIMITS.max_exposure_usdt + 1e-6
        assert open_positions(ex) <= LIMITS.max_open_positions


def test_concurrent_burst_from_threads() -> None:
    """Many threads fire signals on many symbols at once; the ledger never overshoots."""
    ledger = RiskLedger(LIMITS)
    start = threading.Barrier(8)
    accepted: list[OrderIntent] = []
    lock = threading.Lock()

    def fire(worker: int) -> None:
        start.wait()
        for n in range(200):
            sym = SYMBOLS[(worker * 7 + n) % len(SYMBOLS)]
            it = intent(f"w{worker}-{n}", sym, "buy" if n % 3 else "sell", 30.0, PRICE[sym])
            if ledger.try_reserve(it).accepted:
                with lock:
                    accepted.append(it)

    threads = [threading.Thread(target=fire, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ex = ledger.exposures()
    assert accepted
    assert total_exposure(ex) <= LIMITS.max_exposure_usdt + 1e-6
    assert open_positions(ex) <= LIMITS.max_open_positions
    assert len({it.symbol for it in accepted}) <= LIMITS.max_open_positions


def test_restore_rebuilds_state() -> None:
    ledger = RiskLedger(LIMITS)
    ledger.restore([("A", 2.0, 100.0), ("B", -1.0, 50.0)], [intent("o1", "A", "sell", 1.0, 101.0)])
    ex = ledger.exposures()
    assert ex["A"] == SymbolExposure(200.0, 0.0, 101.0)
    assert ex["B"].worst_case == 50.0
    ledger.set_mark("A", 200.0)
    assert ledger.exposures()["A"].position == 400.0
    ledger.set_position("B", 0.0, 50.0)
    assert "B" not in ledger.exposures()


_positions = st.lists(
    st.tuples(
        st.sampled_from(["A", "B", "C"]),
        st.floats(-5.0, 5.0, allow_nan=False),
        st.floats(1.0, 3_000.0, allow_nan=False),
    ),
    max_size=3,
)
_working = st.lists(
    st.tuples(
        st.sampled_from(["A", "B", "C"]),
        st.sampled_from(["buy", "sell"]),
        st.floats(0.0, 3.0, allow_nan=False),
        st.floats(1.0, 3_000.0, allow_nan=False),
    ),
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(
    positions=_positions,
    working=_working,
    symbol=st.sampled_from(["A", "B", "C"]),
    side=st.sampled_from(["buy", "sell"]),
    strength=st.floats(-0.5, 1.5, allow_nan=False),
    confidence=st.floats(-0.5, 1.5, allow_nan=False),
    price=st.floats(0.0, 5_000.0, allow_nan=False),
    max_open=st.integers(0, 3),
    max_exposure=st.sampled_from([0.0, 500.0, 3_000.0, 10_000.0]),
    state=st.sampled_from([RiskState(), RiskState(True, 0.0), RiskState(False, -600.0)]),
)
def test_size_and_reserve_matches_the_pure_functions(
    positions: list[tuple[str, float, float]],
    working: list[tuple[str, str, float, float]],
    symbol: str,
    side: str,
    strength: float,
    confidence: float,
    price: float,
    max_open: int,
    max_exposure: float,
    state: RiskState,
) -> None:
    """The ledger's one-pass figures give exactly what size_order then evaluate give on the
    exposures() snapshot: the same sizing, decision, reason, detail and floats."""
    limits = RiskLimits(
        max_open_positions=max_open, max_exposure_usdt=max_exposure, min_order_size_usdt=5.0
    )
    ledger = RiskLedger(limits, state)
    ledger.restore(
        positions,
        [intent(f"w{i}", s, sd, q, p) for i, (s, sd, q, p) in enumerate(working)],
    )
    snap = ledger.exposures()
    kw = {"symbol": symbol, "side": side, "strength": strength, "confidence": confidence}
    expected = size_order(snap, price=price, spec=SPEC, limits=limits, **kw)  # type: ignore[arg-type]
    sizing, decision = ledger.size_and_reserve("new", price=price, spec=SPEC, **kw)  # type: ignore[arg-type]
    assert sizing == expected
    if expected.reason is None:
        it = intent("new", symbol, side, expected.qty, expected.price)
        assert decision == evaluate(snap, it, limits, state, SPEC)
        assert ("new" in ledger.reserved_ids()) == decision.accepted
    else:
        assert (decision.accepted, decision.reason, decision.detail) == (
            False,
            expected.reason,
            expected.detail,
        )
