"""clf.metrics_multilabel (through clf.metrics.score): each multi-label metric equals scikit-learn's on multi-hot
answers and sigmoid scores."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from clf.choices import TASK_METRICS
from clf.errors import ClfError
from clf.metrics import METRICS, score
from clf.metrics_multilabel import decisions, f1_per_class
from clf.ranking import average_precision

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def sklearn_value(name: str, y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | None) -> float:
    decided = (probs >= (0.5 if thresholds is None else thresholds)).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns where 0/0 is set to 0 (and AP without positives)
        if name.startswith("f1_"):
            return sklearn_metrics.f1_score(y_true, decided, average=name[3:])
        if name == "map":
            return sklearn_metrics.average_precision_score(y_true, probs, average="macro")
        if name == "roc_auc":
            both = (y_true.sum(axis=0) > 0) & (y_true.sum(axis=0) < len(y_true))
            return sklearn_metrics.roc_auc_score(y_true[:, both], probs[:, both], average="macro")
        assert name == "log_loss"
        return sklearn_metrics.log_loss(y_true.ravel(), probs.ravel(), labels=[0, 1])


def random_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Multi-hot answers (some images with no class, a class without positives in some cases) and sigmoid scores that
    agree with them more than chance, rounded to 2 decimals so that ties occur."""
    rng = np.random.default_rng(seed)
    classes, n = int(rng.integers(2, 7)), int(rng.integers(10, 60))
    y_true = (rng.random((n, classes)) < rng.uniform(0.1, 0.6, classes)).astype(np.uint8)
    logits = rng.normal(size=(n, classes)) + 2.0 * (y_true - 0.5) * rng.random()
    return y_true, np.round(1 / (1 + np.exp(-logits)), 2)


@pytest.mark.parametrize("name", TASK_METRICS["multilabel"])
@pytest.mark.parametrize("seed", range(12))
def test_each_multilabel_metric_equals_scikit_learns(name, seed):
    y_true, probs = random_case(seed)
    thresholds = np.random.default_rng(seed).uniform(0.2, 0.8, y_true.shape[1]) if seed % 2 else None
    assert score(name, y_true, probs, thresholds=thresholds) == pytest.approx(
        sklearn_value(name, y_true, probs, thresholds), abs=1e-12)


def test_the_zero_division_cases_count_zero_as_scikit_learn_does():
    y_true = np.array([[1, 0, 0], [0, 0, 0], [1, 1, 0]])  # class 2 and image 1: nothing true, nothing predicted
    probs = np.array([[0.9, 0.1, 0.2], [0.1, 0.2, 0.3], [0.8, 0.4, 0.1]])
    assert score("f1_macro", y_true, probs) == pytest.approx(1 / 3)  # classes: 1, 0 (a miss), 0 (0/0)
    assert score("f1_samples", y_true, probs) == pytest.approx((1 + 0 + 2 / 3) / 3)
    assert score("f1_micro", y_true, probs) == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))
    assert list(f1_per_class(y_true, probs)) == [1.0, 0.0, 0.0]
    assert average_precision(np.zeros(3, dtype=bool), np.array([0.1, 0.2, 0.3])) == 0.0


def test_thresholds_decide_each_class_with_its_own_cut():
    probs = np.array([[0.3, 0.7], [0.6, 0.4]])
    assert decisions(probs).tolist() == [[False, True], [True, False]]
    assert decisions(probs, np.array([0.25, 0.75])).tolist() == [[True, False], [True, False]]
    assert decisions(np.array([[0.5]])).tolist() == [[True]]  # the score reaches the threshold: predicted


def test_roc_auc_leaves_out_the_classes_without_both_kinds_and_is_nan_without_any():
    y_true = np.array([[1, 1], [0, 1], [1, 1]])  # class 1 has no negative
    probs = np.array([[0.9, 0.2], [0.1, 0.3], [0.8, 0.4]])
    assert score("roc_auc", y_true, probs) == 1.0
    assert math.isnan(score("roc_auc", np.ones((2, 2)), probs[:2]))


def test_log_loss_is_clipped_like_the_single_label_one():
    assert score("log_loss", np.array([[1, 0]]), np.array([[0.0, 1.0]])) == pytest.approx(-math.log(1e-15))


def test_metrics_of_one_kind_refuse_the_other_kind_of_answers_in_one_line():
    with pytest.raises(ClfError, match=r"^--metric accuracy needs one class per image; for multi-label answers "
                                       r"choose one of f1_macro, f1_micro, roc_auc, log_loss, f1_samples, map$"):
        score("accuracy", np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ClfError, match=r"^--metric map needs multi-label answers \(any number of classes per image\)"):
        score("map", np.array([0, 1]), np.eye(2))


def test_every_multilabel_task_metric_has_a_multilabel_form():
    assert all(METRICS[name].multilabel is not None for name in TASK_METRICS["multilabel"])
    assert all(METRICS[name].function is not None for name in TASK_METRICS["single_label"])
    assert METRICS["map"].needs_probabilities and not METRICS["f1_samples"].needs_probabilities
