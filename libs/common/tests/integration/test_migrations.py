import threading
from pathlib import Path

import psycopg
import pytest

from depthflow.common.errors import DatabaseError
from depthflow.common.migrations import Migration, load_migrations_from, migrate


def _migrations(tmp_path: Path) -> list[Migration]:
    (tmp_path / "001_init.sql").write_text("CREATE TABLE things (id int PRIMARY KEY);")
    (tmp_path / "002_more.sql").write_text(
        "ALTER TABLE things ADD COLUMN name text; INSERT INTO things VALUES (1, 'one');"
    )
    (tmp_path / "README.txt").write_text("not a migration")
    return load_migrations_from(tmp_path)


def test_concurrent_runs_apply_each_migration_once(pg_dsn, fresh_schema, tmp_path):
    migrations = _migrations(tmp_path)
    assert [m.version for m in migrations] == [1, 2]
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate(pg_dsn, fresh_schema, migrations))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(results, key=len) == [[], [], [], [1, 2]]
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(f'SELECT id, name FROM "{fresh_schema}".things').fetchall()
    assert rows == [(1, "one")]


def test_an_edited_applied_migration_is_refused(pg_dsn, fresh_schema, tmp_path):
    migrate(pg_dsn, fresh_schema, _migrations(tmp_path))
    (tmp_path / "001_init.sql").write_text("CREATE TABLE things (id bigint PRIMARY KEY);")
    with pytest.raises(DatabaseError, match="changed after it was applied"):
        migrate(pg_dsn, fresh_schema, load_migrations_from(tmp_path))


def test_a_failing_migration_leaves_nothing_half_done(pg_dsn, fresh_schema, tmp_path):
    (tmp_path / "001_bad.sql").write_text("CREATE TABLE a (id int); SELECT no_such_function();")
    with pytest.raises(psycopg.Error):
        migrate(pg_dsn, fresh_schema, load_migrations_from(tmp_path))
    with psycopg.connect(pg_dsn) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (f"{fresh_schema}.a",)).fetchone()[0]
    assert exists is None
