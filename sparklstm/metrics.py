"""Classification metrics from a confusion matrix: accuracy, macro-F1, per-class scores.

One implementation for both paths: training computes the matrix with numpy, ``evaluate``
computes it with a Spark aggregation; both then call :func:`report`.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts; rows are true classes, columns predicted."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def report(cm: np.ndarray, labels: list[str]) -> dict:
    """Metrics of a confusion matrix.

    Example
    -------
    >>> report(np.array([[3, 1], [0, 4]]), ["ham", "spam"])["accuracy"]
    0.875
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0  # macro average over classes that occur in the true labels
    total = cm.sum()
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "n": int(total),
        "per_class": {
            label: {
                "precision": float(precision[k]),
                "recall": float(recall[k]),
                "f1": float(f1[k]),
                "support": int(support[k]),
            }
            for k, label in enumerate(labels)
        },
        "labels": list(labels),
        "confusion_matrix": cm.astype(np.int64).tolist(),
    }
