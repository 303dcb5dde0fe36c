"""clf.thresholds: per-class thresholds maximising each class's F1 on held-out scores, ties closest to 0.5."""

from __future__ import annotations

import numpy as np
import pytest

from clf.metrics_multilabel import f1_per_class
from clf.thresholds import tune_class_threshold, tune_thresholds


def brute_force_best_f1(positive: np.ndarray, scores: np.ndarray) -> float:
    """The best F1 any cut reaches: deciding at each observed score (and above them all)."""
    best = 0.0
    for cut in [*np.unique(scores), np.inf]:
        predicted = scores >= cut
        tp = np.sum(predicted & positive)
        denominator = predicted.sum() + positive.sum()
        best = max(best, 2 * tp / denominator if denominator else 0.0)
    return best


@pytest.mark.parametrize("seed", range(10))
def test_each_class_reaches_the_best_f1_any_cut_gives(seed):
    rng = np.random.default_rng(seed)
    y_true = (rng.random((40, 4)) < 0.3).astype(np.uint8)
    probs = np.round(1 / (1 + np.exp(-(rng.normal(size=(40, 4)) + 2 * (y_true - 0.5)))), 2)  # ties included
    thresholds = tune_thresholds(y_true, probs)
    reached = f1_per_class(y_true, probs, thresholds)
    for c in range(4):
        assert reached[c] == pytest.approx(brute_force_best_f1(y_true[:, c] > 0, probs[:, c]))
    assert reached.mean() >= f1_per_class(y_true, probs).mean()  # never worse than 0.5 on the data it was tuned on


def test_a_cut_lies_between_the_scores_it_separates():
    positive = np.array([True, True, False, False])
    scores = np.array([0.9, 0.8, 0.3, 0.1])
    assert tune_class_threshold(positive, scores) == 0.5  # every cut in (0.3, 0.8] separates them: 0.5 is one
    low = np.array([0.2, 0.15, 0.1, 0.05])
    assert tune_class_threshold(positive, low) == pytest.approx(0.125)  # the midpoint between 0.15 and 0.1


def test_ties_go_to_the_cut_closest_to_one_half():
    positive = np.array([True, False, False, True])
    scores = np.array([0.9, 0.8, 0.2, 0.1])
    # F1 2/3 at the cut 0.85 (one hit) and below 0.1 (every image), less in between: 0.85 is closer to 0.5
    assert tune_class_threshold(positive, scores) == pytest.approx(0.85)


def test_a_class_without_positives_and_an_empty_set_keep_one_half():
    assert tune_class_threshold(np.zeros(3, dtype=bool), np.array([0.2, 0.6, 0.9])) == 0.5
    assert tune_thresholds(np.zeros((0, 3)), np.zeros((0, 3))).tolist() == [0.5, 0.5, 0.5]


def test_shapes_must_match():
    with pytest.raises(ValueError, match="both must be"):
        tune_thresholds(np.zeros((2, 3)), np.zeros((2, 2)))
