"""Per-service, versioned SQL migrations.

Each service keeps ``NNN_name.sql`` files in its ``migrations/`` package folder and owns one
PostgreSQL schema. ``migrate`` applies the missing files in order, each in its own
transaction, recorded in ``<schema>.schema_migrations`` with a checksum. A PostgreSQL advisory
lock keyed on the schema makes concurrent runs (several replicas starting at once, or
``depthflow migrate`` beside a starting service) safe: one applies, the others wait and find
nothing left to do. An applied file whose text changed is refused loudly.
"""

from __future__ import annotations

import hashlib
import logging
import re
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg
from psycopg import sql

from depthflow.common.errors import DatabaseError

log = logging.getLogger(__name__)
_NAME = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(package: str) -> list[Migration]:
    """The migrations shipped in ``<package>/migrations`` (e.g. ``depthflow.collector``)."""
    folder = resources.files(package) / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise DatabaseError(f"duplicate migration versions in {package}: {versions}")
    return found


def load_migrations_from(path: Path) -> list[Migration]:
    """Migrations from a plain folder (tests)."""
    found = []
    for entry in sorted(path.iterdir()):
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def migrate(dsn: str, schema: str, migrations: list[Migration]) -> list[int]:
    """Apply the missing migrations to ``schema``; returns the versions applied now."""
    lock_key = zlib.crc32(f"depthflow-migrate:{schema}".encode())
    applied_now: list[int] = []
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (lock_key,))
            try:
                conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
                )
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {}.schema_migrations ("
                        " version integer PRIMARY KEY, name text NOT NULL,"
                        " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
                    ).format(sql.Identifier(schema))
                )
                done = {
                    row[0]: row[1]
                    for row in conn.execute(
                        sql.SQL("SELECT version, checksum FROM {}.schema_migrations").format(
                            sql.Identifier(schema)
                        )
                    )
                }
                for migration in migrations:
                    if migration.version in done:
                        if done[migration.version] != migration.checksum:
                            raise DatabaseError(
                                f"migration {schema}/{migration.version}_{migration.name} was "
                                "changed after it was applied; add a new migration instead"
                            )
                        continue
                    with conn.transaction():
                        conn.execute(
                            sql.SQL("SET LOCAL search_path TO {}, public").format(
                                sql.Identifier(schema)
                            )
                        )
                        conn.execute(migration.sql.encode())
                        conn.execute(
                            sql.SQL(
                                "INSERT INTO {}.schema_migrations (version, name, checksum)"
                                " VALUES (%s, %s, %s)"
                            ).format(sql.Identifier(schema)),
                            (migration.version, migration.name, migration.checksum),
                        )
                    applied_now.append(migration.version)
                    log.info(
                        "applied migration",
                        extra={
                            "schema": schema,
                            "version": migration.version,
                            "migration": migration.name,
                        },
                    )
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key,))
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"cannot migrate schema {schema!r}: {type(exc).__name__}") from None
    return applied_now
