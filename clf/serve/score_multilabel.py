"""`clf score --task multilabel`: a submission of space-separated tags (Kaggle's multi-label format) against the
answers: exact match, F1 micro / macro / samples and each class's precision, recall, F1 and support. No torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clf.errors import DataError
from clf.serve.multilabel_metrics import f1s, per_class
from clf.serve.score import check_every_answer_predicted


@dataclass(frozen=True)
class ClassScore:
    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class MultilabelScore:
    """Scores over the answers' rows; `extra`: submission ids the answers do not have (not scored, warned).
    `classes`: every tag either file names, sorted; a class only the submission names scores F1 0 (nobody holds it)."""

    rows: int
    exact_match: float
    f1_micro: float
    f1_macro: float
    f1_samples: float
    classes: list[ClassScore]
    extra: list[str]


def split_tags(label: str) -> list[str]:
    """A label cell's tags: split on whitespace ("a  b" is a, b); an empty cell holds no tag."""
    return label.split()


def multi_hot(rows: list[list[str]], classes: list[str]) -> np.ndarray:
    """bool [N, C]: row i holds class c."""
    index = {name: c for c, name in enumerate(classes)}
    hot = np.zeros((len(rows), len(classes)), bool)
    for i, tags in enumerate(rows):
        hot[i, [index[t] for t in tags]] = True
    return hot


def score_multilabel(submission: str | Path, answers: str | Path, id_col: str = "id",
                     label_col: str = "label") -> MultilabelScore:
    """Score a multi-label submission against the answers (same id/label columns; tags space-separated).

    An empty answer is an image with no tag (a real answer in multi-label competitions), scored like any other.

    Raises:
        DataError: as `clf score`'s reading (missing file or column, an id twice), the submission is the answers
            file, or an id of the answers has no prediction.
    """
    from clf.serve.score import read_labels, same_file

    if same_file(submission, answers):
        raise DataError(f"{submission}: is also the answers file; score a submission against other answers")
    predicted = read_labels(submission, id_col, label_col)
    truth = read_labels(answers, id_col, label_col)
    extra = check_every_answer_predicted(submission, answers, predicted, truth)
    true_tags = [split_tags(label) for label in truth.values()]
    predicted_tags = [split_tags(predicted[i]) for i in truth]
    classes = sorted({t for tags in true_tags + predicted_tags for t in tags})
    y_true, decided = multi_hot(true_tags, classes), multi_hot(predicted_tags, classes)
    scores = f1s(y_true, decided)
    table = per_class(y_true, decided)
    return MultilabelScore(
        rows=len(truth), exact_match=float((y_true == decided).all(axis=1).mean()) if len(truth) else 0.0,
        f1_micro=scores["f1_micro"], f1_macro=scores["f1_macro"], f1_samples=scores["f1_samples"],
        classes=[ClassScore(name, float(p), float(r), float(f), int(s)) for name, p, r, f, s in
                 zip(classes, table.precision, table.recall, table.f1, table.support)],
        extra=extra,
    )
