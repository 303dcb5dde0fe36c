"""clf.serve.score: a submission's accuracy, with duplicated, missing and extra ids handled explicitly."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from clf.errors import ClfError, DataError
from clf.serve.score import read_labels, score_submission


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def answers(tmp_path) -> Path:
    return write(tmp_path / "answers.csv", "id,label\na,cat\nb,dog\nc,cat\nd,fox\ne,cat\nf,dog\ng,fox\nh,cat\n")


def test_accuracy_with_spaces_and_a_bom(answers, tmp_path):
    submission = write(tmp_path / "sub.csv",
                       "\ufeffid , label\nh,cat\ng, fox\nf,cat\ne,dog\nd,fox\nc,dog\nb,dog\na,cat\n")
    result = score_submission(submission, answers)
    assert (result.accuracy, result.rows, result.extra) == (0.625, 8, [])


def test_a_duplicated_id_is_an_error_not_a_different_accuracy(answers, tmp_path):
    """Before: the second row silently replaced the first and the accuracy read 0.5 instead of 0.375."""
    submission = write(tmp_path / "sub.csv",
                       "id,label\na,cat\nb,cat\nc,dog\nd,cat\ne,dog\nf,cat\ng,cat\nh,cat\na,dog\n")
    with pytest.raises(DataError) as err:
        score_submission(submission, answers)
    assert str(err.value) == f"{submission}: line 10: id 'a' is listed twice (also line 2); keep one row per id"
    good = write(tmp_path / "good.csv", "id,label\nx,cat\n")
    twice = write(tmp_path / "answers2.csv", "id,label\nx,cat\n x ,dog\n")  # ids are stripped: the same id
    with pytest.raises(DataError) as err:
        score_submission(good, twice)
    assert str(err.value) == f"{twice}: line 3: id 'x' is listed twice (also line 2); keep one row per id"


def test_extra_ids_are_left_out_with_a_warning(answers, tmp_path, caplog):
    rows = "".join(f"{i},cat\n" for i in "abcdefgh") + "y,cat\nz,dog\n"
    submission = write(tmp_path / "sub.csv", "id,label\n" + rows)
    with caplog.at_level(logging.WARNING, logger="clf"):
        result = score_submission(submission, answers)
    assert (result.accuracy, result.rows, result.extra) == (0.5, 8, ["y", "z"])
    assert caplog.messages == [f"{submission}: 2 ids are not in {answers} (y, z); not scored"]


def test_read_labels_errors(tmp_path):
    empty = write(tmp_path / "empty.csv", "id,label\n")
    with pytest.raises(DataError) as err:
        read_labels(empty, "id", "label")
    assert str(err.value) == f"{empty}: no rows under the header"
    other = write(tmp_path / "other.csv", "id,class\na,x\n")
    with pytest.raises(DataError) as err:
        read_labels(other, "id", "label")
    assert str(err.value) == (f"{other}: no column 'label' (columns: id, class); "
                              "set the column names with --id-col and --label-col")


# ---- --probs: log-loss and ECE ----

SMALL_ANSWERS = "id,label\na,cat\nb,cat\nc,dog\nd,dog\n"
# columns in another order than the answers' classes, an extra class nobody has, rows not summing to 1 (a: x2),
# an id the answers do not have
PROBS = "id,dog,cat,owl\nc,0.62,0.38,0\nzz,0.5,0.5,0\na,0.2,1.8,0\nb,0.9,0.1,0\nd,0.45,0.55,0\n"


@pytest.fixture
def small(tmp_path):
    return (write(tmp_path / "answers.csv", SMALL_ANSWERS),
            write(tmp_path / "sub.csv", "id,label\na,cat\nb,dog\nc,dog\nd,cat\n"))


def test_log_loss_and_ece_from_a_probabilities_file(small, tmp_path):
    answers, submission = small
    result = score_submission(submission, answers, probs=write(tmp_path / "probs.csv", PROBS))
    assert (result.accuracy, result.rows, result.ece_bins) == (0.5, 4, 15)
    # the true class's rescaled probability: a 0.9, b 0.1, c 0.62, d 0.45
    assert result.log_loss == pytest.approx(-(np.log(0.9) + np.log(0.1) + np.log(0.62) + np.log(0.45)) / 4)
    # confidences 0.9 (right), 0.9 (wrong) share a bin; 0.62 (right) and 0.55 (wrong) have one each
    assert result.ece == pytest.approx((2 * abs(0.5 - 0.9) + abs(1 - 0.62) + abs(0 - 0.55)) / 4)
    assert score_submission(submission, answers).log_loss is None  # without --probs: as before


_HINT = "give the CSV `clf infer --probs` wrote"


@pytest.mark.parametrize("text, message", [
    ("id,cat,dog\na,0.9,0.1\nb,0.5,0.5\n",
     ("{probs}: 2 ids of {answers} have no probabilities (c, d); give the --probs file of the same `clf infer` run "
      "as the submission")),
    ("id,cat,fox\na,1,0\nb,1,0\nc,1,0\nd,1,0\n",
     "{probs}: no column for the class 'dog' of {answers} (columns: cat, fox); " + _HINT
     + " (an id column, then one probability column per class)"),
    ("id,label\na,cat\n", "{probs}: no column for the classes 'cat', 'dog' of {answers} (columns: label); " + _HINT),
    ("id,cat,dog\na,0.9,x\n",
     "{probs}: line 2: column 'dog' holds 'x', not a probability (a finite number >= 0); " + _HINT),
    ("id,cat,dog\na,0.9,\n", "{probs}: line 2: column 'dog' holds '', not a probability"),
    ("id,cat,dog\na,-0.1,1.1\n", "{probs}: line 2: column 'cat' holds '-0.1', not a probability"),
    ("id,cat,dog\na,nan,1\n", "{probs}: line 2: column 'cat' holds 'nan', not a probability"),
    ("id,cat,dog\na,inf,1\n", "{probs}: line 2: column 'cat' holds 'inf', not a probability"),
    ("id,cat,dog\na,0,0\n", "{probs}: line 2: every probability of id 'a' is 0; " + _HINT),
    ("id,cat,dog\na,1,0\na,0,1\n", "{probs}: line 3: id 'a' is listed twice (also line 2); keep one row per id"),
    ("id\na\n", "{probs}: only the id column 'id', no class column; " + _HINT),
    ("image,cat,dog\na,1,0\n", "{probs}: no column 'id' (columns: image, cat, dog); set the id column with --id-col"),
])
def test_bad_probabilities_files(small, tmp_path, text, message):
    answers, submission = small
    probs = write(tmp_path / "probs.csv", text)
    with pytest.raises(DataError) as err:
        score_submission(submission, answers, probs=probs)
    assert str(err.value).startswith(message.format(probs=probs, answers=answers))


# ---- issue 24: a column that is no class of the answers or of the submission ----


def test_a_non_class_column_that_would_rescale_the_rows_is_refused(small, tmp_path):
    answers, submission = small
    probs = write(tmp_path / "probs.csv", "id,cat,dog,weight\na,0.9,0.1,0\nb,0.5,0.5,2.5\nc,0.4,0.6,1\nd,0,1,1\n")
    with pytest.raises(DataError) as err:
        score_submission(submission, answers, probs=probs)
    assert str(err.value) == (
        f"{probs}: column 'weight' is no class of {answers} or of the submission, and line 3 (id 'b') sums to 3.5 "
        "with it, not 1: the rows would be rescaled by it; drop it (an id column, then one probability column per "
        "class: cat, dog)")


def test_two_non_class_columns_are_named_together(small, tmp_path):
    answers, submission = small
    probs = write(tmp_path / "probs.csv", "id,cat,dog,w,fold\na,0.5,0.5,1,2\nb,1,0,1,2\nc,0,1,1,2\nd,0,1,1,2\n")
    with pytest.raises(DataError, match=r"columns 'w', 'fold' are no class of .* line 2 \(id 'a'\) sums to 4 with "
                                        r"them, not 1: the rows would be rescaled by them; drop them"):
        score_submission(submission, answers, probs=probs)


def test_a_model_class_nobody_has_is_taken_when_the_rows_sum_to_1(small, tmp_path):
    """`clf infer --probs` of a model with a class neither the answers nor the submission has: scored as before."""
    answers, submission = small
    with_owl = write(tmp_path / "owl.csv", "id,cat,dog,owl\na,0.8,0.1,0.1\nb,0.2,0.7,0.1\nc,0.3,0.6,0.1\n"
                                           "d,0.45,0.45,0.1\n")
    result = score_submission(submission, answers, probs=with_owl)
    assert result.log_loss == pytest.approx(-(np.log(0.8) + np.log(0.2) + np.log(0.6) + np.log(0.45)) / 4)
    # written with 6 significant digits, 1000 classes: the sum is 1 within their rounding
    many = [f"c{k}" for k in range(998)]
    rows = "".join(f"{i},{p},{1 - p - 998 * 1.234567e-05:.6g},{','.join(['1.23457e-05'] * 998)}\n"
                   for i, p in zip("abcd", (0.6, 0.3, 0.2, 0.3)))
    wide = write(tmp_path / "wide.csv", "id,cat,dog," + ",".join(many) + "\n" + rows)
    assert score_submission(submission, answers, probs=wide).log_loss is not None


def test_a_class_of_the_submission_is_a_class(small, tmp_path):
    """A column named as a predicted label is a class even when no answer has it: rows are rescaled as Kaggle does."""
    answers = write(tmp_path / "answers2.csv", "id,label\na,cat\nb,cat\n")
    submission = write(tmp_path / "sub2.csv", "id,label\na,cat\nb,dog\n")
    probs = write(tmp_path / "probs.csv", "id,cat,dog\na,1.8,0.2\nb,0.5,0.5\n")
    assert score_submission(submission, answers, probs=probs).log_loss == pytest.approx(
        -(np.log(0.9) + np.log(0.5)) / 2)


def test_the_competition_metric_of_the_labels_equals_scikit_learns(answers, tmp_path):
    f1_score = pytest.importorskip("sklearn.metrics").f1_score
    submission = write(tmp_path / "sub.csv", "id,label\nh,cat\ng,fox\nf,cat\ne,dog\nd,fox\nc,dog\nb,dog\na,cat\n")
    result = score_submission(submission, answers, metric="f1_macro")
    truth, predicted = read_labels(answers, "id", "label"), read_labels(submission, "id", "label")
    expected = f1_score(list(truth.values()), [predicted[i] for i in truth], average="macro")
    assert (result.metric, result.accuracy) == ("f1_macro", 0.625)
    assert result.metric_value == pytest.approx(expected)
    assert score_submission(submission, answers).metric_value == 0.625  # accuracy, the default metric


def test_roc_auc_comes_from_the_probabilities(small, tmp_path):
    answers, submission = small  # a, b: cat; c, d: dog
    probs = write(tmp_path / "probs.csv", "id,cat,dog\na,0.9,0.1\nb,0.6,0.4\nc,0.3,0.7\nd,0.7,0.3\n")
    result = score_submission(submission, answers, probs=probs, metric="roc_auc")
    assert result.metric_value == 0.75  # dog's probability: c 0.7 and d 0.3 against a 0.1 and b 0.4: 3 of 4 pairs


def test_a_probability_metric_without_probs_is_one_line(small):
    answers, submission = small
    with pytest.raises(ClfError, match=r"^--metric log_loss needs the probabilities: pass --probs PROBS.csv \(what "
                                       r"clf infer --probs writes\)$"):
        score_submission(submission, answers, metric="log_loss")


def test_qwk_needs_classes_named_by_grade(small, tmp_path):
    answers, submission = small
    with pytest.raises(ClfError, match=r"^--metric qwk needs ordered classes: name them by grade \(0, 1, 2, \.\.\.\); "
                                       r"the classes are cat, dog$"):
        score_submission(submission, answers, metric="qwk")
    kappa = pytest.importorskip("sklearn.metrics").cohen_kappa_score
    graded = write(tmp_path / "graded.csv", "id,label\na,0\nb,2\nc,10\nd,10\n")
    guess = write(tmp_path / "guess.csv", "id,label\na,0\nb,10\nc,10\nd,2\n")
    result = score_submission(guess, graded, metric="qwk")  # grades 0 < 2 < 10, not the text order 0, 10, 2
    assert result.metric_value == pytest.approx(kappa([0, 1, 2, 2], [0, 2, 2, 1], weights="quadratic"))


def test_clf_score_prints_the_metric_beside_accuracy(answers, tmp_path):
    from cli_helpers import clf

    submission = write(tmp_path / "sub.csv", "id,label\nh,cat\ng,fox\nf,cat\ne,dog\nd,fox\nc,dog\nb,dog\na,cat\n")
    result = clf("score", submission, answers, "--metric", "balanced_accuracy")
    assert result.exit_code == 0, result.output
    assert " ".join(result.output.split()) == (f"{submission}: accuracy 0.6250, balanced_accuracy 0.6667 on 8 rows "
                                               f"of {answers}")
    bad = clf("score", submission, answers, "--metric", "auc")
    assert bad.exit_code == 2
    assert bad.output.strip() == ("error: --metric must be one of accuracy, balanced_accuracy, f1_macro, f1_micro, "
                                  "roc_auc, log_loss, qwk, f1_samples, map, got 'auc'")


def test_roc_auc_leaves_out_a_model_class_nobody_has(small, tmp_path):
    answers, submission = small
    probs = write(tmp_path / "probs.csv", "id,cat,dog,owl\na,0.9,0.1,0\nb,0.6,0.4,0\nc,0.3,0.7,0\nd,0.7,0.3,0\n")
    assert score_submission(submission, answers, probs=probs, metric="roc_auc").metric_value == 0.75
