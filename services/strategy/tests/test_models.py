"""Model strategies: scikit-learn and the seed's multi-channel PyTorch network — artifacts
round-trip with their hash, batch decisions match one-by-one ones, refusals apply."""

from __future__ import annotations

import numpy as np
import pytest

from depthflow.common.schemas import FeatureVector
from depthflow.features.names import INDEX, N_FEATURES
from depthflow.strategy.config import RuntimeConfig
from depthflow.strategy.models import (
    ArtifactError,
    ModelMeta,
    ModelStrategy,
    decode_artifact,
    encode_sklearn,
    model_inputs,
    sha256,
)
from depthflow.strategy.synthetic import vector_series
from depthflow.strategy.vectors import INVALID_FEATURE, WRONG_SCALER, VectorInput


def training_data(n: int = 600) -> tuple[list[VectorInput], np.ndarray, np.ndarray]:
    vecs = [
        VectorInput.from_message(FeatureVector.model_validate(v)) for v in vector_series(n, seed=2)
    ]
    x = np.stack([model_inputs(v.normalized, v.valid) for v in vecs])
    imb = x[:, INDEX["imbalance_5"]]
    y = np.where(imb > 0.3, 1, np.where(imb < -0.3, -1, 0))
    return vecs, x, y


def meta(kind: str, version: str, required: tuple[str, ...] = ("imbalance_5",)) -> ModelMeta:
    return ModelMeta(
        kind=kind, name=kind, version=version, feature_set="v1", required_features=required
    )


@pytest.fixture(scope="module")
def sklearn_artifact() -> bytes:
    from sklearn.ensemble import HistGradientBoostingClassifier

    _vecs, x, y = training_data()
    est = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(x, y)
    return encode_sklearn(est, meta("sklearn", "sk-1"))


def test_sklearn_artifact_roundtrip_and_decisions(sklearn_artifact: bytes) -> None:
    model = decode_artifact("sklearn", sklearn_artifact, sha256(sklearn_artifact))
    assert model.meta.version == "sk-1"
    vecs, x, y = training_data()
    proba = model.predictor.predict_proba(x)
    assert proba.shape == (len(x), 3) and np.allclose(proba.sum(axis=1), 1)
    pred = np.argmax(proba, axis=1) - 1
    assert np.mean(pred == y) > 0.9  # the rule is learnable
    batch = ModelStrategy(model, RuntimeConfig(cooldown_s=0)).decide(vecs[:150])
    single = ModelStrategy(model, RuntimeConfig(cooldown_s=0))
    one_by_one = [single.decide([v])[0] for v in vecs[:150]]
    assert batch == one_by_one
    published = [d for d in batch if d]
    assert {d.side for d in published} == {"buy", "sell", "hold"}
    assert all(0 <= d.strength <= 1 and 0 <= d.confidence <= 1 for d in published)
    assert "p_buy" in published[0].features and "mid_price" in published[0].features


def test_a_tampered_artifact_is_refused(sklearn_artifact: bytes) -> None:
    with pytest.raises(ArtifactError):
        decode_artifact("sklearn", sklearn_artifact + b"x", sha256(sklearn_artifact))


def test_model_strategy_refusals(sklearn_artifact: bytes) -> None:
    model = decode_artifact("sklearn", sklearn_artifact, sha256(sklearn_artifact))
    strategy = ModelStrategy(model, RuntimeConfig())
    v = training_data(3)[0][0]
    assert strategy.check(v) is None
    mask = v.valid.copy()
    mask[INDEX["imbalance_5"]] = False
    bad = VectorInput(v.exchange, v.symbol, "v1", 1, 0, v.values, v.normalized, mask)
    assert strategy.check(bad).reason == INVALID_FEATURE  # type: ignore[union-attr]
    mask = v.valid.copy()
    mask[INDEX["rsi_14"]] = False  # not required by this model
    fine = VectorInput(v.exchange, v.symbol, "v1", 1, 0, v.values, v.normalized, mask)
    assert strategy.check(fine) is None
    other = VectorInput(
        v.exchange, v.symbol, "v1", 1, 0, v.values, v.normalized, v.valid, scaler_version="s2"
    )
    assert strategy.check(other).reason == WRONG_SCALER  # type: ignore[union-attr]


def test_torch_multichannel_model() -> None:
    import torch

    from depthflow.strategy.torch_model import MultiChannelNet, encode_torch, fit_torch

    torch.set_num_threads(1)
    net = MultiChannelNet()
    assert net.orderbook_encoder.in_features == 50 and net.orderbook_encoder.out_features == 64
    assert net.candle_encoder.in_features == 25 and net.candle_encoder.out_features == 32
    assert net.indicator_encoder.in_features == 35 and net.indicator_encoder.out_features == 32
    assert net.fusion[0].in_features == 128 and net.fusion[-1].out_features == 3
    vecs, x, y = training_data()
    trained = fit_torch(x, y, epochs=10, batch_size=64)
    data = encode_torch(trained, meta("torch", "t-1"))
    model = decode_artifact("torch", data, sha256(data))
    proba = model.predictor.predict_proba(x)
    assert proba.shape == (len(x), 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert np.mean(np.argmax(proba, axis=1) - 1 == y) > 0.8
    decisions = ModelStrategy(model, RuntimeConfig(cooldown_s=0)).decide(vecs[:50])
    assert any(d is not None for d in decisions)
    assert x.shape[1] == N_FEATURES
