"""`clf eval` and `clf score` through typer's CliRunner, on cases small enough to check by hand.

BrightnessNet picks dark / mid / bright from an image's mean grey level, so which labelled images it gets wrong,
and therefore every number of the report, is known before the test runs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

import clf.serve.predictor as predictor_module
from checkpoint_factory import checkpoint_state
from cli_helpers import clf, error_line
from clf.config import Preprocess
from clf.data.datasets import load_labelled
from clf.data.preprocess import preprocess
from clf.models.checkpoint import save_checkpoint
from clf.probabilities import expected_calibration_error, log_loss
from clf.serve.metadata import ModelInfo
from clf.serve.metrics import classification_report
from serve_helpers import bad_images, brightness_model, cli_state, grey_image, linear_model, read_csv


# class folder -> grey levels; the model's answer in brackets
LABELLED = {
    "dark": [40, 60, 120],  # dark, dark, (mid)
    "mid": [128, 140, 230],  # mid, mid, (bright)
    "bright": [200, 250, 210, 20],  # bright, bright, bright, (dark)
}
# rows: true class, columns: predicted, both in the model's class order (dark, mid, bright)
CONFUSION = [[2, 1, 0], [0, 2, 1], [1, 0, 3]]
PER_CLASS = {  # precision, recall, f1, support
    "dark": (2 / 3, 2 / 3, 2 / 3, 3),
    "mid": (2 / 3, 2 / 3, 2 / 3, 3),
    "bright": (3 / 4, 3 / 4, 3 / 4, 4),
}


@pytest.fixture(autouse=True)
def _cli_state():
    with cli_state():
        yield




def table_rows(output: str) -> list[list[str]]:
    """The cells of every rich table row in the output."""
    rows = []
    for line in output.splitlines():
        if "│" in line or "┃" in line:
            rows.append(line.replace("┃", "│").strip("│ ").replace("│", " ").split())
    return rows


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return brightness_model(tmp_path_factory.mktemp("model") / "brightness.onnx")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("labelled")
    for label, greys in LABELLED.items():
        for i, grey in enumerate(greys):
            grey_image(root / label / f"{label}_{i}.{'jpg' if i == 1 else 'png'}", grey, size=(18 + i, 25))
    return root


def test_eval_numbers(model, labelled, tmp_path):
    report, confusion = tmp_path / "report.json", tmp_path / "confusion.png"
    result = clf("eval", labelled, "--model", model, "--report", report, "--confusion", confusion, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "10 images, onnxruntime provider: CPUExecutionProvider" in result.stderr
    assert f"{model}: accuracy 0.7000 on 10 images" in result.stdout
    rows = table_rows(result.stdout)
    assert rows[0] == ["class", "precision", "recall", "f1", "support"]
    assert rows[1:4] == [[name, *(f"{v:.4f}" for v in stats[:3]), str(stats[3])] for name, stats in PER_CLASS.items()]
    assert rows[4] == ["dark", "mid", "bright"]  # the confusion matrix header, then one row per true class
    assert rows[5:] == [[name, *map(str, counts)] for name, counts in zip(["dark", "mid", "bright"], CONFUSION)]

    data = json.loads(report.read_text())
    assert data["accuracy"] == pytest.approx(0.7)
    assert data["num_samples"] == 10 and data["classes"] == ["dark", "mid", "bright"]
    assert data["confusion_matrix"] == CONFUSION
    for name, (precision, recall, f1, support) in PER_CLASS.items():
        assert data["per_class"][name] == {
            "precision": pytest.approx(precision), "recall": pytest.approx(recall), "f1": pytest.approx(f1),
            "support": support,
        }
    assert data["macro_avg"]["precision"] == pytest.approx((2 / 3 + 2 / 3 + 3 / 4) / 3)
    assert data["weighted_avg"]["recall"] == pytest.approx(0.7)
    assert data["failures"] == [] and data["provider"] == "CPUExecutionProvider"

    assert confusion.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    picture = cv2.imread(str(confusion))
    assert picture is not None and picture.shape[0] > 100 and picture.shape[1] > 100


def test_eval_with_a_labels_csv(model, labelled, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    lines = ["image,class"]
    for k, path in enumerate(sorted(labelled.rglob("*.*"))):
        (flat / f"img_{k:02d}{path.suffix}").write_bytes(path.read_bytes())
        lines.append(f"img_{k:02d},{path.parent.name}")  # ids are stems, as in a Kaggle labels file
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(lines) + "\n")
    report = tmp_path / "report.json"
    result = clf("eval", flat, "--model", model, "--labels-csv", labels, "--id-col", "image", "--label-col", "class",
                 "--report", report, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "accuracy 0.7000 on 10 images" in result.stdout
    assert json.loads(report.read_text())["confusion_matrix"] == CONFUSION


def test_unreadable_labelled_image_is_skipped_and_reported(model, labelled, tmp_path):
    folder = tmp_path / "labelled"
    for path in labelled.rglob("*.*"):
        (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
        (folder / path.parent.name / path.name).write_bytes(path.read_bytes())
    bad = bad_images(folder / "mid", folder / "mid" / "mid_0.png")["truncated"]
    report = tmp_path / "report.json"
    result = clf("eval", folder, "--model", model, "--report", report, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "accuracy 0.7000 on 10 images" in result.stdout  # the 3 bad files are not counted as errors
    assert result.stdout.splitlines()[-1] == "3 unreadable image(s) skipped (not counted above)"
    failures = json.loads(report.read_text())["failures"]
    assert len(failures) == 3 and {"source": str(bad), "reason": failures[2]["reason"]} in failures


def test_labels_the_model_does_not_know(model, tmp_path):
    grey_image(tmp_path / "data" / "dark" / "a.png", 40)
    grey_image(tmp_path / "data" / "purple" / "b.png", 40)
    result = clf("eval", tmp_path / "data", "--model", model, "--device", "cpu")
    assert result.exit_code == 2
    assert error_line(result) == (
        "error: labels ['purple'] are not classes of the model (dark, mid, bright); wrong model or data?"
    )


def test_eval_missing_model(labelled, tmp_path):
    result = clf("eval", labelled, "--model", tmp_path / "nope.onnx")
    assert result.exit_code == 2
    assert error_line(result) == f"error: {tmp_path / 'nope.onnx'}: file not found"


def test_eval_a_run_folder_exports_to_a_temporary_onnx(labelled, tmp_path):
    """A checkpoint is exported (with its parity check) to a temp .onnx, evaluated, and the temp file removed."""
    torch.manual_seed(0)
    classes, pre = ["dark", "mid", "bright"], Preprocess(size=(32, 32))
    run = tmp_path / "runs" / "random-cnn"
    state, net = checkpoint_state("cnn", classes, 32, config={"data": str(labelled), "val_split": 0.0},
                                  run_name="random-cnn")
    save_checkpoint(state, run / "best.pt")
    net.eval()
    data = load_labelled(str(labelled))  # what PyTorch itself predicts for these images
    with torch.no_grad():
        logits = net(torch.from_numpy(np.stack([preprocess(p, pre) for p in data.paths]))).numpy()
    top2 = np.sort(logits, axis=1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0]).min() > 1e-4  # no near-tie that onnxruntime could flip
    truth = [classes.index(data.classes[i]) for i in data.labels]
    expected = classification_report(truth, logits.argmax(axis=1), classes)

    report = tmp_path / "report.json"
    result = clf("eval", labelled, "--model", run, "--report", report, "--device", "cpu")
    assert result.exit_code == 0, result.output
    got = json.loads(report.read_text())
    assert got["confusion_matrix"] == expected["confusion_matrix"]
    assert got["accuracy"] == pytest.approx(expected["accuracy"])
    assert f"{run}: accuracy {expected['accuracy']:.4f} on 10 images" in result.stdout
    assert sorted(p.name for p in run.iterdir()) == ["best.pt"]  # nothing written into the run


# ---- log-loss and ECE, and TTA side by side ----

NOISE_CLASSES = ["cat", "dog", "fox", "owl"]


@pytest.fixture(scope="module")
def noise(tmp_path_factory) -> SimpleNamespace:
    """A linear model that changes its mind under flips, and 12 labelled noise images (3 per class)."""
    root = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(5)
    for k in range(12):
        label = NOISE_CLASSES[k % 4]
        path = root / "labelled" / label / f"n_{k:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), rng.integers(0, 256, (9 + k, 14, 3), dtype=np.uint8))
    pre = Preprocess(size=(8, 12), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    info = ModelInfo(classes=NOISE_CLASSES, preprocess=pre, arch="linear", img_size=12, clf_version="0.1.0")
    return SimpleNamespace(labelled=root / "labelled", model=linear_model(root / "linear.onnx", info, seed=2))


def probs_by_hand(labelled: Path, model: Path, out: Path, *flags: str) -> tuple[np.ndarray, np.ndarray]:
    """`clf infer --probs` over the labelled images, read back: probabilities [N, C] and the true class indices."""
    result = clf("infer", labelled, "--model", model, "--recursive", "--csv", out / "sub.csv", "--probs",
                 out / "probs.csv", "--device", "cpu", *flags)
    assert result.exit_code == 0, result.output
    table = read_csv(out / "probs.csv")
    truth = {path.stem: path.parent.name for path in labelled.rglob("*.png")}
    classes = table[0][1:]
    probs = np.array([[float(v) for v in row[1:]] for row in table[1:]])
    return probs, np.array([classes.index(truth[row[0]]) for row in table[1:]])


def eval_report(labelled: Path, model: Path, report: Path, *flags: str) -> tuple[dict, str]:
    result = clf("eval", labelled, "--model", model, "--report", report, "--device", "cpu", *flags)
    assert result.exit_code == 0, result.output
    return json.loads(report.read_text()), result.stdout


def test_eval_reports_log_loss_and_ece_of_the_model_probabilities(noise, tmp_path):
    probs, truth = probs_by_hand(noise.labelled, noise.model, tmp_path)
    got, stdout = eval_report(noise.labelled, noise.model, tmp_path / "report.json")
    expected_loss, expected_ece = log_loss(probs, truth), expected_calibration_error(probs, truth, 15)
    assert got["log_loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert got["ece"] == pytest.approx(expected_ece, abs=1e-5)
    assert got["accuracy"] == pytest.approx(np.mean(probs.argmax(axis=1) == truth))
    assert got["ece_bins"] == 15 and got["tta"] == {"views": "none"}
    assert f"log-loss {got['log_loss']:.4f}, ECE {got['ece']:.4f} (15 bins)" in stdout.splitlines()
    assert 0.1 < got["ece"] and got["log_loss"] > 0.5  # real, non-trivial numbers for this random model


def test_eval_with_tta_reports_both_side_by_side_from_one_decode_pass(noise, tmp_path, monkeypatch):
    plain, _ = eval_report(noise.labelled, noise.model, tmp_path / "plain.json")
    decodes = []
    real_load = predictor_module.load_resized
    monkeypatch.setattr(predictor_module, "load_resized", lambda source, pre: (decodes.append(source),
                                                                                real_load(source, pre))[1])
    got, stdout = eval_report(noise.labelled, noise.model, tmp_path / "tta.json", "--tta", "hflip")
    assert len(decodes) == 12  # each image decoded once for both columns
    monkeypatch.undo()
    tta = got["tta"]
    assert tta["views"] == "hflip"
    # without TTA: exactly a separate evaluation without --tta (the same session runs)
    assert tta["without"] == {key: plain[key] for key in ("accuracy", "log_loss", "ece")}
    # with TTA: the report's own numbers, and what `clf infer --tta hflip --probs` gives by hand
    assert tta["with"] == {key: got[key] for key in ("accuracy", "log_loss", "ece")}
    probs, truth = probs_by_hand(noise.labelled, noise.model, tmp_path, "--tta", "hflip")
    assert got["log_loss"] == pytest.approx(log_loss(probs, truth), rel=1e-5)
    assert got["ece"] == pytest.approx(expected_calibration_error(probs, truth), abs=1e-5)
    assert got["accuracy"] == pytest.approx(np.mean(probs.argmax(axis=1) == truth))
    assert got["confusion_matrix"] != plain["confusion_matrix"]  # the flips changed predictions for this model
    before, after = tta["without"], tta["with"]
    assert (f"accuracy {before['accuracy']:.4f} → {after['accuracy']:.4f}, log-loss {before['log_loss']:.4f} → "
            f"{after['log_loss']:.4f}, ECE {before['ece']:.4f} → {after['ece']:.4f} with hflip TTA (15-bin ECE)"
            ) in stdout.splitlines()
    assert f"{noise.model}: accuracy {after['accuracy']:.4f} with hflip TTA on 12 images" in stdout


def test_eval_with_tta_matches_an_evaluation_of_a_tta_predictor(noise, tmp_path):
    """The with-TTA numbers are those of the TTA Predictor on its own (clf.serve.evaluate.evaluate_labelled)."""
    from clf.serve.evaluate import evaluate_labelled
    from clf.serve.predictor import Predictor

    data = load_labelled(str(noise.labelled))
    labels = [data.classes[i] for i in data.labels]
    alone = evaluate_labelled(Predictor(noise.model, device="cpu", tta="vflip"), data.paths, labels)
    got, _ = eval_report(noise.labelled, noise.model, tmp_path / "report.json", "--tta", "vflip")
    for key in ("accuracy", "log_loss", "ece", "confusion_matrix", "tta"):
        assert got[key] == alone[key], key


# ---- clf score ----


@pytest.fixture
def answers(tmp_path) -> Path:
    path = tmp_path / "test_labels.csv"
    path.write_text("id,label\na,cat\nb,dog\nc,cat\nd,fox\n")
    return path


def test_score(answers, tmp_path):
    submission = tmp_path / "submission.csv"
    submission.write_text("id,label\nd,fox\nc,dog\nb,dog\na,cat\nextra,cat\n")  # any order; extra ids ignored
    result = clf("score", submission, answers)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{submission}: accuracy 0.7500 on 4 rows of {answers}"


def test_score_custom_columns(tmp_path):
    answers = tmp_path / "answers.csv"
    answers.write_text("ImageId,Category\n1,x\n2,y\n")
    submission = tmp_path / "submission.csv"
    submission.write_text("ImageId,Category\n1,x\n2,x\n")
    result = clf("score", submission, answers, "--id-col", "ImageId", "--label-col", "Category")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{submission}: accuracy 0.5000 on 2 rows of {answers}"


def test_score_missing_ids(answers, tmp_path):
    submission = tmp_path / "submission.csv"
    submission.write_text("id,label\na,cat\nc,cat\n")
    result = clf("score", submission, answers)
    assert result.exit_code == 2
    assert error_line(result) == f"error: {submission}: 2 ids of {answers} have no prediction (e.g. b)"


def test_score_bad_files(answers, tmp_path):
    result = clf("score", tmp_path / "nope.csv", answers)
    assert result.exit_code == 2
    assert error_line(result) == f"error: {tmp_path / 'nope.csv'}: file not found"
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("image,prediction\na,cat\n")
    result = clf("score", wrong, answers)
    assert result.exit_code == 2
    assert error_line(result) == (f"error: {wrong}: no column 'id' (columns: image, prediction); "
                                  "set the column names with --id-col and --label-col")


def test_score_with_probs_reports_log_loss_and_ece(answers, tmp_path):
    submission = tmp_path / "submission.csv"
    submission.write_text("id,label\na,cat\nb,dog\nc,dog\nd,fox\n")
    probs = tmp_path / "probs.csv"
    probs.write_text("id,cat,dog,fox\na,0.8,0.1,0.1\nb,0.2,0.6,0.2\nc,0.4,0.5,0.1\nd,0.1,0.1,0.8\n")
    result = clf("score", submission, answers, "--probs", probs)
    assert result.exit_code == 0, result.output
    loss = -(np.log(0.8) + np.log(0.6) + np.log(0.4) + np.log(0.8)) / 4
    ece = (2 * abs(1 - 0.8) + abs(1 - 0.6) + abs(0 - 0.5)) / 4  # bins: 0.8 (2 right), 0.6 (right), 0.5 (wrong)
    assert result.stdout.strip() == (f"{submission}: accuracy 0.7500 on 4 rows of {answers}, log-loss {loss:.4f}, "
                                     f"ECE {ece:.4f} (15 bins) from {probs}")


def test_score_probs_of_clf_infer_give_the_log_loss_clf_eval_reports(noise, tmp_path):
    """The deployed path (infer --probs, then score --probs) and eval agree on log-loss and ECE."""
    probs_by_hand(noise.labelled, noise.model, tmp_path, "--tta", "hflip")
    answers = tmp_path / "answers.csv"
    answers.write_text("id,label\n" + "".join(f"{p.stem},{p.parent.name}\n" for p in noise.labelled.rglob("*.png")))
    result = clf("score", tmp_path / "sub.csv", answers, "--probs", tmp_path / "probs.csv")
    assert result.exit_code == 0, result.output
    got, _ = eval_report(noise.labelled, noise.model, tmp_path / "report.json", "--tta", "hflip")
    assert (f"accuracy {got['accuracy']:.4f} on 12 rows of {answers}, log-loss {got['log_loss']:.4f}, "
            f"ECE {got['ece']:.4f} (15 bins)") in result.stdout


def test_eval_of_a_checkpoint_whose_export_fails_parity(labelled, tmp_path, monkeypatch):
    """The kept-aside model lived in a temp folder: the message points at `clf export` instead of a deleted file."""
    from clf.export import graph
    from export_helpers import make_checkpoint, scale_float_initializers

    run = tmp_path / "run"
    make_checkpoint(run / "best.pt", data=labelled)
    set_metadata = graph.set_metadata
    monkeypatch.setattr(graph, "set_metadata", lambda m, p: (scale_float_initializers(m), set_metadata(m, p)))
    result = clf("eval", labelled, "--model", run, "--device", "cpu")
    assert result.exit_code == 3
    line = error_line(result)
    assert line.startswith(f"error: {run}: its ONNX export fails the parity check (max abs diff ")
    assert line.endswith(f"; inspect it with `clf export {run} --onnx`")
    assert "clf-eval-" not in line
