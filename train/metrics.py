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


def unweighted_accuracy(
    y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str]
) -> dict[str, float]:
    """Speech-emotion metrics, in percent: ``uar`` (unweighted accuracy = mean per-class recall over
    the classes present in ``y_true``), ``wa`` (weighted accuracy = plain accuracy) and each
    class's recall as ``recall_<class>``."""
    if len(y_true) != len(y_pred) or not y_true:
        raise ValueError("need equally long, non-empty label and prediction lists")
    recalls: dict[str, float] = {}
    for name in classes:
        idx = [i for i, t in enumerate(y_true) if t == name]
        if idx:
            recalls[name] = 100.0 * sum(y_pred[i] == name for i in idx) / len(idx)
    return {
        "uar": float(np.mean(list(recalls.values()))),
        "wa": 100.0 * float(np.mean([t == p for t, p in zip(y_true, y_pred, strict=True)])),
        **{f"recall_{name}": value for name, value in recalls.items()},
    }


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; 0.0 when either side is constant."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.size < 2:
        raise ValueError("need two equally long sequences of at least 2 values")
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])
