"""clf.serve.metadata: ModelInfo <-> ONNX metadata_props, and the errors for models without it."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from clf.config import Preprocess
from clf.errors import DataError
from clf.serve.metadata import ModelInfo, has_clf_metadata, info_from_props, info_to_props

PRE = Preprocess(size=(48, 64), resize="shorter_crop", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
INFO = ModelInfo(
    classes=["cat", "dög", "fox"],
    preprocess=PRE,
    arch="resnet18",
    img_size=64,
    clf_version="0.1.0",
    run_name="resnet18-1",
    best_val_acc=0.875,
)
NO_METADATA = (
    "model.onnx: no clf metadata (exported by another tool?); pass --img-size, --mean, --std and --labels to use it"
)


def test_info_to_props_exact():
    assert info_to_props(INFO) == {
        "clf.classes": '["cat", "dög", "fox"]',
        "clf.preprocess": PRE.to_json(),
        "clf.arch": "resnet18",
        "clf.img_size": "64",
        "clf.version": "0.1.0",
        "clf.run_name": "resnet18-1",
        "clf.best_val_acc": "0.875",
    }
    assert json.loads(info_to_props(INFO)["clf.preprocess"])["size"] == [48, 64]


def test_round_trip():
    assert info_from_props(info_to_props(INFO), "model.onnx") == INFO


def test_unknown_best_val_acc_is_omitted_and_reads_back_as_none():
    info = ModelInfo(classes=["a", "b"], preprocess=PRE)
    props = info_to_props(info)
    assert "clf.best_val_acc" not in props
    assert info_from_props(props, "model.onnx") == info
    assert info_from_props({**props, "clf.best_val_acc": "null"}, "model.onnx").best_val_acc is None


def test_only_required_keys():
    props = {"clf.classes": '["a", "b"]', "clf.preprocess": PRE.to_json()}
    assert has_clf_metadata(props)
    assert info_from_props(props, "m.onnx") == ModelInfo(classes=["a", "b"], preprocess=PRE)


@pytest.mark.parametrize(
    "props",
    [{}, {"producer": "pytorch"}, {"clf.classes": '["a"]'}, {"clf.preprocess": PRE.to_json()}],
)
def test_missing_metadata(props):
    assert not has_clf_metadata(props)
    with pytest.raises(DataError) as err:
        info_from_props(props, "model.onnx")
    assert str(err.value) == NO_METADATA


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("clf.classes", "[oops", "clf.classes: Expecting value: line 1 column 2 (char 1)"),
        ("clf.classes", '{"a": 1}', "clf.classes must be a non-empty JSON list of names"),
        ("clf.classes", "[]", "clf.classes must be a non-empty JSON list of names"),
        ("clf.classes", "[1, 2]", "clf.classes must be a non-empty JSON list of names"),
        (
            "clf.preprocess",
            '{"resize": "zoom"}',
            "clf.preprocess: resize must be one of ('stretch', 'shorter_crop'), got 'zoom'",
        ),
        ("clf.preprocess", "[1]", "clf.preprocess: not a JSON object: '[1]'"),
        ("clf.img_size", "abc", "clf.img_size: invalid literal for int() with base 10: 'abc'"),
        ("clf.best_val_acc", "x", "clf.best_val_acc: could not convert string to float: 'x'"),
    ],
)
def test_corrupt_metadata(key, value, message):
    props = {**info_to_props(INFO), key: value}
    with pytest.raises(DataError) as err:
        info_from_props(props, "m.onnx")
    assert str(err.value) == f"m.onnx: corrupt clf metadata ({message})"


def test_onnxruntime_reads_the_props_back(tmp_path):
    """What export writes with onnx is what onnxruntime hands to the Predictor."""
    import onnxruntime as ort

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["logits"])],
        "identity",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, info_to_props(INFO))
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    assert info_from_props(props, str(path)) == INFO
    out = session.run(None, {"input": np.ones((2, 3), np.float32)})[0]
    assert out.shape == (2, 3)
