"""pytest plugin: session-wide real Kafka and PostgreSQL, fresh topics and schemas per test.

Loaded for every test run (``-p depthflow.common.testing.plugin`` in pyproject). Tests that
use these fixtures are marked ``integration`` automatically.
"""

from __future__ import annotations

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
