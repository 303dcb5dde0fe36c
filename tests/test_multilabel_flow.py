"""The whole multi-label flow through the CLI on real pictures, each step reading what the step before wrote:
`clf train --task multilabel --folds 2` on a Kaggle tags CSV -> `clf export` of the fold group (parity) -> `clf
export --int8` of it (per-label gate) -> `clf infer` (tags and probabilities) -> `clf score --task multilabel`; and a
plain onnxruntime client, reading only the ONNX file, writes the same tags as `clf infer`.

The data is tests/multilabel_pictures.py's: 2x2 grids of 1-3 crops of bands of scikit-learn's two sample photos
(tags: the bands shown), test crops from a part of each band no training crop touches.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import clf
from ensemble_helpers import metadata, proof
from multilabel_pictures import make_multilabel_set, tiny_layout
from multilabel_serve_helpers import plain_client_tags

pytest.importorskip("sklearn")  # the sample photos and the reference F1

FAST = ["--arch", "cnn", "--img-size", "48", "--batch-size", "8", "--workers", "0", "--device", "cpu", "--quiet"]
EXPORT_FAST = ["--exporter", "torchscript", "--batch-sizes", "1,3"]
TAGS = ["china_0", "china_1", "flower_0", "flower_1"]


@pytest.fixture(scope="module")
def flow(tmp_path_factory) -> dict[str, Path]:
    """Train the fold group, export it (fp32 and int8) and infer the test images with both: the files of each."""
    root = tmp_path_factory.mktemp("flow")
    data = make_multilabel_set(root / "data", layout=tiny_layout(train_images=96, test_images=24))
    group = root / "runs" / "ml"
    _ok(clf("train", data / "train", "--task", "multilabel", "--labels-csv", data / "train.csv", "--id-col", "id",
            "--label-col", "tags", "--folds", "2", *FAST, "--epochs", "15", "--lr", "3e-3", "--out", root / "runs",
            "--name", "ml"))
    _ok(clf("export", group, "--onnx", *EXPORT_FAST))
    _ok(clf("export", group, "--int8", "--min-agreement", "0.8", "--max-drop", "0.1", *EXPORT_FAST))
    files = {"data": data, "group": group}
    for name, model in (("fp32", group / "model.onnx"), ("int8", group / "model_int8.onnx")):
        files[name] = root / f"{name}.csv"
        files[f"{name}_probs"] = root / f"{name}.probs.csv"
        _ok(clf("infer", data / "test", "--model", model, "--sample-submission", data / "sample_submission.csv",
                "--label-col", "tags", "--csv", files[name], "--probs", files[f"{name}_probs"], "--device", "cpu"))
    return files


def _ok(result) -> None:
    assert result.exit_code == 0, result.output


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _multi_hot(rows: list[dict[str, str]], column: str = "tags") -> np.ndarray:
    return np.array([[tag in row[column].split() for tag in TAGS] for row in rows], dtype=int)


def test_the_fold_group_tunes_thresholds_on_its_out_of_fold_scores(flow):
    record = json.loads((flow["group"] / "group.json").read_text())
    thresholds = record["thresholds"]
    assert len(thresholds) == len(TAGS) and all(0 < t < 1 for t in thresholds)
    assert record["cv"]["metric"] == "f1_macro"
    assert record["cv"]["oof_metric_tuned"] >= record["cv"]["oof_metric"]  # tuned on these very scores


def test_the_exported_ensemble_carries_the_task_and_the_groups_thresholds_and_passes_parity(flow):
    model = flow["group"] / "model.onnx"
    meta = metadata(model)
    assert meta["clf.task"] == "multilabel" and json.loads(meta["clf.classes"]) == TAGS
    group = json.loads((flow["group"] / "group.json").read_text())
    assert json.loads(meta["clf.thresholds"]) == pytest.approx(group["thresholds"])
    assert proof(model)["passed"] is True


def test_int8_passes_its_per_label_gate_and_keeps_the_thresholds(flow):
    made = proof(flow["group"] / "model_int8.onnx")
    assert made["task"] == "multilabel" and made["passed"] is True
    assert made["top1_agreement"] >= 0.8  # per-label agreement with the fp32 ensemble on the parity images
    assert made["macro_f1_drop"] <= made["max_drop"]
    fp32, int8 = metadata(flow["group"] / "model.onnx"), metadata(flow["group"] / "model_int8.onnx")
    assert json.loads(int8["clf.thresholds"]) == pytest.approx(json.loads(fp32["clf.thresholds"]))


def test_infer_writes_kaggle_tags_in_the_sample_submissions_order_with_probabilities_that_agree(flow):
    sample = _rows(flow["data"] / "sample_submission.csv")
    submission = _rows(flow["fp32"])
    assert [row["id"] for row in submission] == [row["id"] for row in sample]
    assert all(set(row["tags"].split()) <= set(TAGS) for row in submission)
    probs = _rows(flow["fp32_probs"])
    thresholds = np.array(json.loads(metadata(flow["group"] / "model.onnx")["clf.thresholds"]))
    scores = np.array([[float(row[tag]) for tag in TAGS] for row in probs])
    assert [row["id"] for row in probs] == [row["id"] for row in sample]
    np.testing.assert_array_equal(scores >= thresholds, _multi_hot(submission).astype(bool))


def test_score_equals_scikit_learn_and_the_model_learned_the_bands(flow):
    from sklearn.metrics import average_precision_score, f1_score

    from clf.serve.score_multilabel import score_multilabel

    answers = {row["id"]: row for row in _rows(flow["data"] / "test_labels.csv")}
    submission = _rows(flow["fp32"])
    truth = _multi_hot([answers[row["id"]] for row in submission])
    expected = f1_score(truth, _multi_hot(submission), average="macro", zero_division=0)
    scored = score_multilabel(flow["fp32"], flow["data"] / "test_labels.csv", "id", "tags")
    assert scored.f1_macro == pytest.approx(expected)
    result = clf("score", flow["fp32"], flow["data"] / "test_labels.csv", "--task", "multilabel",
                 "--label-col", "tags")
    _ok(result)
    assert f"{expected:.4f}" in result.output
    # Learned, on crops from parts of the photos no training crop touches: the probabilities rank each band's images
    # well above chance (a band's average precision by chance is its share of the images, about 0.5).
    scores = np.array([[float(row[tag]) for tag in TAGS] for row in _rows(flow["fp32_probs"])])
    mean_ap = average_precision_score(truth, scores, average="macro")
    assert mean_ap >= truth.mean() + 0.15, (mean_ap, truth.mean())


def test_int8_tags_stay_close_to_the_fp32_ensembles(flow):
    fp32, int8 = _multi_hot(_rows(flow["fp32"])), _multi_hot(_rows(flow["int8"]))
    assert (fp32 == int8).mean() >= 0.8


def test_a_plain_client_reading_only_the_onnx_file_writes_the_same_tags(flow):
    test_images = sorted((flow["data"] / "test").iterdir())
    plain = plain_client_tags(flow["group"] / "model.onnx", test_images)
    written = {row["id"]: " ".join(sorted(row["tags"].split())) for row in _rows(flow["fp32"])}
    assert {key: " ".join(sorted(value.split())) for key, value in plain.items()} == written
