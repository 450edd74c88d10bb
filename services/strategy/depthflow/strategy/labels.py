"""Labels from future mid-prices and walk-forward folds (pure numpy, no I/O).

No look-ahead, by construction:
- the features a model sees at time t are the vector computed at t (from data <= t);
- the label of the row at t uses the mid-price of the first vector of the same symbol at or
  after ``t + horizon``; that vector's time is the row's ``label_end_us``; labels are only
  for training and evaluation, never inputs;
- a walk-forward fold validating on ``[start, end)`` trains only on rows with
  ``ts < start`` *and* ``label_end_us < start`` (purged), so neither a training feature nor
  a training label depends on any data from or after the validation window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NO_LABEL_END = np.iinfo(np.int64).max


@dataclass(frozen=True)
class Labels:
    y: np.ndarray  # int8: -1 sell, 0 hold, 1 buy (0 where not labelled)
    labelled: np.ndarray  # bool: a future mid exists within the data
    label_end_us: np.ndarray  # int64: time of the future vector the label used


def label_future_mid(
    keys: np.ndarray,
    ts_us: np.ndarray,
    mid: np.ndarray,
    horizon_us: int,
    threshold_bps: float,
) -> Labels:
    """Label each row by its symbol's return over ``horizon_us``: buy above
    ``+threshold_bps``, sell below ``-threshold_bps``, else hold.

    ``keys`` identifies the symbol (``exchange:SYMBOL``); within one key rows must be in
    non-decreasing time order (rows of different keys may interleave).
    """
    n = len(ts_us)
    y = np.zeros(n, dtype=np.int8)
    labelled = np.zeros(n, dtype=bool)
    label_end = np.full(n, NO_LABEL_END, dtype=np.int64)
    thr = threshold_bps * 1e-4
    for key in np.unique(keys):
        rows = np.flatnonzero(keys == key)
        t = ts_us[rows]
        if np.any(np.diff(t) < 0):
            raise ValueError(f"rows of {key} are not in time order")
        j = np.searchsorted(t, t + horizon_us, side="left")
        has = j < len(rows)
        src = rows[has]
        fut = rows[j[has]]
        ret = mid[fut] / mid[src] - 1.0
        y[src] = np.where(ret > thr, 1, np.where(ret < -thr, -1, 0))
        labelled[src] = True
        label_end[src] = ts_us[fut]
    return Labels(y, labelled, label_end)


@dataclass(frozen=True)
class Fold:
    index: int
    train: np.ndarray  # row indices
    val: np.ndarray  # row indices
    val_start_us: int
    val_end_us: int  # exclusive, except for the last fold, which ends at the last row


def walk_forward(ts_us: np.ndarray, label_end_us: np.ndarray, n_folds: int) -> list[Fold]:
    """Expanding-window folds over rows in time: the rows are cut by count into
    ``n_folds + 1`` consecutive time blocks; fold k validates on block k + 1 and trains on
    everything whose features *and* labels end before that block starts."""
    if n_folds < 1:
        raise ValueError("n_folds must be at least 1")
    n = len(ts_us)
    if n == 0:
        return []
    order = np.sort(ts_us)
    edges = [int(order[(k * n) // (n_folds + 1)]) for k in range(1, n_folds + 1)]
    last = int(order[-1])
    folds: list[Fold] = []
    for k, start in enumerate(edges):
        end = edges[k + 1] if k + 1 < len(edges) else last + 1
        if end <= start:
            continue
        train = np.flatnonzero((ts_us < start) & (label_end_us < start))
        val = np.flatnonzero((ts_us >= start) & (ts_us < end))
        if len(train) == 0 or len(val) == 0:
            continue
        folds.append(Fold(len(folds), train, val, start, end))
    return folds


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro F1 over (sell, hold, buy), and how often and how
    well the model calls a direction (coverage, directional precision)."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    n = len(y_true)
    out: dict[str, float] = {"n": float(n)}
    if n == 0:
        return out
    out["accuracy"] = float(np.mean(y_true == y_pred))
    recalls = []
    f1s = []
    for c in (-1, 0, 1):
        tp = float(np.sum((y_pred == c) & (y_true == c)))
        actual = float(np.sum(y_true == c))
        predicted = float(np.sum(y_pred == c))
        if actual:
            recalls.append(tp / actual)
        prec = tp / predicted if predicted else 0.0
        rec = tp / actual if actual else 0.0
        if actual or predicted:
            f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    out["balanced_accuracy"] = float(np.mean(recalls)) if recalls else 0.0
    out["macro_f1"] = float(np.mean(f1s)) if f1s else 0.0
    calls = y_pred != 0
    out["coverage"] = float(np.mean(calls))
    out["directional_precision"] = (
        float(np.mean(y_true[calls] == y_pred[calls])) if calls.any() else 0.0
    )
    for c, name in ((-1, "sell"), (0, "hold"), (1, "buy")):
        out[f"share_{name}"] = float(np.mean(y_true == c))
    return out
