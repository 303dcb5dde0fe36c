"""`clf score --task multilabel` (space-separated tags: F1 micro/macro/samples, exact match, the per-class table) and
the serve-side multi-label metrics, each equal to scikit-learn's."""

from __future__ import annotations

import numpy as np
import pytest

from cli_helpers import clf, error_line
from clf.serve import multilabel_metrics as mm
from clf.serve.score_multilabel import score_multilabel
from serve_helpers import cli_state, one_line

sklearn_metrics = pytest.importorskip("sklearn.metrics")

ANSWERS = "id,label\na,cat dog\nb,dog\nc,\nd,sky cat\ne,tree\n"
SUBMISSION = "id,label\ne,tree cat\nd,cat  sky\nc,dog\nb,dog\na,cat\nz,cat\n"  # z: not in the answers


@pytest.fixture(autouse=True)
def _cli_state():
    with cli_state():
        yield


@pytest.fixture
def files(tmp_path):
    answers, submission = tmp_path / "answers.csv", tmp_path / "sub.csv"
    answers.write_text(ANSWERS)
    submission.write_text(SUBMISSION)
    return submission, answers


def _sklearn_inputs():
    classes = ["cat", "dog", "sky", "tree"]
    truth = [["cat", "dog"], ["dog"], [], ["sky", "cat"], ["tree"]]
    predicted = [["cat"], ["dog"], ["dog"], ["cat", "sky"], ["tree", "cat"]]
    hot = lambda rows: np.array([[c in r for c in classes] for r in rows], dtype=int)  # noqa: E731
    return classes, hot(truth), hot(predicted)


def test_score_multilabel_equals_scikit_learn(files):
    result = score_multilabel(*files)
    classes, y_true, y_pred = _sklearn_inputs()
    f1 = sklearn_metrics.f1_score
    assert result.f1_micro == pytest.approx(f1(y_true, y_pred, average="micro"))
    assert result.f1_macro == pytest.approx(f1(y_true, y_pred, average="macro", zero_division=0))
    assert result.f1_samples == pytest.approx(f1(y_true, y_pred, average="samples", zero_division=0))
    assert result.exact_match == pytest.approx(sklearn_metrics.accuracy_score(y_true, y_pred))
    p, r, f, s = sklearn_metrics.precision_recall_fscore_support(y_true, y_pred, zero_division=0)
    assert [c.name for c in result.classes] == classes
    np.testing.assert_allclose([[c.precision, c.recall, c.f1, c.support] for c in result.classes],
                               np.stack([p, r, f, s], axis=1))
    assert (result.rows, result.extra) == (5, ["z"])


def test_clf_score_task_multilabel_prints_the_f1s_and_the_per_class_table(files):
    submission, answers = files
    result = clf("score", submission, answers, "--task", "multilabel")
    assert result.exit_code == 0, result.output
    expected = score_multilabel(submission, answers)
    text = one_line(result.output)
    assert (f"F1 micro {expected.f1_micro:.4f}, macro {expected.f1_macro:.4f}, samples {expected.f1_samples:.4f}, "
            f"exact match 0.4000 on 5 rows") in text
    assert "cat 0.6667 1.0000 0.8000 2" in one_line(text.replace("│", " "))  # class, precision, recall, F1, support


def test_clf_score_multilabel_refuses_probs_and_another_metric(files, tmp_path):
    submission, answers = files
    result = clf("score", submission, answers, "--task", "multilabel", "--metric", "f1_macro")
    assert error_line(result) == ("error: --metric f1_macro with --task multilabel: the multi-label score reports "
                                  "F1 micro, macro and samples (and per class) already; leave out --metric")
    result = clf("score", submission, answers, "--task", "multilabel", "--probs", submission)
    assert error_line(result) == ("error: --probs with --task multilabel is not supported yet; score the tags without "
                                  "it, or run `clf eval` on the labelled images for mAP and AUC")


def test_a_missing_prediction_is_one_line(files, tmp_path):
    _, answers = files
    short = tmp_path / "short.csv"
    short.write_text("id,label\na,cat\n")
    result = clf("score", short, answers, "--task", "multilabel")
    assert result.exit_code == 2
    assert error_line(result) == f"error: {short}: 4 ids of {answers} have no prediction (e.g. b)"


def test_ranking_metrics_equal_scikit_learn():
    rng = np.random.default_rng(1)
    truth = rng.random((40, 5)) < 0.3
    truth[0, :] = True  # every class has a positive
    scores = np.round(rng.random((40, 5)), 1)  # rounded: ties
    for c in range(5):
        assert mm.average_precision(truth[:, c], scores[:, c]) == pytest.approx(
            sklearn_metrics.average_precision_score(truth[:, c], scores[:, c]))
        assert mm.binary_auc(truth[:, c], scores[:, c]) == pytest.approx(
            sklearn_metrics.roc_auc_score(truth[:, c], scores[:, c]))
    assert mm.mean_average_precision(truth, scores) == pytest.approx(
        sklearn_metrics.average_precision_score(truth, scores, average="macro"))
    assert np.isnan(mm.binary_auc(np.zeros(4, bool), np.arange(4.0)))
