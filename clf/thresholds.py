"""Per-class decision thresholds of a multi-label model, tuned on held-out predictions. numpy only.

Training tunes them on the validation predictions of the best checkpoint (or on a fold group's out-of-fold
predictions) and records them in best.pt, config.json's summary and group.json; export writes them into the ONNX
metadata, and serve decides with them (clf.tasks.MultiLabelTask.with_thresholds). A ground module, so that export
and serve may import it too.

For each class independently, the threshold is the cut that maximises that class's F1 on the given predictions.
The candidates are the midpoints between consecutive distinct observed scores (and one below the lowest and one
above the highest), and DEFAULT_THRESHOLD (0.5) itself: F1 only changes at an observed score, so every cut between
two neighbours scores as their midpoint does. Among cuts of equal F1 the one closest to 0.5 wins: 0.5 itself where
it is among the best (a class every cut scores alike, e.g. one without positives, keeps 0.5).
"""

from __future__ import annotations

import numpy as np

from clf.tasks import DEFAULT_THRESHOLD

EDGE_MARGIN = 1e-6  # how far beyond the lowest / highest score the outer candidates lie


def candidate_cuts(scores: np.ndarray) -> np.ndarray:
    """The cuts worth trying on one class's scores: midpoints between distinct scores, one beyond each end, and 0.5."""
    distinct = np.unique(np.asarray(scores, dtype=np.float64))
    if not distinct.size:
        return np.array([DEFAULT_THRESHOLD])
    return np.r_[distinct[0] - EDGE_MARGIN, (distinct[:-1] + distinct[1:]) / 2, distinct[-1] + EDGE_MARGIN,
                 DEFAULT_THRESHOLD]


def f1_at_cuts(positive: np.ndarray, scores: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """F1 of deciding `scores >= cut`, for each cut (0 where nothing is true and nothing predicted)."""
    order = np.sort(scores)
    positives_sorted = np.sort(scores[positive])
    predicted = len(order) - np.searchsorted(order, cuts, side="left")  # scores >= cut
    tp = len(positives_sorted) - np.searchsorted(positives_sorted, cuts, side="left")
    denominator = (predicted + len(positives_sorted)).astype(np.float64)
    return np.divide(2.0 * tp, denominator, out=np.zeros(len(cuts)), where=denominator > 0)


def tune_class_threshold(positive: np.ndarray, scores: np.ndarray) -> float:
    """The cut maximising this class's F1; ties -> the one closest to 0.5 (then the lower one)."""
    cuts = candidate_cuts(scores)
    f1 = f1_at_cuts(np.asarray(positive, dtype=bool), np.asarray(scores, dtype=np.float64), cuts)
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)
    return float(cuts[best[np.argmin(np.abs(cuts[best] - DEFAULT_THRESHOLD))]])


def tune_thresholds(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per-class thresholds float64 [C] from multi-hot y_true [N, C] and sigmoid scores [N, C] (each class's F1
    maximised on its own). No rows: DEFAULT_THRESHOLD for every class.

    Raises:
        ValueError: y_true and probs of different shapes, or not [N, C].
    """
    y_true, probs = np.asarray(y_true), np.asarray(probs, dtype=np.float64)
    if y_true.shape != probs.shape or probs.ndim != 2:
        raise ValueError(f"answers of shape {y_true.shape} and scores of shape {probs.shape}; both must be [N, C]")
    if not len(probs):
        return np.full(probs.shape[1], DEFAULT_THRESHOLD)
    truth = y_true > 0.5
    return np.array([tune_class_threshold(truth[:, c], probs[:, c]) for c in range(probs.shape[1])])
