"""End-to-end fixtures: a private Kafka + PostgreSQL pair per test module.

The fault tests restart the broker and stop the database, so they never use the shared
ones (other test runs on this machine keep theirs). ``deploy/local/infra.sh`` starts the
pair with its own data dir (``DEPTHFLOW_LOCAL_DIR``) on free ports and stops it afterwards.
Every test here is marked ``e2e``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .pipeline import PrivateInfra


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="module")
def private_infra() -> Iterator[PrivateInfra]:
    infra = PrivateInfra()
    try:
        infra.up()
        infra.migrate()
        yield infra
    finally:
        infra.down()
