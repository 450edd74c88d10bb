"""What a strategy sees: a checked feature vector, the decision it makes, and the refusals.

A vector is refused — logged, counted, never traded on — when it belongs to another feature
set, has the wrong shape, or when a feature the strategy needs is non-finite or flagged
invalid by the features service (warm-up, empty side, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from depthflow.common.schemas import FeatureVector
from depthflow.features.names import FEATURE_SET_V1, FEATURE_SET_VERSION, INDEX, N_FEATURES

SignalSide = Literal["buy", "sell", "hold"]
MID_PRICE = INDEX["mid_price"]

# Refusal reasons (a bounded set: they label a Prometheus counter).
WRONG_FEATURE_SET = "wrong_feature_set"
WRONG_SHAPE = "wrong_shape"
NON_FINITE = "non_finite"
INVALID_FEATURE = "invalid_feature"
WRONG_SCALER = "wrong_scaler"
NO_MODEL = "no_model"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a vector is not traded on: ``reason`` (bounded) and a human ``detail``."""

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class VectorInput:
    """A feature vector as arrays, ready for a strategy."""

    exchange: str
    symbol: str
    feature_set: str
    book_seq: int
    exchange_ts_us: int
    values: np.ndarray
    normalized: np.ndarray
    valid: np.ndarray
    scaler_version: str = ""
    trace_id: str = ""

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.symbol}"

    @classmethod
    def from_message(cls, fv: FeatureVector, trace_id: str = "") -> VectorInput:
        return cls(
            exchange=fv.exchange,
            symbol=fv.symbol,
            feature_set=fv.feature_set,
            book_seq=fv.book_seq,
            exchange_ts_us=fv.exchange_ts_us,
            values=np.asarray(fv.values, dtype=np.float64),
            normalized=np.asarray(fv.normalized, dtype=np.float64),
            valid=np.asarray(fv.valid, dtype=bool),
            scaler_version=fv.scaler_version,
            trace_id=trace_id or fv.trace_id,
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """A strategy's decision about one vector."""

    side: SignalSide
    strength: float
    confidence: float
    reason: str
    features: dict[str, float] = field(default_factory=dict)


def check_vector(v: VectorInput, required: Sequence[int]) -> Refusal | None:
    """``None`` when ``v`` can be traded on by a strategy needing features ``required``."""
    if v.feature_set != FEATURE_SET_VERSION:
        return Refusal(
            WRONG_FEATURE_SET,
            f"feature set {v.feature_set!r}, this service reads {FEATURE_SET_VERSION!r}",
        )
    if not (v.values.shape == v.normalized.shape == v.valid.shape == (N_FEATURES,)):
        return Refusal(
            WRONG_SHAPE,
            f"{v.values.shape[0]}/{v.normalized.shape[0]}/{v.valid.shape[0]} values, "
            f"expected {N_FEATURES}",
        )
    idx = np.asarray(required, dtype=np.intp)
    finite = np.isfinite(v.values[idx]) & np.isfinite(v.normalized[idx])
    if not finite.all():
        names = [FEATURE_SET_V1[i] for i in idx[~finite][:5]]
        return Refusal(NON_FINITE, f"non-finite required features: {', '.join(names)}")
    ok = v.valid[idx]
    if not ok.all():
        names = [FEATURE_SET_V1[i] for i in idx[~ok][:5]]
        more = int((~ok).sum()) - len(names)
        return Refusal(
            INVALID_FEATURE,
            f"required features flagged invalid: {', '.join(names)}"
            + (f" (+{more} more)" if more > 0 else ""),
        )
    return None


def snapshot(v: VectorInput, indices: Sequence[int]) -> dict[str, float]:
    """The named raw values a decision acted on."""
    return {FEATURE_SET_V1[i]: float(v.values[i]) for i in indices}
