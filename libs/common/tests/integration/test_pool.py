"""The services' asyncpg pool against real PostgreSQL: releasing a connection costs no round
trip, and a transaction left open is still rolled back."""

import asyncpg

from depthflow.common.db import create_pool


def _log_queries(pool: asyncpg.Pool, seen: list[str]) -> None:
    for holder in pool._holders:  # every connection the pool opened (min_size of them)
        if holder._con is not None:
            holder._con.add_query_logger(lambda record: seen.append(record.query))


async def test_release_sends_no_reset_query(pg_settings):
    pool = await create_pool(pg_settings.model_copy(update={"pool_min_size": 1}))
    seen: list[str] = []
    try:
        _log_queries(pool, seen)
        for _ in range(5):
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
    finally:
        await pool.close()
    assert seen == ["SELECT 1"] * 5  # asyncpg's default adds RESET ALL etc. after each


async def test_a_transaction_left_open_is_rolled_back_on_release(pg_settings, fresh_schema):
    pool = await create_pool(
        pg_settings.model_copy(update={"pool_min_size": 1, "pool_max_size": 1})
    )
    try:
        await pool.execute(f'CREATE SCHEMA IF NOT EXISTS "{fresh_schema}"')
        await pool.execute(f'CREATE TABLE "{fresh_schema}".t (x int)')
        async with pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()  # never committed nor rolled back by its owner
            await conn.execute(f'INSERT INTO "{fresh_schema}".t VALUES (1)')
        async with pool.acquire() as conn:  # the same (only) connection
            assert not conn.is_in_transaction()
            assert await conn.fetchval(f'SELECT count(*) FROM "{fresh_schema}".t') == 0
    finally:
        await pool.close()
