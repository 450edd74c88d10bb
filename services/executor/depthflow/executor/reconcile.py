"""Reconciliation: local orders, positions and balances against the venue's truth.

:func:`reconcile` is pure: given what we hold and what the venue reported, it returns the
corrective actions, each with its reason, that bring the local state to the venue's. The caller
executes them (query, fetch fills, update with optimistic locking, audit). It never proposes
sending an order: the venue is the truth, not our intention.

A local open order missing from the venue's open orders is resolved only by a per-order query
(pass the answers in ``lookups``: the venue's order, or ``None`` for "no such order"); until
then the action is :class:`QueryOrder`. Pass a lookup of ``None`` for a ``Pending`` order only
after it has had time to reach the venue, or a just-sent order would be marked ``Failed``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from depthflow.executor.fsm import (
    ORDER_OPEN_STATES,
    OrderFsm,
    OrderFsmEvent,
    OrderState,
    event_for_state,
)
from depthflow.executor.ids import DEFAULT_PREFIX, is_own_client_order_id


@dataclass(frozen=True)
class OrderView:
    """An order as held locally or as reported by the venue."""

    client_order_id: str
    symbol: str
    side: str
    state: OrderState
    qty: float
    filled_qty: float = 0.0
    venue_order_id: str = ""
    avg_price: float | None = None


@dataclass(frozen=True)
class PositionView:
    """A position (signed quantity) as held locally or as reported by the venue."""

    symbol: str
    qty: float
    entry_price: float = 0.0


@dataclass(frozen=True)
class Tolerances:
    """How close is equal. Quantities relative to size; balances absolute in the asset."""

    qty_rel: float = 1e-9
    entry_price_rel: float = 1e-6
    balance_abs: float = 1e-6


@dataclass(frozen=True, kw_only=True)
class Action:
    """A corrective action; ``reason`` is written to the audit log."""

    reason: str


@dataclass(frozen=True, kw_only=True)
class QueryOrder(Action):
    """Ask the venue for this order by client id (its fate is unknown)."""

    client_order_id: str


@dataclass(frozen=True, kw_only=True)
class FetchFills(Action):
    """The venue has more executed than we recorded: fetch the order's trades (deduplicated
    by trade id when stored)."""

    client_order_id: str
    local_filled_qty: float
    venue_filled_qty: float


@dataclass(frozen=True, kw_only=True)
class UpdateOrder(Action):
    """Move the local order to the venue's state and filled quantity.

    ``legal`` is False when the order FSM refuses the move (e.g. ``Failed`` → ``Placed``): the
    caller applies it anyway, as the venue's truth, and audits the override.
    """

    client_order_id: str
    from_state: OrderState
    to_state: OrderState
    event: OrderFsmEvent
    legal: bool
    local_filled_qty: float
    venue_filled_qty: float
    venue_order_id: str = ""


@dataclass(frozen=True, kw_only=True)
class AdoptOrder(Action):
    """An open venue order we have no record of: store it locally (``ours`` says whether its
    client id has our shape, i.e. we sent it and lost the record)."""

    order: OrderView
    ours: bool


@dataclass(frozen=True, kw_only=True)
class SetPosition(Action):
    """Overwrite the local position with the venue's."""

    symbol: str
    local_qty: float
    venue_qty: float
    venue_entry_price: float


@dataclass(frozen=True, kw_only=True)
class SetBalance(Action):
    """Overwrite the local balance of ``asset`` with the venue's."""

    asset: str
    local: float
    venue: float


def _qty_differs(a: float, b: float, tol: Tolerances) -> bool:
    return abs(a - b) > tol.qty_rel * max(abs(a), abs(b), 1.0)


def _order_actions(local: OrderView, venue: OrderView, tol: Tolerances) -> list[Action]:
    out: list[Action] = []
    coid = local.client_order_id
    filled_differs = _qty_differs(venue.filled_qty, local.filled_qty, tol)
    if venue.filled_qty > local.filled_qty and filled_differs:
        out.append(
            FetchFills(
                client_order_id=coid,
                local_filled_qty=local.filled_qty,
                venue_filled_qty=venue.filled_qty,
                reason=f"venue filled {venue.filled_qty}, local {local.filled_qty}",
            )
        )
    if venue.state != local.state or filled_differs:
        event = event_for_state(venue.state)
        legal = OrderFsm.can(local.state, event) and (
            OrderFsm.transition(local.state, event) == venue.state
        )
        why = f"venue says {venue.state.value}, local {local.state.value}"
        if filled_differs:
            why += f"; filled venue {venue.filled_qty} vs local {local.filled_qty}"
        if not legal:
            why += " (transition refused by the order FSM: venue truth overrides)"
        out.append(
            UpdateOrder(
                client_order_id=coid,
                from_state=local.state,
                to_state=venue.state,
                event=event,
                legal=legal,
                local_filled_qty=local.filled_qty,
                venue_filled_qty=venue.filled_qty,
                venue_order_id=venue.venue_order_id or local.venue_order_id,
                reason=why,
            )
        )
    return out


