"""retry_conflicts: a transaction that lost to a concurrent writer is run again, a bounded
number of times, and then the conflict is raised (never a silent give-up)."""

from __future__ import annotations

import pytest

from depthflow.executor.store import CONFLICT_ATTEMPTS, VersionConflict, retry_conflicts


async def test_a_conflicting_transaction_is_run_again_until_it_succeeds() -> None:
    runs: list[int] = []

    async def transaction() -> str:
        runs.append(1)
        if len(runs) < 3:
            raise VersionConflict("position BTCUSDT")
        return "stored"

    assert await retry_conflicts(transaction) == "stored"
    assert len(runs) == 3


async def test_it_gives_up_after_the_attempts_with_the_conflict() -> None:
    runs: list[int] = []

    async def transaction() -> None:
        runs.append(1)
        raise VersionConflict("position BTCUSDT")

    with pytest.raises(VersionConflict, match="BTCUSDT"):
        await retry_conflicts(transaction)
    assert len(runs) == CONFLICT_ATTEMPTS


async def test_other_errors_are_not_retried() -> None:
    runs: list[int] = []

    async def transaction() -> None:
        runs.append(1)
        raise ValueError("bad row")

    with pytest.raises(ValueError):
        await retry_conflicts(transaction, (VersionConflict, KeyError))
    assert len(runs) == 1
