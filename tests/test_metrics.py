"""clf.serve.metrics: a hand-checked report, zero-division rules, the confusion PNG."""

from __future__ import annotations

import json

import cv2
import pytest

from clf.serve.metrics import classification_report, confusion_matrix, save_confusion_png

CLASSES = ["a", "b", "c"]
# true a a a b b c / pred a a b b c c
Y_TRUE = [0, 0, 0, 1, 1, 2]
Y_PRED = [0, 0, 1, 1, 2, 2]


def test_hand_checked_report():
    report = classification_report(Y_TRUE, Y_PRED, CLASSES)
    assert report["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["num_samples"] == 6
    assert report["classes"] == CLASSES
    per = report["per_class"]
    assert per["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert per["b"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert per["c"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert report["macro_avg"] == pytest.approx(
        {"precision": 2 / 3, "recall": 13 / 18, "f1": (0.8 + 0.5 + 2 / 3) / 3, "support": 6}
    )
    assert report["weighted_avg"] == pytest.approx(
        {"precision": 0.75, "recall": 4 / 6, "f1": (3 * 0.8 + 2 * 0.5 + 2 / 3) / 6, "support": 6}
    )
    json.dumps(report)  # plain Python numbers only


def test_zero_division_is_zero():
    # class "c" never appears and is never predicted; "b" is never predicted.
    report = classification_report([0, 1], [0, 0], CLASSES)
    assert report["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert report["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert report["per_class"]["a"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert report["accuracy"] == 0.5


def test_empty_input():
    report = classification_report([], [], CLASSES)
    assert report["accuracy"] == 0.0 and report["num_samples"] == 0
    assert report["confusion_matrix"] == [[0, 0, 0]] * 3


def test_bad_input():
    with pytest.raises(ValueError, match="y_true has 2 labels but y_pred has 1"):
        classification_report([0, 1], [0], CLASSES)
    with pytest.raises(ValueError, match=r"y_pred has class indices outside 0..2"):
        confusion_matrix([0], [3], 3)


def test_confusion_png(tmp_path):
    path = save_confusion_png([[2, 1, 0], [0, 1, 1], [0, 0, 1]], CLASSES, tmp_path / "plots" / "confusion.png")
    assert path == tmp_path / "plots" / "confusion.png"
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] >= 300 and image.shape[2] == 3
    assert [p.name for p in path.parent.iterdir()] == ["confusion.png"]  # no temp file left
    with pytest.raises(ValueError, match=r"matrix has shape \(2, 2\), expected \(3, 3\)"):
        save_confusion_png([[1, 0], [0, 1]], CLASSES, tmp_path / "x.png")
