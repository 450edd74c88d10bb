"""Request-weight rate limiting that follows the venue's own accounting.

Hand-written rather than a library: the executor needs (a) weighted costs, (b) buckets that
refill the way the venue's counters reset — Binance counts per fixed clock minute, so a
continuously refilling bucket would let through requests the venue then answers with 429 —
(c) re-syncing from the venue's used-weight headers (``X-MBX-USED-WEIGHT-1M``,
``X-MBX-ORDER-COUNT-10S``/``-1M``, Bybit ``X-Bapi-Limit-Status``), (d) 429 back-off and 418
bans, and (e) an injectable clock with a non-blocking API the async edge can sleep on.
``aiolimiter`` and ``pyrate-limiter`` cover (a) and partly (e) but not (b)-(d).

Nothing here sleeps: :meth:`VenueRateLimiter.try_acquire` returns 0.0 (granted, tokens taken)
or how many seconds to wait before trying again.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

Clock = Callable[[], float]
"""Seconds, monotonic for continuous buckets; wall-clock-aligned for fixed windows."""


@dataclass(frozen=True)
class BucketSpec:
    """One limit: ``capacity`` units per ``window_s``.

    ``fixed_window=True``: the whole capacity comes back at each multiple of ``window_s`` on
    the clock (Binance: counters reset at the start of each minute). Otherwise tokens refill
    continuously at ``capacity / window_s`` per second (Bybit's per-second limits).
    ``header`` names the response header reporting the used amount in the current window, or
    (``header_reports_remaining=True``) the remaining amount.
    """

    name: str
    capacity: float
    window_s: float
    fixed_window: bool = False
    header: str | None = None
    header_reports_remaining: bool = False
    safety_margin: float = 0.0  # fraction of capacity never used (other clients, clock skew)

    def __post_init__(self) -> None:
        if not (self.capacity > 0 and self.window_s > 0 and 0 <= self.safety_margin < 1):
            raise ValueError(f"bucket {self.name}: bad capacity/window/margin")


class TokenBucket:
    """One bucket of :class:`BucketSpec`, with an injectable clock."""

    def __init__(self, spec: BucketSpec, clock: Clock) -> None:
        self.spec = spec
        self._clock = clock
        self._usable = spec.capacity * (1.0 - spec.safety_margin)
        self._tokens = self._usable
        self._stamp = clock()

    def _window(self, t: float) -> int:
        return math.floor(t / self.spec.window_s)

    def _refill(self) -> float:
        now = self._clock()
        if self.spec.fixed_window:
            if self._window(now) != self._window(self._stamp):
                self._tokens = self._usable
        else:
            rate = self.spec.capacity / self.spec.window_s
            self._tokens = min(self._usable, self._tokens + max(0.0, now - self._stamp) * rate)
        self._stamp = now
        return now

    @property
    def tokens(self) -> float:
        """Tokens available now."""
        self._refill()
        return self._tokens

    def wait_time(self, cost: float) -> float:
        """Seconds until ``cost`` tokens are available (0.0 if now); ``inf`` if never."""
        now = self._refill()
        if cost <= self._tokens:
            return 0.0
        if cost > self._usable:
            return math.inf
        if self.spec.fixed_window:
            return (self._window(now) + 1) * self.spec.window_s - now
        return (cost - self._tokens) / (self.spec.capacity / self.spec.window_s)

    def take(self, cost: float) -> None:
        """Consume ``cost`` tokens (may go negative: the venue's word is final)."""
        self._refill()
        self._tokens -= cost

    def sync_used(self, used: float) -> None:
        """The venue says ``used`` units are spent in the current window: never assume more."""
        self._refill()
        self._tokens = min(self._tokens, self._usable - used)

    def sync_remaining(self, remaining: float) -> None:
        """The venue says ``remaining`` units are left."""
        self._refill()
        self._tokens = min(self._tokens, remaining - self.spec.capacity * self.spec.safety_margin)


class LimiterState(StrEnum):
    """Whether requests may go out."""

    OK = "ok"
    BACKING_OFF = "backing_off"  # after a 429
    BANNED = "banned"  # after a 418


_BANNED_UNTIL_RE = re.compile(r"banned until (\d{12,14})")


@dataclass(frozen=True)
class BackoffPolicy:
    """How long to stop after 429/418 when the venue does not say."""

    base_s: float = 1.0
    max_s: float = 60.0
    ban_without_retry_after_s: float = 300.0


class VenueRateLimiter:
    """All buckets of one venue plus its 429 back-off / 418 ban state.

    ``costs`` given to :meth:`try_acquire` name buckets (``{"weight": 1, "orders_10s": 1}``);
    a request is granted only if every named bucket has room, and then takes from all.
    """

    def __init__(
        self,
        buckets: list[BucketSpec],
        clock: Clock = time.time,
        backoff: BackoffPolicy | None = None,
        wall_clock: Clock | None = None,
    ) -> None:
        self._clock = clock
        self._wall = wall_clock or clock
        self.buckets = {b.name: TokenBucket(b, clock) for b in buckets}
        self.backoff = backoff or BackoffPolicy()
        self._blocked_until = 0.0
        self._banned = False
        self._consecutive_429 = 0

    @property
    def state(self) -> LimiterState:
        """OK, backing off after a 429, or banned after a 418."""
        if self._clock() >= self._blocked_until:
            return LimiterState.OK
        return LimiterState.BANNED if self._banned else LimiterState.BACKING_OFF

    @property
    def blocked_until(self) -> float:
        """Clock time before which nothing may be sent."""
        return self._blocked_until

    def try_acquire(self, costs: Mapping[str, float]) -> float:
        """0.0 and the tokens taken, or the seconds to wait (nothing taken)."""
        now = self._clock()
        if now < self._blocked_until:
            return self._blocked_until - now
        wait = max((self.buckets[name].wait_time(c) for name, c in costs.items()), default=0.0)
        if wait > 0:
            return wait
        for name, c in costs.items():
            self.buckets[name].take(c)
        return 0.0

    def on_response(self, status: int, headers: Mapping[str, str], body: str = "") -> None:
        """Feed back a response: sync buckets from headers, handle 429/418.

        Header names are matched case-insensitively.
        """
        lower = {k.lower(): v for k, v in headers.items()}
        for bucket in self.buckets.values():
            h = bucket.spec.header
            if h is None or h.lower() not in lower:
                continue
            try:
                value = float(lower[h.lower()])
            except ValueError:
                continue
            if bucket.spec.header_reports_remaining:
                bucket.sync_remaining(value)
            else:
                bucket.sync_used(value)
        now = self._clock()
        retry_after = _parse_retry_after(lower.get("retry-after"))
        if status == 418:
            until = now + (
                retry_after if retry_after is not None else self.backoff.ban_without_retry_after_s
            )
            m = _BANNED_UNTIL_RE.search(body)
            if m:  # Binance: "IP banned until 1700000000000" (epoch ms)
                until = max(until, now + int(m.group(1)) / 1000.0 - self._wall())
            self._block(until, banned=True)
        elif status == 429:
            self._consecutive_429 += 1
            if retry_after is None:
                retry_after = min(
                    self.backoff.max_s, self.backoff.base_s * 2 ** (self._consecutive_429 - 1)
                )
            self._block(now + retry_after, banned=False)
        elif status < 400:
            self._consecutive_429 = 0

    def _block(self, until: float, *, banned: bool) -> None:
        if self._clock() >= self._blocked_until:
            self._banned = False  # the previous block is over
        self._blocked_until = max(self._blocked_until, until)
        self._banned = self._banned or banned


def _parse_retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: not used by Binance/Bybit; fall back to the policy


def binance_usdm_buckets(
    weight_per_min: int = 2400,
    orders_per_10s: int = 300,
    orders_per_min: int = 1200,
    safety_margin: float = 0.1,
) -> list[BucketSpec]:
    """Binance USD-M futures limits (exchangeInfo ``rateLimits``), fixed clock windows."""
    return [
        BucketSpec(
            "weight", weight_per_min, 60, True, "X-MBX-USED-WEIGHT-1M", safety_margin=safety_margin
        ),
        BucketSpec(
            "orders_10s",
            orders_per_10s,
            10,
            True,
            "X-MBX-ORDER-COUNT-10S",
            safety_margin=safety_margin,
        ),
        BucketSpec(
            "orders_1m",
            orders_per_min,
            60,
            True,
            "X-MBX-ORDER-COUNT-1M",
            safety_margin=safety_margin,
        ),
    ]


BINANCE_USDM_WEIGHTS: Mapping[str, int] = MappingProxyType(
    {
        "POST /fapi/v1/order": 0,  # order endpoints cost orders, not IP weight (USD-M: 0 weight)
        "DELETE /fapi/v1/order": 1,
        "GET /fapi/v1/order": 1,
        "GET /fapi/v1/openOrders": 1,  # with symbol; 40 without
        "GET /fapi/v2/positionRisk": 5,
        "GET /fapi/v2/balance": 5,
        "GET /fapi/v1/exchangeInfo": 1,
        "POST /fapi/v1/listenKey": 1,
    }
)
"""Request weights of the endpoints the executor uses (Binance USD-M docs)."""


def bybit_order_buckets(per_second: int = 10, safety_margin: float = 0.1) -> list[BucketSpec]:
    """Bybit v5 per-UID limit of one trade endpoint family (continuous refill; header
    ``X-Bapi-Limit-Status`` is the remaining count)."""
    return [
        BucketSpec(
            "requests",
            per_second,
            1.0,
            False,
            "X-Bapi-Limit-Status",
            header_reports_remaining=True,
            safety_margin=safety_margin,
        )
    ]
