"""clf.serve.score: a submission's accuracy, with duplicated, missing and extra ids handled explicitly."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from clf.errors import DataError
from clf.serve.score import read_labels, score_submission


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def answers(tmp_path) -> Path:
    return write(tmp_path / "answers.csv", "id,label\na,cat\nb,dog\nc,cat\nd,fox\ne,cat\nf,dog\ng,fox\nh,cat\n")


def test_accuracy_with_spaces_and_a_bom(answers, tmp_path):
    submission = write(tmp_path / "sub.csv", "\ufeffid , label\nh,cat\ng, fox\nf,cat\ne,dog\nd,fox\nc,dog\nb,dog\na,cat\n")
    result = score_submission(submission, answers)
    assert (result.accuracy, result.rows, result.extra) == (0.625, 8, [])


def test_a_duplicated_id_is_an_error_not_a_different_accuracy(answers, tmp_path):
    """Before: the second row silently replaced the first and the accuracy read 0.5 instead of 0.375."""
    submission = write(tmp_path / "sub.csv", "id,label\na,cat\nb,cat\nc,dog\nd,cat\ne,dog\nf,cat\ng,cat\nh,cat\na,dog\n")
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
