"""PostgreSQL access: asyncpg pools, the batched COPY writer, psycopg pools for sync tools.

``CopyWriter`` is how hot paths write. Rows go into a bounded buffer (``add`` waits when it is
full: back-pressure instead of unbounded memory); a background task flushes a batch when it
reaches ``batch_size`` rows or ``flush_interval`` seconds. Each batch is COPYed into a
temporary staging table and moved with ``INSERT ... ON CONFLICT DO NOTHING`` on the target's
natural key, so a replayed batch never duplicates rows. On connection loss the batch is kept
and retried (tenacity, exponential backoff) until PostgreSQL is back: nothing is lost.
``flush()`` is the durability barrier a consumer awaits before committing its offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg
from psycopg_pool import ConnectionPool
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential,
)

from depthflow.common.settings import PostgresSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def ident(name: str) -> str:
    """Quote a SQL identifier that code (never a user) chose; refuses anything odd."""
    if not _IDENT.match(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return f'"{name}"'


# Errors after which the same batch is worth trying again on a fresh connection.
RETRYABLE = (
    OSError,
    ConnectionError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    # asyncpg's "cannot switch to state N; another operation is in progress": a connection
    # whose operation was cut off by the server going away (seen when PostgreSQL shuts down
    # under a COPY); a fresh connection is all it takes
    asyncpg.exceptions.InternalClientError,
)


async def until_postgres_answers(step: Callable[[], Awaitable[T]], what: str, **context: Any) -> T:
    """``await step()`` until it returns or fails with something other than a PostgreSQL
    outage (``RETRYABLE``): an outage must not stop a service, so its work waits for the
    database instead. Logs ``PostgreSQL unavailable; retrying <what>`` (a warning, with
    ``context``, the attempt and the error) at the first failure and every 10th; waits
    0.1 s, doubling up to 2 s, between attempts."""

    def logged(state: RetryCallState) -> None:
        n = state.attempt_number
        if n == 1 or n % 10 == 0:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                f"PostgreSQL unavailable; retrying {what}",
                extra={**context, "attempt": n, "error": f"{type(exc).__name__}: {exc}"[:300]},
            )

    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(RETRYABLE),
        wait=wait_exponential(multiplier=0.1, max=2.0),
        before_sleep=logged,
        reraise=True,
    ):
        with attempt:
            return await step()
    raise AssertionError("unreachable: tenacity returns or reraises")


async def keep_session(conn: asyncpg.Connection) -> None:
    """A pool connection's reset on release: nothing to send.

    asyncpg's default sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``
    on every release, one more round trip to the server per acquire (an order takes ~6).
    The services keep no session state on pooled connections: no LISTEN, no SET (``SET
    LOCAL`` ends with its transaction), no session advisory locks (only ``_xact_`` ones), no
    cursors outside a transaction; asyncpg itself still rolls back a transaction left open.
    """


async def create_pool(settings: PostgresSettings, **overrides: Any) -> asyncpg.Pool:
    """An asyncpg pool; statement cache off when ``statement_cache_size`` is 0 (PgBouncer);
    connections are released without a reset round trip (``keep_session``)."""
    kwargs: dict[str, Any] = {
        "dsn": settings.dsn.get_secret_value(),
        "min_size": settings.pool_min_size,
        "max_size": settings.pool_max_size,
        "statement_cache_size": settings.statement_cache_size,
        "command_timeout": 60,
        "reset": keep_session,
    }
    if settings.ssl_rootcert:
        import ssl

        kwargs["ssl"] = ssl.create_default_context(cafile=settings.ssl_rootcert)
    kwargs.update(overrides)
    try:
        return await asyncpg.create_pool(**kwargs)
    except (OSError, asyncpg.PostgresError) as exc:
        # Never echo the DSN: it carries the password.
        raise ConnectionError(f"cannot connect to PostgreSQL: {type(exc).__name__}") from None


def create_sync_pool(settings: PostgresSettings, **overrides: Any) -> ConnectionPool:
    """A psycopg pool for synchronous tools (migrations, training loads, reports)."""
    kwargs: dict[str, Any] = {"min_size": 1, "max_size": settings.pool_max_size, "open": True}
    kwargs.update(overrides)
    return ConnectionPool(settings.dsn.get_secret_value(), **kwargs)


class CopyWriter:
    """Batched, idempotent COPY into one table, surviving PostgreSQL restarts."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        table: str,
        columns: Sequence[str],
        *,
        schema: str,
        conflict_columns: Sequence[str] | None = None,
        batch_size: int = 5000,
        flush_interval: float = 0.2,
        max_buffered: int = 200_000,
        on_flush: Callable[[int, float], None] | None = None,
        binary_encoder: Callable[[Sequence[Sequence[Any]]], bytes] | None = None,
    ) -> None:
        """``conflict_columns`` names the natural key for ``ON CONFLICT DO NOTHING``; with
        ``None`` rows are COPYed straight in (use only where replays cannot happen). With a
        key, a batch is COPYed straight in too while no batch conflicts; a batch that hits a
        stored key (a replay) goes through a staging table and ``INSERT ... ON CONFLICT DO
        NOTHING``, and so do the next ones until one of them stores all its rows.
        ``binary_encoder``, when given, turns a batch of rows into PostgreSQL binary COPY data
        (header to trailer, ``columns`` in order), for rows whose generic per-value encoding
        is the bottleneck (wide arrays); rows, buffering and retries stay the same."""
        self._pool = pool
        self._schema = schema
        self._table = table
        self._columns = tuple(columns)
        self._conflict = tuple(conflict_columns) if conflict_columns else None
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_buffered = max_buffered
        self._on_flush = on_flush
        self._encoder = binary_encoder
        self._buffer: list[Sequence[Any]] = []
        self._room = asyncio.Condition()
        self._wake = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.rows_added = 0  # every row ever buffered (``mark``)
        self.rows_written = 0
        self.batches_written = 0
        self.retries = 0
        self.staged_batches = 0  # batches written through the staging table (replays)
        self._direct = True  # COPY straight into the table (no conflict seen lately)
        self._qualified = f"{ident(schema)}.{ident(table)}"
        cols = ", ".join(ident(c) for c in self._columns)
        # Identifiers only, each checked by ident(); no value is ever formatted into SQL.
        self._insert_sql = (
            f"INSERT INTO {self._qualified} ({cols}) SELECT {cols} FROM pg_temp.{{tmp}}"  # noqa: S608
            + (
                " ON CONFLICT ({}) DO NOTHING".format(", ".join(ident(c) for c in self._conflict))
                if self._conflict
                else ""
            )
        )

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._flush_loop(), name=f"copy-{self._table}")

    async def add(self, row: Sequence[Any]) -> None:
        """Buffer one row; waits while the buffer is full (back-pressure)."""
        if len(self._buffer) >= self._max_buffered:
            async with self._room:
                await self._room.wait_for(lambda: len(self._buffer) < self._max_buffered)
        self._buffer.append(row)
        self.rows_added += 1
        if len(self._buffer) >= self._batch_size:
            self._wake.set()

    async def add_many(self, rows: Sequence[Sequence[Any]]) -> None:
        """Buffer many rows; waits while the buffer is full (back-pressure)."""
        if len(self._buffer) >= self._max_buffered:
            async with self._room:
                await self._room.wait_for(lambda: len(self._buffer) < self._max_buffered)
        self._buffer.extend(rows)
        self.rows_added += len(rows)
        if len(self._buffer) >= self._batch_size:
            self._wake.set()

    async def flush(self) -> None:
        """Write everything buffered so far; returns once it is durable in PostgreSQL."""
        while self._buffer:
            await self._write_one_batch()

    def mark(self) -> int:
        """How many rows were buffered so far (for ``flush_through``)."""
        return self.rows_added

    async def flush_through(self, mark: int) -> None:
        """Write at least the first ``mark`` rows ever buffered (rows are written in order),
        not waiting for rows buffered later; returns once they are durable."""
        while self.rows_written < mark and self._buffer:
            await self._write_one_batch()

    async def _flush_loop(self) -> None:
        while not self._closed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_interval)
            self._wake.clear()
            try:
                while self._buffer:
                    await self._write_one_batch()
                    if len(self._buffer) < self._batch_size:
                        break
            except Exception:
                log.exception("COPY flush failed; rows stay buffered", extra={"table": self._table})

    async def _write_one_batch(self) -> None:
        async with self._write_lock:
            if not self._buffer:
                return
            batch = self._buffer[: self._batch_size]
            started = time.perf_counter()
            attempts = 0

            async def copy() -> None:
                nonlocal attempts
                attempts += 1
                if attempts > 1:
                    self.retries += 1
                await self._copy(batch)

            await until_postgres_answers(copy, "batch", table=self._table, rows=len(batch))
            # Only now, durable: drop the batch from the buffer and wake waiting writers.
            del self._buffer[: len(batch)]
            self.rows_written += len(batch)
            self.batches_written += 1
            if self._on_flush:
                self._on_flush(len(batch), time.perf_counter() - started)
            async with self._room:
                self._room.notify_all()

    async def _copy_into(
        self, conn: Any, table: str, batch: Sequence[Sequence[Any]], schema: str | None
    ) -> None:
        if self._encoder is not None:
            await conn.copy_to_table(
                table,
                # a memoryview: asyncpg would take bytes for a file name
                source=memoryview(self._encoder(batch)),
                columns=self._columns,
                schema_name=schema,
                format="binary",
            )
        else:
            await conn.copy_records_to_table(
                table, records=batch, columns=self._columns, schema_name=schema
            )

    async def _copy(self, batch: Sequence[Sequence[Any]]) -> None:
        async with self._pool.acquire() as conn:
            try:
                if self._conflict is None:
                    await self._copy_into(conn, self._table, batch, self._schema)
                    return
                if self._direct:
                    # one statement: all of the batch or none of it; about half the
                    # server's work of staging and inserting
                    try:
                        await self._copy_into(conn, self._table, batch, self._schema)
                        return
                    except asyncpg.UniqueViolationError:
                        self._direct = False  # a replay: staged until it is over
                        log.info(
                            "rows already stored (a replay): batches go through the staging "
                            "table until one stores all its rows",
                            extra={"table": self._table, "rows": len(batch)},
                        )
                tmp = f"stage_{self._table}"
                async with conn.transaction():
                    await conn.execute(
                        f"CREATE TEMP TABLE IF NOT EXISTS {tmp} "
                        f"(LIKE {self._qualified} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                    )
                    await self._copy_into(conn, tmp, batch, None)
                    status = await conn.execute(self._insert_sql.format(tmp=tmp))
                self.staged_batches += 1
                if int(status.rsplit(" ", 1)[-1]) == len(batch):  # "INSERT 0 <rows>"
                    self._direct = True  # every row was new: past the replay
                    log.info(
                        "replay over: batches are COPYed straight in again",
                        extra={"table": self._table, "staged_batches": self.staged_batches},
                    )
            except RETRYABLE:
                # Never hand a connection that failed mid-operation back to the pool: the
                # retry must not get it again (it would fail the same way, for ever).
                conn.terminate()
                raise

    async def close(self) -> None:
        """Flush what is buffered and stop the background task."""
        self._closed = True
        self._wake.set()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
