"""Frozen, JSON-serialisable configurations, one per stage.

Everything here is plain data (no torch), so that checkpoints stay ``weights_only``-loadable and
the ONNX metadata can carry the preprocessing to hosts that only have onnxruntime.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

# The choices live on the ground floor beside this module (clf/choices.py), re-exported here for their old users.
from clf.choices import (AUGMENT_PRESETS, AUTO_AUGMENTS, AVERAGES, CALIBRATION_METHODS, DEVICES, EXPORT_TARGETS,
                         ID_FORMATS, INTERPOLATIONS, MAX_BATCH, MIN_INT8_OPSET, OPTIMIZERS, RESIZE_MODES, SCHEDULERS,
                         TOPK_FORMATS, TRAIN_DEVICES, TTA_VIEWS, check_exporter_opset)
from clf.errors import ClfError, SettingError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _tuple_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """JSON turns tuples into lists; turn them back for the fields typed as tuples."""
    out = dict(data)
    for f in dataclasses.fields(cls):
        if f.name in out and isinstance(out[f.name], list) and "tuple" in str(f.type):
            out[f.name] = tuple(out[f.name])
    return out


class _JsonMixin:
    """to_dict/from_dict/to_json/from_json for flat frozen dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**_tuple_fields(cls, {k: v for k, v in data.items() if k in known}))

    @classmethod
    def from_json(cls, text: str):
        return cls.from_dict(json.loads(text))


MAX_INPUT_SIZE = 4096  # pixels a side of a network input; far above any classifier's, far below what exhausts memory


@dataclass(frozen=True)
class Preprocess(_JsonMixin):
    """How an image file becomes the model's input; identical in training, parity and inference.

    Args:
        size: (height, width) of the network input.
        resize: "stretch" (ignore aspect ratio) or "shorter_crop" (resize the shorter side, center-crop).
        interpolation: OpenCV interpolation name used when resizing.
        color: channel order fed to the network (always "RGB").
        scale: multiplier applied to uint8 pixels before normalising (1/255).
        mean, std: per-channel normalisation after scaling.
        channels: number of input channels (3).
    """

    size: tuple[int, int] = (224, 224)
    resize: str = "stretch"
    interpolation: str = "linear"
    color: str = "RGB"
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channels: int = 3

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise SettingError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise SettingError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if self.color != "RGB" or self.channels != 3:
            raise SettingError("only 3-channel RGB input is supported")
        if len(self.size) != 2 or min(self.size) < 1:
            raise SettingError(f"size must be (height, width) of positive ints, got {self.size!r}")
        if max(self.size) > MAX_INPUT_SIZE:  # one 100000x100000 input is 120 GB: refused, not allocated
            raise SettingError(f"size must be at most {MAX_INPUT_SIZE} pixels a side, got {self.size!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or not all(v > 0 for v in self.std):  # NaN is not > 0
            raise SettingError("mean and std need 3 values each, std > 0")
        if not all(map(math.isfinite, (*self.mean, *self.std, self.scale))):
            raise SettingError(f"mean, std and scale must be finite numbers, got {self.mean}, {self.std}, {self.scale}")
        object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))


MAX_SEED = 2**31  # torch and numpy take it, with room for the per-rank and per-epoch offsets added to it

# The choices of `clf train` (clf/choices.py) are validated once (TrainConfig.__post_init__) and listed in --help.
# Augmentation: a preset, and the knobs that override it one by one (None = the preset's value). The presets' values
# and the ops they build live in clf/data/augment_presets.py; the names are here so the config stays light.
AUGMENT_KNOBS = ("hflip", "vflip", "rotate", "crop_scale", "translate", "color_jitter", "grayscale", "blur", "erase",
                 "auto_augment")
# (low, high, low excluded) of each numeric knob; a rotation range beyond 360 degrees is already every angle.
AUGMENT_KNOB_RANGES = {
    **{knob: (0.0, 1.0, False) for knob in ("hflip", "vflip", "grayscale", "blur", "erase", "color_jitter")},
    "rotate": (0.0, 360.0, False),
    "crop_scale": (0.0, 1.0, True),
    "translate": (0.0, 0.5, False),  # the largest shift, a fraction of each side
}


def option_flag(name: str) -> str:
    """The command-line flag of a config field or augmentation knob: crop_scale -> --crop-scale."""
    return "--" + name.replace("_", "-")


