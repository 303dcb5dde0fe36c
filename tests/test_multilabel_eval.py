"""`clf eval --task multilabel`: a multi-label model on images tagged by a CSV (space-separated tags): F1s at the
model's thresholds, mAP and per-class AUC equal to scikit-learn's; the one-line refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_helpers import clf, error_line
from clf.probabilities import sigmoid
from multilabel_serve_helpers import CHANNEL_CLASSES, channel_info, channel_logits, channel_model, colour_image
from serve_helpers import brightness_model, cli_state, one_line

sklearn_metrics = pytest.importorskip("sklearn.metrics")

COLOURS = {"a": (255, 0, 0), "b": (255, 0, 255), "c": (0, 0, 0), "d": (160, 140, 255), "e": (200, 255, 90),
           "f": (100, 200, 140)}
TRUTH = {"a": "red", "b": "red blue", "c": "", "d": "red green", "e": "green", "f": "green blue"}
THRESHOLDS = [0.5, 0.8, 0.5]


@pytest.fixture(autouse=True)
def _cli_state():
    with cli_state():
        yield


@pytest.fixture
def tagged(tmp_path):
    folder = tmp_path / "images"
    for name, rgb in COLOURS.items():
        colour_image(folder / f"{name}.png", rgb)
    labels = tmp_path / "labels.csv"
    labels.write_text("id,label\n" + "".join(f"{k},{v}\n" for k, v in TRUTH.items()))
    return folder, labels


def test_eval_multilabel_reports_f1s_map_and_per_class_auc_equal_to_scikit_learn(tagged, tmp_path):
    folder, labels = tagged
    model = channel_model(tmp_path / "m.onnx", channel_info(THRESHOLDS))
    report_path = tmp_path / "report.json"
    result = clf("eval", folder, "--model", model, "--labels-csv", labels, "--task", "multilabel", "--report",
                 report_path, "--device", "cpu")
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    truth = np.array([[c in TRUTH[k].split() for c in CHANNEL_CLASSES] for k in COLOURS], dtype=int)
    probs = sigmoid(np.stack([channel_logits(rgb) for rgb in COLOURS.values()]), np.float64)
    decided = (probs >= np.array(THRESHOLDS)).astype(int)
    for average in ("micro", "macro", "samples"):
        assert report[f"f1_{average}"] == pytest.approx(
            sklearn_metrics.f1_score(truth, decided, average=average, zero_division=0))
    assert report["map"] == pytest.approx(sklearn_metrics.average_precision_score(truth, probs, average="macro"))
    aucs = sklearn_metrics.roc_auc_score(truth, probs, average=None)
    assert [report["per_class"][c]["auc"] for c in CHANNEL_CLASSES] == pytest.approx(aucs)
    assert report["exact_match"] == pytest.approx(sklearn_metrics.accuracy_score(truth, decided))
    assert report["thresholds"] == THRESHOLDS
    assert f"F1 micro {report['f1_micro']:.4f}" in one_line(result.output)


def test_eval_multilabel_refuses_a_single_label_model(tagged, tmp_path):
    folder, labels = tagged
    model = brightness_model(tmp_path / "b.onnx")
    result = clf("eval", folder, "--model", model, "--labels-csv", labels, "--task", "multilabel", "--device", "cpu")
    assert result.exit_code == 2
    assert error_line(result) == (f"error: {model}: a single-label model; --task multilabel evaluates a model "
                                  "exported from a `clf train --task multilabel` run")


def test_eval_multilabel_needs_a_labels_csv_and_names_an_unknown_id(tagged, tmp_path):
    folder, labels = tagged
    model = channel_model(tmp_path / "m.onnx", channel_info(THRESHOLDS))
    result = clf("eval", folder, "--model", model, "--task", "multilabel")
    assert error_line(result) == ("error: --task multilabel reads each image's tags from --labels-csv (class folders "
                                  "give one class per image); pass it")
    labels.write_text(labels.read_text() + "zz,red\n")
    result = clf("eval", folder, "--model", model, "--labels-csv", labels, "--task", "multilabel")
    assert error_line(result) == f"error: {labels}: line 8: no image 'zz' in {folder}"  # as training's reader says
