"""The REST edge shared by the live adapters: rate limiter, per-endpoint breakers, timeouts.

Every request first waits for the token bucket (bounded by ``max_wait_s``; a 418 ban or a
longer wait raises :class:`VenueUnavailable` — nothing was sent), then asks its endpoint's
breaker, then goes out. Timeouts and connection errors after sending are
:class:`VenueUnknown`; 5xx count as breaker failures, 429/418 feed the limiter's back-off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from depthflow.executor.breaker import (
    BreakerConfig,
    BreakerRegistry,
    BreakerTransition,
    CircuitOpen,
)
from depthflow.executor.ratelimit import LimiterState, VenueRateLimiter
from depthflow.executor.venues.base import VenueUnavailable, VenueUnknown

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpResult:
    """A response: status, headers and text."""

    status: int
    headers: Mapping[str, str]
    text: str


class RestEdge:
    """Rate-limited, breaker-guarded HTTP for one venue."""

    def __init__(
        self,
        venue: str,
        base_url: str,
        limiter: VenueRateLimiter,
        breaker_config: BreakerConfig,
        timeout_s: float,
        max_wait_s: float,
        on_wait: Callable[[float], None] | None = None,
        on_breaker: Callable[[BreakerTransition], None] | None = None,
    ) -> None:
        self.venue = venue
        self.base_url = base_url
        self.limiter = limiter
        self.breakers = BreakerRegistry(breaker_config, on_transition=self._breaker_moved)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_wait = max_wait_s
        self._on_wait = on_wait
        self._on_breaker = on_breaker
        self._session: aiohttp.ClientSession | None = None

    def _breaker_moved(self, t: BreakerTransition) -> None:
        log.warning(
            "circuit breaker moved",
            extra={
                "breaker": t.name,
                "from": t.from_state.value,
                "to": t.to_state.value,
                "reason": t.reason,
            },
        )
        if self._on_breaker is not None:
            self._on_breaker(t)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _acquire(self, costs: Mapping[str, float]) -> None:
        waited = 0.0
        while True:
            wait = self.limiter.try_acquire(costs)
            if wait <= 0:
                if waited and self._on_wait is not None:
                    self._on_wait(waited)
                return
            if self.limiter.state == LimiterState.BANNED:
                raise VenueUnavailable("banned by the venue (418)", wait)
            if waited + wait > self._max_wait:
                raise VenueUnavailable(f"rate limited for {wait:.1f}s", wait)
            await asyncio.sleep(wait)
            waited += wait

    async def request(
        self,
        method: str,
        path: str,
        *,
        costs: Mapping[str, float],
        query: str = "",
        body: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> HttpResult:
        """Send one request; see the module docstring for the outcomes."""
        await self._acquire(costs)
        breaker = self.breakers.get(f"{self.venue}:{method} {path}")
        try:
            breaker.before_request()
        except CircuitOpen as exc:
            raise VenueUnavailable(str(exc), exc.retry_in_s) from None
        url = self.base_url + path + (f"?{query}" if query else "")
        started = time.monotonic()
        try:
            timeout = aiohttp.ClientTimeout(total=timeout_s) if timeout_s else None
            async with self.session.request(
                method, url, data=body, timeout=timeout, headers=dict(headers or {})
            ) as resp:
                text = await resp.text()
                result = HttpResult(resp.status, dict(resp.headers), text)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            breaker.record_failure(type(exc).__name__)
            raise VenueUnknown(
                f"{method} {path}: {type(exc).__name__} after {time.monotonic() - started:.2f}s"
            ) from None
        self.limiter.on_response(result.status, result.headers, result.text)
        if result.status >= 500:
            breaker.record_failure(f"HTTP {result.status}")
        else:
            breaker.record_success()
        return result

    def breaker_states(self) -> dict[str, str]:
        return {k: v.value for k, v in self.breakers.states().items()}


def json_or_none(text: str) -> Any:
    """The JSON value of ``text``, or ``None`` for a non-JSON body (a proxy's 503 page)."""
    import orjson

    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
