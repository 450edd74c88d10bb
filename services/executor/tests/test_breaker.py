"""Circuit breaker states on a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from depthflow.executor.breaker import (
    BreakerConfig,
    BreakerRegistry,
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
    CircuitOpen,
)


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make(**kw: Any) -> tuple[CircuitBreaker, FakeClock, list[BreakerTransition]]:
    clock = FakeClock()
    seen: list[BreakerTransition] = []
    cfg = BreakerConfig(**{"failure_threshold": 3, "recovery_timeout_s": 10.0, **kw})
    return CircuitBreaker("binance:POST /fapi/v1/order", cfg, clock, seen.append), clock, seen


def test_opens_after_threshold_and_refuses() -> None:
    b, _clock, seen = make()
    for _ in range(2):
        b.before_request()
        b.record_failure("timeout")
    b.before_request()
    b.record_success()  # resets the streak
    for _ in range(3):
        b.before_request()
        b.record_failure("503")
    assert b.state == BreakerState.OPEN
    with pytest.raises(CircuitOpen) as info:
        b.before_request()
    assert info.value.retry_in_s == pytest.approx(10.0)
    assert [(t.from_state, t.to_state) for t in seen] == [(BreakerState.CLOSED, BreakerState.OPEN)]
    assert "3 consecutive failures" in seen[0].reason


def test_half_open_probe_closes_on_success() -> None:
    b, clock, seen = make(half_open_max_probes=1)
    for _ in range(3):
        b.allow_request()
        b.record_failure()
    clock.t += 10.0
    assert b.state == BreakerState.HALF_OPEN
    assert b.allow_request()  # the probe
    assert not b.allow_request()  # only one probe in flight
    b.record_success()
    assert b.state == BreakerState.CLOSED
    assert [t.to_state for t in seen] == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]


def test_half_open_failure_reopens_and_restarts_timeout() -> None:
    b, clock, _ = make(half_open_max_probes=2, half_open_successes=2)
    for _ in range(3):
        b.allow_request()
        b.record_failure()
    clock.t += 10.0
    assert b.allow_request() and b.allow_request() and not b.allow_request()
    b.record_success()
    assert b.state == BreakerState.HALF_OPEN  # needs two successes
    b.record_failure("probe timeout")
    assert b.state == BreakerState.OPEN
    clock.t += 9.9
    assert not b.allow_request()
    clock.t += 0.1
    assert b.state == BreakerState.HALF_OPEN


def test_manual_reset_and_registry() -> None:
    b, _, _ = make(failure_threshold=1)
    b.record_failure()
    assert b.state == BreakerState.OPEN
    b.reset()
    assert b.state == BreakerState.CLOSED and b.allow_request()
    reg = BreakerRegistry(BreakerConfig(failure_threshold=1), clock=FakeClock())
    reg.get("binance:order").record_failure()
    assert reg.get("binance:order") is reg.get("binance:order")
    assert reg.states() == {"binance:order": BreakerState.OPEN}
    assert reg.get("bybit:order").allow_request()


def test_config_refuses_unknown_fields() -> None:
    with pytest.raises(ValueError):
        BreakerConfig(threshold=3)  # type: ignore[call-arg]
