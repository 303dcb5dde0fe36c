"""clf.tasks: what logits mean (activation, decision rule, losses, metrics), the same on numpy and torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clf.errors import ClfError
from clf.models.outputs import log_scores, scores
from clf.tasks import SINGLE_LABEL, TASKS, get_task

LOGITS = np.array([[1.0, 3.0, 3.0], [0.5, -1.0, 0.0]], dtype=np.float32)


def test_single_label_is_the_default_task():
    assert get_task() is SINGLE_LABEL is get_task("single_label")
    assert list(TASKS) == ["single_label", "multilabel"]
    assert (SINGLE_LABEL.activation, SINGLE_LABEL.loss, SINGLE_LABEL.mixed_loss) == (
        "softmax", "cross_entropy", "soft_target_cross_entropy")
    assert SINGLE_LABEL.metrics == ("accuracy", "log_loss", "ece")


def test_an_unknown_task_is_refused_naming_the_known_ones():
    with pytest.raises(ClfError, match="^task 'multi_label': unknown; choose one of single_label, multilabel$"):
        get_task("multi_label")


def test_scores_are_softmax_probabilities_in_the_dtype_asked():
    probs = SINGLE_LABEL.scores(LOGITS)
    assert probs.dtype == np.float32 and np.allclose(probs.sum(axis=1), 1.0)
    exact = SINGLE_LABEL.scores(LOGITS, np.float64)
    assert exact.dtype == np.float64
    assert np.allclose(np.log(exact), SINGLE_LABEL.log_scores(LOGITS), atol=1e-6)


def test_torch_scores_match_numpy_scores():
    tensor = torch.from_numpy(LOGITS)
    assert np.allclose(scores(SINGLE_LABEL, tensor).numpy(), SINGLE_LABEL.scores(LOGITS), atol=1e-6)
    assert np.allclose(log_scores(SINGLE_LABEL, tensor).numpy(), SINGLE_LABEL.log_scores(LOGITS), atol=1e-6)


def test_the_decision_is_the_arg_max_with_ties_to_the_lower_index_on_numpy_and_torch():
    assert SINGLE_LABEL.decide(LOGITS).tolist() == [1, 0]
    assert SINGLE_LABEL.decide(torch.from_numpy(LOGITS)).tolist() == [1, 0]
    assert SINGLE_LABEL.decide(np.zeros((0, 3), np.float32)).dtype == np.int64
    assert SINGLE_LABEL.correct(LOGITS, np.array([1, 2])).tolist() == [True, False]
    assert SINGLE_LABEL.ranked(LOGITS, 2).tolist() == [[1, 2], [0, 2]]
    assert SINGLE_LABEL.ranked(LOGITS, 9).shape == (2, 3)


def test_a_row_holding_nan_agrees_with_nothing():
    broken = LOGITS.copy()
    broken[0, 0] = np.nan
    assert SINGLE_LABEL.agree(LOGITS, LOGITS).tolist() == [True, True]
    assert SINGLE_LABEL.agree(broken, broken).tolist() == [False, True]


# ---------------------------------------------------------------- multi-label


def test_multilabel_task_decides_each_class_by_its_sigmoid_threshold():
    from clf.probabilities import logit
    from clf.tasks import MULTILABEL

    probs = np.array([[0.9, 0.2, 0.55], [0.1, 0.7, 0.45]])
    logits = logit(probs).astype(np.float32)
    assert get_task("multilabel") is MULTILABEL
    assert MULTILABEL.decide(logits).tolist() == [[True, False, True], [False, True, False]]
    tuned = MULTILABEL.with_thresholds([0.95, 0.1, 0.4])
    assert tuned.decide(logits).tolist() == [[False, True, True], [False, True, True]]
    assert MULTILABEL.thresholds is None  # with_thresholds leaves the registered task alone
    np.testing.assert_allclose(MULTILABEL.scores(logits), probs, atol=1e-6)


def test_multilabel_decision_agrees_between_numpy_and_torch():
    import torch

    from clf.tasks import MULTILABEL

    logits = np.random.default_rng(0).normal(size=(16, 5)).astype(np.float32)
    task = MULTILABEL.with_thresholds([0.3, 0.5, 0.7, 0.2, 0.9])
    assert (task.decide(torch.from_numpy(logits)).numpy() == task.decide(logits)).all()


def test_multilabel_correct_is_exact_match_and_agreement_counts_every_class():
    from clf.tasks import MULTILABEL

    logits = np.array([[3.0, -3.0], [3.0, 3.0], [np.nan, 1.0]], dtype=np.float32)
    assert MULTILABEL.correct(logits, np.array([[1, 0], [1, 0], [0, 1]])).tolist() == [True, False, False]
    other = np.array([[3.0, -3.0], [3.0, -3.0], [np.nan, 1.0]], dtype=np.float32)
    assert MULTILABEL.agree(logits, other).tolist() == [True, False, False]  # a NaN row agrees with nothing
    assert MULTILABEL.label_agreement(logits, other) == pytest.approx(3 / 6)


def test_multilabel_thresholds_must_be_one_per_class():
    from clf.tasks import MULTILABEL

    with pytest.raises(ClfError, match="2 thresholds for 3 classes"):
        MULTILABEL.with_thresholds([0.5, 0.5]).decide(np.zeros((1, 3), dtype=np.float32))
