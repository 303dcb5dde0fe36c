"""`clf train --pretrained-path FILE --layer-decay D --freeze-epochs N` end to end, and its refusals as exact lines."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from cli_helpers import clf, error_line
from train_helpers import make_data

from clf.models.registry import create_model

FAST = ["--arch", "cnn", "--img-size", "32", "--batch-size", "8", "--workers", "0", "--device", "cpu", "--ema", "0"]


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("fine_tune_cli")
    four = make_data(tmp / "four", n_per_class=6)
    three = make_data(tmp / "three", n_per_class=6, classes=("circle", "square", "star"))
    result = clf("train", four, *FAST, "--quiet", "--epochs", "1", "--out", tmp / "runs", "--name", "base")
    assert result.exit_code == 0, result.output
    return {"tmp": tmp, "four": four, "three": three, "base": tmp / "runs" / "base"}


def test_fine_tune_a_run_on_other_classes(places, tmp_path):
    weights = places["base"] / "best.pt"
    result = clf("train", places["three"], *FAST, "--epochs", "2", "--pretrained-path", weights,
                 "--layer-decay", "0.75", "--freeze-epochs", "1", "--out", tmp_path, "--name", "ft")
    assert result.exit_code == 0, result.output
    assert f"INFO {weights}: weights loaded; classifier head re-initialised for 3 classes (the file's has 4)" in (
        result.output.splitlines())
    config = json.loads((tmp_path / "ft" / "config.json").read_text())["train"]
    assert config["pretrained_path"] == str(weights)
    assert config["pretrained_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert (config["layer_decay"], config["freeze_epochs"]) == (0.75, 1)


def test_a_run_folder_means_its_best_checkpoint(places, tmp_path):
    result = clf("train", places["four"], *FAST, "--quiet", "--epochs", "1", "--pretrained-path", places["base"],
                 "--out", tmp_path, "--name", "ft")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "ft" / "config.json").read_text())["train"]
    assert config["pretrained_path"] == str(places["base"] / "best.pt")


def refused(places, tmp_path, *args) -> str:
    result = clf("train", places["three"], *FAST, "--quiet", "--out", tmp_path / "runs", *args)
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "runs").exists()  # refused before any run folder
    return error_line(result)


def test_a_missing_file(places, tmp_path):
    missing = tmp_path / "nope.pt"
    assert refused(places, tmp_path, "--pretrained-path", missing) == (
        f"error: {missing}: weights file not found; check --pretrained-path")


def test_a_clf_checkpoint_of_another_arch(places, tmp_path):
    weights = places["base"] / "best.pt"
    assert refused(places, tmp_path, "--pretrained-path", weights, "--arch", "alexnet", "--img-size", "64") == (
        f"error: {weights}: was trained as arch 'cnn', not 'alexnet'; use --arch cnn")


def test_weights_of_another_shape(places, tmp_path):
    torch.save(create_model("cnn", 3, width=8).state_dict(), tmp_path / "narrow.pt")
    assert refused(places, tmp_path, "--pretrained-path", tmp_path / "narrow.pt") == (
        f"error: {tmp_path / 'narrow.pt'}: weights do not fit arch 'cnn' ('features.0.0.weight' is [8, 3, 3, 3] in "
        "the file, [16, 3, 3, 3] in the model); pass the --arch the weights were trained with")


def test_both_sources_of_weights(places, tmp_path):
    assert refused(places, tmp_path, "--pretrained", "--pretrained-path", places["base"] / "best.pt") == (
        "error: --pretrained and --pretrained-path both say where the weights come from; choose one")


def test_freezing_every_epoch(places, tmp_path):
    assert refused(places, tmp_path, "--epochs", "2", "--freeze-epochs", "2", "--pretrained-path",
                   places["base"] / "best.pt") == (
        "error: --freeze-epochs 2 must be less than --epochs 2: the whole model trains after the frozen epochs")


def test_help_lists_the_fine_tuning_flags():
    result = clf("train", "--help")
    assert all(flag in result.output for flag in ("--pretrained-path", "--layer-decay", "--freeze-epochs"))
