"""The model registry table (``<schema>.models``): register, list, activate, fetch.

Synchronous functions take a psycopg connection (training and the CLI); ``fetch_model``
takes an asyncpg pool (the service). Identifiers are composed with ``psycopg.sql`` /
``ident``; values are always parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import sql

from depthflow.common.db import ident
from depthflow.strategy.models import LoadedModel, decode_artifact, read_artifact_path


@dataclass(frozen=True)
class ModelRecord:
    name: str
    version: str
    kind: str
    sha256: str
    feature_set: str
    artifact: bytes | None = None
    artifact_path: str | None = None
    params: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    active: bool = False


class ModelNotFound(LookupError):
    """No such model version (or no active version) in the registry."""


def register_model(
    conn: psycopg.Connection, schema: str, record: ModelRecord, activate: bool = True
) -> None:
    """Insert a model version; with ``activate`` it becomes its name's only active one."""
    table = sql.Identifier(schema, "models")
    with conn.transaction():
        if activate:
            conn.execute(
                sql.SQL("UPDATE {} SET active = false WHERE name = %s AND active").format(table),
                (record.name,),
            )
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (name, version, kind, artifact, artifact_path, sha256, "
                "feature_set, params, metrics, active) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s)"
            ).format(table),
            (
                record.name,
                record.version,
                record.kind,
                record.artifact,
                record.artifact_path,
                record.sha256,
                record.feature_set,
                orjson.dumps(record.params or {}).decode(),
                orjson.dumps(record.metrics or {}).decode(),
                activate,
            ),
        )


def activate_model(conn: psycopg.Connection, schema: str, name: str, version: str) -> None:
    table = sql.Identifier(schema, "models")
    with conn.transaction():
        found = conn.execute(
            sql.SQL("SELECT 1 FROM {} WHERE name = %s AND version = %s").format(table),
            (name, version),
        ).fetchone()
        if found is None:
            raise ModelNotFound(f"no model {name} {version}")
        conn.execute(
            sql.SQL("UPDATE {} SET active = false WHERE name = %s AND active").format(table),
            (name,),
        )
        conn.execute(
            sql.SQL("UPDATE {} SET active = true WHERE name = %s AND version = %s").format(table),
            (name, version),
        )


def list_models(conn: psycopg.Connection, schema: str) -> list[dict[str, Any]]:
    cur = conn.execute(
        sql.SQL(
            "SELECT name, version, kind, sha256, feature_set, params, metrics, created_at, "
            "active FROM {} ORDER BY name, created_at"
        ).format(sql.Identifier(schema, "models"))
    )
    cols = [d.name for d in cur.description or ()]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


async def fetch_model(pool: Any, schema: str, name: str, version: str | None) -> LoadedModel:
    """Load ``version`` of ``name`` (the active version when ``None``), hash-checked."""
    table = f"{ident(schema)}.{ident('models')}"
    # Identifiers only, each checked by ident(); values are parameters.
    select = f"SELECT kind, version, artifact, artifact_path, sha256 FROM {table} "  # noqa: S608
    async with pool.acquire() as conn:
        if version:
            row = await conn.fetchrow(select + "WHERE name = $1 AND version = $2", name, version)
        else:
            row = await conn.fetchrow(select + "WHERE name = $1 AND active", name)
    if row is None:
        raise ModelNotFound(
            f"no model {name} {version}" if version else f"no active model named {name!r}"
        )
    data = row["artifact"]
    if data is None:
        import asyncio

        data = await asyncio.to_thread(read_artifact_path, row["artifact_path"])
    return decode_artifact(row["kind"], bytes(data), row["sha256"])
