"""clf.config: TrainConfig and Preprocess refuse impossible values with the flag's name; the resume marks."""

from __future__ import annotations

import dataclasses

import pytest

from clf.config import OPTIMIZERS, SCHEDULERS, TRAIN_DEVICES, Preprocess, TrainConfig, auto_batch_size
from clf.errors import ClfError

FLOAT_FIELDS = [f.name for f in dataclasses.fields(TrainConfig) if f.type in ("float", float, "float | None")]


def test_every_float_field_is_checked():
    assert FLOAT_FIELDS == ["kd_temperature", "kd_alpha",  # clf distill's (clf/config/distilling.py)
                            "lr", "weight_decay", "label_smoothing", "focal_gamma", "val_split", "hflip", "vflip",
                            "rotate", "crop_scale", "translate", "color_jitter", "grayscale", "blur", "erase", "mixup",
                            "cutmix", "mix_prob", "mix_switch", "ema", "drop_path", "dropout", "layer_decay",
                            "pseudo_threshold"]


@pytest.mark.parametrize("name", FLOAT_FIELDS)
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_a_float_flag_must_be_finite(name, value):
    with pytest.raises(ClfError) as error:
        TrainConfig(**{name: value})
    assert str(error.value) == f"--{name.replace('_', '-')} must be a finite number, got {value}"


@pytest.mark.parametrize("options, message", [
    ({"epochs": 0}, "--epochs must be >= 1"),
    ({"batch_size": 0}, "--batch-size must be >= 1"),
    ({"img_size": 15}, "--img-size must be >= 16"),
    ({"lr": -1e-3}, "--lr must be >= 0"),
    ({"weight_decay": -1.0}, "--weight-decay must be >= 0"),
    ({"val_split": 1.0}, "--val-split must be >= 0 and < 1 (0 = no validation)"),
    ({"hflip": 1.5}, "--hflip must be >= 0 and <= 1, got 1.5"),
    ({"rotate": -5.0}, "--rotate must be >= 0 and <= 360, got -5"),
    ({"crop_scale": 0.0}, "--crop-scale must be > 0 and <= 1, got 0"),
    ({"translate": 0.75}, "--translate must be >= 0 and <= 0.5, got 0.75"),
    ({"auto_augment": "auto"}, "--auto-augment must be one of none, trivial, rand, got 'auto'"),
    ({"augment": "heavy"}, "--augment must be one of none, light, default, strong, got 'heavy'"),
    ({"class_weights": " "},
     "--class-weights is empty; give auto, effective or a CSV file of class,weight, or leave it out"),
    ({"sampler": "oversample"}, "--sampler must be one of none, balanced, got 'oversample'"),
    ({"resolved_class_weights": (1.0, -1.0)},
     "resolved_class_weights must be positive finite numbers, got (1.0, -1.0)"),
    ({"ema": 1.0}, "--ema is a decay >= 0 and < 1 (0 = off; e.g. 0.999), got 1.0"),
    ({"mixup": -0.2}, "--mixup is a Beta alpha >= 0 (0 = off), got -0.2"),
    ({"mix_prob": 1.5}, "--mix-prob is a probability between 0 and 1, got 1.5"),
    ({"drop_path": 1.0}, "--drop-path must be >= 0 and < 1, got 1.0"),
    ({"dropout": -0.1}, "--dropout must be >= 0 and < 1, got -0.1"),
    ({"workers": -2}, "--workers must be >= 0 (or -1 for auto)"),
    ({"warmup_epochs": -1}, "--warmup-epochs must be >= 0"),
    ({"patience": -1}, "--patience must be >= 0"),
    ({"label_smoothing": 1.0}, "--label-smoothing must be >= 0 and < 1"),
    ({"optimizer": "adam"}, "--optimizer must be one of sgd, adamw, got 'adam'"),
    ({"scheduler": "exp"}, "--scheduler must be one of cosine, step, none, got 'exp'"),
    ({"device": "tpu"}, "--device must be one of auto, cpu, cuda, got 'tpu'"),
    ({"resize": "squash"}, "--resize must be one of stretch, shorter_crop, got 'squash'"),
    ({"pretrained_path": " "},
     "--pretrained-path is empty; give the weights file (a clf checkpoint, a state dict or .safetensors)"),
    ({"pretrained": True, "pretrained_path": "w.pt"},
     "--pretrained and --pretrained-path both say where the weights come from; choose one"),
    ({"layer_decay": 0.0}, "--layer-decay must be > 0 and <= 1 (e.g. 0.75), got 0.0"),
    ({"layer_decay": 1.5}, "--layer-decay must be > 0 and <= 1 (e.g. 0.75), got 1.5"),
    ({"freeze_epochs": -1, "pretrained": True}, "--freeze-epochs must be >= 0, got -1"),
    ({"freeze_epochs": 3, "epochs": 3, "pretrained_path": "w.pt"},
     "--freeze-epochs 3 must be less than --epochs 3: the whole model trains after the frozen epochs"),
    ({"freeze_epochs": 1, "epochs": 3},
     "--freeze-epochs trains the new head over pretrained weights; add --pretrained-path FILE or --pretrained"),
])
def test_impossible_values_are_one_line_naming_the_flag(options, message):
    with pytest.raises(ClfError) as error:
        TrainConfig(**options)
    assert str(error.value) == message


