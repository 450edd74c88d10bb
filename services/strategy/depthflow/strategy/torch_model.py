"""The seed's multi-channel network (PyTorch, CPU): order-book 50 → 64, candle 25 → 32,
indicator 35 → 32, concatenated and fused 128 → 64 → 3 (sell, hold, buy).

Inputs are standardised inside the model with the training rows' mean and std (buffers in
the state dict), so a model carries everything it needs. Artifacts are a plain state dict
plus metadata, loaded with ``weights_only=True`` (no pickle code execution).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from depthflow.features.names import CHANNELS, N_FEATURES
from depthflow.strategy.models import LoadedModel, ModelMeta


class MultiChannelNet(nn.Module):
    """The seed's ``TradingModel``, taking a batch of 110-feature rows."""

    def __init__(self) -> None:
        super().__init__()
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.zeros(N_FEATURES))
        self.register_buffer("std", torch.ones(N_FEATURES))
        self.orderbook_encoder = nn.Linear(50, 64)
        self.candle_encoder = nn.Linear(25, 32)
        self.indicator_encoder = nn.Linear(35, 32)
        self.fusion = nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        ob = self.orderbook_encoder(x[:, CHANNELS["orderbook"]])
        candle = self.candle_encoder(x[:, CHANNELS["candle"]])
        indicator = self.indicator_encoder(x[:, CHANNELS["indicator"]])
        return self.fusion(torch.cat([ob, candle, indicator], dim=1))


class TorchPredictor:
    def __init__(self, net: MultiChannelNet) -> None:
        self.net = net.eval()

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = self.net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
            return torch.softmax(logits, dim=1).numpy().astype(np.float64)


def fit_torch(
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 5,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    on_epoch: Callable[[int, float], None] | None = None,
) -> MultiChannelNet:
    """Train on rows ``x`` (n, 110) with labels ``y`` in {-1, 0, 1}; class-balanced loss."""
    torch.manual_seed(seed)
    net = MultiChannelNet()
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    net.mean.copy_(torch.from_numpy(mean.astype(np.float32)))
    net.std.copy_(torch.from_numpy(std.astype(np.float32)))
    targets = torch.from_numpy((y + 1).astype(np.int64))
    counts = np.bincount(y + 1, minlength=3).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (3 * np.maximum(counts, 1)), 0.0)
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    data = torch.from_numpy(x.astype(np.float32))
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for epoch in range(epochs):
        order = torch.randperm(len(data), generator=gen)
        total = 0.0
        for start in range(0, len(data), batch_size):
            idx = order[start : start + batch_size]
            opt.zero_grad()
            loss = loss_fn(net(data[idx]), targets[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        if on_epoch:
            on_epoch(epoch, total / max(1, len(data)))
    return net.eval()


def encode_torch(net: MultiChannelNet, meta: ModelMeta) -> bytes:
    buf = io.BytesIO()
    torch.save({"state_dict": net.state_dict(), "meta": meta.to_dict()}, buf)
    return buf.getvalue()


def decode_torch(data: bytes) -> LoadedModel:
    obj: dict[str, Any] = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    net = MultiChannelNet()
    net.load_state_dict(obj["state_dict"])
    return LoadedModel(ModelMeta.from_dict(obj["meta"]), TorchPredictor(net))
