"""The order store under concurrent writers (real PostgreSQL): a fill that changes a position
between the moment an order's transaction read it and the moment it writes it makes the
optimistic lock fail; the order is then stored on the second try, never lost, never twice."""

from __future__ import annotations

from typing import Any

import asyncpg

from depthflow.common.migrations import load_migrations, migrate
from depthflow.common.settings import PostgresSettings
from depthflow.executor.store import ExecutorStore
from depthflow.executor.venues.base import NewOrder


def _signal(signal_id: str, side: str) -> dict[str, Any]:
    return {
        "signal_id": signal_id,
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "side": side,
        "strategy": "imbalance",
        "book_seq": 1,
        "source_ts_us": 1,
    }


async def test_a_position_changed_meanwhile_is_retried_not_fatal(
    pg_settings: PostgresSettings, fresh_schema: str
) -> None:
    dsn = pg_settings.dsn.get_secret_value()
    migrate(dsn, fresh_schema, load_migrations("depthflow.executor"))
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=4)
    assert pool is not None
    try:
        store = ExecutorStore(pool, fresh_schema, venue="paper", actor="test")
        first = NewOrder("c-1", "BTCUSDT", "buy", 0.01, 100.0)
        assert await store.create_order(
            _signal("s-1", "buy"), first, exchange="binance", trace_id="t1", market=None, risk={}
        )
        async with pool.acquire() as conn:  # the entry filled: an open long position
            await conn.execute(
                f"UPDATE \"{fresh_schema}\".positions SET state = 'Open', qty = 0.01,"
                " version = version + 1 WHERE symbol = 'BTCUSDT'"
            )
        # a sell (which moves the position to Closing) while a concurrent writer (a fill)
        # bumps the position right after the order's transaction has read it, once
        read = store._position_row
        bumped = []

        async def read_then_concurrent_fill(conn: Any, exchange: str, symbol: str) -> Any:
            row = await read(conn, exchange, symbol)
            if not bumped:
                bumped.append(True)
                async with pool.acquire() as other:
                    await other.execute(
                        f'UPDATE "{fresh_schema}".positions SET version = version + 1'
                        " WHERE symbol = $1",
                        symbol,
                    )
            return row

        store._position_row = read_then_concurrent_fill  # type: ignore[method-assign]
        second = NewOrder("c-2", "BTCUSDT", "sell", 0.01, 100.0)
        assert await store.create_order(
            _signal("s-2", "sell"), second, exchange="binance", trace_id="t2", market=None, risk={}
        )
        assert bumped
        async with pool.acquire() as conn:
            orders = await conn.fetch(
                f'SELECT client_order_id FROM "{fresh_schema}".orders ORDER BY client_order_id'
            )
            signals = await conn.fetchval(f'SELECT count(*) FROM "{fresh_schema}".signals')
            state = await conn.fetchval(f'SELECT state FROM "{fresh_schema}".positions')
        assert [r["client_order_id"] for r in orders] == ["c-1", "c-2"]
        assert signals == 2
        assert state == "Closing"
        # a replay of the same signal stores nothing
        assert not await store.create_order(
            _signal("s-2", "sell"), second, exchange="binance", trace_id="t2", market=None, risk={}
        )
    finally:
        await pool.close()
