"""Several collectors creating the same day's orderbook_data partitions at once (two
collectors on a fresh database, as `make run` starts them) never collide."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg

from depthflow.collector.sink import ensure_partitions
from depthflow.common.migrations import load_migrations, migrate


async def test_concurrent_partition_creation_never_collides(pg_dsn: str, fresh_schema: str) -> None:
    migrate(pg_dsn, fresh_schema, load_migrations("depthflow.collector"))
    pools = [await asyncpg.create_pool(pg_dsn, min_size=1, max_size=1) for _ in range(6)]
    try:
        for round_ in range(5):  # five fresh day ranges, six creators each
            first = dt.date(2031, 1, 1) + dt.timedelta(days=10 * round_)
            made = await asyncio.gather(
                *(ensure_partitions(p, fresh_schema, first, 3) for p in pools)
            )
            assert sum(made) == 4  # each of the 4 days created exactly once, by someone
        parts = await pools[0].fetchval(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhparent"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relname = 'orderbook_data' AND n.nspname = $1",
            fresh_schema,
        )
        assert parts >= 20
    finally:
        for p in pools:
            await p.close()
