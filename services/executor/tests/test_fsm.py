"""Order and position FSMs: table properties (hypothesis) and venue status mapping."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from depthflow.executor.fsm import (
    ORDER_OPEN_STATES,
    ORDER_TERMINAL_STATES,
    POSITION_TERMINAL_STATES,
    IllegalTransition,
    OrderFsm,
    OrderFsmEvent,
    OrderState,
    PositionFsm,
    PositionFsmEvent,
    PositionState,
    StateMachine,
    UnknownVenueStatus,
    binance_order_state,
    bybit_order_state,
    event_for_state,
    venue_order_state,
)

MACHINES = [OrderFsm, PositionFsm]


def test_seed_state_names() -> None:
    assert [s.value for s in OrderState] == [
        "Pending",
        "Placed",
        "PartiallyFilled",
        "Filled",
        "Cancelled",
        "Rejected",
        "Failed",
    ]
    assert [s.value for s in PositionState] == ["Opening", "Open", "Closing", "Closed"]


@pytest.mark.parametrize("fsm", MACHINES, ids=lambda m: m.name)
def test_table_is_well_formed(fsm: StateMachine) -> None:  # type: ignore[type-arg]
    used_events = {ev for (_s, ev) in fsm.table}
    assert used_events == set(fsm.all_events), "every event is handled somewhere"
    # every state is reachable from the initial state
    seen, frontier = {fsm.initial}, [fsm.initial]
    while frontier:
        s = frontier.pop()
        for (src, _ev), dst in fsm.table.items():
            if src == s and dst not in seen:
                seen.add(dst)
                frontier.append(dst)
    assert seen == set(fsm.all_states)
    # every non-terminal state can reach a terminal one; terminal states have no exit
    for s in fsm.all_states:
        exits = {dst for (src, _ev), dst in fsm.table.items() if src == s and dst != s}
        if fsm.is_terminal(s):
            assert not exits
        else:
            assert exits


@pytest.mark.parametrize("fsm", MACHINES, ids=lambda m: m.name)
def test_every_pair_is_classified(fsm: StateMachine) -> None:  # type: ignore[type-arg]
    """Completeness: every (state, event) is a move, a no-op, or an IllegalTransition."""
    for s in fsm.all_states:
        for ev in fsm.all_events:
            if fsm.can(s, ev):
                assert fsm.transition(s, ev) in set(fsm.all_states)
            else:
                with pytest.raises(IllegalTransition) as info:
                    fsm.transition(s, ev)
                assert info.value.from_state == s and info.value.event == ev
                assert info.value.audit_detail()["from"] == s.value


@settings(max_examples=300, deadline=None)
@given(events=st.lists(st.sampled_from(list(OrderFsmEvent)), max_size=30))
def test_order_random_sequences(events: list[OrderFsmEvent]) -> None:
    state = OrderFsm.initial
    for ev in events:
        before = state
        try:
            state = OrderFsm.transition(state, ev)
        except IllegalTransition as exc:
            assert exc.from_state == before and exc.event == ev
            continue  # refused: state unchanged
        assert state in set(OrderState)
        if before in ORDER_TERMINAL_STATES:
            assert state == before, "terminal states absorb"
        assert state != OrderState.PENDING or before == OrderState.PENDING


@settings(max_examples=300, deadline=None)
@given(events=st.lists(st.sampled_from(list(PositionFsmEvent)), max_size=30))
def test_position_random_sequences(events: list[PositionFsmEvent]) -> None:
    state = PositionFsm.initial
    for ev in events:
        before = state
        try:
            state = PositionFsm.transition(state, ev)
        except IllegalTransition:
            continue
        if before in POSITION_TERMINAL_STATES:
            assert state == before
        assert state != PositionState.OPENING or before == PositionState.OPENING


def test_order_happy_paths_and_refusals() -> None:
    s = OrderFsm.transition(OrderState.PENDING, OrderFsmEvent.ACKNOWLEDGE)
    assert s == OrderState.PLACED
    s = OrderFsm.transition(s, OrderFsmEvent.PARTIAL_FILL)
    assert s == OrderState.PARTIALLY_FILLED
    s = OrderFsm.transition(s, OrderFsmEvent.FILL)
    assert s == OrderState.FILLED
    # late REST ack after the stream reported the fill: a no-op, not an error
    t = OrderFsm.step(s, OrderFsmEvent.ACKNOWLEDGE)
    assert not t.changed
    # cancel of a filled order is refused, and says what it would have been
    with pytest.raises(IllegalTransition) as info:
        OrderFsm.transition(OrderState.FILLED, OrderFsmEvent.CANCEL)
    assert info.value.to_state == OrderState.CANCELLED
    assert "Filled" in str(info.value)
    # an order we marked Failed that the venue acknowledges: refused (reconciliation fixes it)
    with pytest.raises(IllegalTransition):
        OrderFsm.transition(OrderState.FAILED, OrderFsmEvent.ACKNOWLEDGE)
    # out-of-order: the fill arrives before the ack
    assert OrderFsm.transition(OrderState.PENDING, OrderFsmEvent.FILL) == OrderState.FILLED
    assert {OrderState.PENDING, OrderState.PLACED, OrderState.PARTIALLY_FILLED} == ORDER_OPEN_STATES


def test_position_paths() -> None:
    p = PositionFsm.transition(PositionState.OPENING, PositionFsmEvent.ENTRY_FILLED)
    p = PositionFsm.transition(p, PositionFsmEvent.CLOSE_REQUESTED)
    assert p == PositionState.CLOSING
    assert PositionFsm.transition(p, PositionFsmEvent.EXIT_ABORTED) == PositionState.OPEN
    assert PositionFsm.transition(p, PositionFsmEvent.FLATTENED) == PositionState.CLOSED
    with pytest.raises(IllegalTransition):
        PositionFsm.transition(PositionState.CLOSED, PositionFsmEvent.ENTRY_FILLED)


def test_terminal_must_absorb_is_enforced() -> None:
    with pytest.raises(ValueError, match="must absorb"):
        StateMachine(
            "bad",
            OrderState,
            OrderFsmEvent,
            OrderState.PENDING,
            frozenset({OrderState.FILLED}),
            {(OrderState.FILLED, OrderFsmEvent.CANCEL): OrderState.CANCELLED},
        )


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("NEW", OrderState.PLACED),
        ("PARTIALLY_FILLED", OrderState.PARTIALLY_FILLED),
        ("FILLED", OrderState.FILLED),
        ("CANCELED", OrderState.CANCELLED),
        ("REJECTED", OrderState.REJECTED),
        ("EXPIRED", OrderState.CANCELLED),
        ("EXPIRED_IN_MATCH", OrderState.CANCELLED),
    ],
)
def test_binance_statuses(status: str, state: OrderState) -> None:
    assert binance_order_state(status) == state
    assert venue_order_state("binance", status) == state


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("Created", OrderState.PLACED),
        ("New", OrderState.PLACED),
        ("PartiallyFilled", OrderState.PARTIALLY_FILLED),
        ("Filled", OrderState.FILLED),
        ("Cancelled", OrderState.CANCELLED),
        ("PartiallyFilledCanceled", OrderState.CANCELLED),
        ("Rejected", OrderState.REJECTED),
        ("Deactivated", OrderState.CANCELLED),
        ("Untriggered", OrderState.PLACED),
    ],
)
def test_bybit_statuses(status: str, state: OrderState) -> None:
    assert bybit_order_state(status) == state
    assert venue_order_state("bybit", status) == state


def test_unknown_status_fails_loudly() -> None:
    with pytest.raises(UnknownVenueStatus):
        binance_order_state("New")  # Bybit spelling on Binance
    with pytest.raises(UnknownVenueStatus):
        bybit_order_state("CANCELED")
    with pytest.raises(UnknownVenueStatus):
        venue_order_state("okx", "NEW")


def test_every_venue_state_has_a_legal_event_from_pending() -> None:
    for state in set(OrderState) - {OrderState.PENDING}:
        ev = event_for_state(state)
        assert OrderFsm.transition(OrderState.PENDING, ev) == state
    with pytest.raises(ValueError):
        event_for_state(OrderState.PENDING)
