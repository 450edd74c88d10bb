"""The live strategy objects a backtest runs: ``imbalance`` or a registry model (and the
scaler that model was trained with, so its inputs are normalised exactly as live)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from depthflow.backtest.config import StrategySpec
from depthflow.features.names import N_FEATURES
from depthflow.features.scaler import ActiveScaler
from depthflow.strategy.base import Strategy
from depthflow.strategy.config import RuntimeConfig
from depthflow.strategy.imbalance import ImbalanceStrategy
from depthflow.strategy.models import ModelStrategy, decode_artifact, read_artifact_path
from depthflow.strategy.registry import ModelNotFound


@dataclass(frozen=True)
class LoadedStrategy:
    strategy: Strategy
    scaler: ActiveScaler | None
    model: dict[str, Any]  # registry identity (empty for imbalance), part of the run config


def load_scaler(conn: psycopg.Connection, schema: str, version: str) -> ActiveScaler:
    """A stored scaler by version (active or not)."""
    row = conn.execute(
        sql.SQL("SELECT version, mean, scale FROM {}.scalers WHERE version = %s").format(
            sql.Identifier(schema)
        ),
        (version,),
    ).fetchone()
    if row is None:
        raise ModelNotFound(f"scaler {version!r} not found in {schema}.scalers")
    mean = np.asarray(row[1], np.float64)
    scale = np.asarray(row[2], np.float64)
    if mean.shape != (N_FEATURES,) or scale.shape != (N_FEATURES,):
        raise ValueError(f"scaler {version!r} has {mean.shape} parameters, expected {N_FEATURES}")
    return ActiveScaler(str(row[0]), mean, scale)


def build_strategy(
    spec: StrategySpec,
    runtime: RuntimeConfig,
    dsn: str | None = None,
    strategy_schema: str = "strategy",
    features_schema: str = "features",
) -> LoadedStrategy:
    """The strategy of ``spec`` with the live runtime configuration ``runtime``."""
    if spec.kind == "imbalance":
        return LoadedStrategy(ImbalanceStrategy(runtime), None, {})
    if dsn is None:
        raise ValueError("a model strategy needs the PostgreSQL registry")
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            sql.SQL(
                "SELECT kind, version, artifact, artifact_path, sha256 FROM {}.models"
                " WHERE name = %s AND version = %s"
            ).format(sql.Identifier(strategy_schema)),
            (spec.name, spec.version),
        ).fetchone()
        if row is None:
            raise ModelNotFound(f"no model {spec.name} {spec.version} in {strategy_schema}.models")
        kind, version, artifact, path, sha = row
        data = bytes(artifact) if artifact is not None else read_artifact_path(path)
        model = decode_artifact(kind, data, sha)
        scaler = None
        if model.meta.scaler_version:
            scaler = load_scaler(conn, features_schema, model.meta.scaler_version)
    if kind == "torch":
        import torch

        torch.set_num_threads(1)
    identity = {
        "name": spec.name,
        "version": version,
        "kind": kind,
        "sha256": sha,
        "scaler_version": model.meta.scaler_version,
    }
    return LoadedStrategy(ModelStrategy(model, runtime), scaler, identity)