def reconcile_orders(
    local: Iterable[OrderView],
    venue_open: Iterable[OrderView],
    lookups: Mapping[str, OrderView | None] | None = None,
    *,
    own_prefix: str = DEFAULT_PREFIX,
    tolerances: Tolerances | None = None,
) -> list[Action]:
    """Actions for orders: ``local`` is every local order that may matter (open ones at
    least), ``venue_open`` the venue's open orders, ``lookups`` answers to per-order queries."""
    tol = tolerances or Tolerances()
    lookups = lookups or {}
    local_by_id = {o.client_order_id: o for o in local}
    venue_by_id = {o.client_order_id: o for o in venue_open}
    out: list[Action] = []
    for coid, lo in sorted(local_by_id.items()):
        v = venue_by_id.get(coid)
        if v is not None:
            out += _order_actions(lo, v, tol)
            continue
        if lo.state not in ORDER_OPEN_STATES:
            continue
        if coid not in lookups:
            out.append(
                QueryOrder(
                    client_order_id=coid,
                    reason=f"local {lo.state.value} but not among the venue's open orders",
                )
            )
            continue
        found = lookups[coid]
        if found is not None:
            out += _order_actions(lo, found, tol)
            continue
        # The venue has no such order.
        gone = OrderView(
            coid,
            lo.symbol,
            lo.side,
            OrderState.FAILED if lo.state == OrderState.PENDING else OrderState.CANCELLED,
            lo.qty,
            lo.filled_qty,
            lo.venue_order_id,
        )
        out += [
            replace(a, reason=f"venue has no order {coid}: {a.reason}")
            if isinstance(a, UpdateOrder)
            else a
            for a in _order_actions(lo, gone, tol)
        ]
    for coid, v in sorted(venue_by_id.items()):
        if coid not in local_by_id:
            ours = is_own_client_order_id(coid, prefix=own_prefix)
            out.append(
                AdoptOrder(
                    order=v,
                    ours=ours,
                    reason=(
                        "our client id but no local record"
                        if ours
                        else "open venue order placed outside the executor"
                    ),
                )
            )
    return out


def reconcile_positions(
    local: Iterable[PositionView],
    venue: Iterable[PositionView],
    tolerances: Tolerances | None = None,
) -> list[Action]:
    """Actions for positions (a symbol missing on one side is flat there)."""
    tol = tolerances or Tolerances()
    lo = {p.symbol: p for p in local}
    ve = {p.symbol: p for p in venue}
    out: list[Action] = []
    for symbol in sorted(lo.keys() | ve.keys()):
        a = lo.get(symbol, PositionView(symbol, 0.0))
        b = ve.get(symbol, PositionView(symbol, 0.0))
        qty_off = _qty_differs(a.qty, b.qty, tol)
        price_off = b.qty != 0 and abs(a.entry_price - b.entry_price) > tol.entry_price_rel * max(
            abs(a.entry_price), abs(b.entry_price), 1e-12
        )
        if qty_off or price_off:
            why = (
                f"qty local {a.qty} vs venue {b.qty}"
                if qty_off
                else f"entry local {a.entry_price} vs venue {b.entry_price}"
            )
            out.append(
                SetPosition(
                    symbol=symbol,
                    local_qty=a.qty,
                    venue_qty=b.qty,
                    venue_entry_price=b.entry_price,
                    reason=why,
                )
            )
    return out


def reconcile_balances(
    local: Mapping[str, float],
    venue: Mapping[str, float],
    tolerances: Tolerances | None = None,
) -> list[Action]:
    """Actions for balances (an asset missing on one side is zero there)."""
    tol = tolerances or Tolerances()
    out: list[Action] = []
    for asset in sorted(local.keys() | venue.keys()):
        a, b = local.get(asset, 0.0), venue.get(asset, 0.0)
        if abs(a - b) > tol.balance_abs:
            out.append(
                SetBalance(asset=asset, local=a, venue=b, reason=f"{asset} local {a} vs venue {b}")
            )
    return out


def reconcile(
    *,
    local_orders: Iterable[OrderView],
    venue_open_orders: Iterable[OrderView],
    lookups: Mapping[str, OrderView | None] | None = None,
    local_positions: Iterable[PositionView] = (),
    venue_positions: Iterable[PositionView] = (),
    local_balances: Mapping[str, float] | None = None,
    venue_balances: Mapping[str, float] | None = None,
    own_prefix: str = DEFAULT_PREFIX,
    tolerances: Tolerances | None = None,
) -> list[Action]:
    """All corrective actions: orders, then positions, then balances."""
    return [
        *reconcile_orders(
            local_orders, venue_open_orders, lookups, own_prefix=own_prefix, tolerances=tolerances
        ),
        *reconcile_positions(local_positions, venue_positions, tolerances),
        *reconcile_balances(local_balances or {}, venue_balances or {}, tolerances),
    ]
