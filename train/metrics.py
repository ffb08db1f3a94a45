"""Evaluation metrics exactly as design.md defines them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int]) -> dict[str, float]:
    """Accuracy and weighted F1, in percent (MELD, IEMOCAP)."""
    return {
        "acc": 100.0 * float(accuracy_score(y_true, y_pred)),
        "wf1": 100.0 * float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
    }


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, float]:
    """CMU-MOSI/MOSEI: MAE, Pearson corr, Acc-7, Acc-2 and weighted F1, has0 and non0 (percent)."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if y.shape != p.shape or y.size == 0:
        raise ValueError("need equally long, non-empty label and prediction arrays")
    corr = float(np.corrcoef(p, y)[0, 1]) if y.std() > 0 and p.std() > 0 else 0.0
    acc7 = float(np.mean(np.round(np.clip(p, -3, 3)) == np.round(np.clip(y, -3, 3))))
    has0_true, has0_pred = y >= 0, p >= 0
    nz = y != 0
    non0_true, non0_pred = y[nz] > 0, p[nz] > 0
    return {
        "mae": float(np.mean(np.abs(p - y))),
        "corr": corr,
        "acc7": 100.0 * acc7,
        "acc2_has0": 100.0 * float(np.mean(has0_true == has0_pred)),
        "f1_has0": 100.0
        * float(f1_score(has0_true, has0_pred, average="weighted", zero_division=0)),
        "acc2_non0": 100.0 * float(np.mean(non0_true == non0_pred)) if nz.any() else 0.0,
        "f1_non0": 100.0
        * float(f1_score(non0_true, non0_pred, average="weighted", zero_division=0))
        if nz.any()
        else 0.0,
    }
