"""Find or start the real Kafka broker and PostgreSQL server the tests use.

Order: a broker/database named by environment variables (``DEPTHFLOW_TEST_KAFKA``,
``DEPTHFLOW_TEST_POSTGRES_DSN`` — docker compose users, "bring your own broker"); else the
local ones on the default ports (started by ``deploy/local/infra.sh up`` when absent); else
testcontainers when a Docker engine answers. Anything that cannot be had raises
``InfraUnavailable`` with what was tried — the run fails, it never skips.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import psycopg
from confluent_kafka.admin import AdminClient

ROOT = Path(__file__).resolve().parents[5]
INFRA_SCRIPT = ROOT / "deploy" / "local" / "infra.sh"
DEFAULT_KAFKA = "127.0.0.1:9092"
DEFAULT_DSN = "postgresql://depthflow:depthflow@127.0.0.1:5432/depthflow"


class InfraUnavailable(RuntimeError):
    """A real Kafka or PostgreSQL could not be reached or started."""


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def kafka_ready(bootstrap: str, timeout: float = 10.0) -> bool:
    try:
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=timeout)
        return True
    except Exception:
        return False


def pg_ready(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
        return True
    except Exception:
        return False


def _start_local() -> str:
    if not INFRA_SCRIPT.exists():
        return f"{INFRA_SCRIPT} is missing"
    proc = subprocess.run(  # noqa: S603 - our own script
        ["bash", str(INFRA_SCRIPT), "up"],  # noqa: S607 - bash from PATH
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return "" if proc.returncode == 0 else proc.stderr[-2000:]


def _docker_engine() -> bool:
    try:
        import docker  # type: ignore[import-not-found]

        docker.from_env().ping()
        return True
    except Exception:
        return False


def kafka_bootstrap() -> str:
    """A reachable broker's bootstrap address, or ``InfraUnavailable``."""
    named = os.environ.get("DEPTHFLOW_TEST_KAFKA")
    if named:
        if kafka_ready(named):
            return named
        raise InfraUnavailable(f"DEPTHFLOW_TEST_KAFKA={named} does not answer")
    if kafka_ready(DEFAULT_KAFKA, timeout=3):
        return DEFAULT_KAFKA
    problem = _start_local()
    if kafka_ready(DEFAULT_KAFKA):
        return DEFAULT_KAFKA
    if _docker_engine():
        from testcontainers.kafka import KafkaContainer  # type: ignore[import-not-found]

        container = KafkaContainer().with_kraft()
        container.start()
        return str(container.get_bootstrap_server())
    raise InfraUnavailable(
        "no Kafka broker: DEPTHFLOW_TEST_KAFKA unset, nothing on 127.0.0.1:9092, "
        f"`deploy/local/infra.sh up` failed: {problem or 'broker still not answering'}"
    )


def postgres_dsn() -> str:
    """A reachable PostgreSQL DSN, or ``InfraUnavailable``."""
    named = os.environ.get("DEPTHFLOW_TEST_POSTGRES_DSN")
    if named:
        if pg_ready(named):
            return named
        raise InfraUnavailable("DEPTHFLOW_TEST_POSTGRES_DSN does not accept connections")
    if pg_ready(DEFAULT_DSN):
        return DEFAULT_DSN
    problem = _start_local()
    if pg_ready(DEFAULT_DSN):
        return DEFAULT_DSN
    if _docker_engine():
        from testcontainers.postgres import PostgresContainer  # type: ignore[import-not-found]

        container = PostgresContainer("postgres:15", driver=None)
        container.start()
        return str(container.get_connection_url())
    raise InfraUnavailable(
        "no PostgreSQL: DEPTHFLOW_TEST_POSTGRES_DSN unset, nothing accepting depthflow on "
        f"127.0.0.1:5432, `deploy/local/infra.sh up` failed: {problem or 'server still down'}"
    )
