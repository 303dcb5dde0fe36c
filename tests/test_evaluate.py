"""clf.serve.evaluate: evaluation in the library, the Predictor made as infer makes it, outputs written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from serve_helpers import brightness_model, grey_image

from clf.config import EvalConfig, InferConfig
from clf.errors import ClfError, DataError
from clf.serve.evaluate import evaluate, load_eval_data
from clf.serve.infer import run_inference

LABELLED = {"dark": [40, 60], "mid": [128, 230], "bright": [200, 20]}  # one wrong answer in mid and in bright


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {"clf": brightness_model(folder / "clf.onnx"), "plain": brightness_model(folder / "plain.onnx", False)}


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("labelled")
    for label, greys in LABELLED.items():
        for i, grey in enumerate(greys):
            grey_image(root / label / f"{label}_{i}.png", grey)
    return root


def test_evaluate_writes_the_report_and_the_picture(models, labelled, tmp_path):
    report, picture = tmp_path / "new" / "report.json", tmp_path / "other" / "confusion.png"
    starts = []
    result = evaluate(EvalConfig(labelled=str(labelled), model=str(models["clf"]), report=str(report),
                                 confusion=str(picture), device="cpu"), on_start=lambda n, p: starts.append((n, p)))
    assert starts == [(6, "CPUExecutionProvider")]
    assert result.accuracy == pytest.approx(4 / 6) and result.failures == []
    assert (result.report_path, result.confusion_path) == (report, picture)  # missing folders created
    assert json.loads(report.read_text()) == result.report
    assert result.report["confusion_matrix"] == [[2, 0, 0], [0, 1, 1], [1, 0, 1]]
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in report.parent.iterdir()) == ["report.json"]  # no temp file left


def test_a_model_without_metadata_is_treated_as_infer_treats_it(models, labelled, tmp_path):
    plain = str(models["plain"])
    for flags in ({}, {"img_size": 16, "labels": "dark,mid,bright"}):
        with pytest.raises(DataError) as eval_error:
            evaluate(EvalConfig(labelled=str(labelled), model=plain, device="cpu", **flags))
        with pytest.raises(DataError) as infer_error:
            run_inference(InferConfig(images=str(labelled / "dark"), model=plain, csv=str(tmp_path / "s.csv"),
                                      device="cpu", **flags))
        assert str(eval_error.value) == str(infer_error.value)
    assert str(eval_error.value) == (
        f"{plain}: no clf metadata (exported by another tool?); also pass --mean, --std "
        "(--img-size, --mean, --std and --labels describe how it was trained)"
    )
    result = evaluate(EvalConfig(labelled=str(labelled), model=plain, device="cpu", img_size=16, mean=(0, 0, 0),
                                 std=(1, 1, 1), labels="dark,mid,bright"))
    assert result.accuracy == pytest.approx(4 / 6)


@pytest.mark.parametrize(
    "outputs, message",
    [
        ({"report": "{tmp}/same", "confusion": "{tmp}/same"},
         "{tmp}/same: --report and --confusion name the same file; give each its own"),
        ({"report": "{labelled}/dark/dark_0.png"},
         "{labelled}/dark/dark_0.png: --report would overwrite an input image; write to another file"),
        ({"confusion": "{model}"}, "{model}: --confusion would overwrite the --model input; write to another file"),
        ({"report": "{labelled}"}, "{labelled}: is a folder; give a file name"),
    ],
    ids=["report-is-confusion", "report-is-an-image", "confusion-is-the-model", "report-is-a-folder"],
)
def test_outputs_are_checked_before_any_work(models, labelled, tmp_path, outputs, message):
    places = {"tmp": tmp_path, "labelled": labelled, "model": models["clf"]}
    cfg = EvalConfig(labelled=str(labelled), model=str(models["clf"]), device="cpu",
                     **{k: v.format(**places) for k, v in outputs.items()})
    with pytest.raises(ClfError) as err:
        load_eval_data(cfg)
    assert str(err.value) == message.format(**places)


def test_eval_config_checks_its_values():
    with pytest.raises(ClfError) as err:
        EvalConfig(batch_size=0)
    assert str(err.value) == "--batch-size must be >= 1, got 0"
    with pytest.raises(ClfError) as err:
        EvalConfig(device="gpu")
    assert str(err.value) == "--device must be one of auto, cpu, cuda, tensorrt, got 'gpu'"
