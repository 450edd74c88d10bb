"""``until_postgres_answers``: an outage is waited out, anything else is raised at once."""

from __future__ import annotations

import logging

import asyncpg
import pytest

from depthflow.common.db import until_postgres_answers


async def test_an_outage_is_retried_until_the_step_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def step() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise asyncpg.CannotConnectNowError("the database system is starting up")
        return "stored"

    with caplog.at_level(logging.WARNING, logger="depthflow.common.db"):
        assert await until_postgres_answers(step, "rows", rows=7) == "stored"
    assert calls == 3
    warned = [
        r for r in caplog.records if r.getMessage() == "PostgreSQL unavailable; retrying rows"
    ]
    assert len(warned) == 1  # the first failure; then every 10th
    assert warned[0].rows == 7 and warned[0].attempt == 1  # type: ignore[attr-defined]
    assert "CannotConnectNowError" in warned[0].error  # type: ignore[attr-defined]


async def test_anything_but_an_outage_is_raised_at_once() -> None:
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        raise asyncpg.UniqueViolationError("duplicate key")

    with pytest.raises(asyncpg.UniqueViolationError):
        await until_postgres_answers(step, "rows")
    assert calls == 1
