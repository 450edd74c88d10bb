"""Trained-model strategies (``sklearn``, ``torch``): metadata, artifacts, inference.

A model sees the 110 ``normalized`` features (an invalid feature enters as 0) and outputs
probabilities for (sell, hold, buy). Its metadata says which features it needs valid
(those valid in nearly every training row), which scaler the features were normalized
with, and how its labels were made. Heavy libraries are imported only when a model of
their kind is built or loaded.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from depthflow.features.names import FEATURE_SET_V1, INDEX
from depthflow.strategy.config import RuntimeConfig
from depthflow.strategy.gate import SignalGate
from depthflow.strategy.vectors import (
    MID_PRICE,
    WRONG_SCALER,
    Decision,
    Refusal,
    SignalSide,
    VectorInput,
    check_vector,
)

CLASSES: tuple[SignalSide, ...] = ("sell", "hold", "buy")  # output column order
SNAPSHOT_FEATURES = tuple(
    INDEX[n]
    for n in (
        "mid_price",
        "bid_ask_spread_rel",
        "imbalance_5",
        "imbalance_10",
        "imbalance_total",
        "order_flow_imbalance",
        "micro_price",
    )
)


class ArtifactError(ValueError):
    """A registry artifact does not match its hash or cannot be decoded."""


@dataclass(frozen=True)
class ModelMeta:
    """What a model was trained on and what it needs at inference."""

    kind: str
    name: str
    version: str
    feature_set: str
    required_features: tuple[str, ...]
    scaler_version: str = ""
    horizon_s: float = 0.0
    threshold_bps: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["required_features"] = list(self.required_features)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelMeta:
        d = dict(d)
        d["required_features"] = tuple(d.get("required_features", ()))
        return cls(**d)


class Predictor(Protocol):
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """``(n, 110)`` float inputs → ``(n, 3)`` probabilities in ``CLASSES`` order."""
        ...


@dataclass(frozen=True)
class LoadedModel:
    meta: ModelMeta
    predictor: Predictor


def model_inputs(normalized: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Model input rows: normalized features, 0 where a feature is invalid or non-finite."""
    x = np.where(valid & np.isfinite(normalized), normalized, 0.0)
    return x.astype(np.float32, copy=False)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- scikit-learn


class SklearnPredictor:
    """A fitted classifier over labels -1/0/1 (sell/hold/buy), any subset of them."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator
        self._columns = [int(c) + 1 for c in estimator.classes_]  # -1/0/1 → 0/1/2

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = self.estimator.predict_proba(x)
        out = np.zeros((x.shape[0], 3), dtype=np.float64)
        out[:, self._columns] = p
        return out


def encode_sklearn(estimator: Any, meta: ModelMeta) -> bytes:
    return pickle.dumps({"estimator": estimator, "meta": meta.to_dict()}, protocol=5)


def decode_sklearn(data: bytes) -> LoadedModel:
    # Only artifacts from our own registry reach here, after their sha256 was verified.
    obj = pickle.loads(data)  # noqa: S301
    return LoadedModel(ModelMeta.from_dict(obj["meta"]), SklearnPredictor(obj["estimator"]))


# ---------------------------------------------------------------- loading


def decode_artifact(kind: str, data: bytes, expected_sha256: str) -> LoadedModel:
    """Verify an artifact's hash and build its predictor."""
    got = sha256(data)
    if got != expected_sha256:
        raise ArtifactError(f"artifact hash {got[:12]}… does not match {expected_sha256[:12]}…")
    if kind == "sklearn":
        return decode_sklearn(data)
    if kind == "torch":
        from depthflow.strategy.torch_model import decode_torch

        return decode_torch(data)
    raise ArtifactError(f"unknown model kind {kind!r}")


def read_artifact_path(path: str) -> bytes:
    with io.open(path, "rb") as fh:  # noqa: UP020 - explicit binary read of a registry path
        return fh.read()


# ---------------------------------------------------------------- the strategy


class ModelStrategy:
    """``sklearn`` / ``torch``: one batched model call, then the per-symbol signal gate.

    The predicted class is published when its probability reaches ``min_confidence``
    (else the symbol is ``hold``), and only when the side changes, after the cooldown.
    """

    def __init__(self, model: LoadedModel, config: RuntimeConfig) -> None:
        self.model = model
        self.kind = model.meta.kind
        self.model_version = model.meta.version
        wanted = [INDEX[n] for n in model.meta.required_features]
        self.required = tuple(sorted({MID_PRICE, *wanted}))
        self.gate = SignalGate(int(config.cooldown_s * 1e6))
        self.configure(config)

    def configure(self, config: RuntimeConfig) -> None:
        self.min_confidence = config.min_confidence
        self.gate.cooldown_us = int(config.cooldown_s * 1e6)

    def with_model(self, model: LoadedModel) -> ModelStrategy:
        """The same strategy on another model version, keeping each symbol's last side."""
        other = ModelStrategy.__new__(ModelStrategy)
        other.model = model
        other.kind = model.meta.kind
        other.model_version = model.meta.version
        wanted = [INDEX[n] for n in model.meta.required_features]
        other.required = tuple(sorted({MID_PRICE, *wanted}))
        other.gate = self.gate
        other.min_confidence = self.min_confidence
        return other

    def check(self, v: VectorInput) -> Refusal | None:
        refusal = check_vector(v, self.required)
        if refusal is None and v.scaler_version != self.model.meta.scaler_version:
            return Refusal(
                WRONG_SCALER,
                f"scaler {v.scaler_version!r}, model {self.model_version} was trained on "
                f"{self.model.meta.scaler_version!r}",
            )
        return refusal

    def probabilities(self, batch: Sequence[VectorInput]) -> np.ndarray:
        x = np.stack([model_inputs(v.normalized, v.valid) for v in batch])
        return self.model.predictor.predict_proba(x)

    def decide(self, batch: Sequence[VectorInput]) -> list[Decision | None]:
        if not batch:
            return []
        probs = self.probabilities(batch)
        out: list[Decision | None] = []
        for v, p in zip(batch, probs, strict=True):
            best = int(np.argmax(p))
            side: SignalSide = CLASSES[best] if p[best] >= self.min_confidence else "hold"
            if not self.gate.offer(v.key, side, v.exchange_ts_us):
                out.append(None)
                continue
            features = {FEATURE_SET_V1[i]: float(v.values[i]) for i in SNAPSHOT_FEATURES}
            features.update({f"p_{c}": float(p[i]) for i, c in enumerate(CLASSES)})
            out.append(
                Decision(
                    side,
                    float(min(1.0, abs(p[2] - p[0]))),
                    float(min(1.0, p[best])),
                    f"{self.kind} {self.model_version}: p(sell/hold/buy)="
                    f"{p[0]:.2f}/{p[1]:.2f}/{p[2]:.2f}",
                    features,
                )
            )
        return out
