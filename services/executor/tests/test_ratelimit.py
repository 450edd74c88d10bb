"""Token buckets, used-weight headers, 429 back-off and 418 bans, on a fake clock."""

from __future__ import annotations

import math

import pytest

from depthflow.executor.ratelimit import (
    BucketSpec,
    LimiterState,
    TokenBucket,
    VenueRateLimiter,
    binance_usdm_buckets,
    bybit_order_buckets,
)


class FakeClock:
    def __init__(self, t: float = 1_000_040.0) -> None:  # 20 s into a clock minute
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_continuous_bucket_refills_at_its_rate() -> None:
    clock = FakeClock()
    b = TokenBucket(BucketSpec("r", 10, 1.0), clock)
    for _ in range(10):
        assert b.wait_time(1) == 0.0
        b.take(1)
    assert b.wait_time(1) == pytest.approx(0.1)
    clock.t += 0.25
    assert b.tokens == pytest.approx(2.5)
    assert b.wait_time(11) == math.inf


def test_fixed_window_refills_only_at_the_boundary() -> None:
    clock = FakeClock()
    lim = VenueRateLimiter([BucketSpec("weight", 10, 60, fixed_window=True)], clock)
    for _ in range(10):
        assert lim.try_acquire({"weight": 1}) == 0.0
    assert lim.try_acquire({"weight": 1}) == pytest.approx(40.0)  # next minute starts in 40 s
    clock.t += 39.0
    assert lim.try_acquire({"weight": 1}) == pytest.approx(1.0)  # no continuous refill
    clock.t += 1.0
    assert lim.try_acquire({"weight": 5}) == 0.0


def test_binance_used_weight_header_wins() -> None:
    clock = FakeClock()
    lim = VenueRateLimiter(binance_usdm_buckets(weight_per_min=100, safety_margin=0.0), clock)
    lim.on_response(200, {"x-mbx-used-weight-1m": "95"})  # other clients used weight too
    assert lim.buckets["weight"].tokens == pytest.approx(5)
    assert lim.try_acquire({"weight": 6}) > 0
    assert lim.try_acquire({"weight": 5}) == 0.0
    lim.on_response(200, {"X-MBX-USED-WEIGHT-1M": "10"})  # lower than we think: keep ours
    assert lim.buckets["weight"].tokens == pytest.approx(0)


def test_all_named_buckets_must_have_room() -> None:
    clock = FakeClock()
    lim = VenueRateLimiter(binance_usdm_buckets(orders_per_10s=2, safety_margin=0.0), clock)
    cost = {"orders_10s": 1, "orders_1m": 1}
    assert lim.try_acquire(cost) == 0.0 and lim.try_acquire(cost) == 0.0
    before = lim.buckets["orders_1m"].tokens
    assert lim.try_acquire(cost) > 0
    assert lim.buckets["orders_1m"].tokens == before  # nothing taken on refusal


def test_safety_margin_keeps_headroom() -> None:
    lim = VenueRateLimiter([BucketSpec("w", 100, 60, True, safety_margin=0.1)], FakeClock())
    assert lim.try_acquire({"w": 90}) == 0.0
    assert lim.try_acquire({"w": 1}) > 0


def test_429_backs_off_with_retry_after_or_exponentially() -> None:
    clock = FakeClock()
    lim = VenueRateLimiter(bybit_order_buckets(), clock)
    lim.on_response(429, {"Retry-After": "7"})
    assert lim.state == LimiterState.BACKING_OFF
    assert lim.try_acquire({"requests": 1}) == pytest.approx(7.0)
    clock.t += 7.0
    assert lim.state == LimiterState.OK and lim.try_acquire({"requests": 1}) == 0.0
    lim.on_response(200, {})
    lim.on_response(429, {})
    lim.on_response(429, {})  # second in a row: 2 s
    assert lim.try_acquire({"requests": 1}) == pytest.approx(2.0)
    clock.t += 2.0
    lim.on_response(200, {})
    lim.on_response(429, {})  # a success reset the streak
    assert lim.try_acquire({"requests": 1}) == pytest.approx(1.0)


def test_418_stops_until_the_ban_ends() -> None:
    clock = FakeClock()
    lim = VenueRateLimiter(binance_usdm_buckets(), clock, wall_clock=lambda: 1_700_000_000.0)
    lim.on_response(
        418,
        {"Retry-After": "5"},
        '{"code":-1003,"msg":"Way too many requests; IP banned until 1700000120000."}',
    )
    assert lim.state == LimiterState.BANNED
    assert lim.try_acquire({"weight": 1}) == pytest.approx(120.0)  # the body's time is later
    lim.on_response(429, {"Retry-After": "1"})  # does not shorten or downgrade the ban
    assert lim.state == LimiterState.BANNED
    clock.t += 120.0
    assert lim.state == LimiterState.OK and lim.try_acquire({"weight": 1}) == 0.0


def test_418_without_retry_after_uses_the_policy() -> None:
    clock = FakeClock()
    lim = VenueRateLimiter(bybit_order_buckets(), clock)
    lim.on_response(418, {})
    assert lim.try_acquire({"requests": 1}) == pytest.approx(300.0)


def test_bybit_remaining_header() -> None:
    clock = FakeClock()
    lim = VenueRateLimiter(bybit_order_buckets(per_second=10, safety_margin=0.0), clock)
    lim.on_response(200, {"X-Bapi-Limit-Status": "2", "X-Bapi-Limit": "10"})
    assert lim.try_acquire({"requests": 2}) == 0.0
    assert lim.try_acquire({"requests": 1}) == pytest.approx(0.1)
