"""A multi-label model deployed: its task and thresholds in the ONNX metadata, the Predictor deciding tags with them,
TTA averaging sigmoid probabilities, `clf infer` writing Kaggle's space-separated tags, the HTTP answer. The channel
model's tags are known by hand: a colour channel above half lights its class."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import clf, error_line
from clf.errors import DataError
from clf.probabilities import logit, sigmoid
from clf.serve.http_api import prediction
from clf.serve.metadata import KEY_TASK, KEY_THRESHOLDS, info_from_props, info_to_props
from clf.serve.predictor import Predictor
from clf.serve.tta_views import average_views
from clf.tasks import MULTILABEL, SINGLE_LABEL
from multilabel_serve_helpers import CHANNEL_CLASSES, channel_info, channel_logits, channel_model, colour_image
from serve_helpers import brightness_model, cli_state, plain_info, read_csv

# name -> RGB; channel means 255 -> logit 10, 0 -> -10, 160 -> 2.55 (p 0.928), 140 -> 0.98 (p 0.727)
COLOURS = {"a": (255, 0, 0), "b": (255, 0, 255), "c": (0, 0, 0), "d": (160, 140, 255), "e": (255, 255, 255)}
THRESHOLDS = [0.5, 0.8, 0.5]  # green needs p >= 0.8: "d" (p 0.727) loses its green tag
TAGS_AT_HALF = {"a": "red", "b": "red blue", "c": "", "d": "red green blue", "e": "red green blue"}
TAGS_TUNED = {**TAGS_AT_HALF, "d": "red blue"}


@pytest.fixture(autouse=True)
def _cli_state():
    with cli_state():
        yield


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("colours")
    for name, rgb in COLOURS.items():
        colour_image(folder / f"{name}.png", rgb)
    return folder


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> Path:
    return channel_model(tmp_path_factory.mktemp("tuned") / "tuned.onnx", channel_info(THRESHOLDS))


@pytest.fixture(scope="module")
def at_half(tmp_path_factory) -> Path:
    return channel_model(tmp_path_factory.mktemp("half") / "half.onnx", channel_info(None))


# ---- metadata ----


def test_multilabel_metadata_round_trips_with_its_task_and_thresholds():
    info = channel_info(THRESHOLDS)
    props = info_to_props(info)
    assert props[KEY_TASK] == "multilabel"
    assert json.loads(props[KEY_THRESHOLDS]) == THRESHOLDS
    assert info_from_props(props, "m.onnx") == info


def test_single_label_metadata_is_what_it_always_was_and_a_missing_task_is_single_label():
    props = info_to_props(plain_info())
    assert KEY_TASK not in props and KEY_THRESHOLDS not in props
    assert info_from_props(props, "m.onnx").task == "single_label"
    no_thresholds = info_from_props(info_to_props(channel_info(None)), "m.onnx")
    assert (no_thresholds.task, no_thresholds.thresholds) == ("multilabel", None)


@pytest.mark.parametrize("changes, message", [
    ({KEY_TASK: "detection"}, "m.onnx: corrupt clf metadata (clf.task: unknown task 'detection'; this clf knows "
                              "single_label, multilabel; made by a newer clf? upgrade clf)"),
    ({KEY_THRESHOLDS: "[0.5, 0.5]"}, "m.onnx: corrupt clf metadata (clf.thresholds holds 2 values for 3 classes; "
                                     "one per class)"),
    ({KEY_THRESHOLDS: "[0.5, 1.5, 0.5]"}, "m.onnx: corrupt clf metadata (clf.thresholds: must be a JSON list of "
                                          "numbers between 0 and 1)"),
    ({KEY_THRESHOLDS: "[0.5, NaN, 0.5]"}, "m.onnx: corrupt clf metadata (clf.thresholds: must be a JSON list of "
                                          "numbers between 0 and 1)"),
    ({KEY_TASK: "", KEY_THRESHOLDS: "[0.5, 0.5, 0.5]"},
     "m.onnx: corrupt clf metadata (clf.thresholds on a single-label model; thresholds decide multi-label classes "
     "only)"),
])
def test_bad_task_metadata_is_one_line_naming_the_key(changes, message):
    props = {**info_to_props(channel_info(THRESHOLDS)), **changes}
    with pytest.raises(DataError) as caught:
        info_from_props(props, "m.onnx")
    assert str(caught.value) == message


# ---- Predictor ----


def test_predictor_decides_tags_at_the_metadata_thresholds(tuned, at_half, images):
    paths = [images / f"{name}.png" for name in COLOURS]
    result = Predictor(tuned, device="cpu").predict(paths)
    assert result.task.multilabel and result.task.thresholds == tuple(THRESHOLDS)
    assert result.labels() == list(TAGS_TUNED.values())
    assert result.tags()[1] == ["red", "blue"]
    expected = np.stack([channel_logits(rgb) for rgb in COLOURS.values()])
    np.testing.assert_allclose(result.logits, expected, atol=1e-4)
    np.testing.assert_allclose(result.probs(), sigmoid(expected), atol=1e-5)  # sigmoid, not softmax
    assert Predictor(at_half, device="cpu").predict(paths).labels() == list(TAGS_AT_HALF.values())


def test_a_single_label_model_keeps_its_task(tmp_path):
    predictor = Predictor(brightness_model(tmp_path / "b.onnx"), device="cpu")
    assert predictor.task is SINGLE_LABEL


def test_tta_of_a_multilabel_model_averages_sigmoid_probabilities():
    rng = np.random.default_rng(0)
    views = [rng.normal(0, 8, (5, 4)).astype(np.float32) for _ in range(3)]
    views[0][0, 0], views[1][0, 0], views[2][0, 0] = 90.0, -95.0, 80.0  # saturated sigmoids stay finite
    averaged = average_views(views, MULTILABEL)
    mean_p = np.mean([sigmoid(v, np.float64) for v in views], axis=0)
    np.testing.assert_allclose(averaged, logit(mean_p, eps=1e-12), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(sigmoid(averaged, np.float64), mean_p, atol=1e-6)
    assert np.isfinite(averaged).all()


def test_predictor_tta_on_a_multilabel_model_is_the_views_mean_probability(tuned, images):
    paths = [images / f"{name}.png" for name in COLOURS]
    result = Predictor(tuned, device="cpu", tta="hvflip").predict(paths)
    # a uniform image looks the same flipped: the mean of equal probabilities is that probability
    np.testing.assert_allclose(result.logits, result.plain_logits, atol=1e-4)
    assert result.labels() == list(TAGS_TUNED.values())


# ---- clf infer ----


def test_infer_writes_space_separated_tags_and_sigmoid_probabilities(tuned, images, tmp_path):
    out, probs = tmp_path / "sub.csv", tmp_path / "probs.csv"
    result = clf("infer", images, "--model", tuned, "--csv", out, "--probs", probs, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert read_csv(out) == [["id", "label"], *([name, tags] for name, tags in TAGS_TUNED.items())]
    assert (out.read_text().splitlines()[3]) == "c,"  # no tag: an empty label cell
    table = read_csv(probs)
    assert table[0] == ["id", *CHANNEL_CLASSES]
    values = np.array([[float(v) for v in row[1:]] for row in table[1:]])
    expected = sigmoid(np.stack([channel_logits(rgb) for rgb in COLOURS.values()]), np.float64)
    np.testing.assert_allclose(values, expected, rtol=1e-4, atol=1e-6)


def test_infer_keeps_a_sample_submissions_order_for_tags(tuned, images, tmp_path):
    sample = tmp_path / "sample.csv"
    sample.write_text("id,label\ne,x\nc,x\nb,x\na,x\nd,x\n")
    out = tmp_path / "sub.csv"
    result = clf("infer", images, "--model", tuned, "--csv", out, "--sample-submission", sample, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert read_csv(out)[1:] == [[name, TAGS_TUNED[name]] for name in "ecbad"]


def test_infer_refuses_topk_for_a_multilabel_model(tuned, images, tmp_path):
    result = clf("infer", images, "--model", tuned, "--csv", tmp_path / "s.csv", "--topk", "2", "--device", "cpu")
    assert result.exit_code == 2
    assert error_line(result) == (
        f"error: --topk 2: {tuned} is a multilabel model; its label column holds every tag whose probability reaches "
        "the class's threshold (space-separated); leave out --topk, and pass --probs FILE for every class's "
        "probability")
    assert not (tmp_path / "s.csv").exists()


# ---- HTTP answer ----


def test_http_answer_of_a_multilabel_model_is_its_tags_and_every_probability():
    task = MULTILABEL.with_thresholds(THRESHOLDS)
    logits = channel_logits((160, 140, 255))
    answer = prediction(logits, CHANNEL_CLASSES, topk=2, task=task)
    assert answer["tags"] == ["red", "blue"]
    assert set(answer) == {"tags", "probs"}
    np.testing.assert_allclose([answer["probs"][c] for c in CHANNEL_CLASSES], sigmoid(logits), atol=1e-6)
