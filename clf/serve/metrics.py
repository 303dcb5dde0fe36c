"""Classification metrics with numpy only, and a confusion-matrix picture (matplotlib, imported lazily)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from clf.atomic import atomic_output


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """int64 [C, C]: row = true class, column = predicted class."""
    true, pred = _as_labels(y_true, y_pred, num_classes)
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (true, pred), 1)
    return matrix


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, macro and weighted averages, confusion matrix.

    A precision or recall with nothing to divide by (no predictions / no samples of a class) is 0.0,
    as scikit-learn's ``zero_division=0``. All values are plain Python numbers (JSON-ready).

    Args:
        y_true, y_pred: class indices, same length.
        classes: class names; index i is ``classes[i]``.

    Returns:
        {"accuracy", "num_samples", "classes", "per_class": {name: {"precision", "recall", "f1",
        "support"}}, "macro_avg": {...}, "weighted_avg": {...}, "confusion_matrix": [[int]]}
    """
    matrix = confusion_matrix(y_true, y_pred, len(classes))
    correct = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    precision = _safe_divide(correct, predicted)
    recall = _safe_divide(correct, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    total = int(support.sum())
    per_class = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(classes, precision, recall, f1, support)
    }
    weights = support / total if total else np.zeros(len(classes))
    return {
        "accuracy": float(correct.sum() / total) if total else 0.0,
        "num_samples": total,
        "classes": list(classes),
        "per_class": per_class,
        "macro_avg": _averages(precision, recall, f1, np.full(len(classes), 1 / len(classes)), total),
        "weighted_avg": _averages(precision, recall, f1, weights, total),
        "confusion_matrix": matrix.tolist(),
    }


def _averages(precision: np.ndarray, recall: np.ndarray, f1: np.ndarray, weights: np.ndarray, total: int) -> dict:
    return {
        "precision": float(precision @ weights),
        "recall": float(recall @ weights),
        "f1": float(f1 @ weights),
        "support": total,
    }


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.zeros(len(numerator), dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _as_labels(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    if num_classes < 1:
        raise ValueError("need at least one class")
    true, pred = np.asarray(y_true, dtype=np.int64).ravel(), np.asarray(y_pred, dtype=np.int64).ravel()
    if true.shape != pred.shape:
        raise ValueError(f"y_true has {true.size} labels but y_pred has {pred.size}")
    for name, values in (("y_true", true), ("y_pred", pred)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} has class indices outside 0..{num_classes - 1}")
    return true, pred


def save_confusion_png(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: str | os.PathLike) -> Path:
    """Draw the confusion matrix (counts, colour = share of the true class) to a PNG, atomically.

    Returns:
        The written path.
    """
    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.write_bytes(confusion_png(matrix, classes))
    return path


def confusion_png(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> bytes:
    """The confusion matrix picture as PNG bytes (`save_confusion_png`'s; the HTML report inlines them).

    Uses matplotlib's object API on the Agg canvas: no pyplot, no global backend switch, no display.
    """
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(matrix, dtype=np.int64)
    n = len(classes)
    if counts.shape != (n, n):
        raise ValueError(f"matrix has shape {counts.shape}, expected ({n}, {n})")
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)

    side = min(4 + 0.45 * n, 30)
    figure = Figure(figsize=(side + 1.5, side), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="share of true class")
    axes.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title="confusion matrix")
    axes.set_xticklabels(classes, rotation=45, ha="right")
    axes.set_yticklabels(classes)
    if n <= 30:  # beyond that the numbers are unreadable
        for (i, j), value in np.ndenumerate(counts):
            colour = "white" if shares[i, j] > 0.5 else "black"
            axes.text(j, i, str(value), ha="center", va="center", color=colour, fontsize=8)

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()

