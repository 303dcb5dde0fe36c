"""`clf train` with the imbalance options (--focal-gamma, --class-weights, --sampler): what the run records,
resume, and the one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import clf, error_line
from train_helpers import assert_same_weights, load, make_data, without_seconds

from clf.train import trainer as trainer_module
from clf.train.sampler import BalancedSampler

FAST = ["--arch", "cnn", "--img-size", "32", "--batch-size", "8", "--workers", "0", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("sample"))


def test_focal_gamma_is_recorded_by_a_focal_run(data, tmp_path):
    result = clf("train", data, *FAST, "--epochs", "1", "--loss", "focal", "--focal-gamma", "0.5", "--out", tmp_path,
                 "--name", "f")
    assert result.exit_code == 0, result.output
    assert load(tmp_path / "f" / "last.pt")["config"]["focal_gamma"] == 0.5


@pytest.mark.parametrize(("args", "message"), [
    (["--loss", "focal", "--focal-gamma", "-1"], "error: --focal-gamma must be >= 0 (0 is cross-entropy), got -1.0"),
    (["--loss", "focal", "--focal-gamma", "nan"], "error: --focal-gamma must be a finite number, got nan"),
    (["--loss", "cross_entropy", "--focal-gamma", "1"],
     "error: --focal-gamma applies to --loss focal; add --loss focal or leave it out"),
    (["--focal-gamma", "1"], "error: --focal-gamma applies to --loss focal; add --loss focal or leave it out"),
])
def test_a_bad_focal_gamma_is_one_line_before_any_run_folder(data, tmp_path, args, message):
    result = clf("train", data, *FAST, *args, "--out", tmp_path)
    assert result.exit_code == 2
    assert error_line(result) == message
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def skewed(tmp_path_factory) -> Path:
    """The sample competition with 'star' cut to 4 of its 12 images."""
    train = make_data(tmp_path_factory.mktemp("skewed"))
    for path in sorted((train / "star").iterdir())[4:]:
        path.unlink()
    return train


def train_settings(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())["train"]


def _train_split_counts(run: Path) -> list[int]:
    """The class counts of the run's training split, in class order (split.json)."""
    config = json.loads((run / "config.json").read_text())
    split = json.loads((run / "split.json").read_text())
    classes = config["classes"]
    counts = [0] * len(classes)
    for path in split["train"]:
        counts[classes.index(Path(path).parent.name)] += 1
    return counts


def test_class_weights_auto_are_resolved_from_the_training_split_and_recorded(skewed, tmp_path):
    result = clf("train", skewed, *FAST, "--epochs", "1", "--class-weights", "auto", "--out", tmp_path, "--name", "a")
    assert result.exit_code == 0, result.output
    run = tmp_path / "a"
    counts = _train_split_counts(run)
    recorded = json.loads((run / "config.json").read_text())["train"]["resolved_class_weights"]
    assert recorded == pytest.approx([sum(counts) / (len(counts) * n) for n in counts], rel=1e-12)
    assert load(run / "last.pt")["config"]["resolved_class_weights"] == tuple(recorded)
    assert max(recorded) == recorded[json.loads((run / "config.json").read_text())["classes"].index("star")]


