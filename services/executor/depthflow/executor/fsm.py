"""Order and position state machines as explicit transition tables.

Order states (the seed's seven): ``Pending`` (stored locally with its client order id, not yet
acknowledged by the venue), ``Placed``, ``PartiallyFilled``, ``Filled``, ``Cancelled``,
``Rejected``, ``Failed`` (never reached the venue, established by a query, not assumed).
Position states (the seed's four): ``Opening``, ``Open``, ``Closing``, ``Closed``.

Every ``(state, event)`` pair is classified in the table as one of:

* a change of state,
* a no-op that keeps the state (a duplicate or late report: a REST ack arriving after the
  user-data stream already reported the fill, a fill report repeated by a reconciliation query),
* illegal: ``transition`` raises :class:`IllegalTransition`, which carries from/to/event so the
  caller can write it to the audit log. The "to" of an illegal transition is the state the event
  would lead to from a state where it is legal (``None`` if there is none).

Terminal states absorb: no event leaves them.

Venue order statuses (Binance USD-M ``X``/``status``, Bybit v5 ``orderStatus``) map to our
states with :func:`binance_order_state` / :func:`bybit_order_state`; an unknown status raises
:class:`UnknownVenueStatus` rather than being guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Generic, TypeVar


class OrderState(StrEnum):
    """Lifecycle state of one order (values as stored and published on ``orders.v1``)."""

    PENDING = "Pending"
    PLACED = "Placed"
    PARTIALLY_FILLED = "PartiallyFilled"
    FILLED = "Filled"
    CANCELLED = "Cancelled"
    REJECTED = "Rejected"
    FAILED = "Failed"


class OrderFsmEvent(StrEnum):
    """What happened to an order (from the venue, a query, or the executor itself)."""

    ACKNOWLEDGE = "acknowledge"  # venue accepted the order (NEW)
    PARTIAL_FILL = "partial_fill"  # some but not all of the quantity executed
    FILL = "fill"  # the whole quantity executed
    CANCEL = "cancel"  # venue cancelled or expired it (IOC remainder, user cancel, expiry)
    REJECT = "reject"  # venue refused it at placement
    FAIL = "fail"  # established that it never reached the venue (e.g. query: unknown order)


class PositionState(StrEnum):
    """Lifecycle state of one position (values as stored and published)."""

    OPENING = "Opening"
    OPEN = "Open"
    CLOSING = "Closing"
    CLOSED = "Closed"


class PositionFsmEvent(StrEnum):
    """What happened to a position."""

    ENTRY_FILLED = "entry_filled"  # an entry (or increase) fill arrived
    ENTRY_ABORTED = "entry_aborted"  # the entry order ended with nothing filled
    CLOSE_REQUESTED = "close_requested"  # an exit order was sent (signal, stop, kill switch)
    EXIT_PARTIAL = "exit_partial"  # a reducing fill that leaves quantity open
    EXIT_ABORTED = "exit_aborted"  # the exit order ended with quantity still open
    FLATTENED = "flattened"  # quantity reached zero (exit fill, liquidation, venue says flat)


S = TypeVar("S", bound=StrEnum)
E = TypeVar("E", bound=StrEnum)


class IllegalTransition(Exception):
    """A transition the table refuses; carries everything the audit log needs."""

    def __init__(self, machine: str, from_state: StrEnum, event: StrEnum, to_state: StrEnum | None):
        self.machine = machine
        self.from_state = from_state
        self.event = event
        self.to_state = to_state
        super().__init__(
            f"{machine}: illegal transition {from_state.value} --{event.value}--> "
            f"{to_state.value if to_state is not None else '?'}"
        )

    def audit_detail(self) -> dict[str, str | None]:
        """A JSON-ready dict for the audit log."""
        return {
            "machine": self.machine,
            "from": self.from_state.value,
            "event": self.event.value,
            "to": self.to_state.value if self.to_state is not None else None,
        }


class UnknownVenueStatus(ValueError):
    """A venue reported an order status this module does not know."""


@dataclass(frozen=True)
class Transition(Generic[S, E]):
    """The outcome of one accepted event: ``changed`` is False for a duplicate or late report."""

    from_state: S
    event: E
    to_state: S

    @property
    def changed(self) -> bool:
        """Whether the state actually moved."""
        return self.from_state != self.to_state


class StateMachine(Generic[S, E]):
    """A finite state machine defined by an explicit ``(state, event) -> state`` table.

    Pairs absent from the table are illegal. The class holds no per-entity state: the state
    lives with the entity (the DB row with its version column); this only decides.
    """

    def __init__(
        self,
        name: str,
        states: type[S],
        events: type[E],
        initial: S,
        terminal: frozenset[S],
        table: Mapping[tuple[S, E], S],
    ) -> None:
        self.name = name
        self.states = states
        self.events = events
        self.initial = initial
        self.all_states: tuple[S, ...] = tuple(states.__members__.values())
        self.all_events: tuple[E, ...] = tuple(events.__members__.values())
        self.terminal = terminal
        self.table: Mapping[tuple[S, E], S] = MappingProxyType(dict(table))
        for (src, _ev), dst in self.table.items():
            if src in terminal and dst != src:
                raise ValueError(f"{name}: terminal state {src} must absorb, not lead to {dst}")

    def can(self, state: S, event: E) -> bool:
        """Whether ``event`` is accepted in ``state`` (possibly as a no-op)."""
        return (state, event) in self.table

    def transition(self, state: S, event: E) -> S:
        """The state after ``event``; raises :class:`IllegalTransition` if refused."""
        try:
            return self.table[(state, event)]
        except KeyError:
            raise IllegalTransition(self.name, state, event, self._nominal_target(event)) from None

    def step(self, state: S, event: E) -> Transition[S, E]:
        """Like :meth:`transition` but returns the full record (for audit and ``orders.v1``)."""
        return Transition(state, event, self.transition(state, event))

    def is_terminal(self, state: S) -> bool:
        """Whether ``state`` is final."""
        return state in self.terminal

    def _nominal_target(self, event: E) -> S | None:
        # Where the event leads from the initial state, else from any state where it moves.
        if (self.initial, event) in self.table:
            return self.table[(self.initial, event)]
        for (src, ev), dst in self.table.items():
            if ev == event and dst != src:
                return dst
        return None


_O = OrderState
_OE = OrderFsmEvent

_ORDER_TABLE: dict[tuple[OrderState, OrderFsmEvent], OrderState] = {
    # Pending: stored, sent or about to be sent, not yet acknowledged. Any venue report may come
    # first (the ack can be lost; an IOC can be done before its REST response arrives).
    (_O.PENDING, _OE.ACKNOWLEDGE): _O.PLACED,
    (_O.PENDING, _OE.PARTIAL_FILL): _O.PARTIALLY_FILLED,
    (_O.PENDING, _OE.FILL): _O.FILLED,
    (_O.PENDING, _OE.CANCEL): _O.CANCELLED,
    (_O.PENDING, _OE.REJECT): _O.REJECTED,
    (_O.PENDING, _OE.FAIL): _O.FAILED,
    # Placed: live at the venue.
    (_O.PLACED, _OE.ACKNOWLEDGE): _O.PLACED,
    (_O.PLACED, _OE.PARTIAL_FILL): _O.PARTIALLY_FILLED,
    (_O.PLACED, _OE.FILL): _O.FILLED,
    (_O.PLACED, _OE.CANCEL): _O.CANCELLED,
    # PartiallyFilled: live, some quantity executed.
    (_O.PARTIALLY_FILLED, _OE.ACKNOWLEDGE): _O.PARTIALLY_FILLED,  # late REST ack
    (_O.PARTIALLY_FILLED, _OE.PARTIAL_FILL): _O.PARTIALLY_FILLED,
    (_O.PARTIALLY_FILLED, _OE.FILL): _O.FILLED,
    (_O.PARTIALLY_FILLED, _OE.CANCEL): _O.CANCELLED,
    # Filled (terminal): late acks and fill reports are duplicates; a cancel is refused.
    (_O.FILLED, _OE.ACKNOWLEDGE): _O.FILLED,
    (_O.FILLED, _OE.PARTIAL_FILL): _O.FILLED,
    (_O.FILLED, _OE.FILL): _O.FILLED,
    # Cancelled (terminal): late reports of executions that happened before the cancel keep the
    # state (the fills themselves are recorded by trade id); a full FILL contradicts it.
    (_O.CANCELLED, _OE.ACKNOWLEDGE): _O.CANCELLED,
    (_O.CANCELLED, _OE.PARTIAL_FILL): _O.CANCELLED,
    (_O.CANCELLED, _OE.CANCEL): _O.CANCELLED,
    # Rejected / Failed (terminal): only the same report again. Anything else means the venue
    # has the order after all: refused here, audited, and fixed by reconciliation.
    (_O.REJECTED, _OE.REJECT): _O.REJECTED,
    (_O.FAILED, _OE.FAIL): _O.FAILED,
}

ORDER_TERMINAL_STATES: frozenset[OrderState] = frozenset(
    {_O.FILLED, _O.CANCELLED, _O.REJECTED, _O.FAILED}
)
ORDER_OPEN_STATES: frozenset[OrderState] = frozenset(OrderState) - ORDER_TERMINAL_STATES

OrderFsm: StateMachine[OrderState, OrderFsmEvent] = StateMachine(
    "order", OrderState, OrderFsmEvent, _O.PENDING, ORDER_TERMINAL_STATES, _ORDER_TABLE
)
"""The order state machine: ``OrderFsm.transition(state, event) -> state``."""

_P = PositionState
_PE = PositionFsmEvent

_POSITION_TABLE: dict[tuple[PositionState, PositionFsmEvent], PositionState] = {
    # Opening: entry order working, nothing filled yet.
    (_P.OPENING, _PE.ENTRY_FILLED): _P.OPEN,
    (_P.OPENING, _PE.ENTRY_ABORTED): _P.CLOSED,
    (_P.OPENING, _PE.CLOSE_REQUESTED): _P.CLOSING,  # kill switch before any fill
    # Open: quantity held.
    (_P.OPEN, _PE.ENTRY_FILLED): _P.OPEN,  # increase, or the rest of the entry order
    (_P.OPEN, _PE.ENTRY_ABORTED): _P.OPEN,  # rest of a partially filled entry cancelled
    (_P.OPEN, _PE.CLOSE_REQUESTED): _P.CLOSING,
    (_P.OPEN, _PE.EXIT_PARTIAL): _P.OPEN,  # a reduce that leaves quantity
    (_P.OPEN, _PE.FLATTENED): _P.CLOSED,  # reduced to zero, liquidated, or venue says flat
    # Closing: exit order working.
    (_P.CLOSING, _PE.ENTRY_FILLED): _P.CLOSING,  # late fill of the entry order
    (_P.CLOSING, _PE.ENTRY_ABORTED): _P.CLOSING,
    (_P.CLOSING, _PE.CLOSE_REQUESTED): _P.CLOSING,
    (_P.CLOSING, _PE.EXIT_PARTIAL): _P.CLOSING,
    (_P.CLOSING, _PE.EXIT_ABORTED): _P.OPEN,  # exit order ended with quantity left
    (_P.CLOSING, _PE.FLATTENED): _P.CLOSED,
    # Closed (terminal): only a repeated "flat". A new fill opens a new position.
    (_P.CLOSED, _PE.FLATTENED): _P.CLOSED,
}

POSITION_TERMINAL_STATES: frozenset[PositionState] = frozenset({_P.CLOSED})

PositionFsm: StateMachine[PositionState, PositionFsmEvent] = StateMachine(
    "position",
    PositionState,
    PositionFsmEvent,
    _P.OPENING,
    POSITION_TERMINAL_STATES,
    _POSITION_TABLE,
)
"""The position state machine: ``PositionFsm.transition(state, event) -> state``."""


# --- venue statuses -----------------------------------------------------------------------

_BINANCE_STATUS: Mapping[str, OrderState] = MappingProxyType(
    {
        "NEW": _O.PLACED,
        "PARTIALLY_FILLED": _O.PARTIALLY_FILLED,
        "FILLED": _O.FILLED,
        "CANCELED": _O.CANCELLED,
        "REJECTED": _O.REJECTED,
        "EXPIRED": _O.CANCELLED,  # IOC/FOK remainder, GTX that would have taken
        "EXPIRED_IN_MATCH": _O.CANCELLED,  # self-trade prevention
    }
)

_BYBIT_STATUS: Mapping[str, OrderState] = MappingProxyType(
    {
        "Created": _O.PLACED,  # accepted by the system, not yet by the matching engine
        "New": _O.PLACED,
        "Untriggered": _O.PLACED,  # conditional order waiting for its trigger
        "Triggered": _O.PLACED,
        "Active": _O.PLACED,
        "PartiallyFilled": _O.PARTIALLY_FILLED,
        "Filled": _O.FILLED,
        "Cancelled": _O.CANCELLED,
        "PartiallyFilledCanceled": _O.CANCELLED,  # remainder cancelled (e.g. IOC) after a partial
        "Deactivated": _O.CANCELLED,  # conditional order cancelled before triggering
        "Rejected": _O.REJECTED,
    }
)

_EVENT_FOR_STATE: Mapping[OrderState, OrderFsmEvent] = MappingProxyType(
    {
        _O.PLACED: _OE.ACKNOWLEDGE,
        _O.PARTIALLY_FILLED: _OE.PARTIAL_FILL,
        _O.FILLED: _OE.FILL,
        _O.CANCELLED: _OE.CANCEL,
        _O.REJECTED: _OE.REJECT,
        _O.FAILED: _OE.FAIL,
    }
)


def binance_order_state(status: str) -> OrderState:
    """Our state for a Binance USD-M order status (``NEW``, ``PARTIALLY_FILLED``, ...)."""
    try:
        return _BINANCE_STATUS[status]
    except KeyError:
        raise UnknownVenueStatus(f"binance order status {status!r}") from None


def bybit_order_state(status: str) -> OrderState:
    """Our state for a Bybit v5 ``orderStatus`` (``New``, ``PartiallyFilled``, ...)."""
    try:
        return _BYBIT_STATUS[status]
    except KeyError:
        raise UnknownVenueStatus(f"bybit order status {status!r}") from None


def venue_order_state(exchange: str, status: str) -> OrderState:
    """Our state for a status reported by ``exchange`` (``binance`` or ``bybit``)."""
    if exchange == "binance":
        return binance_order_state(status)
    if exchange == "bybit":
        return bybit_order_state(status)
    raise UnknownVenueStatus(f"unknown exchange {exchange!r}")


def event_for_state(state: OrderState) -> OrderFsmEvent:
    """The event that moves an order toward a state a venue reported (not ``Pending``)."""
    try:
        return _EVENT_FOR_STATE[state]
    except KeyError:
        raise ValueError(f"no venue event leads to {state}") from None
