"""`clf train --config FILE`: YAML and TOML settings, flags over the file, and a run's config.json replayed."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from cli_helpers import clf
from train_helpers import make_data

from clf.config import TrainConfig
from clf.train.config_file import read_config_file

FAST = ["--workers", "0", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("cfg") / "sample", n_per_class=6)


def train_settings(run_dir) -> dict:
    return json.loads((run_dir / "config.json").read_text())["train"]


def test_a_yaml_file_sets_the_recipe_and_the_run_records_it(data, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"data: {data}\narch: cnn\nimg-size: 32\nepochs: 1\nbatch-size: 4\naugment: none\n"
                      "lr: 1e-3\nhflip: 0.5\n")
    result = clf("train", "--config", recipe, "--out", tmp_path / "runs", "--name", "y", *FAST)
    assert result.exit_code == 0, result.output
    train = train_settings(tmp_path / "runs" / "y")
    assert (train["epochs"], train["batch_size"], train["augment"], train["img_size"]) == (1, 4, "none", 32)
    assert train["lr"] == 1e-3 and train["hflip"] == 0.5 and train["data"] == str(data)
    assert train["config_file"] == str(recipe)
    assert train["config_sha256"] == hashlib.sha256(recipe.read_bytes()).hexdigest()


def test_a_toml_file_sets_the_recipe_and_a_flag_wins_over_it(data, tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('arch = "cnn"\nimg_size = 32\nepochs = 2\nbatch_size = 4\naugment = "none"\nseed = 7\n')
    result = clf("train", data, "--config", recipe, "--epochs", "1", "--out", tmp_path / "runs", "--name", "t", *FAST)
    assert result.exit_code == 0, result.output
    train = train_settings(tmp_path / "runs" / "t")
    assert (train["epochs"], train["batch_size"], train["augment"], train["seed"]) == (1, 4, "none", 7)
    assert train["config_file"] == str(recipe)


def test_replaying_a_run_reproduces_its_recipe_under_a_new_name(data, tmp_path):
    runs = tmp_path / "runs"
    first = clf("train", data, "--arch", "cnn", "--img-size", "32", "--epochs", "1", "--batch-size", "4",
                "--augment", "none", "--seed", "3", "--lr", "0.002", "--out", runs, "--name", "orig", *FAST)
    assert first.exit_code == 0, first.output
    replay = clf("train", "--config", runs / "orig" / "config.json", "--name", "again", *FAST)
    assert replay.exit_code == 0, replay.output
    orig, again = train_settings(runs / "orig"), train_settings(runs / "again")
    provenance = {"name", "config_file", "config_sha256"}
    assert {k: v for k, v in orig.items() if k not in provenance} == \
        {k: v for k, v in again.items() if k not in provenance}
    assert again["config_file"] == str(runs / "orig" / "config.json")
    weights = [torch.load(runs / run / "best.pt", weights_only=True)["model"] for run in ("orig", "again")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # same seed, same recipe: same weights


def test_a_replayed_run_without_name_never_lands_on_the_replayed_folder(data, tmp_path):
    """The name is not replayed: the default name (numbered when taken) keeps the original run intact."""
    runs = tmp_path / "runs"
    assert clf("train", data, "--arch", "cnn", "--img-size", "32", "--epochs", "1", "--batch-size", "4",
               "--out", runs, "--name", "cnn-32", *FAST).exit_code == 0
    before = (runs / "cnn-32" / "best.pt").read_bytes()
    replay = clf("train", "--config", runs / "cnn-32" / "config.json", *FAST)
    assert replay.exit_code == 0, replay.output
    assert (runs / "cnn-32" / "best.pt").read_bytes() == before
    assert sorted(p.name for p in runs.iterdir()) == ["cnn-32", "cnn-32-2"]


def test_replay_leaves_out_what_clf_set_on_the_run(tmp_path):
    run_config = tmp_path / "config.json"
    train = {**TrainConfig(data="/d", folds=3, fold=1, name="fold-1", out="/runs/g").to_dict(),
             "config_file": "/x.yaml", "config_sha256": "0" * 64, "quiet": True}
    run_config.write_text(json.dumps({"train": train, "clf_version": "0.1.0"}))
    settings = read_config_file(run_config).settings
    assert settings["folds"] == 3 and settings["data"] == "/d"
    assert not {"fold", "name", "out", "quiet", "config_file", "config_sha256"} & set(settings)


def test_an_old_run_config_replays_with_the_values_it_trained_with(tmp_path):
    train = {k: v for k, v in TrainConfig(data="/d").to_dict().items() if k not in ("augment", "ema")}
    (tmp_path / "config.json").write_text(json.dumps({"train": train}))
    settings = read_config_file(tmp_path / "config.json").settings
    assert settings["augment"] == "none" and settings["ema"] == 0.0  # LEGACY_VALUES, as from_saved


def test_a_run_made_from_a_file_resumes_with_it_and_another_files_recipe_is_refused(data, tmp_path):
    """config_file/config_sha256 are RESUMABLE (a later sitting may name another file, or none), but the file's
    settings are checked against the checkpoint's as flags are."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"data: {data}\narch: cnn\nimg_size: 32\nepochs: 1\nbatch_size: 4\naugment: none\n")
    runs = tmp_path / "runs"
    assert clf("train", "--config", recipe, "--out", runs, "--name", "r", *FAST).exit_code == 0
    resumed = clf("train", "--resume", runs / "r", "--config", recipe, "--epochs", "2", *FAST)
    assert resumed.exit_code == 0, resumed.output
    assert train_settings(runs / "r")["epochs"] == 2 and train_settings(runs / "r")["config_file"] == str(recipe)
    other = tmp_path / "other.toml"
    other.write_text("batch_size = 8\n")
    refused = clf("train", "--resume", runs / "r", "--config", other, "--epochs", "3", *FAST)
    assert refused.exit_code == 2 and "--batch-size 8 differs from the checkpoint's 4" in refused.output