def test_the_choices_are_the_ones_the_config_accepts():
    for optimizer in OPTIMIZERS:
        assert TrainConfig(optimizer=optimizer).optimizer == optimizer
    for scheduler in SCHEDULERS:
        assert TrainConfig(scheduler=scheduler).scheduler == scheduler
    for device in TRAIN_DEVICES:
        assert TrainConfig(device=device).device == device


def test_the_fields_a_resume_may_change_are_marked_on_the_dataclass():
    assert TrainConfig.resumable_fields() == {"data", "epochs", "patience", "workers", "device", "amp", "quiet",
                                              "cache_images", "strict", "refit",  # --resume RUN --refit adds one
                                              "config_file", "config_sha256",  # where a sitting's settings came from
                                              # may move as DATA may; their content's sha256 is checked on resume
                                              "pseudo_labels", "pseudo_images",
                                              "teacher", "unlabelled",  # clf distill's, likewise
                                              # tracking: a later sitting may start, move or keep it
                                              "mlflow", "mlflow_uri", "mlflow_checkpoint", "tensorboard"}


def test_round_trip_through_json():
    cfg = TrainConfig(data="/d", arch="resnet18", lr=0.01, labels_csv="/d/train.csv")
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    assert TrainConfig.from_dict({**cfg.to_dict(), "unknown_key": 1}) == cfg  # older/newer keys are ignored


def test_flag_names():
    assert TrainConfig.flag("batch_size") == "--batch-size" and TrainConfig.flag("lr") == "--lr"


def test_preprocess_defaults_and_normalisation():
    pre = Preprocess(size=[64, 48], mean=[0, 0, 0], std=[1, 1, 1])
    assert pre.size == (64, 48) and pre.mean == (0.0, 0.0, 0.0) and pre.std == (1.0, 1.0, 1.0)
    assert Preprocess.from_dict(pre.to_dict()) == pre
    assert Preprocess.from_json(pre.to_json()) == pre


@pytest.mark.parametrize("options, message", [
    ({"resize": "squash"}, "resize must be one of"),
    ({"interpolation": "magic"}, "interpolation must be one of"),
    ({"color": "BGR"}, "only 3-channel RGB input is supported"),
    ({"channels": 1}, "only 3-channel RGB input is supported"),
    ({"size": (0, 32)}, "size must be"),
    ({"size": (32,)}, "size must be"),
    ({"std": (0.2, 0.0, 0.2)}, "mean and std need 3 values each, std > 0"),
    ({"mean": (0.5, 0.5)}, "mean and std need 3 values each, std > 0"),
])
def test_preprocess_refuses_impossible_settings(options, message):
    with pytest.raises(ValueError, match=message):
        Preprocess(**options)


@pytest.mark.parametrize("images, size", [(0, 8), (80, 8), (255, 8), (256, 16), (511, 16), (512, 32), (100_000, 32)])
def test_the_auto_batch_size_gives_at_least_16_steps_an_epoch(images, size):
    assert auto_batch_size(images) == size
    assert images < 128 or images // size >= 16


def test_batch_size_and_img_size_are_resolved_when_not_given():
    cfg = TrainConfig()
    assert (cfg.batch_size, cfg.img_size) == (None, 64)  # batch: by fit(), from the training images
    assert TrainConfig(arch="resnet18").img_size == 224


def test_a_preprocess_problem_is_a_setting_error_a_user_sees_as_one_line():
    """A ClfError (exit 2, one line), and still the ValueError library callers caught before."""
    from clf.errors import EXIT_BAD_INPUT, ClfError, SettingError

    with pytest.raises(SettingError) as err:
        Preprocess(resize="squash")
    assert isinstance(err.value, ClfError) and isinstance(err.value, ValueError)
    assert err.value.exit_code == EXIT_BAD_INPUT
    assert str(err.value) == "resize must be one of ('stretch', 'shorter_crop'), got 'squash'"
