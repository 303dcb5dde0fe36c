"""`clf eval --task multilabel`: a multi-label model on images tagged by a CSV (space-separated tags): F1s at the
model's thresholds, mAP and per-class AUC equal to scikit-learn's; with --tta, the scores without and with the views'
averaged sigmoid probabilities; the one-line refusals."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from cli_helpers import clf, error_line
from clf.probabilities import sigmoid
from clf.serve.metadata import info_to_props
from multilabel_serve_helpers import SLOPE, CHANNEL_CLASSES, channel_info, channel_logits, channel_model, colour_image
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


# ---- --tta ----

# (left half, right half) RGB of each image and its tags: the left-half model below sees the right half only through
# the flipped view, so hflip TTA changes some decisions (q, r: fixed; t: lost) at the channel model's thresholds.
HALVES = {"p": ((230, 30, 30), (230, 30, 30)), "q": ((160, 30, 30), (30, 30, 30)), "r": ((30, 30, 100), (30, 30, 230)),
          "s": ((30, 230, 30), (30, 230, 30)), "t": ((30, 160, 30), (30, 100, 30))}
HALF_TRUTH = {"p": "red", "q": "", "r": "blue", "s": "green", "t": "green"}


def left_half_model(path, info):
    """The channel model on the left half of the image only: logits[c] = SLOPE * (mean of channel c there - 0.5)."""
    from onnx import TensorProto, helper, numpy_helper

    height, width = info.preprocess.size
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, height, width])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])
    nodes = [helper.make_node("Slice", ["input", "start", "half_width", "width_axis"], ["left"]),
             helper.make_node("ReduceMean", ["left"], ["means"], axes=[2, 3], keepdims=0),
             helper.make_node("Sub", ["means", "half"], ["shifted"]),
             helper.make_node("Mul", ["shifted", "slope"], ["logits"])]
    constants = [numpy_helper.from_array(np.array([0], np.int64), "start"),
                 numpy_helper.from_array(np.array([width // 2], np.int64), "half_width"),
                 numpy_helper.from_array(np.array([3], np.int64), "width_axis"),
                 numpy_helper.from_array(np.array(0.5, np.float32), "half"),
                 numpy_helper.from_array(np.array(SLOPE, np.float32), "slope")]
    model = helper.make_model(helper.make_graph(nodes, "left-half", [x], [y], initializer=constants),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    helper.set_model_props(model, info_to_props(info))
    onnx.save(model, str(path))
    return path


def test_eval_multilabel_with_tta_averages_the_views_sigmoid_probabilities(tmp_path):
    import cv2
    import onnxruntime as ort

    folder = tmp_path / "images"
    folder.mkdir()
    for name, (left, right) in HALVES.items():
        bgr = np.zeros((16, 16, 3), np.uint8)  # the model's input size: no resize blends the halves
        bgr[:, :8], bgr[:, 8:] = left[::-1], right[::-1]
        assert cv2.imwrite(str(folder / f"{name}.png"), bgr)
    labels = tmp_path / "labels.csv"
    labels.write_text("id,label\n" + "".join(f"{k},{v}\n" for k, v in HALF_TRUTH.items()))
    model = left_half_model(tmp_path / "m.onnx", channel_info(THRESHOLDS))
    report_path = tmp_path / "report.json"
    result = clf("eval", folder, "--model", model, "--labels-csv", labels, "--task", "multilabel", "--tta", "hflip",
                 "--report", report_path, "--device", "cpu")
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    batch = np.stack([cv2.imread(str(folder / f"{k}.png"))[..., ::-1].transpose(2, 0, 1) / 255.0
                      for k in HALVES]).astype(np.float32)
    plain = sigmoid(session.run(None, {"input": batch})[0], np.float64)
    flipped = sigmoid(session.run(None, {"input": np.ascontiguousarray(batch[..., ::-1])})[0], np.float64)
    truth = np.array([[c in HALF_TRUTH[k].split() for c in CHANNEL_CLASSES] for k in HALVES], dtype=int)
    assert report["tta"]["views"] == "hflip"
    for key, probs in (("without", plain), ("with", (plain + flipped) / 2)):
        decided = (probs >= np.array(THRESHOLDS)).astype(int)
        for average in ("micro", "macro", "samples"):
            assert report["tta"][key][f"f1_{average}"] == pytest.approx(
                sklearn_metrics.f1_score(truth, decided, average=average, zero_division=0)), (key, average)
        assert report["tta"][key]["map"] == pytest.approx(
            sklearn_metrics.average_precision_score(truth, probs, average="macro"))
        assert report["tta"][key]["exact_match"] == pytest.approx(sklearn_metrics.accuracy_score(truth, decided))
    assert report["tta"]["with"]["f1_micro"] != report["tta"]["without"]["f1_micro"]  # the views decided otherwise
    assert {k: report[k] for k in report["tta"]["with"]} == report["tta"]["with"]  # the headline numbers are TTA's
    text = one_line(result.output)
    assert "with hflip TTA on 5 images" in text
    assert f"F1 micro {report['tta']['without']['f1_micro']:.4f} → {report['tta']['with']['f1_micro']:.4f}" in text
