"""The batched COPY writer against real PostgreSQL, including a server restart."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg
from pydantic import SecretStr

from depthflow.common.db import CopyWriter, create_pool
from depthflow.common.settings import PostgresSettings
from depthflow.common.testing import eventually_async


async def _table(pool: asyncpg.Pool, schema: str) -> None:
    await pool.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    await pool.execute(
        f'CREATE TABLE IF NOT EXISTS "{schema}".quotes (symbol text, seq bigint, bid float8,'
        " ask float8, PRIMARY KEY (symbol, seq))"
    )


def _writer(pool: asyncpg.Pool, schema: str, **kw) -> CopyWriter:
    """An idempotent writer of the ``quotes`` table (natural key symbol, seq)."""
    return CopyWriter(
        pool,
        "quotes",
        ["symbol", "seq", "bid", "ask"],
        schema=schema,
        conflict_columns=["symbol", "seq"],
        **kw,
    )


@contextlib.asynccontextmanager
async def _quotes(
    settings: PostgresSettings, schema: str, *, start: bool = True, **kw
) -> AsyncIterator[tuple[asyncpg.Pool, CopyWriter]]:
    """A pool, the ``quotes`` table and its writer (started unless ``start=False``); both
    closed on the way out."""
    pool = await create_pool(settings)
    await _table(pool, schema)
    writer = _writer(pool, schema, **kw)
    if start:
        await writer.start()
    try:
        yield pool, writer
    finally:
        await writer.close()
        await pool.close()


def _rows(n: int, start: int = 0, symbol: str = "BTCUSDT"):
    return [(symbol, i, 100.0 + i, 101.0 + i) for i in range(start, start + n)]


async def test_rows_are_written_once_even_when_replayed(pg_settings, fresh_schema, caplog):
    caplog.set_level(logging.INFO, logger="depthflow.common.db")
    async with _quotes(pg_settings, fresh_schema, batch_size=1000) as (pool, writer):
        await writer.add_many(_rows(5000))
        await writer.add_many(_rows(3000, start=4000))  # 1000 overlap, as after a replay
        await writer.flush()
        count = await pool.fetchval(f'SELECT count(*) FROM "{fresh_schema}".quotes')
    assert count == 7000
    assert writer.rows_written == 8000
    # COPYed straight in until the replayed batch (4000-4999) conflicted; it and the next
    # (5000-5999, the first to store all its rows) went through the staging table
    assert writer.staged_batches == 2
    said = [r.getMessage() for r in caplog.records if r.name == "depthflow.common.db"]
    assert sum("a replay" in m for m in said) == 1 and sum("replay over" in m for m in said) == 1


async def test_a_batch_repeating_its_own_keys_is_stored_once(pg_settings, fresh_schema):
    async with _quotes(pg_settings, fresh_schema, batch_size=1000, start=False) as (pool, writer):
        await writer.add_many(_rows(10) + _rows(10))  # one batch, every key twice: staged
        await writer.flush()
        await writer.add_many(_rows(5, start=10))  # staged, all new: the next goes straight in
        await writer.flush()
        await writer.add_many(_rows(5, start=15))
        await writer.flush()
        count = await pool.fetchval(f'SELECT count(*) FROM "{fresh_schema}".quotes')
    assert count == 20
    assert writer.staged_batches == 2


async def test_time_based_flush_without_an_explicit_flush(pg_settings, fresh_schema):
    async with _quotes(pg_settings, fresh_schema, batch_size=10_000, flush_interval=0.05) as (
        pool,
        writer,
    ):
        await writer.add_many(_rows(10))

        async def written():
            return await pool.fetchval(f'SELECT count(*) FROM "{fresh_schema}".quotes') == 10

        await eventually_async(written, timeout=5, what="rows flushed by the timer")


async def test_writer_survives_a_postgres_restart_without_loss_or_duplicates(private_postgres):
    dsn, infra = private_postgres
    settings = PostgresSettings(dsn=SecretStr(dsn), pool_max_size=2)
    async with _quotes(settings, "restart", batch_size=200, flush_interval=0.02) as (pool, writer):
        total = 0

        async def feed(batches: int) -> None:
            nonlocal total
            for _ in range(batches):
                await writer.add_many(_rows(100, start=total))
                total += 100
                await asyncio.sleep(0.005)

        await feed(20)
        await asyncio.to_thread(infra, "stop-pg")
        await feed(20)  # PostgreSQL is down: rows stay buffered
        assert writer.buffered > 0
        await asyncio.to_thread(infra, "start-pg")
        await feed(20)
        await asyncio.wait_for(writer.flush(), 60)
        count = await pool.fetchval('SELECT count(*) FROM "restart".quotes')
        distinct_max = await pool.fetchval('SELECT max(seq) + 1 FROM "restart".quotes')
    assert count == total == distinct_max == 6000
    assert writer.retries > 0


async def test_back_pressure_bounds_the_buffer(pg_settings, fresh_schema):
    async with _quotes(pg_settings, fresh_schema, batch_size=100, max_buffered=300) as (
        pool,
        writer,
    ):
        peak = 0
        for start in range(0, 5000, 50):
            await writer.add_many(_rows(50, start=start))
            peak = max(peak, writer.buffered)
        await writer.flush()
        count = await pool.fetchval(f'SELECT count(*) FROM "{fresh_schema}".quotes')
    assert count == 5000
    assert peak <= 300 + 50


async def test_flush_through_writes_the_rows_before_the_mark_not_those_after(
    pg_settings, fresh_schema
):
    # flush_interval: no background flush during the test
    async with _quotes(pg_settings, fresh_schema, batch_size=100, flush_interval=60.0) as (
        pool,
        writer,
    ):
        await writer.add_many(_rows(250))
        mark = writer.mark()
        await writer.add_many(_rows(250, start=250))
        await writer.flush_through(mark)
        written = await pool.fetchval(f'SELECT count(*) FROM "{fresh_schema}".quotes')
        # whole batches, in order: the 250 before the mark and the batch they end in
        assert mark == 250 and written == 300 and writer.buffered == 200
        top = await pool.fetchval(f'SELECT max(seq) FROM "{fresh_schema}".quotes')
        assert top == 299
        await writer.flush_through(writer.mark())
        assert writer.buffered == 0
