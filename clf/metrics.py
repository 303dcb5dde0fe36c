"""The competition's metric: one function per metric a leaderboard uses, computed from labels and probabilities.

    accuracy, balanced_accuracy, f1_macro, f1_micro   from the arg-max labels
    roc_auc                                           from the probabilities (binary: class 1's; else one-vs-rest macro)
    log_loss                                          from the probabilities (clf.probabilities.log_loss: rows
                                                      renormalised, clipped to [1e-15, 1 - 1e-15], as Kaggle does)
    qwk                                               quadratic weighted kappa of the arg-max labels (ordered classes)

Each equals scikit-learn's on the same inputs (tests/test_competition_metrics.py): accuracy_score,
balanced_accuracy_score, f1_score(average="macro"/"micro"), roc_auc_score(multi_class="ovr", average="macro"),
log_loss, cohen_kappa_score(weights="quadratic"). Where scikit-learn raises or warns (roc_auc with a class absent
from the labels; balanced accuracy's classes without samples), the value is NaN or follows scikit-learn's
convention, said per function. A ground module, numpy only: train (checkpoint choice) and serve (`clf score`) use it.

Multi-label answers (y_true multi-hot [N, C], scores the per-class sigmoid probabilities) go to the multi-label form
of the metric (clf.metrics_multilabel: f1_macro, f1_micro, f1_samples at per-class thresholds, map, roc_auc,
log_loss); `score` dispatches on y_true.ndim == 2. f1_samples and map have no single-label form, accuracy,
balanced_accuracy and qwk no multi-label one: each refuses the other kind of answers in one line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from clf import metrics_multilabel as ml
from clf.errors import ClfError
from clf.probabilities import log_loss as _log_loss
from clf.ranking import binary_auc

# (multi-hot y_true [N, C], scores [N, C], per-class thresholds or None) -> float
MultiLabelFunction = Callable[[np.ndarray, np.ndarray, "np.ndarray | None"], float]


@dataclass(frozen=True)
class Metric:
    """A leaderboard metric: its function (labels [N], probabilities [N, C]) -> float, its multi-label form
    (clf.metrics_multilabel; None: single-label only) and which way is better."""

    function: Callable[[np.ndarray, np.ndarray], float] | None
    higher_is_better: bool
    needs_probabilities: bool  # False: the decided labels are enough (a submission CSV without --probs)
    needs_ordered_classes: bool = False
    multilabel: MultiLabelFunction | None = None


def _labels_and_predictions(y_true: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    probs = np.asarray(probs, dtype=np.float64)
    return np.asarray(y_true, dtype=np.int64), probs.argmax(axis=1), probs.shape[1]


def confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> np.ndarray:
    """[C, C] counts, rows the true class, columns the predicted one."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def accuracy(y_true: np.ndarray, probs: np.ndarray) -> float:
    true, pred, _ = _labels_and_predictions(y_true, probs)
    return float(np.mean(true == pred)) if len(true) else float("nan")


def balanced_accuracy(y_true: np.ndarray, probs: np.ndarray) -> float:
    """The mean recall over the classes present in y_true (scikit-learn's rule: absent classes are left out)."""
    true, pred, classes = _labels_and_predictions(y_true, probs)
    matrix = confusion(true, pred, classes)
    support = matrix.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(matrix)[present] / support[present])) if present.any() else float("nan")


def f1_macro(y_true: np.ndarray, probs: np.ndarray) -> float:
    """The unweighted mean of the per-class F1 over the classes in y_true or the predictions (scikit-learn's
    labels); a class with no true and no predicted sample is left out, one with F1's 0/0 counts 0."""
    true, pred, classes = _labels_and_predictions(y_true, probs)
    matrix = confusion(true, pred, classes)
    tp = np.diag(matrix).astype(np.float64)
    denominator = matrix.sum(axis=0) + matrix.sum(axis=1)  # 2tp + fp + fn
    seen = np.isin(np.arange(classes), np.union1d(true, pred))
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return float(np.mean(f1[seen])) if seen.any() else float("nan")


