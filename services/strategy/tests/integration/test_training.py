"""Training on stored vectors (a ``vectors`` table made by the features service's own
migration, in a fresh schema) registers models whose walk-forward metrics are stored; the
running service switches model version on a control message, without a restart."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from depthflow.common.migrations import load_migrations, migrate
from depthflow.common.testing import eventually_async
from depthflow.strategy import train_cli
from depthflow.strategy.models import sha256
from depthflow.strategy.synthetic import VECTOR_COLUMNS, vector_row, vector_series
from depthflow.strategy.train import TrainParams, train

from .conftest import Env

T0 = 1_700_000_000_000_000
N = 700  # per symbol, 100 ms apart


@pytest.fixture
def source_schema(pg_dsn: str) -> Iterator[str]:
    """A fresh schema holding the features service's tables, filled with vectors."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    migrate(pg_dsn, name, load_migrations("depthflow.features"))
    vectors = vector_series(N, symbol="BTCUSDT", seed=1) + vector_series(
        N, symbol="ETHUSDT", seed=2, mid0=3000.0
    )
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in VECTOR_COLUMNS)
    marks = sql.SQL(", ").join(sql.Placeholder() for _ in VECTOR_COLUMNS)
    with psycopg.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.executemany(
            sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                sql.Identifier(name, "vectors"), cols, marks
            ),
            [vector_row(v) for v in vectors],
        )
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def registry(dsn: str, schema: str) -> list[dict]:
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(
            sql.SQL(
                "SELECT name, version, kind, artifact, sha256, feature_set, params, metrics, "
                "active "
                "FROM {} ORDER BY created_at"
            ).format(sql.Identifier(schema, "models"))
        )
        cols = [d.name for d in cur.description or ()]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def params(model: str, source: str, registry_schema: str, **kw: object) -> TrainParams:
    base: dict = dict(
        model=model,
        symbols=("BTCUSDT", "ETHUSDT"),
        since_us=T0,
        until_us=T0 + N * 100_000,
        horizon_s=0.5,
        threshold_bps=1.0,
        folds=3,
        max_iter=15,
        epochs=2,
        source_schema=source,
        registry_schema=registry_schema,
    )
    base.update(kw)
    return TrainParams(**base)


def test_train_cli_registers_a_model_with_walk_forward_metrics(
    source_schema: str, fresh_schema: str, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTGRES_DSN", pg_dsn)
    result = CliRunner().invoke(
        train_cli.app,
        [
            "--model",
            "sklearn",
            "--symbols",
            "BTCUSDT,ETHUSDT",
            "--since",
            "2023-11-14T22:13:20",
            "--until",
            str(T0 + N * 100_000),
            "--horizon",
            "0.5",
            "--threshold",
            "1",
            "--folds",
            "3",
            "--max-iter",
            "15",
            "--source-schema",
            source_schema,
            "--schema",
            fresh_schema,
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    # stdout only: log lines go to stderr
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    rows = registry(pg_dsn, fresh_schema)
    assert len(rows) == 1
    row = rows[0]
    assert row["version"] == summary["version"] and row["kind"] == "sklearn" and row["active"]
    assert row["sha256"] == sha256(bytes(row["artifact"])) and row["feature_set"] == "v1"
    wf = row["metrics"]["walk_forward"]
    assert wf["n_scored"] == 3 and len(wf["folds"]) == 3
    for fold in wf["folds"]:
        assert fold["train_last_label_end_us"] < fold["val_start_us"]
        assert fold["train_last_ts_us"] < fold["val_start_us"]
        assert 0 <= fold["balanced_accuracy"] <= 1
    # the imbalance drives the next move: clearly better than chance
    assert wf["mean"]["balanced_accuracy"] > 0.45
    assert row["params"]["horizon_s"] == 0.5 and row["params"]["symbols"] == ["BTCUSDT", "ETHUSDT"]


def test_torch_training_registers_a_model(
    source_schema: str, fresh_schema: str, pg_dsn: str
) -> None:
    migrate(pg_dsn, fresh_schema, load_migrations("depthflow.strategy"))
    stages: set[str] = set()
    with psycopg.connect(pg_dsn) as conn:
        result = train(
            conn,
            params("torch", source_schema, fresh_schema),
            lambda stage, _d, _t: stages.add(stage),
        )
    assert stages == {"load", "walk-forward", "final fit"}
    rows = registry(pg_dsn, fresh_schema)
    assert [r["version"] for r in rows] == [result.version]
    assert rows[0]["kind"] == "torch" and rows[0]["metrics"]["walk_forward"]["n_scored"] >= 1
    assert rows[0]["metrics"]["walk_forward"]["mean"]["balanced_accuracy"] > 0.4


async def test_control_message_switches_the_model_version(
    env: Env, source_schema: str, pg_dsn: str
) -> None:
    migrate(pg_dsn, env.schema, load_migrations("depthflow.strategy"))
    with psycopg.connect(pg_dsn) as conn:
        first = train(conn, params("sklearn", source_schema, env.schema))
        second = train(
            conn, params("sklearn", source_schema, env.schema, max_iter=5, seed=1, activate=False)
        )
    assert first.version != second.version

    service = await env.start(default_strategy="sklearn")
    assert service.strategies["sklearn"].model_version == first.version
    stop = asyncio.Event()
    env.run_in_background(service, stop)
    live = vector_series(200, symbol="BTCUSDT", seed=7, start_us=T0 + 10**9, start_seq=10_000)
    env.produce_vectors(live[:100])

    async def versions() -> set[str]:
        return {r["model_version"] for r in env.stored_signals()}

    await eventually_async(versions, timeout=20, what="signals from the first model")
    assert await versions() == {first.version}

    env.produce_control("running", {"model_versions": {"sklearn": second.version}}, version=1)

    async def switched() -> bool:
        return service.strategies["sklearn"].model_version == second.version

    await eventually_async(switched, timeout=20, what="model switched")
    assert service.state.value == "running"  # no restart
    env.produce_vectors(live[100:])

    async def both() -> bool:
        return await versions() == {first.version, second.version}

    await eventually_async(both, timeout=20, what="signals from the second model")
    late = [r for r in env.stored_signals() if r["book_seq"] >= 10_100]
    assert late and {r["model_version"] for r in late} == {second.version}
    assert all(r["strategy"] == "sklearn" and "p_buy" in r["features"] for r in late)
