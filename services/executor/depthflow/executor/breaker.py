"""Circuit breaker per venue endpoint: closed → open → half-open → closed.

* Closed: requests pass; ``failure_threshold`` consecutive failures open the circuit.
* Open: requests are refused (:class:`CircuitOpen`) until ``recovery_timeout_s`` has passed.
* Half-open: at most ``half_open_max_probes`` requests in flight; ``half_open_successes``
  successes close the circuit, any failure opens it again (and restarts the timeout).

What counts as a failure is the caller's call: timeouts, connection errors and 5xx, not
business rejections (insufficient margin, bad price), which say the venue is healthy.
A 503 "unknown execution status" is a failure here *and* an order to resolve by query.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

Clock = Callable[[], float]


class BreakerState(StrEnum):
    """The three states of a circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerConfig(BaseModel):
    """Breaker thresholds (frozen; unknown fields refused). Defaults follow the seed (5)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    failure_threshold: int = Field(default=5, ge=1)
    recovery_timeout_s: float = Field(default=30.0, gt=0)
    half_open_max_probes: int = Field(default=1, ge=1)
    half_open_successes: int = Field(default=1, ge=1)


class CircuitOpen(Exception):
    """The breaker refuses the request; ``retry_in_s`` says when it may let a probe through."""

    def __init__(self, name: str, retry_in_s: float) -> None:
        self.name = name
        self.retry_in_s = retry_in_s
        super().__init__(f"circuit {name!r} is open; retry in {retry_in_s:.1f}s")


@dataclass(frozen=True)
class BreakerTransition:
    """A change of breaker state, for logs, metrics and the audit log."""

    name: str
    from_state: BreakerState
    to_state: BreakerState
    at: float
    reason: str


class CircuitBreaker:
    """One breaker. Use ``before_request()``, then ``record_success()`` or
    ``record_failure()`` exactly once per permitted request."""

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        clock: Clock = time.monotonic,
        on_transition: Callable[[BreakerTransition], None] | None = None,
    ) -> None:
        self.name = name
        self.config = config or BreakerConfig()
        self._clock = clock
        self._on_transition = on_transition
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probes_in_flight = 0
        self._probe_successes = 0

    @property
    def state(self) -> BreakerState:
        """The current state (an open breaker past its timeout reads as half-open)."""
        self._maybe_half_open()
        return self._state

    @property
    def consecutive_failures(self) -> int:
        """Failures since the last success (while closed)."""
        return self._failures

    def _move(self, to: BreakerState, reason: str) -> None:
        if to == self._state:
            return
        t = BreakerTransition(self.name, self._state, to, self._clock(), reason)
        self._state = to
        if self._on_transition is not None:
            self._on_transition(t)

    def _maybe_half_open(self) -> None:
        if (
            self._state == BreakerState.OPEN
            and self._clock() - self._opened_at >= self.config.recovery_timeout_s
        ):
            self._probes_in_flight = 0
            self._probe_successes = 0
            self._move(BreakerState.HALF_OPEN, "recovery timeout elapsed")

    def allow_request(self) -> bool:
        """Whether a request may go now; if True it is counted (a probe when half-open)."""
        self._maybe_half_open()
        if self._state == BreakerState.CLOSED:
            return True
        if self._state == BreakerState.HALF_OPEN and (
            self._probes_in_flight < self.config.half_open_max_probes
        ):
            self._probes_in_flight += 1
            return True
        return False

    def before_request(self) -> None:
        """Like :meth:`allow_request` but raises :class:`CircuitOpen` when refused."""
        if not self.allow_request():
            retry = max(0.0, self._opened_at + self.config.recovery_timeout_s - self._clock())
            raise CircuitOpen(self.name, retry)

    def record_success(self) -> None:
        """The permitted request succeeded."""
        if self._state == BreakerState.HALF_OPEN:
            self._probes_in_flight = max(0, self._probes_in_flight - 1)
            self._probe_successes += 1
            if self._probe_successes >= self.config.half_open_successes:
                self._failures = 0
                self._move(BreakerState.CLOSED, f"{self._probe_successes} probe(s) succeeded")
        elif self._state == BreakerState.CLOSED:
            self._failures = 0

    def record_failure(self, reason: str = "") -> None:
        """The permitted request failed (timeout, connection error, 5xx)."""
        if self._state == BreakerState.HALF_OPEN:
            self._open(f"probe failed: {reason}".rstrip(": "))
        elif self._state == BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self.config.failure_threshold:
                self._open(f"{self._failures} consecutive failures: {reason}".rstrip(": "))

    def _open(self, reason: str) -> None:
        self._opened_at = self._clock()
        self._probes_in_flight = 0
        self._probe_successes = 0
        self._move(BreakerState.OPEN, reason)

    def reset(self) -> None:
        """Close the breaker by hand (operator action)."""
        self._failures = 0
        self._move(BreakerState.CLOSED, "manual reset")


class BreakerRegistry:
    """One breaker per key (``"binance:POST /fapi/v1/order"``), created on first use."""

    def __init__(
        self,
        config: BreakerConfig | None = None,
        clock: Clock = time.monotonic,
        on_transition: Callable[[BreakerTransition], None] | None = None,
    ) -> None:
        self.config = config or BreakerConfig()
        self._clock = clock
        self._on_transition = on_transition
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, key: str) -> CircuitBreaker:
        """The breaker for ``key``."""
        b = self._breakers.get(key)
        if b is None:
            b = CircuitBreaker(key, self.config, self._clock, self._on_transition)
            self._breakers[key] = b
        return b

    def states(self) -> dict[str, BreakerState]:
        """State of every breaker, for the status API and metrics."""
        return {k: b.state for k, b in self._breakers.items()}
