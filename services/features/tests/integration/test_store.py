"""The numpy-built binary COPY of feature vectors stores exactly what asyncpg's generic
encoding stores (same rows, bit for bit), through the same idempotent CopyWriter."""

from __future__ import annotations

from typing import Any

import asyncpg
import numpy as np

from depthflow.common.db import CopyWriter
from depthflow.common.migrations import load_migrations, migrate
from depthflow.features.store import VECTOR_COLUMNS, encode_vector_rows

KEY = ("exchange", "symbol", "feature_set", "book_seq")


def _rows(n: int) -> list[tuple[Any, ...]]:
    rng = np.random.default_rng(7)
    values = rng.normal(size=(n, 110)) * 1e5
    values[0, :3] = (5e-324, -0.0, 1.7976931348623157e308)
    normalized = (values - 3.0) / 7.0
    valid = rng.random((n, 110)) > 0.4
    return [
        (
            "binance" if i < n // 2 else "bybit",
            "BTCUSDT" if i % 3 else "ÉTHUSDT",  # runs of rows, and a non-ASCII symbol
            "v1",
            i,
            1_700_000_000_000_000 + i,
            -i,
            2**62 + i,
            values[i],
            normalized[i],
            valid[i],
            "" if i < n // 3 else "scaler-ü",
        )
        for i in range(n)
    ]


async def _store(dsn: str, schema: str, rows: list[tuple[Any, ...]], binary: bool) -> list[Any]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            await conn.execute(f'TRUNCATE "{schema}".vectors')
        writer = CopyWriter(
            pool,
            "vectors",
            VECTOR_COLUMNS,
            schema=schema,
            conflict_columns=KEY,
            batch_size=97,
            binary_encoder=encode_vector_rows if binary else None,
        )
        generic = [(*r[:7], r[7].tolist(), r[8].tolist(), r[9].tolist(), r[10]) for r in rows]
        await writer.add_many(rows if binary else generic)
        await writer.flush()
        await writer.add_many((rows if binary else generic)[:150])  # a replay: absorbed
        await writer.flush()
        async with pool.acquire() as conn:
            return [
                tuple(r)
                for r in await conn.fetch(
                    f'SELECT * FROM "{schema}".vectors ORDER BY exchange, symbol, book_seq'
                )
            ]
    finally:
        await pool.close()


async def test_binary_copy_stores_the_same_rows_as_the_generic_path(
    pg_dsn: str, fresh_schema: str
) -> None:
    migrate(pg_dsn, fresh_schema, load_migrations("depthflow.features"))
    rows = _rows(400)
    binary = await _store(pg_dsn, fresh_schema, rows, binary=True)
    generic = await _store(pg_dsn, fresh_schema, rows, binary=False)
    assert len(binary) == 400
    assert binary == generic
    stored = {(r[0], r[1], r[3]): r for r in binary}
    r = rows[0]
    got = stored[(r[0], r[1], r[3])]
    assert list(got[7]) == r[7].tolist() and list(got[9]) == r[9].tolist()
    assert got[10] == r[10]
