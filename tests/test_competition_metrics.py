"""clf.metrics: each competition metric equals scikit-learn's on the same labels and probabilities."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clf.choices import TASK_METRICS
from clf.errors import ClfError
from clf.metrics import METRICS, check_ordered_classes, class_order, score

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def sklearn_value(name: str, y_true: np.ndarray, probs: np.ndarray) -> float:
    pred, classes = probs.argmax(axis=1), probs.shape[1]
    if name == "accuracy":
        return sklearn_metrics.accuracy_score(y_true, pred)
    if name == "balanced_accuracy":
        return sklearn_metrics.balanced_accuracy_score(y_true, pred)
    if name in ("f1_macro", "f1_micro"):
        return sklearn_metrics.f1_score(y_true, pred, average=name[3:])
    if name == "roc_auc":
        if classes == 2:
            return sklearn_metrics.roc_auc_score(y_true, probs[:, 1])
        return sklearn_metrics.roc_auc_score(y_true, probs, multi_class="ovr", average="macro")
    if name == "log_loss":
        return sklearn_metrics.log_loss(y_true, probs, labels=list(range(classes)))
    assert name == "qwk"
    return sklearn_metrics.cohen_kappa_score(y_true, pred, weights="quadratic", labels=list(range(classes)))


def random_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels that hold every class (roc_auc needs them) and probabilities that agree with them more than chance."""
    rng = np.random.default_rng(seed)
    classes, n = int(rng.integers(2, 7)), int(rng.integers(20, 80))
    y_true = np.r_[np.arange(classes), rng.integers(0, classes, n - classes)]
    logits = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[y_true] * rng.random()
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y_true, probs


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("name", TASK_METRICS["single_label"])
def test_each_metric_equals_scikit_learns(name, seed):
    y_true, probs = random_case(seed)
    assert score(name, y_true, probs) == pytest.approx(sklearn_value(name, y_true, probs), abs=1e-9)


def test_hand_checked_small_cases():
    y_true = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]])  # one mistake: sample 1
    assert score("accuracy", y_true, probs) == 0.75
    assert score("balanced_accuracy", y_true, probs) == 0.75  # recalls 1/2 and 2/2
    assert score("f1_macro", y_true, probs) == pytest.approx((2 / 3 + 0.8) / 2)  # F1 of class 0: 2/3, class 1: 4/5
    assert score("roc_auc", y_true, probs) == 1.0  # every positive above every negative on class 1's probability
    assert score("log_loss", y_true, probs) == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.7, 0.8])))
    grades = np.array([0, 1, 2, 2])
    one_off = np.eye(3)[[0, 1, 1, 2]]  # one sample a grade too low
    assert score("qwk", grades, one_off) == pytest.approx(sklearn_metrics.cohen_kappa_score(
        grades, [0, 1, 1, 2], weights="quadratic"))


def test_direction_and_what_each_metric_needs():
    assert not METRICS["log_loss"].higher_is_better
    assert all(m.higher_is_better for name, m in METRICS.items() if name != "log_loss")
    assert {name for name, m in METRICS.items() if m.needs_probabilities} == {"roc_auc", "log_loss", "map"}
    assert {name for name, m in METRICS.items() if m.needs_ordered_classes} == {"qwk"}


def test_roc_auc_is_nan_when_a_class_has_no_sample():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    assert math.isnan(score("roc_auc", np.array([0, 1]), probs))


def test_qwk_orders_classes_by_their_grade_not_their_folder_order():
    classes = ["0", "10", "2"]  # folder order: 0, 10, 2 -> grades 0, 2, 1 by index
    assert class_order(classes) == [0, 2, 1]
    y_true = np.array([0, 1, 2])  # grades 0, 10, 2
    probs = np.eye(3)[[0, 2, 2]]  # grade 10 predicted as 2: one grade off
    expected = sklearn_metrics.cohen_kappa_score([0, 2, 1], [0, 1, 1], weights="quadratic")
    assert score("qwk", y_true, probs, classes) == pytest.approx(expected)


def test_qwk_on_unordered_classes_is_one_line():
    with pytest.raises(ClfError, match=r"^--metric qwk needs ordered classes: name them by grade \(0, 1, 2, \.\.\.\); "
                                       r"the classes are cat, dog$"):
        check_ordered_classes("qwk", ["cat", "dog"])
    check_ordered_classes("accuracy", ["cat", "dog"])


def test_an_unknown_metric_names_the_choices():
    with pytest.raises(ClfError, match="^--metric must be one of accuracy, balanced_accuracy, f1_macro, f1_micro, "
                                       "roc_auc, log_loss, qwk, f1_samples, map, got 'auc'$"):
        score("auc", np.array([0]), np.array([[1.0]]))


def test_the_choices_list_the_registry_in_its_order():
    from clf.choices import COMPETITION_METRICS

    assert COMPETITION_METRICS == tuple(METRICS)