def f1_micro(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Micro F1 of single-label predictions: equal to the accuracy (every error is one fp and one fn)."""
    return accuracy(y_true, probs)


def roc_auc(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Binary: the AUC of class 1's probability. More classes: the mean of the one-vs-rest AUCs (scikit-learn's
    multi_class="ovr", average="macro"). NaN when a class of the probabilities has no sample in y_true, or every
    sample is of one class (scikit-learn refuses both)."""
    true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    classes = probs.shape[1]
    if not np.isin(np.arange(classes), true).all():
        return float("nan")
    if classes == 2:
        return binary_auc(true == 1, probs[:, 1])
    probs = probs / probs.sum(axis=1, keepdims=True)  # scikit-learn requires rows summing to 1 for ovr
    return float(np.mean([binary_auc(true == c, probs[:, c]) for c in range(classes)]))


def log_loss(y_true: np.ndarray, probs: np.ndarray) -> float:
    return _log_loss(np.asarray(probs, dtype=np.float64), np.asarray(y_true, dtype=np.int64))


def qwk(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Cohen's kappa with quadratic weights (i - j)^2 on the arg-max labels, the classes in their index order."""
    true, pred, classes = _labels_and_predictions(y_true, probs)
    observed = confusion(true, pred, classes).astype(np.float64)
    total = observed.sum()
    if total == 0:
        return float("nan")
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / total
    index = np.arange(classes)
    weights = (index[:, None] - index[None, :]) ** 2
    disagreement = (weights * expected).sum()
    return float(1.0 - (weights * observed).sum() / disagreement) if disagreement > 0 else float("nan")


METRICS: dict[str, Metric] = {
    "accuracy": Metric(accuracy, higher_is_better=True, needs_probabilities=False),
    "balanced_accuracy": Metric(balanced_accuracy, higher_is_better=True, needs_probabilities=False),
    "f1_macro": Metric(f1_macro, higher_is_better=True, needs_probabilities=False, multilabel=ml.f1_macro),
    "f1_micro": Metric(f1_micro, higher_is_better=True, needs_probabilities=False, multilabel=ml.f1_micro),
    "roc_auc": Metric(roc_auc, higher_is_better=True, needs_probabilities=True, multilabel=ml.roc_auc),
    "log_loss": Metric(log_loss, higher_is_better=False, needs_probabilities=True, multilabel=ml.log_loss),
    "qwk": Metric(qwk, higher_is_better=True, needs_probabilities=False, needs_ordered_classes=True),
    "f1_samples": Metric(None, higher_is_better=True, needs_probabilities=False, multilabel=ml.f1_samples),
    "map": Metric(None, higher_is_better=True, needs_probabilities=True, multilabel=ml.map_score),
}


def metric(name: str) -> Metric:
    """The metric registered as `name`; ClfError naming --metric and the choices otherwise."""
    if name not in METRICS:
        raise ClfError(f"--metric must be one of {', '.join(METRICS)}, got {name!r}")
    return METRICS[name]


def class_order(classes: list[str]) -> list[int] | None:
    """The classes' indices in grade order when every class name is an integer (0, 1, 2 or 1, 2, 10), else None:
    the order that QWK's weights need (class folders sort as text: "10" before "2")."""
    try:
        grades = [int(name) for name in classes]
    except ValueError:
        return None
    return sorted(range(len(classes)), key=lambda index: grades[index])


def check_ordered_classes(name: str, classes: list[str]) -> None:
    """A metric on ordered classes (qwk) needs class names that are grades; ClfError saying so otherwise."""
    if METRICS[name].needs_ordered_classes and class_order(classes) is None:
        raise ClfError(f"--metric {name} needs ordered classes: name them by grade (0, 1, 2, ...); the classes are "
                       f"{', '.join(classes[:6])}{', ...' if len(classes) > 6 else ''}")


def score(name: str, y_true: np.ndarray, probs: np.ndarray, classes: list[str] | None = None,
          thresholds: np.ndarray | None = None) -> float:
    """`name` of the labels against the probabilities. With `classes` (names), a metric on ordered classes sees the
    classes in grade order (their names as integers). Multi-hot y_true [N, C] (a multi-label task) takes the
    metric's multi-label form, its F1s deciding at `thresholds` (per class; None: 0.5 each).

    Raises:
        ClfError: a metric that does not apply to this kind of answers (one line naming --metric).
    """
    chosen = metric(name)
    if np.ndim(y_true) == 2:
        if chosen.multilabel is None:
            raise ClfError(f"--metric {name} needs one class per image; for multi-label answers choose one of "
                           f"{', '.join(n for n, m in METRICS.items() if m.multilabel is not None)}")
        return chosen.multilabel(np.asarray(y_true), np.asarray(probs, dtype=np.float64), thresholds)
    if chosen.function is None:
        raise ClfError(f"--metric {name} needs multi-label answers (any number of classes per image); for one class "
                       f"per image choose one of {', '.join(n for n, m in METRICS.items() if m.function is not None)}")
    if chosen.needs_ordered_classes and classes is not None:
        order = class_order(classes)
        if order is None:
            check_ordered_classes(name, classes)
        rank = np.empty(len(order), dtype=np.int64)  # type: ignore[arg-type]
        rank[order] = np.arange(len(order))  # type: ignore[index]
        y_true, probs = rank[np.asarray(y_true, dtype=np.int64)], np.asarray(probs)[:, order]
    return chosen.function(y_true, probs)
