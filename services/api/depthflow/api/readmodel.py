"""Read-only queries on other services' tables, tolerant of tables that do not exist yet.

The gateway never writes to another service's schema. Where a view needs history that only
a service's own tables hold (the executor's fills), it reads them here; while that table or
column does not exist (the service is not deployed, or not migrated yet) every query
returns an empty answer instead of an error. The expected shape is written next to each
query; it is the contract the owning service is asked to keep.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

_TOLERATED = (
    asyncpg.UndefinedTableError,
    asyncpg.UndefinedColumnError,
    asyncpg.InvalidSchemaNameError,
    asyncpg.InsufficientPrivilegeError,
    asyncpg.UndefinedFunctionError,
)


class ExecutorReadModel:
    """History from ``executor.fills`` (expected columns: ``symbol text``, ``side text``,
    ``qty double precision``, ``price double precision``, ``fee double precision``,
    ``ts timestamptz``)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def _fetch(self, query: str, *args: Any) -> list[dict[str, Any]]:
        try:
            async with self._pool.acquire() as conn, conn.transaction(readonly=True):
                exists = await conn.fetchval("SELECT to_regclass('executor.fills') IS NOT NULL")
                if not exists:
                    return []
                return [dict(r) for r in await conn.fetch(query, *args)]
        except _TOLERATED as exc:
            log.info("executor history unavailable", extra={"reason": type(exc).__name__})
            return []

    async def daily_fills(self, days: int) -> list[dict[str, Any]]:
        """Fills per day and symbol over the last ``days`` days."""
        return await self._fetch(
            "SELECT date_trunc('day', ts)::date AS day, symbol, count(*) AS fills, "
            "sum(qty) AS qty, sum(qty * price) AS notional, sum(fee) AS fees "
            "FROM executor.fills WHERE ts > now() - make_interval(days => $1) "
            "GROUP BY 1, 2 ORDER BY 1 DESC, 2 LIMIT 1000",
            days,
        )
