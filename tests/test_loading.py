"""clf.serve.loading: one way to open a model for infer and eval, nothing guessed for a model without metadata."""

from __future__ import annotations

import pytest
from serve_helpers import brightness_model

from clf.config import InferConfig
from clf.errors import DataError
from clf.serve.loading import labels_file, make_predictor


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return brightness_model(tmp_path_factory.mktemp("m") / "plain.onnx", metadata=False)


def test_every_option_given_opens_the_model(plain, tmp_path):
    names = tmp_path / "classes.txt"
    names.write_text("\ufeffdark\n\nmid\nbright\n", encoding="utf-8")
    cfg = InferConfig(model=str(plain), device="cpu", img_size=16, mean=(0, 0, 0), std=(1, 1, 1), labels=str(names))
    predictor = make_predictor(cfg)
    assert predictor.classes == ["dark", "mid", "bright"] and predictor.preprocess.size == (16, 16)
    assert labels_file(cfg) == str(names)
    assert labels_file(InferConfig(labels="a,b")) is None


@pytest.mark.parametrize(
    "flags, message",
    [
        ({}, "{m}: no clf metadata (exported by another tool?); pass --img-size, --mean, --std and --labels to use it"),
        ({"img_size": 16, "labels": "a,b,c"},
         "{m}: no clf metadata (exported by another tool?); also pass --mean, "
         "--std (--img-size, --mean, --std and --labels describe how it was trained)"),
        ({"img_size": 16, "labels": " , "},
         "{labels}: --labels names no class; give a,b,c or a file with one name per line"),
    ],
    ids=["no-flags", "some-flags", "empty-labels"],
)
def test_missing_options(plain, flags, message):
    with pytest.raises(DataError) as err:
        make_predictor(InferConfig(model=str(plain), device="cpu", **flags))
    assert str(err.value) == message.format(m=plain, labels=flags.get("labels"))
