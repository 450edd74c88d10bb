"""Reconciliation: local vs venue truth -> corrective actions."""

from __future__ import annotations

from depthflow.executor.fsm import OrderFsmEvent, OrderState
from depthflow.executor.ids import client_order_id
from depthflow.executor.reconcile import (
    AdoptOrder,
    FetchFills,
    OrderView,
    PositionView,
    QueryOrder,
    SetBalance,
    SetPosition,
    UpdateOrder,
    reconcile,
    reconcile_orders,
)

A = client_order_id("sig-a")
B = client_order_id("sig-b")


def order(coid: str, state: OrderState, filled: float = 0.0, qty: float = 1.0) -> OrderView:
    return OrderView(coid, "BTCUSDT", "buy", state, qty, filled, venue_order_id="v-" + coid[-4:])


def test_consistent_state_needs_nothing() -> None:
    lo = [order(A, OrderState.PLACED), order(B, OrderState.FILLED, 1.0)]
    assert (
        reconcile(
            local_orders=lo,
            venue_open_orders=[order(A, OrderState.PLACED)],
            local_positions=[PositionView("BTCUSDT", 1.0, 100.0)],
            venue_positions=[PositionView("BTCUSDT", 1.0, 100.0)],
            local_balances={"USDT": 1000.0},
            venue_balances={"USDT": 1000.0},
        )
        == []
    )


def test_missing_from_venue_open_orders_is_queried_never_assumed() -> None:
    (a,) = reconcile_orders([order(A, OrderState.PLACED)], [])
    assert isinstance(a, QueryOrder) and a.client_order_id == A and a.reason


def test_query_answer_applies_the_venue_state_and_fetches_fills() -> None:
    actions = reconcile_orders(
        [order(A, OrderState.PLACED)], [], {A: order(A, OrderState.FILLED, 1.0)}
    )
    fetch, upd = actions
    assert isinstance(fetch, FetchFills) and fetch.venue_filled_qty == 1.0
    assert isinstance(upd, UpdateOrder)
    assert (upd.from_state, upd.to_state, upd.event, upd.legal) == (
        OrderState.PLACED,
        OrderState.FILLED,
        OrderFsmEvent.FILL,
        True,
    )


def test_unknown_at_venue_pending_becomes_failed() -> None:
    (upd,) = reconcile_orders([order(A, OrderState.PENDING)], [], {A: None})
    assert isinstance(upd, UpdateOrder)
    assert upd.to_state == OrderState.FAILED and upd.legal and "no order" in upd.reason
    (upd,) = reconcile_orders([order(A, OrderState.PLACED)], [], {A: None})
    assert isinstance(upd, UpdateOrder) and upd.to_state == OrderState.CANCELLED


def test_partial_fill_progress_while_open() -> None:
    actions = reconcile_orders(
        [order(A, OrderState.PLACED, qty=2.0)],
        [order(A, OrderState.PARTIALLY_FILLED, 0.5, qty=2.0)],
    )
    assert [type(a) for a in actions] == [FetchFills, UpdateOrder]


def test_venue_truth_overrides_an_illegal_transition() -> None:
    """We marked it Failed (crash between send and response) but the venue has it open."""
    (upd,) = reconcile_orders([order(A, OrderState.FAILED)], [order(A, OrderState.PLACED)])
    assert isinstance(upd, UpdateOrder)
    assert not upd.legal and upd.to_state == OrderState.PLACED and "overrides" in upd.reason


def test_unknown_venue_orders_are_adopted() -> None:
    venue = [order(A, OrderState.PLACED), order("web_123", OrderState.PLACED)]
    actions = reconcile_orders([], venue)
    assert all(isinstance(a, AdoptOrder) for a in actions)
    adopt = {a.order.client_order_id: a for a in actions if isinstance(a, AdoptOrder)}
    assert adopt[A].ours and not adopt["web_123"].ours


def test_terminal_local_orders_are_left_alone() -> None:
    lo = [order(A, OrderState.CANCELLED), order(B, OrderState.REJECTED)]
    assert reconcile_orders(lo, []) == []


def test_positions_and_balances_follow_the_venue() -> None:
    actions = reconcile(
        local_orders=[],
        venue_open_orders=[],
        local_positions=[PositionView("BTCUSDT", 1.0, 100.0), PositionView("ETHUSDT", 2.0, 10.0)],
        venue_positions=[
            PositionView("BTCUSDT", 0.5, 100.0),
            PositionView("SOLUSDT", -3.0, 5.0),
            PositionView("ETHUSDT", 2.0, 10.5),
        ],
        local_balances={"USDT": 1000.0, "BNB": 0.1},
        venue_balances={"USDT": 990.0},
    )
    pos = {a.symbol: a for a in actions if isinstance(a, SetPosition)}
    assert pos["BTCUSDT"].venue_qty == 0.5
    assert pos["SOLUSDT"].local_qty == 0.0 and pos["SOLUSDT"].venue_qty == -3.0
    assert "entry" in pos["ETHUSDT"].reason
    bal = {a.asset: a for a in actions if isinstance(a, SetBalance)}
    assert bal["USDT"].venue == 990.0 and bal["BNB"].venue == 0.0
    assert all(a.reason for a in actions)
