"""pytest plugin: session-wide real Kafka and PostgreSQL, fresh topics and schemas per test.

Loaded for every test run (``-p depthflow.common.testing.plugin`` in pyproject). Tests that
use these fixtures are marked ``integration`` automatically.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql

from depthflow.common.kafka import create_topics, delete_topics
from depthflow.common.settings import KafkaSettings, PostgresSettings
from depthflow.common.testing import infra

_INFRA_FIXTURES = {"kafka_settings", "pg_settings", "pg_dsn", "topic_factory", "fresh_schema"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _INFRA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    try:
        return infra.kafka_bootstrap()
    except infra.InfraUnavailable as exc:
        pytest.fail(f"real Kafka is required: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    try:
        return infra.postgres_dsn()
    except infra.InfraUnavailable as exc:
        pytest.fail(f"real PostgreSQL is required: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def kafka_settings(kafka_bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=kafka_bootstrap, default_partitions=3)


@pytest.fixture(scope="session")
def pg_settings(pg_dsn: str) -> PostgresSettings:
    from pydantic import SecretStr

    return PostgresSettings(dsn=SecretStr(pg_dsn), pool_max_size=4)


@pytest.fixture
def topic_factory(kafka_settings: KafkaSettings) -> Iterator[Callable[..., str]]:
    """Creates fresh, uniquely named topics; deletes them after the test."""
    made: list[str] = []

    def make(prefix: str = "t", partitions: int = 3) -> str:
        name = f"test.{prefix}.{uuid.uuid4().hex[:12]}"
        create_topics(kafka_settings, [name], partitions=partitions)
        made.append(name)
        return name

    yield make
    if made:
        delete_topics(kafka_settings, made)


@pytest.fixture
def fresh_schema(pg_dsn: str) -> Iterator[str]:
    """A fresh, empty schema name (dropped with everything in it after the test)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def unique_id() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def private_postgres(pg_dsn: str) -> Iterator[tuple[str, Callable[[str], None]]]:
    """A throwaway PostgreSQL cluster of our own (``infra.sh start-pg`` on a free port under
    ``.local/``), so an outage test can stop it without disturbing anyone using the shared
    server. Yields (dsn, infra) where ``infra("stop-pg" | "start-pg")`` drives it."""
    from depthflow.common.testing.processes import free_port

    local = infra.ROOT / ".local" / f"test-pg-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {**os.environ, "DEPTHFLOW_LOCAL_DIR": str(local), "PG_PORT": str(port)}

    def run_infra(command: str) -> None:
        proc = subprocess.run(  # noqa: S603 - our own script, bash from PATH
            ["bash", str(infra.INFRA_SCRIPT), command],  # noqa: S607
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr

    run_infra("start-pg")
    try:
        yield f"postgresql://depthflow:depthflow@127.0.0.1:{port}/depthflow", run_infra
    finally:
        run_infra("stop-pg")
        shutil.rmtree(local, ignore_errors=True)
