"""Feature set v1: 110 order-book, candle and indicator features, streaming and batch.

Pure computation, no I/O. ``FeatureState`` (engine) is the per-symbol streaming state;
``compute_batch`` (batch) gives the same numbers over a stored series.
"""

from depthflow.features.engine import FeatureState, InvalidInputError
from depthflow.features.names import FEATURE_SET_V1, FEATURE_SET_VERSION, N_FEATURES, SPECS

__all__ = [
    "FEATURE_SET_V1",
    "FEATURE_SET_VERSION",
    "N_FEATURES",
    "SPECS",
    "FeatureState",
    "InvalidInputError",
]
