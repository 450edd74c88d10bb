"""Wait for a condition instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> T:
    """Call ``condition`` until it returns a truthy value (returned) or ``timeout`` passes
    (``AssertionError`` naming ``what`` and the last value or exception)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = condition()
            if value:
                return value
            last = value
        except AssertionError as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"not true within {timeout}s: {what or condition!r}; last: {last!r}"
            )
        time.sleep(interval)


async def eventually_async(
    condition: Callable[[], Awaitable[T]],
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "",
) -> T:
    """Async ``eventually``: awaits ``condition()`` until truthy or ``timeout``."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = await condition()
            if value:
                return value
            last = value
        except AssertionError as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"not true within {timeout}s: {what or condition!r}; last: {last!r}"
            )
        await asyncio.sleep(interval)
