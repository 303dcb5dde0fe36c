"""`clf distill TEACHER DATA`: a student run on a two-model ensemble's soft predictions, end to end through the CLI
(train two tiny runs, export their ensemble, distill, export the student with parity), and its bad inputs."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import clf, error_line
from train_helpers import make_easy_data

from clf.distill import teacher as teacher_module
from clf.errors import EXIT_BAD_INPUT
from clf.train.kd_data import read_teacher_targets

TINY = ("--arch", "cnn", "--img-size", "32", "--epochs", "1", "--batch-size", "8", "--workers", "0", "--device",
        "cpu", "--ema", "0", "--quiet")


@pytest.fixture(scope="module")
def comp(tmp_path_factory) -> Path:
    """train/ (left/top, 10 each), test/ (8 unlabelled), two tiny runs a and b and their ensemble ens.onnx."""
    root = tmp_path_factory.mktemp("distill")
    make_easy_data(root / "train", n_per_class=10)
    make_easy_data(root / "gen", n_per_class=4)
    (root / "test").mkdir()
    for index, path in enumerate(sorted((root / "gen").rglob("*.png"))):
        shutil.copy(path, root / "test" / f"u{index}.png")
    for seed, name in ((1, "a"), (2, "b")):
        result = clf("train", root / "train", *TINY, "--out", root / "runs", "--name", name, "--seed", str(seed))
        assert result.exit_code == 0, result.output
    result = clf("export", root / "runs" / "a", root / "runs" / "b", "--onnx", "-o", root / "ens.onnx")
    assert result.exit_code == 0, result.output
    return root


def distill(comp: Path, teacher: Path | str, name: str, *extra: str):
    return clf("distill", teacher, comp / "train", *TINY, "--out", comp / "runs", "--name", name, *extra)


def probs_csv(path: Path) -> dict[str, list[float]]:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][1:] == ["left", "top"]
    return {row[0]: [float(v) for v in row[1:]] for row in rows[1:]}


def test_a_student_of_a_two_model_ensemble_trains_exports_and_passes_parity(comp):
    result = distill(comp, comp / "ens.onnx", "student", "--unlabelled", comp / "test", "--epochs", "2",
                     "--kd-views", "2")
    assert result.exit_code == 0, result.output
    run = comp / "runs" / "student"
    config = json.loads((run / "config.json").read_text())
    record = config["distillation"]
    assert [m["run"] for m in record["members"]] == ["a", "b"]
    assert record["unlabelled_images"] == 8 and record["labelled_images"] == 16 and record["views"] == 2
    assert record["unlabelled"] == str(comp / "test")
    train = config["train"]
    assert train["teacher_sha256"] == record["sha256"] and train["kd_views"] == 2
    assert (train["kd_temperature"], train["kd_alpha"]) == (4.0, 0.5)
    # the teacher predicted the training split and the unlabelled images, never a validation image
    targets, _ = read_teacher_targets(run / "teacher_targets.npz")
    split = json.loads((run / "split.json").read_text())
    assert split["val"] and not set(targets.keys) & set(split["val"])  # both relative to DATA
    assert set(targets.keys[:16]) == set(split["train"])
    assert targets.unlabelled == 8 and targets.probs.shape == (24, 2, 2)
    assert not any(Path(p).name.startswith("u") for p in split["train"])  # split.json: DATA's images only
    # view 0 of the teacher's targets is what `clf infer --probs` writes for the same images
    result = clf("infer", comp / "test", "--model", comp / "ens.onnx", "--csv", comp / "sub.csv", "--probs",
                 comp / "probs.csv", "--quiet")
    assert result.exit_code == 0, result.output
    infer = probs_csv(comp / "probs.csv")
    for path, row in zip(targets.paths[16:], targets.probs[16:, 0]):
        assert row == pytest.approx(infer[Path(path).stem], abs=1e-5)
    assert not np.allclose(targets.probs[:, 0], targets.probs[:, 1])  # view 1 is another image
    result = clf("export", run, "--onnx")
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output


def test_resume_keeps_the_cached_predictions_and_refuses_another_teacher(comp, monkeypatch):
    result = distill(comp, comp / "ens.onnx", "resumed")
    assert result.exit_code == 0, result.output
    result = clf("export", comp / "runs" / "a", "--onnx", "-o", comp / "a.onnx")
    assert result.exit_code == 0, result.output
    result = clf("distill", comp / "a.onnx", "--resume", comp / "runs" / "resumed", "--epochs", "2")
    assert result.exit_code == EXIT_BAD_INPUT
    assert "not the teacher the run started with" in error_line(result)
    result = clf("train", "--resume", comp / "runs" / "resumed", "--epochs", "2")
    assert "clf distill TEACHER --resume RUN" in error_line(result)

    def never(*args, **kwargs):
        raise AssertionError("a resumed run asked the teacher again")

    monkeypatch.setattr(teacher_module.OnnxTeacher, "soft_targets", never)
    result = clf("distill", comp / "ens.onnx", "--resume", comp / "runs" / "resumed", "--epochs", "2", "--quiet")
    assert result.exit_code == 0, result.output


def test_a_run_folder_teacher_is_exported_first(comp):
    result = distill(comp, comp / "runs" / "a", "from-run", "--kd-views", "1")
    assert result.exit_code == 0, result.output
    record = json.loads((comp / "runs" / "from-run" / "config.json").read_text())["distillation"]
    assert [m["run"] for m in record["members"]] == ["a"] and record["views"] == 1


def test_bad_inputs_get_one_line_each(comp, tmp_path):
    def refused(teacher, *extra, data=comp / "train") -> str:
        result = clf("distill", teacher, data, *TINY, "--out", tmp_path / "runs", *extra)
        assert result.exit_code == EXIT_BAD_INPUT, result.output
        return error_line(result)

    assert "no such file or folder" in refused(tmp_path / "missing.onnx")
    (tmp_path / "random.onnx").write_bytes(np.random.default_rng(0).bytes(512))
    assert "not a clf model" in refused(tmp_path / "random.onnx")
    import onnx

    model = onnx.load(str(comp / "ens.onnx"))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "bare.onnx"))
    assert "no clf metadata" in refused(tmp_path / "bare.onnx")
    shutil.copytree(comp / "train", tmp_path / "other")
    (tmp_path / "other" / "top").rename(tmp_path / "other" / "corner")
    assert "classes (left, top) differ from DATA's (corner, left)" in refused(comp / "ens.onnx",
                                                                              data=tmp_path / "other")
    # a run folder's classes come from its checkpoint, before the student's run folder exists
    assert "classes (left, top) differ from DATA's (corner, left)" in refused(comp / "runs" / "a",
                                                                              data=tmp_path / "other")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert "--unlabelled is the training folder" in refused(comp / "ens.onnx", "--unlabelled", comp / "train")
    assert "--unlabelled is inside the training folder" in refused(comp / "ens.onnx", "--unlabelled",
                                                                   comp / "train" / "left")
    (tmp_path / "alias").symlink_to(comp / "train")
    assert "--unlabelled is the training folder" in refused(comp / "ens.onnx", "--unlabelled", tmp_path / "alias")
    (tmp_path / "linked").mkdir()
    first = sorted((comp / "train" / "left").glob("*.png"))[0]
    (tmp_path / "linked" / "x.png").hardlink_to(first)
    assert "the same file as the training image" in refused(comp / "ens.onnx", "--unlabelled", tmp_path / "linked")