def test_a_weights_file_run_resumes_with_the_recorded_weights_without_reading_the_file(skewed, tmp_path):
    weights = tmp_path / "w.csv"
    weights.write_text("class,weight\ncircle,1\nsquare,0.1\ntriangle,2.5\nstar,0.3333333333333333\n")
    result = clf("train", skewed, *FAST, "--epochs", "1", "--class-weights", weights, "--out", tmp_path, "--name", "w")
    assert result.exit_code == 0, result.output
    run = tmp_path / "w"
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["class_weights"] == str(weights)
    by_class = dict(zip(config["classes"], config["train"]["resolved_class_weights"]))
    assert by_class == {"circle": 1.0, "square": 0.1, "triangle": 2.5, "star": 0.3333333333333333}
    weights.unlink()  # resume never reads it again
    seen = []
    original = trainer_module.build_criterion
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer_module, "build_criterion",
                      lambda *args, **kwargs: seen.append(kwargs["class_weights"]) or original(*args, **kwargs))
        resumed = clf("train", "--resume", run, "--epochs", "2", "--workers", "0", "--device", "cpu", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert seen == [tuple(config["train"]["resolved_class_weights"])]
    assert load(run / "last.pt")["config"]["resolved_class_weights"] == tuple(config["train"]["resolved_class_weights"])


def test_a_resumed_run_keeps_its_weights_bit_for_bit_and_matches_an_uninterrupted_one(skewed, tmp_path):
    """effective weights: 2 epochs in one go == 1 epoch, then --resume to 2 (same weights, same history; a constant
    LR, so that the first epoch does not depend on --epochs)."""
    common = [*FAST, "--class-weights", "effective", "--scheduler", "none", "--out", tmp_path]
    assert clf("train", skewed, *common, "--epochs", "2", "--name", "whole").exit_code == 0
    assert clf("train", skewed, *common, "--epochs", "1", "--name", "part").exit_code == 0
    resumed = clf("train", "--resume", tmp_path / "part", "--epochs", "2", "--workers", "0", "--device", "cpu",
                  "--quiet")
    assert resumed.exit_code == 0, resumed.output
    whole, part = load(tmp_path / "whole" / "last.pt"), load(tmp_path / "part" / "last.pt")
    assert whole["config"]["resolved_class_weights"] == part["config"]["resolved_class_weights"]
    assert without_seconds(whole["history"]) == without_seconds(part["history"])
    assert_same_weights(whole["model"], part["model"])


def test_changing_class_weights_on_resume_is_refused(skewed, tmp_path):
    assert clf("train", skewed, *FAST, "--epochs", "1", "--class-weights", "auto", "--out", tmp_path,
               "--name", "r").exit_code == 0
    result = clf("train", "--resume", tmp_path / "r", "--epochs", "2", "--class-weights", "effective")
    assert result.exit_code == 2
    assert "--class-weights effective differs from the checkpoint's auto" in error_line(result)


@pytest.mark.parametrize(("text", "problem"), [
    ("class,weight\ncircle,1\nsquare,1\ntriangle,1\n",
     "class 'star' has no weight; give every class of the data once (circle, square, star, triangle)"),
    ("class,weight\ncircle,1\nsquare,1\ntriangle,1\nstar,1\nhexagon,1\n",
     "class 'hexagon' is not a class of the data (circle, square, star, triangle); fix its name or remove the line"),
    ("class,weight\ncircle,1\nsquare,-2\ntriangle,1\nstar,1\n",
     "the weight of class 'square' must be a positive finite number, got -2"),
    ("class,weight\ncircle,1\nsquare,NaN\ntriangle,1\nstar,1\n",
     "the weight of class 'square' must be a positive finite number, got NaN"),
])
def test_a_bad_weights_file_is_one_line_before_any_run_folder(skewed, tmp_path, text, problem):
    weights = tmp_path / "w.csv"
    weights.write_text(text)
    out = tmp_path / "runs"
    result = clf("train", skewed, *FAST, "--class-weights", weights, "--out", out)
    assert result.exit_code == 2
    assert error_line(result) == f"error: {weights}: {problem}"
    assert not out.exists() or list(out.iterdir()) == []


def test_a_missing_weights_file_is_one_line(skewed, tmp_path):
    result = clf("train", skewed, *FAST, "--class-weights", tmp_path / "nope.csv", "--out", tmp_path / "runs")
    assert result.exit_code == 2
    assert error_line(result) == (f"error: {tmp_path / 'nope.csv'}: class weights file not found; give auto, "
                                  "effective or a CSV file of class,weight")


def test_sampler_balanced_draws_the_epochs_and_resumes_as_an_uninterrupted_run(skewed, tmp_path, monkeypatch):
    draws = []
    original = BalancedSampler.epoch_draw
    monkeypatch.setattr(BalancedSampler, "epoch_draw", lambda self: draws.append((self.epoch, original(self))) or
                        draws[-1][1])
    common = [*FAST, "--sampler", "balanced", "--scheduler", "none", "--class-weights", "auto", "--out", tmp_path]
    assert clf("train", skewed, *common, "--epochs", "2", "--name", "whole").exit_code == 0
    assert [epoch for epoch, _ in draws] == [1, 2]  # the trainer numbers epochs from 1
    whole_draws = [draw.tolist() for _, draw in draws]
    train_size = sum(_train_split_counts(tmp_path / "whole"))
    assert [len(draw) for draw in whole_draws] == [train_size, train_size]
    assert json.loads((tmp_path / "whole" / "config.json").read_text())["train"]["sampler"] == "balanced"
    draws.clear()
    assert clf("train", skewed, *common, "--epochs", "1", "--name", "part").exit_code == 0
    resumed = clf("train", "--resume", tmp_path / "part", "--epochs", "2", "--workers", "0", "--device", "cpu",
                  "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert [draw.tolist() for _, draw in draws] == whole_draws  # the resumed epoch draws what it would have drawn
    whole, part = load(tmp_path / "whole" / "last.pt"), load(tmp_path / "part" / "last.pt")
    assert without_seconds(whole["history"]) == without_seconds(part["history"])
    assert_same_weights(whole["model"], part["model"])


def test_an_unknown_sampler_is_one_line(data, tmp_path):
    result = clf("train", data, *FAST, "--sampler", "oversample", "--out", tmp_path)
    assert result.exit_code == 2
    assert error_line(result) == "error: --sampler must be one of none, balanced, got 'oversample'"


def test_replaying_a_weighted_run_resolves_its_weights_again_and_a_settings_file_may_not_set_them(skewed, tmp_path):
    runs = tmp_path / "runs"
    options = ["--loss", "focal", "--focal-gamma", "1", "--class-weights", "effective", "--sampler", "balanced"]
    assert clf("train", skewed, *FAST, *options, "--epochs", "1", "--out", runs, "--name", "orig").exit_code == 0
    replay = clf("train", "--config", runs / "orig" / "config.json", "--name", "again", *FAST)
    assert replay.exit_code == 0, replay.output
    orig, again = train_settings(runs / "orig"), train_settings(runs / "again")
    provenance = {"name", "config_file", "config_sha256"}
    assert {k: v for k, v in orig.items() if k not in provenance} == \
        {k: v for k, v in again.items() if k not in provenance}
    assert (again["focal_gamma"], again["class_weights"], again["sampler"]) == (1.0, "effective", "balanced")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("resolved_class_weights: [1, 2, 3, 4]\n")
    refused = clf("train", skewed, *FAST, "--config", recipe, "--out", tmp_path / "none")
    assert refused.exit_code == 2
    assert error_line(refused) == (f"error: {recipe}: 'resolved_class_weights' is set by clf on the runs it makes, "
                                   "not by a config file; leave it out")


def test_a_refit_resolves_its_weights_from_every_image_it_trains_on(skewed, tmp_path):
    result = clf("train", skewed, *FAST, "--epochs", "1", "--class-weights", "auto", "--refit", "--out", tmp_path,
                 "--name", "v")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "v" / "refit" / "config.json").read_text())
    counts = {"circle": 12, "square": 12, "star": 4, "triangle": 12}  # every image: the refit has no validation
    expected = [40 / (4 * counts[name]) for name in config["classes"]]
    assert config["train"]["resolved_class_weights"] == pytest.approx(expected, rel=1e-12)
    validated = train_settings(tmp_path / "v")["resolved_class_weights"]
    assert validated != config["train"]["resolved_class_weights"]  # the validated run's came from its training split
