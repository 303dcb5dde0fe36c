"""clf.train.refit through `clf train --refit`: the validated run, then the same recipe on every image for the epoch
count validation chose, in runs/NAME/refit; resume of either part; the refusals; --overwrite; runs table; export.

Every run is the 32 px cnn on two easily told classes (tests/train_helpers.make_easy_data: 80 images, 64 training
and 16 validation in the validated run), CPU, no workers: resuming is bit-exact.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import clf, error_line
from train_helpers import assert_same_weights, interrupt_in_epoch, load, make_easy_data

from clf.config import TrainConfig
from clf.ownership import read_marker
from clf.train.refit import RefitPlan, refit_config
from clf.train.run_folder import RUN_FILES

FAST = ["--arch", "cnn", "--img-size", "32", "--batch-size", "8", "--workers", "0", "--device", "cpu", "--quiet"]
RECIPE = [*FAST, "--epochs", "5", "--lr", "3e-3", "--ema", "0.9"]
IMAGES = 80
# What the refit's settings may differ in from the validated run's: everything else is the same recipe.
# (the warm-up keeps its share of the shorter schedule: test_the_refit_keeps_the_warmups_share_of_the_schedule).
REFIT_CHANGES = {"val_split", "epochs", "warmup_epochs", "name", "out", "refit", "refit_of", "refit_epoch"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_easy_data(tmp_path_factory.mktemp("easy"))


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
    """One uninterrupted `clf train --refit`, and its output."""
    out = tmp_path_factory.mktemp("straight")
    result = clf("train", data, *RECIPE, "--out", out, "--name", "r", "--refit")
    assert result.exit_code == 0, result.output
    return out / "r", result.output


def test_the_refit_trains_on_every_image_for_the_chosen_epoch_count(straight, data):
    run, output = straight
    refit = run / "refit"
    best = load(run / "best.pt")
    chosen = best["epoch"]
    assert output.splitlines()[-2:] == [
        f"{run}: 5 epochs, best val acc {best['best_val_acc']:.4f} at epoch {chosen} ({best['weights']} weights)",
        f"{refit}: refit on all {IMAGES} images for {chosen} epochs",
    ]
    assert load(refit / "last.pt")["epoch"] == chosen
    assert [row["epoch"] for row in load(refit / "last.pt")["history"]] == list(range(1, chosen + 1))
    validated = json.loads((run / "config.json").read_text())["train"]
    settings = json.loads((refit / "config.json").read_text())["train"]
    assert {key for key in settings if settings[key] != validated[key]} <= REFIT_CHANGES
    assert (settings["val_split"], settings["epochs"], settings["refit_of"], settings["refit_epoch"]) == (
        0.0, chosen, "r", chosen)
    assert (settings["seed"], settings["batch_size"], settings["refit"], validated["refit"]) == (0, 8, False, True)
    split = json.loads((refit / "split.json").read_text())
    assert split["val"] == [] and len(split["train"]) == IMAGES  # every image
    assert all(row["val_acc"] is None for row in load(refit / "last.pt")["history"])
    assert json.loads((run / "refit.json").read_text()) == {
        "kind": "clf-refit", "format": 1, "epochs": chosen, "weights": best["weights"],
        "val_acc": best["best_val_acc"], "validated_epochs": 5, "folder": "refit"}
    assert read_marker(run)["files"] == sorted([*RUN_FILES, "refit.json"])
    assert read_marker(refit)["files"] == sorted(RUN_FILES)


@pytest.mark.parametrize(("validated", "chosen", "warmup"), [((30, 9), 20, 6), ((30, 9), 30, 9), ((30, 0), 20, 0),
                                                             ((5, 1), 4, 0), ((10, 3), 1, 0)])
def test_the_refit_keeps_the_warmups_share_of_the_schedule(validated, chosen, warmup, tmp_path):
    epochs, validated_warmup = validated
    recipe = TrainConfig(data="x", epochs=epochs, warmup_epochs=validated_warmup)
    plan = RefitPlan(epochs=chosen, weights="raw", val_acc=1.0, validated_epochs=epochs)
    refit = refit_config(recipe, tmp_path / "r", plan)
    assert (refit.epochs, refit.warmup_epochs, refit.val_split) == (chosen, warmup, 0.0)


def test_runs_lists_the_refit_beneath_its_run_and_export_takes_it(straight, tmp_path):
    run, _ = straight
    result = clf("runs", run.parent)
    assert result.exit_code == 0, result.output
    names = [line.split("│")[1].strip() for line in result.output.splitlines() if line.startswith("│")]
    assert names == ["r", "r/refit"]
    output = tmp_path / "refit.onnx"
    result = clf("export", run / "refit", "--onnx", "-o", output)
    assert result.exit_code == 0, result.output
    proof = json.loads((tmp_path / "refit.parity.json").read_text())
    assert output.is_file() and proof["image_source"] == "training images of refit (no validation split)"
    assert "refit on every image" not in result.output


def test_exporting_the_validated_run_of_a_refit_says_where_the_model_to_submit_is(straight, tmp_path):
    run, _ = straight
    result = clf("export", run, "--onnx", "-o", tmp_path / "validated.onnx")
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "exporting the validated run; its refit on every image is" in said
    assert f"clf export {run / 'refit'}" in said


def test_resuming_a_finished_refit_trains_nothing(straight):
    run, _ = straight
    before = {path: path.stat().st_mtime_ns for path in (run / "last.pt", run / "refit" / "last.pt")}
    result = clf("train", "--resume", run, "--workers", "0", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].endswith(" epochs (finished earlier)")
    assert {path: path.stat().st_mtime_ns for path in before} == before


def assert_same_refit(a: Path, b: Path) -> None:
    for name in ("last.pt", "refit/last.pt", "refit/best.pt"):
        ckpt_a, ckpt_b = load(a / name), load(b / name)
        assert ckpt_a["epoch"] == ckpt_b["epoch"], name
        assert_same_weights(ckpt_a["model"], ckpt_b["model"])
    assert (a / "refit.json").read_text() == (b / "refit.json").read_text()


@pytest.mark.parametrize("epoch, after_batches, where", [
    (3, 2, "validated run, epoch 3"),
    (7, 2, "refit, epoch 2"),  # 5 validated epochs, then the refit's
    (6, 1, "refit, epoch 1: nothing of it to resume"),
])
def test_an_interrupted_refit_run_resumes_where_it_stopped(epoch, after_batches, where, data, straight, tmp_path,
                                                            monkeypatch):
    run = tmp_path / "r"
    with monkeypatch.context() as patch:
        interrupt_in_epoch(patch, epoch=epoch, after_batches=after_batches)
        result = clf("train", data, *RECIPE, "--out", tmp_path, "--name", "r", "--refit")
    assert result.exit_code == 130, result.output
    refit_started = epoch > 5
    assert (run / "refit.json").exists() == refit_started, where
    if refit_started:
        assert "refit interrupted; continue it with: clf train --resume " + str(run) in result.output
    result = clf("train", "--resume", run, "--workers", "0", "--quiet")
    assert result.exit_code == 0, result.output
    assert_same_refit(straight[0], run)  # bit-exact: as if never interrupted


def test_refit_refusals(data, tmp_path):
    out = tmp_path / "runs"
    no_split = ("error: --refit trains again for the epoch count validation chose, so it needs a validation split; "
                "drop --no-val / --val-split 0 (or train on every image for a count you choose: --no-val --epochs N)")
    for flags in (["--no-val"], ["--val-split", "0"]):
        result = clf("train", data, *FAST, "--out", out, "--refit", *flags)
        assert (result.exit_code, error_line(result)) == (2, no_split)
    result = clf("train", data, *FAST, "--out", out, "--refit", "--folds", "2")
    assert (result.exit_code, error_line(result)) == (2, (
        "error: --refit with --folds: each fold chooses its own best epoch, so there is no one epoch count to refit "
        "for; refit a single validated run (leave out --folds), or train on every image with --no-val --epochs N"))
    assert not out.exists()


def test_resume_with_refit_adds_a_refit_to_a_finished_run(data, tmp_path):
    plain = clf("train", data, *FAST, "--epochs", "2", "--ema", "0", "--out", tmp_path, "--name", "p")
    assert plain.exit_code == 0, plain.output
    result = clf("train", "--resume", tmp_path / "p", "--refit", "--workers", "0", "--quiet")
    assert result.exit_code == 0, result.output
    chosen = load(tmp_path / "p" / "best.pt")["epoch"]
    assert load(tmp_path / "p" / "refit" / "last.pt")["epoch"] == chosen
    assert load(tmp_path / "p" / "last.pt")["epoch"] == 2  # the validated run was not trained further


def test_overwrite_replaces_the_refit_too_but_never_a_file_of_yours(data, tmp_path):
    args = ["train", data, *FAST, "--epochs", "2", "--ema", "0", "--out", tmp_path, "--name", "o", "--refit"]
    assert clf(*args).exit_code == 0
    mine = tmp_path / "o" / "refit" / "notes.txt"
    mine.write_text("mine")
    result = clf(*args, "--overwrite")
    assert result.exit_code == 2
    assert error_line(result) == (f"error: {tmp_path / 'o' / 'refit'}: holds 1 file(s) clf did not write (notes.txt); "
                                  "--overwrite only removes clf's own files: move them out or choose another name")
    mine.unlink()
    result = clf(*args, "--overwrite", "--lr", "1e-3")
    assert result.exit_code == 0, result.output
    assert load(tmp_path / "o" / "refit" / "last.pt")["config"]["lr"] == 1e-3
