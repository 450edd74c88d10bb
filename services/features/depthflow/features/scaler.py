"""Normalisation: a scikit-learn StandardScaler fitted on stored vectors, versioned in
``<schema>.scalers`` (one active per feature set), applied online as (x - mean) / scale."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql

from depthflow.features.names import FEATURE_SET_VERSION, N_FEATURES


@dataclass(frozen=True)
class ActiveScaler:
    """The parameters of one fitted scaler."""

    version: str
    mean: np.ndarray
    scale: np.ndarray

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Normalised copy of ``values`` (raw values are kept by the caller)."""
        out: np.ndarray = (values - self.mean) / self.scale
        return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def load_active(
    conn: psycopg.Connection, schema: str, feature_set: str = FEATURE_SET_VERSION
) -> ActiveScaler | None:
    """The active scaler of a feature set, or None."""
    row = conn.execute(
        sql.SQL(
            "SELECT version, mean, scale FROM {}.scalers WHERE feature_set = %s AND active"
        ).format(sql.Identifier(schema)),
        (feature_set,),
    ).fetchone()
    if row is None:
        return None
    mean = np.asarray(row[1], np.float64)
    scale = np.asarray(row[2], np.float64)
    if mean.shape != (N_FEATURES,) or scale.shape != (N_FEATURES,):
        raise ValueError(f"scaler {row[0]!r} has {mean.shape} parameters, expected {N_FEATURES}")
    return ActiveScaler(str(row[0]), mean, scale)


def fit_scaler(
    dsn: str,
    schema: str,
    since_us: int,
    until_us: int,
    symbols: Sequence[str] = (),
    feature_set: str = FEATURE_SET_VERSION,
    activate: bool = True,
) -> tuple[str, int]:
    """Fit a StandardScaler on the stored vectors with ``since_us <= exchange_ts_us < until_us``
    (optionally only these symbols), store it as a new version and activate it.
    Returns ``(version, rows used)``; raises ``ValueError`` when no vector matches."""
    from sklearn.preprocessing import StandardScaler

    query = sql.SQL(
        'SELECT "values" FROM {}.vectors WHERE feature_set = %s'
        " AND exchange_ts_us >= %s AND exchange_ts_us < %s"
    ).format(sql.Identifier(schema))
    params: list[object] = [feature_set, since_us, until_us]
    if symbols:
        query = query + sql.SQL(" AND symbol = ANY(%s)")
        params.append(list(symbols))
    with psycopg.connect(dsn) as conn:
        rows = [r[0] for r in conn.execute(query, params)]
        if not rows:
            raise ValueError("no stored vectors in that range")
        x = np.asarray(rows, np.float64)
        scaler = StandardScaler().fit(x)
        version = time.strftime("s%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
        meta = {
            "since_us": since_us,
            "until_us": until_us,
            "symbols": list(symbols),
            "estimator": "sklearn.preprocessing.StandardScaler",
        }
        with conn.transaction():
            if activate:
                conn.execute(
                    sql.SQL(
                        "UPDATE {}.scalers SET active = false WHERE feature_set = %s AND active"
                    ).format(sql.Identifier(schema)),
                    (feature_set,),
                )
            conn.execute(
                sql.SQL(
                    "INSERT INTO {}.scalers (version, feature_set, rows_used, mean, scale,"
                    " params, active) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                ).format(sql.Identifier(schema)),
                (
                    version,
                    feature_set,
                    len(rows),
                    [float(v) for v in scaler.mean_],
                    [float(v) for v in scaler.scale_],
                    json.dumps(meta),
                    activate,
                ),
            )
    return version, len(rows)
