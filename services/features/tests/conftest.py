"""Shared fixtures for the features unit tests (pure computation, no broker, no database)."""

from __future__ import annotations

import numpy as np
import pytest

from depthflow.features import FeatureState
from depthflow.features.synthetic import Series, generate


def replay(state: FeatureState, events: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
    """Feed events in order; stack the vectors of the book updates."""
    vals: list[np.ndarray] = []
    oks: list[np.ndarray] = []
    for e in events:
        if e[0] == "t":
            state.on_trade(e[1], e[2], e[3], e[4])
        else:
            v, ok = state.on_book(e[1], e[2], e[3], e[4], e[5])
            vals.append(v)
            oks.append(ok)
    return np.array(vals), np.array(oks)


@pytest.fixture(scope="session")
def long_series() -> Series:
    """~70 minutes of books and trades, with one-sided books, bursts and quiet minutes."""
    return generate(7000, seed=11, mean_gap_us=600_000, one_sided_every=400)


@pytest.fixture(scope="session")
def long_stream(long_series: Series) -> tuple[np.ndarray, np.ndarray]:
    return replay(FeatureState(), long_series.events)
