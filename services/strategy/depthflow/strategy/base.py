"""The interface every strategy implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from depthflow.strategy.config import RuntimeConfig
from depthflow.strategy.vectors import Decision, Refusal, VectorInput


class Strategy(Protocol):
    """A pure decision maker over feature vectors (no I/O).

    ``decide`` takes a batch (one symbol's vectors in time order, or several symbols'
    interleaved — state is per symbol) of vectors that passed ``check`` and returns, per
    vector, a ``Decision`` to publish or ``None`` (nothing new to say).
    """

    kind: str
    model_version: str

    def check(self, v: VectorInput) -> Refusal | None: ...

    def decide(self, batch: Sequence[VectorInput]) -> list[Decision | None]: ...

    def configure(self, config: RuntimeConfig) -> None: ...
