"""The competition metrics of a multi-label task: multi-hot y_true [N, C] against sigmoid scores [N, C].

    f1_macro, f1_micro, f1_samples   from the decisions score >= threshold (per class; default 0.5 each)
    map                              mean over classes of the average precision (a ranking: no threshold)
    roc_auc                          mean over classes of the AUC, over the classes that have positives and negatives
    log_loss                         mean binary cross-entropy over every (image, class), scores clipped to
                                     [1e-15, 1 - 1e-15] as the single-label log-loss is

Each equals scikit-learn's on the same inputs (tests/test_multilabel_metrics.py): f1_score(average="macro" /
"micro" / "samples") of the decisions, average_precision_score(average="macro"), roc_auc_score(average="macro") on
the classes it accepts, log_loss of the flattened (image, class) pairs. F1's 0/0 (a class, or an image, with nothing
true and nothing predicted) counts 0 and a class without positives has average precision 0, as scikit-learn's
defaults give. A ground module, numpy only: train (checkpoint choice, thresholds) and serve (`clf score`) use it.
"""

from __future__ import annotations

import numpy as np

from clf.ranking import average_precision, binary_auc
from clf.tasks import DEFAULT_THRESHOLD

LOG_LOSS_EPS = 1e-15


def decisions(probs: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
    """bool [N, C]: each class whose score reaches its threshold (None: DEFAULT_THRESHOLD on every class)."""
    probs = np.asarray(probs, dtype=np.float64)
    cut = DEFAULT_THRESHOLD if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    return probs >= cut


def _counts(y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | None, axis: int | None
            ) -> tuple[np.ndarray, np.ndarray]:
    """(2 tp, 2 tp + fp + fn) summed along `axis` (0: per class, 1: per image, None: over everything)."""
    truth, predicted = np.asarray(y_true) > 0.5, decisions(probs, thresholds)
    tp = np.sum(truth & predicted, axis=axis, dtype=np.float64)
    return 2 * tp, np.sum(truth, axis=axis, dtype=np.float64) + np.sum(predicted, axis=axis, dtype=np.float64)


def _f1(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """2tp / (2tp + fp + fn), 0 where nothing is true and nothing predicted (scikit-learn's zero_division)."""
    numerator, denominator = np.atleast_1d(numerator), np.atleast_1d(denominator)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def f1_per_class(y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
    """float64 [C]: each class's F1 at its threshold."""
    return _f1(*_counts(y_true, probs, thresholds, axis=0))


def f1_macro(y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | None = None) -> float:
    """The unweighted mean of the per-class F1s, every class counting."""
    per_class = f1_per_class(y_true, probs, thresholds)
    return float(per_class.mean()) if per_class.size and len(y_true) else float("nan")


def f1_micro(y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | None = None) -> float:
    """F1 of the (image, class) decisions pooled."""
    return float(_f1(*_counts(y_true, probs, thresholds, axis=None))[0]) if len(y_true) else float("nan")


def f1_samples(y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | None = None) -> float:
    """The mean over images of each image's F1 (its true classes against its decided ones)."""
    per_image = _f1(*_counts(y_true, probs, thresholds, axis=1))
    return float(per_image.mean()) if len(y_true) else float("nan")


def map_score(y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | None = None) -> float:
    """Mean over classes of the average precision (`thresholds` unused: a ranking metric)."""
    truth, probs = np.asarray(y_true) > 0.5, np.asarray(probs, dtype=np.float64)
    if not len(truth):
        return float("nan")
    return float(np.mean([average_precision(truth[:, c], probs[:, c]) for c in range(truth.shape[1])]))


def roc_auc(y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | None = None) -> float:
    """Mean over the classes that have both positives and negatives of their AUC (NaN when no class has both;
    scikit-learn refuses such a class)."""
    truth, probs = np.asarray(y_true) > 0.5, np.asarray(probs, dtype=np.float64)
    positives = truth.sum(axis=0)
    both = np.flatnonzero((positives > 0) & (positives < len(truth)))
    if not both.size:
        return float("nan")
    return float(np.mean([binary_auc(truth[:, c], probs[:, c]) for c in both]))


def log_loss(y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | None = None) -> float:
    """Mean binary cross-entropy over every (image, class): -log of the score given to the truth (p for a positive,
    1 - p for a negative), clipped to [1e-15, 1 - 1e-15] so that one confident mistake costs about 34.5."""
    truth, p = np.asarray(y_true) > 0.5, np.asarray(probs, dtype=np.float64)
    if not p.size:
        return float("nan")
    given_to_truth = np.clip(np.where(truth, p, 1.0 - p), LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    return float(-np.mean(np.log(given_to_truth)))


MULTILABEL_METRICS = {
    "f1_macro": f1_macro,
    "f1_micro": f1_micro,
    "f1_samples": f1_samples,
    "map": map_score,
    "roc_auc": roc_auc,
    "log_loss": log_loss,
}
