"""clf.cli.options: each command's options are its stage dataclass's `setting` fields, declared once."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer
from cli_helpers import clf
from typer.testing import CliRunner

from clf.cli.options import config_options, option_fields
from clf.config import (CheckConfig, EvalConfig, ExportConfig, InferConfig, ScoreConfig, ServeConfig, TrainConfig,
                        TuneConfig)
from clf.config.base import JsonMixin, setting

# The fields clf sets itself (or that are a command's arguments): everything else must be an option.
NOT_OPTIONS = {
    TrainConfig: {"data", "pretrained_sha256", "fold", "refit_of", "refit_epoch", "config_file", "config_sha256",
                  "resolved_class_weights", "pseudo_sha256", "teacher", "teacher_sha256", "precision",
                  # `clf distill`'s options (test_distill_options_are_that_commands_only)
                  "kd_temperature", "kd_alpha", "kd_views", "unlabelled"},
    ExportConfig: {"checkpoint", "target", "max_images", "more_runs"},
    InferConfig: {"images"},
    EvalConfig: {"labelled"},
    ServeConfig: {"model"},
    CheckConfig: {"data"},
    ScoreConfig: {"submission", "answers"},
    TuneConfig: set(),
}


@pytest.mark.parametrize("cls", list(NOT_OPTIONS), ids=lambda cls: cls.__name__)
def test_every_field_is_an_option_unless_clf_sets_it(cls):
    names = {f.name for f in dataclasses.fields(cls)}
    assert names - {f.name for f in option_fields(cls)} == NOT_OPTIONS[cls]


def test_distill_options_are_that_commands_only():
    distill = {f.name for f in option_fields(TrainConfig, command="distill")}
    train = {f.name for f in option_fields(TrainConfig)}
    assert distill - train == {"kd_temperature", "kd_alpha", "kd_views", "unlabelled"}
    text = " ".join(clf("distill", "--help").output.split())
    assert all(flag in text for flag in ("--kd-temperature", "--kd-alpha", "--kd-views", "--unlabelled", "--epochs",
                                         "--arch", "--resume"))
    assert "--kd-alpha" not in " ".join(clf("train", "--help").output.split())


@pytest.mark.parametrize(("command", "cls"), [("train", TrainConfig), ("export", ExportConfig), ("infer", InferConfig),
                                              ("eval", EvalConfig), ("serve", ServeConfig), ("score", ScoreConfig),
                                              ("check", CheckConfig), ("tune", TuneConfig), ("tune", TrainConfig)])
def test_help_shows_every_option_with_its_help_line(command, cls):
    text = " ".join(clf(command, "--help").output.split())
    for f in option_fields(cls):
        flags = f.metadata["flags"] or ("--" + f.name.replace("_", "-"),)
        assert flags[0].split("/")[0] in text, f.name
        assert " ".join(f.metadata["help"].split())[:40] in text, f.name


@dataclasses.dataclass(frozen=True)
class Toy(JsonMixin):
    """A stage with one option of each kind the helper builds."""

    size: int = setting(3, "A number.")
    name: str | None = setting(None, "Optional text.")
    sizes: tuple[int, ...] = setting((1, 8), "Parsed.", parse=lambda text: tuple(int(p) for p in text.split(",")))
    out: str = setting("a.csv", "A path.", cli_type=Path)
    fast: bool = setting(False, "A flag.")
    mode: str = setting("x", "A choice.", choices=("x", "y"), flags=("--mode", "-m"))
    internal: int = 7  # no help: not an option


def test_two_dataclasses_options_stack_on_one_command():
    """`clf tune` takes TuneConfig's options (tune_settings) over TrainConfig's (settings)."""
    seen: list[tuple[dict[str, Any], dict[str, Any]]] = []
    app = typer.Typer()

    @app.command()
    @config_options(TuneConfig, into="tune_settings")
    @config_options(Toy)
    def run(word: str, *, settings: dict[str, Any], tune_settings: dict[str, Any]) -> None:
        seen.append((settings, tune_settings))

    result = CliRunner().invoke(app, ["w", "--size", "5", "--trials", "3", "--parallel"])
    assert result.exit_code == 0, result.output
    assert seen[0][0]["size"] == 5 and seen[0][1]["trials"] == 3 and seen[0][1]["parallel"] is True


def toy_app(seen: list[dict[str, Any]]) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @config_options(Toy)
    def run(word: str, *, settings: dict[str, Any]) -> None:
        seen.append({"word": word, **settings})

    return app


def test_the_defaults_reach_the_command_as_the_dataclass_takes_them():
    seen: list[dict[str, Any]] = []
    result = CliRunner().invoke(toy_app(seen), ["hi"])
    assert result.exit_code == 0, result.output
    assert seen == [{"word": "hi", "size": 3, "name": None, "sizes": (1, 8), "out": "a.csv", "fast": False,
                     "mode": "x"}]
    assert Toy(**{k: v for k, v in seen[0].items() if k != "word"}) == Toy()


def test_given_options_are_parsed_typed_and_named_from_the_field():
    seen: list[dict[str, Any]] = []
    args = ["hi", "--size", "5", "--name", "n", "--sizes", "2,4", "--out", "b/c.csv", "--fast", "-m", "y"]
    result = CliRunner().invoke(toy_app(seen), args)
    assert result.exit_code == 0, result.output
    assert seen[0] == {"word": "hi", "size": 5, "name": "n", "sizes": (2, 4), "out": "b/c.csv", "fast": True,
                       "mode": "y"}


def test_help_shows_the_fields_defaults_and_choices():
    text = " ".join(CliRunner().invoke(toy_app([]), ["--help"]).output.split())
    assert "--size INTEGER A number. [default: 3]" in text.replace("<int>", "INTEGER")
    assert "[default: 1,8]" in text and "[x|y]" in text and "--internal" not in text


def test_a_parameter_declared_twice_is_refused_when_the_command_is_defined():
    with pytest.raises(TypeError, match="declares size itself and as a config field"):
        @config_options(Toy)
        def run(size: int = 1, *, settings: dict[str, Any]) -> None:
            pass


def test_every_train_option_given_on_the_command_line_reaches_the_runs_config(tmp_path, monkeypatch):
    """One non-default value per TrainConfig option: the config fit() gets holds each of them."""
    import clf.train.fit as fit_module
    import importlib

    # clf.train.folds binds the real fit before it is patched below (else a later fold-group test in the same
    # process, importing clf.train.folds for the first time, keeps the patched one and trains nothing)
    importlib.import_module("clf.train.folds")

    values = {"arch": "resnet18", "epochs": 3, "batch_size": 4, "img_size": 48, "lr": 0.01, "optimizer": "sgd",
              "scheduler": "step", "warmup_epochs": 1, "weight_decay": 0.01, "label_smoothing": 0.2,
              "loss": "focal", "metric": "f1_macro", "focal_gamma": 1.5, "class_weights": "auto",
              "sampler": "balanced",
              "val_split": 0.25, "augment": "strong", "hflip": 0.1, "vflip": 0.2, "rotate": 10.0,
              "crop_scale": 0.5, "translate": 0.1, "color_jitter": 0.3, "grayscale": 0.1, "blur": 0.1, "erase": 0.1,
              "auto_augment": "rand", "mixup": 0.2, "cutmix": 1.0, "mix_prob": 0.5, "mix_switch": 0.25,
              "ema": 0.99, "drop_path": 0.1, "dropout": 0.2, "workers": 0, "seed": 3, "name": "n",
              "out": str(tmp_path), "patience": 2, "device": "cpu", "amp": "off", "cache_images": False,
              "pretrained_path": str(tmp_path / "w.pt"), "layer_decay": 0.7, "freeze_epochs": 1,
              "strict": True, "labels_csv": str(tmp_path / "l.csv"), "id_col": "f", "label_col": "y",
              "resize": "shorter_crop", "interpolation": "area", "quiet": True, "group_col": "patient", "dedup": True,
              "classes": "a,b",
              "pseudo_labels": str(tmp_path / "probs.csv"), "pseudo_images": str(tmp_path / "test"),
              "pseudo_threshold": 0.8, "pseudo_soft": True, "mlflow": True, "mlflow_uri": "http://127.0.0.1:9",
              "mlflow_checkpoint": True, "tensorboard": str(tmp_path / "tb")}
    flags = {"cache_images": "--no-cache-images", "strict": "--strict", "quiet": "--quiet",
             "dedup": "--dedup", "pseudo_soft": "--pseudo-soft", "mlflow": "--mlflow",
             "mlflow_checkpoint": "--mlflow-checkpoint"}
    args = []
    for name, value in values.items():
        args += [flags[name]] if name in flags else ["--" + name.replace("_", "-"), str(value)]
    # --pretrained (with --pretrained-path: refused), --folds/--fold-seed and --refit take other paths than fit()
    # --task multilabel takes other losses and no balanced sampler: the second run below gives it
    multilabel = {"task": "multilabel", "loss": "asl", "metric": "map", "labels_csv": "labels.csv"}
    given_by_field = {f.name for f in option_fields(TrainConfig)} - {"pretrained", "folds", "fold_seed", "refit"}
    assert set(values) | set(multilabel) == given_by_field  # a new option gets a value here
    seen = []
    monkeypatch.setattr(fit_module, "fit", lambda cfg, **kwargs: seen.append(cfg) or SimpleNamespace(
        is_main=False, distributed=False))
    (tmp_path / "data").mkdir()
    result = clf("train", tmp_path / "data", *args)
    assert result.exit_code == 0, result.output
    assert len(seen) == 1
    # resolve_config makes paths absolute
    absolute = {"out", "pretrained_path", "labels_csv", "pseudo_labels", "pseudo_images", "tensorboard"}
    assert {name: getattr(seen[0], name) for name in values if name not in absolute} == \
        {name: value for name, value in values.items() if name not in absolute}
    result = clf("train", tmp_path / "data", *[arg for name, value in multilabel.items()
                                               for arg in ("--" + name.replace("_", "-"), value)],
                 "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert {name: getattr(seen[1], name) for name in multilabel if name != "labels_csv"} == \
        {name: value for name, value in multilabel.items() if name != "labels_csv"}
