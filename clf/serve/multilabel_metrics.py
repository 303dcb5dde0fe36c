"""Multi-label scores of a deployed model: multi-hot truth [N, C] against decisions (bool [N, C]) or sigmoid
scores [N, C]. numpy only, each equal to scikit-learn's on the same inputs (tests/test_multilabel_score.py):

    per_class         precision, recall, F1 and support per class (precision_recall_fscore_support, average=None)
    f1s               F1 micro / macro / samples (f1_score average="micro" / "macro" / "samples")
    average_precision one class's AP (average_precision_score); mean_average_precision their mean over classes
    binary_auc        one class's ROC AUC (roc_auc_score), ties counted half

0/0 (a class, or an image, with nothing true and nothing predicted) counts 0, as scikit-learn's zero_division
default gives. `clf score`, `clf eval` and the int8 gate use these.

The ranking scores (AUC, average precision) are clf.ranking's, shared with the trainer's metrics; these take a
deployed model's decisions (bool) where clf.metrics_multilabel takes probabilities and thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clf import ranking


@dataclass(frozen=True)
class PerClass:
    """Per class [C]: precision, recall, F1 (0 where undefined), support (true images), predicted (images tagged)."""

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    predicted: np.ndarray


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator, denominator = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def per_class(truth: np.ndarray, decided: np.ndarray) -> PerClass:
    """Each class's precision, recall, F1 and support from multi-hot truth and bool decisions [N, C]."""
    truth, decided = np.asarray(truth) > 0.5, np.asarray(decided, dtype=bool)
    tp = (truth & decided).sum(axis=0)
    support, predicted = truth.sum(axis=0), decided.sum(axis=0)
    return PerClass(precision=_ratio(tp, predicted), recall=_ratio(tp, support),
                    f1=_ratio(2 * tp, support + predicted), support=support.astype(np.int64),
                    predicted=predicted.astype(np.int64))


def f1s(truth: np.ndarray, decided: np.ndarray) -> dict[str, float]:
    """F1 "micro" (every (image, class) pooled), "macro" (mean over classes) and "samples" (mean over images)."""
    truth, decided = np.asarray(truth) > 0.5, np.asarray(decided, dtype=bool)
    if not len(truth):
        return {"f1_micro": float("nan"), "f1_macro": float("nan"), "f1_samples": float("nan")}
    both = truth & decided
    micro = _ratio(2 * both.sum(), truth.sum() + decided.sum())
    per_image = _ratio(2 * both.sum(axis=1), truth.sum(axis=1) + decided.sum(axis=1))
    return {"f1_micro": float(micro), "f1_macro": float(per_class(truth, decided).f1.mean()),
            "f1_samples": float(per_image.mean())}


def average_precision(truth: np.ndarray, scores: np.ndarray) -> float:
    """One class's average precision (clf.ranking's step rule); 0 for a class without positives (scikit-learn
    warns and gives 0 too)."""
    return ranking.average_precision(np.asarray(truth) > 0.5, np.asarray(scores, np.float64))


def mean_average_precision(truth: np.ndarray, scores: np.ndarray) -> float:
    """The mean over classes of their average precision (average_precision_score, average="macro")."""
    truth = np.asarray(truth)
    if not len(truth):
        return float("nan")
    return float(np.mean([average_precision(truth[:, c], scores[:, c]) for c in range(truth.shape[1])]))


def binary_auc(truth: np.ndarray, scores: np.ndarray) -> float:
    """One class's ROC AUC (clf.ranking: Mann-Whitney U, ties counting half); NaN when the class has no positive or
    no negative (scikit-learn refuses those)."""
    return ranking.binary_auc(np.asarray(truth) > 0.5, np.asarray(scores, np.float64))


def per_class_auc(truth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """[C] each class's ROC AUC (NaN for a class the truth holds in every image or in none)."""
    truth = np.asarray(truth)
    return np.array([binary_auc(truth[:, c], scores[:, c]) for c in range(truth.shape[1])], np.float64)


def macro_f1_against(reference: np.ndarray, decided: np.ndarray) -> float:
    """How well `decided` reproduces the `reference` decisions (both bool [N, C]), as a macro F1 with the reference
    as truth; a class neither ever tags counts 1 (they agree), unlike scikit-learn's 0: this measures agreement
    (the int8 gate against fp32), not skill."""
    reference, decided = np.asarray(reference, dtype=bool), np.asarray(decided, dtype=bool)
    tp = (reference & decided).sum(axis=0)
    denominator = reference.sum(axis=0) + decided.sum(axis=0)
    f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 1.0)
    return float(f1.mean()) if f1.size else 1.0