AUTO_BATCH_SIZES = (32, 16, 8)
MIN_STEPS_PER_EPOCH = 16


def auto_batch_size(train_images: int) -> int:
    """The largest of 32, 16, 8 that gives at least 16 optimizer steps an epoch (8 below 128 images).

    Measured (benchmarks/accuracy.py, faces: 80 training images): at batch 32 an epoch is 2 steps, and 10 epochs leave
    BatchNorm's running statistics so far behind the weights that validation predicts one class (accuracy 0.50);
    with enough steps the same recipe reaches 0.95-1.00.
    """
    for size in AUTO_BATCH_SIZES:
        if train_images // size >= MIN_STEPS_PER_EPOCH:
            return size
    return AUTO_BATCH_SIZES[-1]


def check_augment_knobs(knobs: dict[str, Any]) -> None:
    """Each knob given (not None) in range: one ClfError naming its flag ("--crop-scale must be > 0 and <= 1, got 0")."""
    for knob, value in knobs.items():
        if value is None:
            continue
        flag = option_flag(knob)
        if knob == "auto_augment":
            if value not in AUTO_AUGMENTS:
                raise ClfError(f"--auto-augment must be one of {', '.join(AUTO_AUGMENTS)}, got {value!r}")
            continue
        if knob not in AUGMENT_KNOB_RANGES:
            raise ClfError(f"unknown augmentation knob {knob!r}; known: {', '.join(AUGMENT_KNOBS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ClfError(f"{flag} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ClfError(f"{flag} must be a finite number, got {value}")
        low, high, low_open = AUGMENT_KNOB_RANGES[knob]
        if not ((value > low) if low_open else (value >= low)) or value > high:
            raise ClfError(f"{flag} must be {'>' if low_open else '>='} {low:g} and <= {high:g}, got {value:g}")
# The input size a run gets without --img-size: the own cnn is built for small images, the others for ImageNet's.
DEFAULT_IMG_SIZES = {"cnn": 64}
DEFAULT_IMG_SIZE = 224
# What a checkpoint written before a field existed trained with: resuming it must not switch a new default on.
LEGACY_VALUES = {"augment": "none", "mixup": 0.0, "cutmix": 0.0, "ema": 0.0, "drop_path": 0.0}
# Marks a TrainConfig field that `clf train --resume` may change; every other field must match the checkpoint
# (it shapes the weights, the data split or the schedule).
RESUMABLE = {"resume": True}


@dataclass(frozen=True)
class TrainConfig(_JsonMixin):
    """Everything ``clf train`` needs; saved resolved in ``config.json`` and in every checkpoint."""

    data: str = field(default="", metadata=RESUMABLE)  # the data may move between sittings
    arch: str = "cnn"
    # The defaults below were chosen from benchmarks/accuracy.py (scenes, faces) and the sample competition: see README.
    epochs: int = field(default=30, metadata=RESUMABLE)  # raised to train further; 30: README "Defaults"
    batch_size: int | None = None  # None: auto_batch_size(training images per process), resolved by fit()
    img_size: int | None = None  # None: DEFAULT_IMG_SIZES[arch], else DEFAULT_IMG_SIZE (resolved on construction)
    lr: float = 3e-3
    optimizer: str = "adamw"
    scheduler: str = "cosine"
    warmup_epochs: int = 0
    weight_decay: float = 0.05
    label_smoothing: float = 0.1  # measured on five kinds of real images: README "Defaults"
    val_split: float = 0.2
    augment: str = "light"  # a preset of AUGMENT_PRESETS; the knobs below override it (None = the preset's value)
    hflip: float | None = None
    vflip: float | None = None
    rotate: float | None = None
    crop_scale: float | None = None
    translate: float | None = None
    color_jitter: float | None = None
    grayscale: float | None = None
    blur: float | None = None
    erase: float | None = None
    auto_augment: str | None = None
    mixup: float = 0.0  # Beta(alpha, alpha) of mixup; 0 = off
    cutmix: float = 0.0  # Beta(alpha, alpha) of CutMix; 0 = off
    mix_prob: float = 1.0  # probability that a batch is mixed at all (when mixup or cutmix is on)
    mix_switch: float = 0.5  # probability of CutMix rather than mixup when both are on
    ema: float = 0.999  # decay of the exponential moving average of the weights; 0 = off
    drop_path: float = 0.0  # stochastic depth rate, for the timm models that have it
    dropout: float | None = None  # dropout before the classifier; None = the architecture's own default
    workers: int = field(default=-1, metadata=RESUMABLE)  # -1 = auto: 0 on the CPU, up to 8 on a GPU
    seed: int = 0
    name: str = ""
    out: str = "runs"
    patience: int = field(default=0, metadata=RESUMABLE)  # 0 disables early stopping
    device: str = field(default="auto", metadata=RESUMABLE)
    amp: bool = field(default=True, metadata=RESUMABLE)
    cache_images: bool | None = field(default=None, metadata=RESUMABLE)  # None: auto (clf/train/build.py)
    pretrained: bool = False
    # Fine-tuning (clf/models/pretrained.py, clf/train/schedule.py): weights from a file the user has (its sha256 is
    # recorded when it is read: the run is traceable to the exact file; resume never reads it again), layer-wise LR
    # decay (the head at --lr, each earlier layer D times the next), and epochs that train the head alone.
    pretrained_path: str | None = None
    pretrained_sha256: str | None = None
    layer_decay: float | None = None
    freeze_epochs: int = 0
    strict: bool = field(default=False, metadata=RESUMABLE)
    labels_csv: str | None = None
    id_col: str = "filename"
    label_col: str = "label"
    resize: str = "stretch"
    quiet: bool = field(default=False, metadata=RESUMABLE)
    # k-fold cross-validation (clf/train/folds.py): K stratified folds seeded by fold_seed; `fold` is set on the
    # member runs only (fold k validates on the items of fold k and trains on the rest).
    folds: int | None = None
    fold_seed: int = 0
    fold: int | None = None
    # --refit (clf/train/refit.py): after this validated run, the same recipe on every image for the epochs validation
    # chose, in OUT/NAME/refit. `refit_of` and `refit_epoch` are set on that refit run only (the validated run's name
    # and its best epoch). RESUMABLE: `--resume RUN --refit` adds a refit to a run trained without it.
    refit: bool = field(default=False, metadata=RESUMABLE)
    refit_of: str | None = None
    refit_epoch: int | None = None
    # `clf train --config FILE` (clf/train/config_file.py): the settings file the run took its settings from (absolute
    # path) and its sha256. RESUMABLE: a later sitting may be configured from another file (or from none).
    config_file: str | None = field(default=None, metadata=RESUMABLE)
    config_sha256: str | None = field(default=None, metadata=RESUMABLE)

    @classmethod
    def from_saved(cls, data: dict[str, Any]) -> "TrainConfig":
        """The config a checkpoint or config.json recorded; fields it predates take the values it trained with."""
        return cls.from_dict({**LEGACY_VALUES, **data})

    def augment_overrides(self) -> dict[str, Any]:
        """The augmentation knobs given explicitly (those that override the --augment preset)."""
        return {knob: getattr(self, knob) for knob in AUGMENT_KNOBS if getattr(self, knob) is not None}

    @classmethod
    def resumable_fields(cls) -> frozenset[str]:
        """The fields a resumed run may change (marked RESUMABLE above)."""
        return frozenset(f.name for f in dataclasses.fields(cls) if f.metadata.get("resume"))

    @staticmethod
    def flag(name: str) -> str:
        """The command-line flag of a field: batch_size -> --batch-size."""
        return option_flag(name)

    def __post_init__(self) -> None:
        """Reject impossible values up front, with the flag's name, instead of failing deep inside torch."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ClfError(f"{self.flag(f.name)} must be a finite number, got {value}")
        if self.img_size is None:
            object.__setattr__(self, "img_size", DEFAULT_IMG_SIZES.get(self.arch, DEFAULT_IMG_SIZE))
        checks = (
            (self.epochs >= 1, "--epochs must be >= 1"),
            (self.batch_size is None or self.batch_size >= 1, "--batch-size must be >= 1"),
            (self.img_size >= 16, "--img-size must be >= 16"),
            (self.img_size <= MAX_INPUT_SIZE, f"--img-size must be <= {MAX_INPUT_SIZE}"),
            (self.lr >= 0, "--lr must be >= 0"),
            (self.weight_decay >= 0, "--weight-decay must be >= 0"),
            (0.0 <= self.val_split < 1.0, "--val-split must be >= 0 and < 1 (0 = no validation)"),
            *self._augment_checks(),
            *self._regularisation_checks(),
            (self.workers >= -1, "--workers must be >= 0 (or -1 for auto)"),
            (self.warmup_epochs >= 0, "--warmup-epochs must be >= 0"),
            (self.patience >= 0, "--patience must be >= 0"),
            (self.out.strip() != "", "--out is empty; give the folder that holds run folders (default: runs)"),
            (self.labels_csv is None or self.labels_csv.strip() != "", "--labels-csv is empty; give the CSV file"),
            (0 <= self.seed < MAX_SEED, f"--seed must be >= 0 and < {MAX_SEED} (2**31), got {self.seed}"),
            (0.0 <= self.label_smoothing < 1.0, "--label-smoothing must be >= 0 and < 1"),
            (self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (self.scheduler in SCHEDULERS, f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}"),
            (self.device in TRAIN_DEVICES, f"--device must be one of {', '.join(TRAIN_DEVICES)}, got {self.device!r}"),
            (self.resize in RESIZE_MODES, f"--resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}"),
            *self._fold_checks(),
            *self._fine_tune_checks(),
            *self._refit_checks(),
        )
        for ok, message in checks:
            if not ok:
                raise ClfError(message)

    def _augment_checks(self) -> tuple[tuple[bool, str], ...]:
        check_augment_knobs(self.augment_overrides())
        return (_check_choice("--augment", self.augment, AUGMENT_PRESETS),)

    def _fold_checks(self) -> tuple[tuple[bool, str], ...]:
        folds = self.folds
        return (
            (folds is None or folds >= 2, f"--folds must be >= 2 (each of K folds validates on 1/K of the data), "
                                          f"got {folds}"),
            (0 <= self.fold_seed < MAX_SEED, f"--fold-seed must be >= 0 and < {MAX_SEED} (2**31), got {self.fold_seed}"),
            (self.fold is None or (folds is not None and 0 <= self.fold < folds),
             f"fold {self.fold} is not one of the {folds} folds" if folds else f"fold {self.fold} needs --folds K"),
        )

    def _fine_tune_checks(self) -> tuple[tuple[bool, str], ...]:
        decay, frozen = self.layer_decay, self.freeze_epochs
        return (
            (self.pretrained_path is None or self.pretrained_path.strip() != "",
             "--pretrained-path is empty; give the weights file (a clf checkpoint, a state dict or .safetensors)"),
            (not (self.pretrained and self.pretrained_path),
             "--pretrained and --pretrained-path both say where the weights come from; choose one"),
            (decay is None or 0.0 < decay <= 1.0, f"--layer-decay must be > 0 and <= 1 (e.g. 0.75), got {decay}"),
            (frozen >= 0, f"--freeze-epochs must be >= 0, got {frozen}"),
            (frozen < self.epochs, (f"--freeze-epochs {frozen} must be less than --epochs {self.epochs}: "
                                    "the whole model trains after the frozen epochs")),
            (not frozen or self.pretrained or bool(self.pretrained_path),
             "--freeze-epochs trains the new head over pretrained weights; add --pretrained-path FILE or --pretrained"),
        )

    def _refit_checks(self) -> tuple[tuple[bool, str], ...]:
        return (
            (not self.refit or self.val_split > 0,
             ("--refit trains again for the epoch count validation chose, so it needs a validation split; drop "
              "--no-val / --val-split 0 (or train on every image for a count you choose: --no-val --epochs N)")),
            (not self.refit or self.folds is None,
             ("--refit with --folds: each fold chooses its own best epoch, so there is no one epoch count to refit "
              "for; refit a single validated run (leave out --folds), or train on every image with --no-val "
              "--epochs N")),
        )

    def _regularisation_checks(self) -> tuple[tuple[bool, str], ...]:
        return (
            (self.mixup >= 0, f"--mixup is a Beta alpha >= 0 (0 = off), got {self.mixup}"),
            (self.cutmix >= 0, f"--cutmix is a Beta alpha >= 0 (0 = off), got {self.cutmix}"),
            (0.0 <= self.mix_prob <= 1.0, f"--mix-prob is a probability between 0 and 1, got {self.mix_prob}"),
            (0.0 <= self.mix_switch <= 1.0, f"--mix-switch is a probability between 0 and 1, got {self.mix_switch}"),
            (0.0 <= self.ema < 1.0, f"--ema is a decay >= 0 and < 1 (0 = off; e.g. 0.999), got {self.ema}"),
            (0.0 <= self.drop_path < 1.0, f"--drop-path must be >= 0 and < 1, got {self.drop_path}"),
            (self.dropout is None or 0.0 <= self.dropout < 1.0, f"--dropout must be >= 0 and < 1, got {self.dropout}"),
        )


DEFAULT_ATOL = 1e-4  # max abs logit difference a fp32 export may show against PyTorch
DEFAULT_ATOL_FP16 = 1e-2
# int8 export (clf/export/int8.py): static QDQ quantisation calibrated on training images, gated on validation images.
DEFAULT_CALIBRATION_IMAGES = 256  # capped by the training images the run has
MAX_CALIBRATION_IMAGES = 10000  # every image's activations pass through the calibrator: more is slow, not better
DEFAULT_MIN_AGREEMENT = 0.99  # top-1 agreement of the int8 model with the fp32 one on the validation images
DEFAULT_MAX_DROP = 0.005  # accuracy the int8 model may lose (0.005 = half a point)
# Triton model repository (clf/export/triton.py).
DEFAULT_TRITON_MAX_BATCH = 32


MODEL_NAME_RULE = ("a Triton model name is one folder name: letters, digits, '.', '_' and '-', starting with a "
                   "letter or digit, at most 128 characters")


def is_safe_model_name(name: str) -> bool:
    """A name Triton and every filesystem take as one folder: no separator, no '..', no hidden folder."""
    return re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", name) is not None


@dataclass(frozen=True)
class ExportConfig(_JsonMixin):
    """What ``clf export`` needs: which checkpoint, which target, where to write, how to prove parity.

    The choices are checked here, once, before anything is loaded, against clf/choices.py: the target against
    EXPORT_TARGETS, the exporter and opset against EXPORTERS and OPSETS, the device against DEVICES.
    """

    checkpoint: str = ""
    output: str | None = None  # default: model.onnx beside the checkpoint
    target: str = "onnx"  # a name of EXPORT_TARGETS
    opset: int = 18
    fp16: bool = False
    simplify: bool = False
    check_images: str | None = None
    atol: float | None = None  # default: DEFAULT_ATOL, DEFAULT_ATOL_FP16 with fp16
    batch_sizes: tuple[int, ...] = (1, 8)
    device: str = "auto"  # onnxruntime provider used for the parity check (the one inference will use)
    exporter: str = "auto"  # auto (dynamo, then TorchScript), dynamo, torchscript
    max_images: int = 32
    # Ensemble / TTA / calibration (clf/export/ensemble.py): `checkpoint` is the first member, or a fold group.
    more_runs: tuple[str, ...] = ()  # the other members (runs or checkpoints); -o is required with them
    average: str = "prob"  # a name of AVERAGES
    weights: tuple[float, ...] = ()  # one per member, normalised; () = equal
    tta: str = "none"  # a name of TTA_VIEWS: flipped views averaged inside the graph
    calibrate: bool = False  # fit a temperature on the validation images (a group: its oof.csv) and bake it in
    force: bool = False  # --tta with flips the members were not trained with
    # --int8 (the calibration and gate options are None unless --int8; then they take the defaults above)
    int8: bool = False
    calibration_images: int | None = None
    calibration_method: str | None = None
    min_agreement: float | None = None
    max_drop: float | None = None
    # --triton REPO (target "triton"): the model folder REPO/<model_name>/ (default name: the run's)
    triton: str | None = None
    max_batch_size: int | None = None
    model_name: str | None = None

    def __post_init__(self) -> None:
        for flag, value in (("--output", self.output), ("--check-images", self.check_images)):
            if value is not None and not value.strip():  # an unset shell variable: not "here" nor "the default"
                raise ClfError(f"{flag} is empty; give a path or leave the option out")
        if self.target not in EXPORT_TARGETS:
            raise ClfError(f"export target must be one of {', '.join(EXPORT_TARGETS)}, got {self.target!r}")
        check_exporter_opset(self.exporter, self.opset)
        if self.device not in DEVICES:
            raise ClfError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.atol is not None and not (math.isfinite(self.atol) and self.atol >= 0):
            raise ClfError(f"--atol must be a finite number >= 0, got {self.atol}")
        sizes = self.batch_sizes
        if not sizes or any(isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_BATCH for n in sizes):
            raise ClfError(f"--batch-sizes takes integers from 1 to {MAX_BATCH} like 1,8, "
                           f"got {','.join(map(str, sizes)) or 'none'}")
        if self.max_images < 1:
            raise ClfError(f"max_images must be >= 1, got {self.max_images}")
        self._check_ensemble_options()
        self._check_int8()
        self._check_triton(MAX_BATCH)

    def _check_ensemble_options(self) -> None:
        """--average, --tta and --weights values, and -o with several runs (counts are checked once the members
        are known: a fold group names its own)."""
        import math

        ok, message = _check_choice("--average", self.average, AVERAGES)
        if not ok:
            raise ClfError(message)
        ok, message = _check_choice("--tta", self.tta, tuple(TTA_VIEWS))
        if not ok:
            raise ClfError(message)
        if any(isinstance(w, bool) or not isinstance(w, (int, float)) or not (math.isfinite(w) and w > 0)
               for w in self.weights):
            raise ClfError(f"--weights takes positive numbers like 1,2, got {','.join(map(str, self.weights))}")
        problem = _weights_problem(self.weights)
        if problem:
            raise ClfError(f"--weights {','.join(map(str, self.weights))}: {problem}")
        if self.more_runs and not self.output and self.triton is None:
            raise ClfError(f"{len(self.more_runs) + 1} runs given without -o: an ensemble belongs to none of them; "
                           "pass -o ens.onnx")

    def _check_int8(self) -> None:
        """--int8 and its options: in range, not with --fp16, defaults filled in when --int8 is on."""
        options = {"--calibration-images": self.calibration_images, "--calibration-method": self.calibration_method,
                   "--min-agreement": self.min_agreement, "--max-drop": self.max_drop}
        if not self.int8:
            given = [flag for flag, value in options.items() if value is not None]
            if given:
                raise ClfError(f"{given[0]} applies to int8 exports only; add --int8 or leave it out")
            return
        if self.fp16:
            raise ClfError("--int8 and --fp16 are two precisions for one model; choose one")
        if self.opset < MIN_INT8_OPSET:
            raise ClfError(f"--opset {self.opset}: --int8 needs opset {MIN_INT8_OPSET} or newer (per-channel "
                           "quantisation); pass a newer --opset")
        defaults = {"calibration_images": DEFAULT_CALIBRATION_IMAGES, "calibration_method": CALIBRATION_METHODS[0],
                    "min_agreement": DEFAULT_MIN_AGREEMENT, "max_drop": DEFAULT_MAX_DROP}
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        count = self.calibration_images
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_CALIBRATION_IMAGES:
            raise ClfError(f"--calibration-images must be from 1 to {MAX_CALIBRATION_IMAGES}, got {count}")
        _raise_first_failure((
            _check_choice("--calibration-method", self.calibration_method, CALIBRATION_METHODS),
            (math.isfinite(self.min_agreement) and 0.0 <= self.min_agreement <= 1.0,
             f"--min-agreement is a fraction from 0 to 1 (e.g. 0.99), got {self.min_agreement}"),
            (math.isfinite(self.max_drop) and 0.0 <= self.max_drop <= 1.0,
             f"--max-drop is a fraction of accuracy from 0 to 1 (e.g. 0.005 = half a point), got {self.max_drop}"),
        ))

    def _check_triton(self, max_batch: int) -> None:
        """--triton REPO and its options: a repository path, a batch size the graph takes, a safe folder name."""
        options = {"--max-batch-size": self.max_batch_size, "--model-name": self.model_name}
        if self.triton is None:
            given = [flag for flag, value in options.items() if value is not None]
            if given:
                raise ClfError(f"{given[0]} applies to --triton only; add --triton REPO or leave it out")
            return
        if not self.triton.strip():
            raise ClfError("--triton is empty; give the model repository folder")
        if self.output is not None:
            raise ClfError("-o and --triton both say where the model goes; the model goes to REPO/<model>/1/model.onnx "
                           "with --triton: leave -o out")
        if self.max_batch_size is None:
            object.__setattr__(self, "max_batch_size", DEFAULT_TRITON_MAX_BATCH)
        size = self.max_batch_size
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= max_batch:
            raise ClfError(f"--max-batch-size must be from 1 to {max_batch} (the model's batch axis), got {size}")
        if self.model_name is not None and not is_safe_model_name(self.model_name):
            raise ClfError(f"--model-name {self.model_name!r}: {MODEL_NAME_RULE}; choose another")

    @property
    def tolerance(self) -> float:
        if self.atol is not None:
            return self.atol
        return DEFAULT_ATOL_FP16 if self.fp16 else DEFAULT_ATOL


# The smallest normal float32: a normalised weight below it is 0 (or denormal) in the exported graph.
_FLOAT32_TINY = 1.1754943508222875e-38


def _weights_problem(weights: tuple[float, ...]) -> str:
    """Why positive, finite --weights still cannot be normalised into the graph ('' when they can): a sum that
    overflows (each weight becomes 0 and the graph outputs NaN), or a weight too small next to the others for float32."""
    import math

    total = float(sum(weights))
    if not math.isfinite(total):
        return (f"their sum overflows to {total}, so every weight would normalise to 0; give weights of a usual size "
                "like 1,2 (only their ratios matter)")
    for index, weight in enumerate(weights, start=1):
        if float(weight) / total < _FLOAT32_TINY:
            return (f"weight {index} ({weight}) is {float(weight) / total:.3g} of their sum, which is 0 in the "
                    "float32 graph; give weights within a few orders of magnitude of each other, or leave that "
                    "member out")
    return ""


def _check_choice(flag: str, value: str, choices: tuple[str, ...]) -> tuple[bool, str]:
    return value in choices, f"{flag} must be one of {', '.join(choices)}, got {value!r}"


def _model_option_checks(cfg: Any) -> tuple[tuple[bool, str], ...]:
    """The checks shared by infer and eval: batching, device, and the options of a model without clf metadata."""
    return (
        (cfg.batch_size >= 1, f"--batch-size must be >= 1, got {cfg.batch_size}"),
        _check_choice("--device", cfg.device, DEVICES),
        (cfg.threads >= 0, f"--threads must be >= 0 (0 = one per core), got {cfg.threads}"),
        (cfg.img_size is None or cfg.img_size >= 1, f"--img-size must be >= 1, got {cfg.img_size}"),
        # NaN passes a "> 0" test and turns every output into NaN, which would then be blamed on the model
        (cfg.mean is None or (len(cfg.mean) == 3 and all(map(math.isfinite, cfg.mean))),
         f"--mean takes 3 finite numbers, got {cfg.mean}"),
        (cfg.std is None or (len(cfg.std) == 3 and all(math.isfinite(v) and v > 0 for v in cfg.std)),
         f"--std takes 3 values > 0, got {cfg.std}"),
    )


def column_checks(id_col: str, label_col: str) -> tuple[tuple[bool, str], ...]:
    """--id-col and --label-col: named, and not the same column (the CSV would have one column twice)."""
    return (
        (id_col.strip() != "", f"--id-col must name a column, got {id_col!r}"),
        (label_col.strip() != "", f"--label-col must name a column, got {label_col!r}"),
        (id_col.strip() != label_col.strip(), f"--id-col and --label-col are both {id_col!r}; give two column names"),
    )


def check_columns(id_col: str, label_col: str) -> None:
    """Raise ClfError (exit 2) for the first failure of column_checks."""
    _raise_first_failure(column_checks(id_col, label_col))


def _raise_first_failure(checks: tuple[tuple[bool, str], ...]) -> None:
    for ok, message in checks:
        if not ok:
            raise ClfError(message)


@dataclass(frozen=True)
class InferConfig(_JsonMixin):
    """What ``clf infer`` needs; every value is checked here, once (the CLI hands Typer the same choice lists)."""

    images: str = ""
    model: str = ""
    csv: str = "submission.csv"
    batch_size: int = 32
    device: str = "auto"
    sample_submission: str | None = None
    id_col: str = "id"
    label_col: str = "label"
    id_format: str = "stem"
    topk: int = 1
    topk_format: str = "columns"
    probs: str | None = None
    strict: bool = False  # skipped images make the run fail (IncompleteError, exit 4) after every other row is written
    recursive: bool = False
    threads: int = 0  # decode threads; 0 = one per core (at most 8)
    tta: str = "none"  # a TTA_VIEWS name: flipped views averaged at run time
    # Only for an .onnx without clf metadata (exported by another tool):
    img_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    labels: str | None = None  # comma-separated class names, or a text file with one per line

    def __post_init__(self) -> None:
        _raise_first_failure(_model_option_checks(self) + (
            (self.topk >= 1, f"--topk must be >= 1, got {self.topk}"),
            _check_choice("--tta", self.tta, tuple(TTA_VIEWS)),
            _check_choice("--id-format", self.id_format, ID_FORMATS),
            _check_choice("--topk-format", self.topk_format, TOPK_FORMATS),
            *column_checks(self.id_col, self.label_col),
            (self.topk_format != "columns" or self.id_col not in self.topk_columns(),
             f"--id-col {self.id_col!r} is also a top-k column ({', '.join(self.topk_columns())}); "
             "give another --id-col or --label-col"),
        ))

    def topk_columns(self) -> list[str]:
        """The columns --topk adds after the label column (--topk-format columns)."""
        return [f"{self.label_col}_{rank}" for rank in range(2, self.topk + 1)]


@dataclass(frozen=True)
class EvalConfig(_JsonMixin):
    """What ``clf eval`` needs: labelled images, an ONNX model, and where to write the report and the picture."""

    labelled: str = ""
    model: str = ""  # an .onnx (the command line turns a checkpoint or run folder into one first)
    labels_csv: str | None = None
    id_col: str = "id"
    label_col: str = "label"
    report: str | None = None  # the full report as JSON
    confusion: str | None = None  # the confusion matrix as a PNG
    batch_size: int = 32
    device: str = "auto"
    threads: int = 0
    tta: str = "none"  # a TTA_VIEWS name: the report shows the numbers without and with these views side by side
    # Only for an .onnx without clf metadata, as for infer:
    img_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    labels: str | None = None

    def __post_init__(self) -> None:
        _raise_first_failure(_model_option_checks(self) + (_check_choice("--tta", self.tta, tuple(TTA_VIEWS)),) + (
            column_checks(self.id_col, self.label_col) if self.labels_csv else ()))


MAX_SERVE_BATCH = 1024  # images per dynamic batch; far above what helps on CPUs, far below what exhausts memory
MAX_BATCH_WAIT_MS = 10_000.0  # a longer wait only delays every lone request


@dataclass(frozen=True)
class ServeConfig(_JsonMixin):
    """What ``clf serve`` needs: the model, where to listen, how to batch and how many replicas to run."""

    model: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    replicas: int = 1
    max_batch_size: int = 16  # images per session.run, gathered from concurrent requests (@serve.batch)
    batch_wait_ms: float = 5.0  # how long a request waits for others to fill its batch
    address: str | None = None  # an existing Ray cluster; None: a local Ray instance bound to loopback
    device: str = "auto"
    threads: int = 0  # onnxruntime intra-op threads per replica; 0 = the usable cores / replicas

    def __post_init__(self) -> None:
        _raise_first_failure((
            (self.host.strip() != "", "--host is empty; give an address to listen on, e.g. 127.0.0.1"),
            (1 <= self.port <= 65535, f"--port must be between 1 and 65535, got {self.port}"),
            (self.replicas >= 1, f"--replicas must be >= 1, got {self.replicas}"),
            (1 <= self.max_batch_size <= MAX_SERVE_BATCH,
             f"--max-batch-size must be between 1 and {MAX_SERVE_BATCH}, got {self.max_batch_size}"),
            (math.isfinite(self.batch_wait_ms) and 0 <= self.batch_wait_ms <= MAX_BATCH_WAIT_MS,
             f"--batch-wait-ms must be between 0 and {MAX_BATCH_WAIT_MS:g}, got {self.batch_wait_ms:g}"),
            (self.address is None or self.address.strip() != "",
             "--address is empty; give a Ray cluster address (e.g. ray://head:10001 or auto), or leave it out"),
            _check_choice("--device", self.device, DEVICES),
            (self.threads >= 0, f"--threads must be >= 0 (0 = the usable cores / replicas), got {self.threads}"),
        ))
