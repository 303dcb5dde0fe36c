"""`clf export` of multi-label runs: the task and the checkpoint's thresholds in the metadata, ensembles (runs and a
fold group) averaging sigmoid probabilities in the graph with the group's thresholds, --calibrate refused; and a plain
onnxruntime client (no clf at inference) reproducing `clf infer`'s tags."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import clf, error_line
from clf.data.folds import FoldGroup, member_name, write_group
from ensemble_helpers import CLI_FAST, logits_of, metadata, model_of, proof
from multilabel_serve_helpers import colour_image, multilabel_checkpoint, plain_client_tags
from serve_helpers import read_csv

CLASSES = ["cat", "dog", "sky", "tree"]
THRESHOLDS = [0.3, 0.5, 0.6, 0.45]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Twelve 32 px images of varied colours and a stripe, so that the random cnn's logits differ between them."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(3)
    for i in range(12):
        path = colour_image(folder / f"img_{i:02d}.png", rng.integers(0, 256, 3).tolist(), size=(32, 32))
        import cv2

        picture = cv2.imread(str(path))
        picture[:, i * 2 : i * 2 + 6] = rng.integers(0, 256, 3)
        cv2.imwrite(str(path), picture)
    return folder


def export(*args) -> object:
    return clf("export", *map(str, args), *CLI_FAST)


def test_export_writes_the_task_and_the_checkpoint_thresholds(tmp_path, images):
    run = tmp_path / "run"
    multilabel_checkpoint(run / "best.pt", CLASSES, thresholds=THRESHOLDS)
    result = export(run, "--onnx", "--check-images", images)
    assert result.exit_code == 0, result.output
    meta = metadata(run / "model.onnx")
    assert meta["clf.task"] == "multilabel"
    assert json.loads(meta["clf.thresholds"]) == THRESHOLDS
    assert proof(run / "model.onnx")["passed"] is True


def test_a_multilabel_checkpoint_without_thresholds_decides_at_half(tmp_path, images):
    run = tmp_path / "run"
    multilabel_checkpoint(run / "best.pt", CLASSES)
    assert export(run, "--onnx", "--check-images", images).exit_code == 0
    meta = metadata(run / "model.onnx")
    assert meta["clf.task"] == "multilabel" and "clf.thresholds" not in meta


def test_a_checkpoint_with_bad_thresholds_is_refused_in_one_line(tmp_path):
    run = tmp_path / "run"
    ckpt = multilabel_checkpoint(run / "best.pt", CLASSES, thresholds=[0.5, 0.5])
    result = export(run, "--onnx")
    assert result.exit_code == 2
    assert error_line(result) == (f"error: {ckpt}: its thresholds must be 4 probabilities between 0 and 1, one per "
                                  "class; export a checkpoint written by `clf train`")


def test_calibrate_is_refused_for_a_multilabel_model(tmp_path):
    run = tmp_path / "run"
    ckpt = multilabel_checkpoint(run / "best.pt", CLASSES)
    result = export(run, "--onnx", "--calibrate")
    assert result.exit_code == 2
    assert error_line(result) == (
        f"error: --calibrate: {ckpt} is a multilabel model; clf fits one softmax temperature for single-label models, "
        "and per-class temperatures for sigmoid scores are not supported yet (its tuned per-class thresholds already "
        "set each decision); export it without --calibrate")


def test_members_of_different_tasks_are_refused(tmp_path):
    from checkpoint_factory import write_checkpoint

    multi = multilabel_checkpoint(tmp_path / "a" / "best.pt", CLASSES)
    single = write_checkpoint(tmp_path / "b" / "best.pt", classes=CLASSES)
    result = export(tmp_path / "a", tmp_path / "b", "--onnx", "-o", tmp_path / "ens.onnx")
    assert result.exit_code == 2
    assert error_line(result) == (f"error: {single}: it was trained for the single_label task, {multi} for "
                                  "multilabel; ensemble members must predict the same kind of answer")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _onnx_logits(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0].astype(np.float64)


def test_an_ensemble_of_runs_outputs_the_logit_of_the_weighted_mean_probability(tmp_path, images):
    for seed, name in enumerate(("a", "b")):
        multilabel_checkpoint(tmp_path / name / "best.pt", CLASSES, thresholds=THRESHOLDS, seed=seed + 1)
    out = tmp_path / "ens.onnx"
    result = export(tmp_path / "a", tmp_path / "b", "--onnx", "-o", out, "--weights", "3,1",
                    "--check-images", images, "--tta", "hflip", "--force")
    assert result.exit_code == 0, result.output
    x = np.random.default_rng(0).normal(0, 2, (5, 3, 32, 32)).astype(np.float32)
    member_logits = [logits_of(model_of(tmp_path / name), x) for name in ("a", "b")]
    flipped = [logits_of(model_of(tmp_path / name), x[..., ::-1].copy()) for name in ("a", "b")]
    mean_p = (0.75 * (_sigmoid(member_logits[0]) + _sigmoid(flipped[0]))
              + 0.25 * (_sigmoid(member_logits[1]) + _sigmoid(flipped[1]))) / 2
    logits = _onnx_logits(out, x)
    np.testing.assert_allclose(_sigmoid(logits), mean_p, atol=1e-5)
    meta = metadata(out)
    assert meta["clf.task"] == "multilabel"
    assert "clf.thresholds" not in meta  # the runs' own thresholds were not tuned on the average: 0.5 each


def test_the_ensemble_graph_stays_finite_where_sigmoids_saturate():
    import torch

    from clf.export.ensemble import DeployedModel
    from clf.tasks import MULTILABEL

    class Fixed(torch.nn.Module):
        def __init__(self, row: list[float]) -> None:
            super().__init__()
            self.register_buffer("row", torch.tensor([row]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.row.expand(len(x), -1)

    deployed = DeployedModel([Fixed([200.0, -200.0, 3.0]), Fixed([150.0, -300.0, -1.0])], [0.5, 0.5],
                             task=MULTILABEL).eval()
    out = deployed(torch.zeros(2, 3, 4, 4)).double().numpy()
    assert np.isfinite(out).all()
    assert out[0, 0] > 100 and out[0, 1] < -100  # p ~ 1 and ~ 0 stay on their sides
    expected = np.log(0.5 * _sigmoid(3.0) + 0.5 * _sigmoid(-1.0)) - np.log(0.5 * _sigmoid(-3.0) + 0.5 * _sigmoid(1.0))
    assert out[0, 2] == pytest.approx(expected, abs=1e-5)


def _multilabel_group(group: Path, thresholds: list[float] | None) -> Path:
    group.mkdir(parents=True)
    names = [member_name(k) for k in range(2)]
    for k, name in enumerate(names):
        multilabel_checkpoint(group / name / "best.pt", CLASSES, thresholds=[0.5] * 4, seed=k + 5)
    write_group(group, FoldGroup(folds=2, fold_seed=0, members=names, done=names, classes=CLASSES, arch="cnn"))
    if thresholds is not None:  # what the training side adds to group.json: thresholds tuned on the OOF scores
        record = json.loads((group / "group.json").read_text())
        (group / "group.json").write_text(json.dumps({**record, "thresholds": thresholds}))
    return group


def test_a_fold_group_exports_with_its_out_of_fold_thresholds(tmp_path, images):
    group = _multilabel_group(tmp_path / "group", THRESHOLDS)
    result = export(group, "--onnx", "--check-images", images)
    assert result.exit_code == 0, result.output
    meta = metadata(group / "model.onnx")
    assert (meta["clf.task"], json.loads(meta["clf.thresholds"])) == ("multilabel", THRESHOLDS)


def test_a_fold_group_without_thresholds_decides_at_half(tmp_path, images):
    group = _multilabel_group(tmp_path / "group", None)
    assert export(group, "--onnx", "--check-images", images).exit_code == 0
    assert "clf.thresholds" not in metadata(group / "model.onnx")


# ---- a plain client ----


def median_thresholds(run: Path, images: Path) -> list[float]:
    """Per class, a threshold halfway between the 6th and 7th of the run's 12 sorted probabilities: half the images
    get each tag, none of them near the cut (a random cnn scores every image alike: 0.5 would tag all or none)."""
    from clf.config import Preprocess
    from clf.data.preprocess import preprocess

    x = np.stack([preprocess(path, Preprocess(size=(32, 32))) for path in sorted(images.glob("*.png"))])
    probs = np.sort(_sigmoid(logits_of(model_of(run), x)), axis=0)
    return [float(v) for v in (probs[5] + probs[6]) / 2]


def test_a_plain_onnxruntime_client_reproduces_clf_infers_tags(tmp_path, images):
    run = tmp_path / "run"
    multilabel_checkpoint(run / "best.pt", CLASSES, seed=7)
    multilabel_checkpoint(run / "best.pt", CLASSES, seed=7, thresholds=median_thresholds(run, images))
    assert export(run, "--onnx", "--check-images", images).exit_code == 0
    out = tmp_path / "sub.csv"
    result = clf("infer", images, "--model", run / "model.onnx", "--csv", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    written = {row[0]: row[1] for row in read_csv(out)[1:]}
    plain = plain_client_tags(run / "model.onnx", sorted(images.glob("*.png")))
    assert written == plain
    tags = [set(t.split()) for t in written.values()]
    assert len({frozenset(t) for t in tags}) > 1, written  # the images do not all get the same answer
    with open(out, newline="") as handle:
        assert next(csv.reader(handle)) == ["id", "label"]


# ---- int8 ----


def test_int8_of_a_multilabel_model_is_gated_on_per_label_agreement_and_macro_f1(tmp_path, images):
    run = tmp_path / "run"
    multilabel_checkpoint(run / "best.pt", CLASSES, seed=7)
    multilabel_checkpoint(run / "best.pt", CLASSES, seed=7, thresholds=median_thresholds(run, images))
    result = export(run, "--int8", "--check-images", images, "--min-agreement", "0", "--max-drop", "1")
    assert result.exit_code == 0, result.output
    made = proof(run / "model_int8.onnx")
    assert made["task"] == "multilabel" and made["passed"] is True
    assert 0 <= made["macro_f1_vs_fp32"] <= 1
    assert made["macro_f1_drop"] == pytest.approx(1 - made["macro_f1_vs_fp32"])
    assert made["fp32_accuracy"] is None  # no single-label accuracy for tags
    assert "per-label agreement" in result.output and "macro-F1 vs fp32" in result.output
    assert json.loads(metadata(run / "model_int8.onnx")["clf.thresholds"]) == pytest.approx(
        median_thresholds(run, images))


def test_the_multilabel_int8_gate_counts_a_lost_rare_class_by_macro_f1():
    from clf.export.int8 import Int8Report
    from clf.serve.multilabel_metrics import macro_f1_against

    fp32 = np.zeros((100, 4), bool)
    fp32[:2, 3] = True  # a rare class tagged twice
    fp32[:50, 0] = True
    int8 = fp32.copy()
    int8[:2, 3] = False  # int8 never tags it
    agreement = float((fp32 == int8).mean())
    assert agreement == 0.995
    f1 = macro_f1_against(fp32, int8)
    assert f1 == pytest.approx(0.75)  # classes 1 and 2: neither tags them, they agree (1); class 3: 0
    report = Int8Report(passed=False, max_abs_diff=0.0, mean_abs_diff=0.0, top1_agreement=agreement, atol=1e-4,
                        images=100, image_source="x", batch_sizes=[1], provider="cpu", model="m.onnx", precision="int8",
                        min_agreement=0.99, max_drop=0.02, task="multilabel", macro_f1_vs_fp32=f1,
                        macro_f1_drop=1 - f1)
    assert report.reason() == "macro-F1 drop vs fp32 25.00 points > 2.00"
