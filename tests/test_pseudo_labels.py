"""`clf train --pseudo-labels PROBS.csv --pseudo-images DIR`: the confident rows of `clf infer --probs` on unlabelled
images join the training split (clf.data.pseudo_labels, clf.train.pseudo_rows)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import clf, error_line
from train_helpers import make_easy_data

from clf.data.pseudo_labels import read_pseudo_labels
from clf.train import trainer as trainer_module
from clf.train.pseudo_rows import smoothed_one_hot

TINY_FLAGS = ("--arch", "cnn", "--img-size", "32", "--epochs", "1", "--batch-size", "8", "--workers", "0",
              "--device", "cpu", "--ema", "0", "--quiet")
HEADER = "id,left,top"
# 4 rows reach the 0.9 threshold as 'left' (0.9 itself included), 2 as 'top'; 3 rows below it are unused
ROWS = ["u0,0.95,0.05", "u1,0.99,0.01", "u2,0.9,0.1", "u3,1,0", "u4,0.02,0.98", "u5,0.0001,0.9999",
        "u6,0.6,0.4", "u7,0.5,0.5", "u8,0.12,0.88"]
CONFIDENT = ["u0", "u1", "u2", "u3", "u4", "u5"]


@pytest.fixture()
def comp(tmp_path) -> Path:
    """tmp/train (left/top, 10 each), tmp/test (u0..u8.png, unlabelled) and tmp/probs.csv (ROWS)."""
    make_easy_data(tmp_path / "train", n_per_class=10)
    make_easy_data(tmp_path / "gen", n_per_class=5)
    (tmp_path / "test").mkdir()
    generated = sorted((tmp_path / "gen").rglob("*.png"))
    for index in range(len(ROWS)):
        shutil.copy(generated[index], tmp_path / "test" / f"u{index}.png")
    write_probs(tmp_path / "probs.csv", ROWS)
    return tmp_path


def write_probs(path: Path, rows: list[str], header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def train_pseudo(comp: Path, *extra: str, name: str = "p", probs: str = "probs.csv", images: str = "test"):
    return clf("train", comp / "train", *TINY_FLAGS, "--out", comp / "runs", "--name", name,
               "--pseudo-labels", comp / probs, "--pseudo-images", comp / images, *extra)


def config(run_dir: Path) -> dict:
    return json.loads((run_dir / "config.json").read_text())


def split_names(run_dir: Path) -> tuple[set[str], set[str]]:
    split = json.loads((run_dir / "split.json").read_text())
    return set(split["val"]), set(split["train"])


def test_rows_below_the_threshold_are_unused_and_the_run_records_what_it_added(comp, monkeypatch):
    datasets = []
    original = trainer_module.build_loaders
    monkeypatch.setattr(trainer_module, "build_loaders",
                        lambda split, *a: datasets.append(split) or original(split, *a))
    result = train_pseudo(comp)
    assert result.exit_code == 0, result.output
    record = config(comp / "runs" / "p")["pseudo_labels"]
    assert record == {"file": str(comp / "probs.csv"), "images": str(comp / "test"),
                      "sha256": hashlib.sha256((comp / "probs.csv").read_bytes()).hexdigest(), "threshold": 0.9,
                      "soft": False, "rows": 9, "added": {"left": 4, "top": 2}}
    split = datasets[0]
    pseudo = split.train.paths[-split.pseudo_images:]
    assert [Path(p).stem for p in pseudo] == CONFIDENT
    assert split.train.labels[-6:] == [0, 0, 0, 0, 1, 1]
    assert split.train_targets is None
    val, train = split_names(comp / "runs" / "p")
    assert not {n for n in val | train if Path(n).name.startswith("u")}  # split.json: DATA's images only
    assert len(val) + len(train) == 20
    assert not {Path(p).stem for p in split.val.paths} & set(CONFIDENT)


def test_a_higher_threshold_adds_fewer_rows(comp):
    result = train_pseudo(comp, "--pseudo-threshold", "0.99")
    assert result.exit_code == 0, result.output
    assert config(comp / "runs" / "p")["pseudo_labels"]["added"] == {"left": 2, "top": 1}


def test_soft_targets_are_the_probability_rows_and_labelled_images_their_smoothed_one_hot(comp, monkeypatch):
    datasets = []
    original = trainer_module.build_loaders

    def spy(split, *args):
        loaders = original(split, *args)
        datasets.append(loaders[0].dataset)
        return loaders

    monkeypatch.setattr(trainer_module, "build_loaders", spy)
    result = train_pseudo(comp, "--pseudo-soft", "--label-smoothing", "0.1", "--mixup", "0.2")
    assert result.exit_code == 0, result.output
    assert config(comp / "runs" / "p")["pseudo_labels"]["soft"] is True
    dataset = datasets[0]
    probs = np.array([[0.95, 0.05], [0.99, 0.01], [0.9, 0.1], [1, 0], [0.02, 0.98], [0.0001, 0.9999]], np.float32)
    assert torch.equal(dataset.targets[-6:], torch.from_numpy(probs))
    labelled = len(dataset) - 6
    expected = smoothed_one_hot(dataset.labels[:labelled], 2, 0.1)
    assert torch.equal(dataset.targets[:labelled], torch.from_numpy(expected))
    image, target = dataset[len(dataset) - 1]
    assert target.dtype == torch.float32 and target.shape == (2,)


def test_smoothed_one_hot_is_torchs_label_smoothing_rule():
    from clf.train.mixing import smoothed_one_hot as torch_rule

    labels = [0, 2, 1]
    assert np.allclose(smoothed_one_hot(labels, 3, 0.2), torch_rule(torch.tensor(labels), 3, 0.2).numpy())


def test_the_class_columns_are_mapped_by_name(comp):
    write_probs(comp / "swapped.csv", ["u0,0.05,0.95", "u1,0.97,0.03"], header="image,top,left")
    pseudo = read_pseudo_labels(comp / "swapped.csv", comp / "test", ["left", "top"])
    assert np.allclose(pseudo.probs, [[0.95, 0.05], [0.03, 0.97]])
    assert [Path(p).name for p in pseudo.paths] == ["u0.png", "u1.png"]


def _bad(comp: Path, rows: list[str], header: str = HEADER) -> str:
    return str(write_probs(comp / "bad.csv", rows, header))


BAD_ROWS = {
    "nan": (["u0,nan,0.5"], "line 2: probability of 'left' is 'nan'; probabilities are finite numbers >= 0: "
                            "write it with `clf infer IMAGES --model MODEL --probs PROBS.csv`"),
    "inf": (["u0,0.5,0.5", "u1,inf,0"], "line 3: probability of 'left' is 'inf'; probabilities are finite numbers "
                                       ">= 0: write it with `clf infer IMAGES --model MODEL --probs PROBS.csv`"),
    "negative": (["u0,-0.1,1.1"], "line 2: probability of 'left' is '-0.1'; probabilities are finite numbers >= 0: "
                                  "write it with `clf infer IMAGES --model MODEL --probs PROBS.csv`"),
    "empty": (["u0,,1"], "line 2: probability of 'left' is ''; probabilities are finite numbers >= 0: "
                         "write it with `clf infer IMAGES --model MODEL --probs PROBS.csv`"),
    "sum": (["u0,0.5,0.498"], "line 2: probabilities sum to 0.998, not 1 (tolerance 0.001); write it with "
                              "`clf infer IMAGES --model MODEL --probs PROBS.csv`"),
    "unknown id": (["u0,1,0", "nope,1,0"], "line 3: no image 'nope' in {test}; --pseudo-images must be the folder "
                                            "`clf infer --probs` predicted"),
    "duplicated id": (["u0,1,0", "u1,1,0", "u0.png,0,1"], "line 4: 'u0.png' is listed twice (also line 2)"),
    "absolute id": (["/etc/passwd,1,0"], "line 2: id '/etc/passwd' points outside {test}; ids are file names or "
                                         "relative paths inside the image folder"),
    "dotdot id": (["../train/left/00.png,1,0"], "line 2: id '../train/left/00.png' points outside {test}; ids are "
                                                "file names or relative paths inside the image folder"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_a_bad_row_is_one_line_naming_the_file_and_line(comp, case):
    rows, message = BAD_ROWS[case]
    bad = _bad(comp, rows)
    result = train_pseudo(comp, probs="bad.csv")
    assert result.exit_code == 2, result.output
    assert error_line(result) == f"error: {bad}: " + message.format(test=comp / "test")
    assert not (comp / "runs" / "p").exists()


def test_a_missing_class_column_is_refused(comp):
    bad = _bad(comp, ["u0,1"], header="id,left")
    result = train_pseudo(comp, probs="bad.csv")
    assert result.exit_code == 2
    assert error_line(result) == (f"error: {bad}: no probability column for class 'top' (columns: id, left); "
                                  "pseudo-labels need the probabilities of a model of DATA's classes: write it with "
                                  "`clf infer IMAGES --model MODEL --probs PROBS.csv`")


def test_a_column_that_is_no_class_is_refused(comp):
    bad = _bad(comp, ["u0,1,0,0"], header="id,left,top,right")
    result = train_pseudo(comp, probs="bad.csv")
    assert result.exit_code == 2
    assert error_line(result) == (f"error: {bad}: column 'right' is not a class of DATA (left, top); "
                                  "pseudo-labels need the probabilities of a model of DATA's classes: write it with "
                                  "`clf infer IMAGES --model MODEL --probs PROBS.csv`")


@pytest.mark.parametrize(("images", "how"), [("train", "is"), ("train/left", "is inside"), (".", "holds")])
def test_the_training_folder_is_not_a_pseudo_folder(comp, images, how):
    result = train_pseudo(comp, images=images)
    assert result.exit_code == 2
    assert error_line(result) == (f"error: {comp / images}: --pseudo-images {how} the training folder "
                                  f"{comp / 'train'}; pseudo-labels are for unlabelled images: give the test folder "
                                  "`clf infer --probs` predicted")


def test_a_training_image_under_another_name_is_refused(comp):
    os.link(comp / "train" / "left" / "03.png", comp / "test" / "twin.png")
    bad = _bad(comp, ["u0,1,0", "twin,1,0"])
    result = train_pseudo(comp, probs="bad.csv")
    assert result.exit_code == 2
    assert error_line(result) == (f"error: {bad}: line 3: {comp / 'test' / 'twin.png'} is the same file as the "
                                  f"training image {comp / 'train' / 'left' / '03.png'}; --pseudo-images must be the "
                                  "unlabelled test images, not the training folder")


def test_a_link_out_of_the_pseudo_folder_is_refused(comp):
    (comp / "test" / "escape.png").symlink_to(comp / "gen" / "top" / "04.png")
    bad = _bad(comp, ["escape.png,0,1"])
    result = train_pseudo(comp, probs="bad.csv")
    assert result.exit_code == 2
    assert error_line(result) == (f"error: {bad}: line 2: {comp / 'test' / 'escape.png'} is a link to "
                                  f"{comp / 'gen' / 'top' / '04.png'}, outside {comp / 'test'}; pseudo-labels name the "
                                  "images inside --pseudo-images (copy the image there)")


@pytest.mark.parametrize(("args", "message"), [
    (("--pseudo-threshold", "0"), "--pseudo-threshold must be > 0 and <= 1 (a top probability), got 0.0"),
    (("--pseudo-threshold", "1.5"), "--pseudo-threshold must be > 0 and <= 1 (a top probability), got 1.5"),
])
def test_a_threshold_outside_0_1_is_refused(comp, args, message):
    result = train_pseudo(comp, *args)
    assert result.exit_code == 2
    assert error_line(result) == f"error: {message}"


@pytest.mark.parametrize(("args", "message"), [
    (("--pseudo-labels", "probs.csv"),
     "--pseudo-labels needs --pseudo-images DIR: the folder of the images its ids name (the test images)"),
    (("--pseudo-images", "test"),
     "--pseudo-images names the images of --pseudo-labels PROBS.csv; add it or leave out --pseudo-images"),
    (("--pseudo-soft",), "--pseudo-soft trains the rows of --pseudo-labels PROBS.csv; add it or leave out "
                         "--pseudo-soft"),
    (("--pseudo-labels", "probs.csv", "--pseudo-images", "test", "--task", "multilabel", "--labels-csv", "l.csv"),
     "--pseudo-labels takes single-label probabilities (one class per image); leave it out with --task multilabel"),
])
def test_pseudo_options_that_do_not_go_together_are_refused(comp, args, message):
    result = clf("train", comp / "train", *TINY_FLAGS, "--out", comp / "runs", *args)
    assert result.exit_code == 2
    assert error_line(result) == f"error: {message}"


def test_resume_keeps_the_pseudo_rows_and_refuses_a_changed_file(comp):
    assert train_pseudo(comp).exit_code == 0
    run_dir = comp / "runs" / "p"
    resumed = clf("train", "--resume", run_dir, "--epochs", "2", "--workers", "0", "--device", "cpu", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert config(run_dir)["pseudo_labels"]["added"] == {"left": 4, "top": 2}
    recorded = config(run_dir)["pseudo_labels"]["sha256"]
    write_probs(comp / "probs.csv", ROWS[:-1] + ["u8,0.99,0.01"])
    now = hashlib.sha256((comp / "probs.csv").read_bytes()).hexdigest()
    result = clf("train", "--resume", run_dir, "--epochs", "3", "--workers", "0", "--device", "cpu", "--quiet")
    assert result.exit_code == 2
    assert error_line(result) == (f"error: {comp / 'probs.csv'}: changed since the run started (sha256 {now[:12]}..., "
                                  f"the run recorded {recorded[:12]}...); pass the file it trained with, or start a "
                                  "new run")


def test_resume_refuses_pseudo_labels_for_a_run_trained_without_them(comp):
    plain = clf("train", comp / "train", *TINY_FLAGS, "--out", comp / "runs", "--name", "plain")
    assert plain.exit_code == 0, plain.output
    result = clf("train", "--resume", comp / "runs" / "plain", "--epochs", "2", "--workers", "0", "--device", "cpu",
                 "--pseudo-labels", comp / "probs.csv", "--pseudo-images", comp / "test")
    assert result.exit_code == 2
    assert error_line(result) == (f"error: {comp / 'probs.csv'}: the run being resumed trained without pseudo-labels; "
                                  "start a new run to add them")


def test_every_fold_trains_with_the_pseudo_rows_and_validates_on_none(comp):
    result = train_pseudo(comp, "--folds", "2", name="g")
    assert result.exit_code == 0, result.output
    group = comp / "runs" / "g"
    sha = hashlib.sha256((comp / "probs.csv").read_bytes()).hexdigest()
    assert json.loads((group / "group.json").read_text())["config"]["pseudo_sha256"] == sha
    validated = set()
    for fold in ("fold-0", "fold-1"):
        assert config(group / fold)["pseudo_labels"]["added"] == {"left": 4, "top": 2}
        val, train = split_names(group / fold)
        assert not {n for n in val | train if Path(n).name.startswith("u")}
        validated |= {f"{fold}:{n}" for n in val}
    assert len(validated) == 20  # the two folds validate on every image of DATA, and on nothing else
    oof = (group / "oof.csv").read_text()
    assert "u0" not in oof


def test_a_fold_group_resumed_with_a_changed_file_is_refused(comp):
    assert train_pseudo(comp, "--folds", "2", name="g").exit_code == 0
    write_probs(comp / "probs.csv", ROWS[:-1] + ["u8,0.99,0.01"])
    result = clf("train", "--resume", comp / "runs" / "g", "--epochs", "2", "--workers", "0", "--device", "cpu")
    assert result.exit_code == 2
    assert "changed since the run started" in error_line(result)


def test_the_refit_trains_with_the_same_pseudo_rows(comp):
    result = train_pseudo(comp, "--refit", name="r")
    assert result.exit_code == 0, result.output
    validated, refit = config(comp / "runs" / "r"), config(comp / "runs" / "r" / "refit")
    assert refit["pseudo_labels"] == validated["pseudo_labels"]
    assert refit["pseudo_labels"]["added"] == {"left": 4, "top": 2}
    val, train = split_names(comp / "runs" / "r" / "refit")
    assert not val and len(train) == 20


def test_the_probs_clf_infer_writes_are_read_as_they_are(comp):
    """The two commands of the README: a run, its export, `clf infer --probs` on the test images, a pseudo run."""
    teacher = clf("train", comp / "train", *TINY_FLAGS, "--out", comp / "runs", "--name", "teacher")
    assert teacher.exit_code == 0, teacher.output
    exported = clf("export", comp / "runs" / "teacher", "--onnx", "--device", "cpu")
    assert exported.exit_code == 0, exported.output
    inferred = clf("infer", comp / "test", "--model", comp / "runs" / "teacher" / "model.onnx", "--csv",
                   comp / "submission.csv", "--probs", comp / "inferred.csv", "--device", "cpu")
    assert inferred.exit_code == 0, inferred.output
    # two classes: every row's top probability is at least 0.5, so every test image joins at 0.5
    result = train_pseudo(comp, "--pseudo-threshold", "0.5", probs="inferred.csv")
    assert result.exit_code == 0, result.output
    record = config(comp / "runs" / "p")["pseudo_labels"]
    assert record["rows"] == len(ROWS) and sum(record["added"].values()) == len(ROWS)
    tops = read_pseudo_labels(comp / "inferred.csv", comp / "test", ["left", "top"]).probs.argmax(axis=1)
    assert record["added"] == {"left": int((tops == 0).sum()), "top": int((tops == 1).sum())}


def test_a_replayed_config_keeps_the_files_sha256_unless_another_file_is_given(comp):
    assert train_pseudo(comp).exit_code == 0
    replayed = comp / "runs" / "p" / "config.json"
    shutil.copy(comp / "probs.csv", comp / "other.csv")
    write_probs(comp / "probs.csv", ROWS[:-1] + ["u8,0.99,0.01"])
    refused = clf("train", "--config", replayed, "--name", "again", "--epochs", "1")
    assert refused.exit_code == 2
    assert "probs.csv: changed since the run started" in error_line(refused)
    result = clf("train", "--config", replayed, "--name", "again", "--epochs", "1",
                 "--pseudo-labels", comp / "other.csv")
    assert result.exit_code == 0, result.output
    assert config(comp / "runs" / "again")["pseudo_labels"]["added"] == {"left": 4, "top": 2}
