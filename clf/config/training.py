"""TrainConfig: everything `clf train` needs, its checks, and the augmentation knobs it carries."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from clf.choices import (AUGMENT_PRESETS, AUTO_AUGMENTS, COMPETITION_METRICS, INTERPOLATIONS, OPTIMIZERS,
                         RESIZE_MODES, SAMPLERS, SCHEDULERS, TASK_LOSSES, TASK_METRICS, TASK_NAMES, TRAIN_DEVICES,
                         AMP_MODES)
from clf.config.distilling import DistillFields
from clf.config.base import JsonMixin, check_choice, group_checks, option_flag, setting, task_checks
from clf.config.preprocess import MAX_INPUT_SIZE
from clf.config.tracking import tracking_checks
from clf.errors import ClfError

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
    """Each knob given (not None) in range: one ClfError naming its flag ("--crop-scale must be > 0 and <= 1, got
    0")."""
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
DEFAULT_FOCAL_GAMMA = 2.0  # Lin et al. (2017); clf.train.losses.LossSettings has the same default
# What a checkpoint written before a field existed trained with: resuming it must not switch a new default on.
LEGACY_VALUES = {"augment": "none", "mixup": 0.0, "cutmix": 0.0, "ema": 0.0, "drop_path": 0.0, "precision": "fp32",
                 "interpolation": "linear"}
# A warm-up over the first 30 % of the epochs, then cosine: the shape of OneCycle. Measured against none on the real
# benchmarks (benchmarks/accuracy.py, 5 seeds): tiny 0.846 vs 0.788, textures 0.728 vs 0.711 (README, "Warm-up, and
# the light preset without its crop").
WARMUP_FRACTION = 0.3
_FROM_PRESET = " [default: from --augment]"  # the augmentation knobs: None takes the --augment preset's value


@dataclass(frozen=True)
class TrainConfig(DistillFields, JsonMixin):
    """Everything ``clf train`` needs; saved resolved in ``config.json`` and in every checkpoint.

    Each field with a help line is a `clf train` option (clf/cli/options.py); the others are set by clf itself. The
    distillation fields (clf/config/distilling.py, first in field order) are `clf distill`'s options.
    """

    data: str = setting("", resumable=True)  # the DATA argument; the data may move between sittings
    arch: str = setting("cnn", "Architecture (see `clf models`): cnn, alexnet, resnet18, rexnet_100, "
                               "coatnet_0_rw_224, ...")
    # The defaults below were chosen from benchmarks/accuracy.py (scenes, faces) and the sample competition: see README.
    epochs: int = setting(30, "Total epochs; may be raised on --resume to train further.", resumable=True)
    # None: auto_batch_size(training images per process), resolved by fit()
    batch_size: int | None = setting(None, "Batch size (per process under torchrun). [default: 32, smaller for "
                                           "small data: at least 16 steps an epoch]")
    # None: DEFAULT_IMG_SIZES[arch], else DEFAULT_IMG_SIZE (resolved on construction)
    img_size: int | None = setting(None, "Square input size in pixels. [default: 64 for cnn, 224 for the others]")
    lr: float = setting(3e-3, "Base learning rate.")
    optimizer: str = setting("adamw", "Optimizer.", choices=OPTIMIZERS)
    scheduler: str = setting("cosine", "LR schedule after warmup.", choices=SCHEDULERS)
    # None: WARMUP_FRACTION of --epochs, rounded down (resolved on construction)
    warmup_epochs: int | None = setting(None, "Linear LR warmup epochs. [default: 30% of --epochs, rounded down]")
    weight_decay: float = setting(0.05, "Weight decay (not on biases and norms).")
    # measured on five kinds of real images: README "Defaults"
    label_smoothing: float = setting(0.1, "Label smoothing for the cross-entropy loss.")
    # None: the task's own loss (single-label: cross_entropy), which every run before this field trained with
    loss: str | None = setting(None, "Loss on the class labels: a name registered in clf/train/losses.py: "
                                     "cross_entropy or focal (one class per image), bce or asl (asymmetric loss, "
                                     "--task multilabel). [default: cross_entropy; bce with --task multilabel]")
    # None: not focal; a focal run without it records focal's gamma 2 (resolved on construction), as before the flag
    focal_gamma: float | None = setting(None, "Focal loss gamma (with --loss focal): how much less the examples the "
                                              "model gets right weigh; 0 is cross-entropy. [default: 2]",
                                        show_default=False)
    # None: unweighted, as every run before the option. Resolved once per new run (clf/train/class_weights.py) into
    # resolved_class_weights, which config.json and every checkpoint record: resume trains with exactly those.
    class_weights: str | None = setting(None, "Weight each class's loss terms: auto (N / (C * n_c) over the "
                                              "training split), effective (effective number of samples, beta "
                                              "0.999), or a CSV file of class,weight. With --task multilabel each "
                                              "class's positive weight: auto = negatives / positives (at most 100), "
                                              "or the file's. [default: unweighted]",
                                        metavar="auto|effective|FILE", show_default=False)
    resolved_class_weights: tuple[float, ...] | None = None
    # clf/train/sampler.py; "none" (each image once an epoch, shuffled) is what every run before the option did
    sampler: str = setting("none", "How an epoch draws its training images: none (each once, shuffled) or balanced "
                                   "(as many draws with replacement, every class equally likely; multilabel: by each "
                                   "image's rarest class).", choices=SAMPLERS)
    # single_label: every run before the multi-label task. clf/tasks.py
    task: str = setting("single_label", "What the model predicts: one class per image, or multilabel (any number of "
                                        "classes per image; sigmoid outputs, tuned per-class thresholds).",
                        choices=TASK_NAMES)
    # The competition's metric (clf/metrics.py): it ranks the epochs for best.pt and --patience (ties: the lower val
    # loss). None resolves on construction to the task's default (accuracy, what every run before this field was
    # ranked by; multilabel: f1_macro).
    metric: str | None = setting(None, "The competition's metric: picks best.pt (ties: the lower val loss) and drives "
                                       "--patience; qwk needs classes named by grade (0, 1, 2, ...). "
                                       "[default: accuracy; f1_macro with --task multilabel]",
                                 choices=COMPETITION_METRICS, show_default=False)
    val_split: float = setting(0.2, "Stratified validation fraction.")
    # A preset of AUGMENT_PRESETS; the knobs below override it one by one (None = the preset's value).
    augment: str = setting("light", "Augmentation preset; the flags below override single ops of it (see "
                                    "`clf augment-preview`).", choices=AUGMENT_PRESETS)
    hflip: float | None = setting(None, "Horizontal flip probability; 0 disables (digits, text)." + _FROM_PRESET)
    vflip: float | None = setting(None, "Vertical flip probability." + _FROM_PRESET)
    rotate: float | None = setting(None, "Rotation range in degrees; 0 disables." + _FROM_PRESET)
    crop_scale: float | None = setting(None, "Random-resized-crop: the smallest crop's area fraction; 1 disables."
                                       + _FROM_PRESET)
    translate: float | None = setting(None, "Random shift by up to this fraction of each side (pad-and-crop, mirrored "
                                            "border, no zoom), 0..0.5; 0 disables." + _FROM_PRESET)
    color_jitter: float | None = setting(None, "Brightness/contrast/saturation jitter strength (hue a quarter of "
                                               "it); 0 disables." + _FROM_PRESET)
    grayscale: float | None = setting(None, "Random grayscale probability." + _FROM_PRESET)
    blur: float | None = setting(None, "Gaussian blur probability." + _FROM_PRESET)
    erase: float | None = setting(None, "Random erasing probability." + _FROM_PRESET)
    auto_augment: str | None = setting(None, "Policy: trivial (TrivialAugment-wide) or rand (RandAugment, 2 ops at "
                                             "magnitude 9)." + _FROM_PRESET, choices=AUTO_AUGMENTS)
    mixup: float = setting(0.0, "Mixup Beta alpha (e.g. 0.2); 0 disables.")
    cutmix: float = setting(0.0, "CutMix Beta alpha (e.g. 1.0); 0 disables.")
    mix_prob: float = setting(1.0, "Probability that a batch is mixed (with --mixup/--cutmix).")
    mix_switch: float = setting(0.5, "Probability of CutMix rather than mixup when both are on.")
    ema: float = setting(0.999, "EMA decay of the weights (e.g. 0.999), validated beside the raw weights; 0 disables.")
    drop_path: float = setting(0.0, "Stochastic depth rate (timm models that have it).")
    dropout: float | None = setting(None, "Dropout before the classifier. [default: the architecture's own]")
    workers: int = setting(-1, "DataLoader worker processes (0 = in the main process; -1 = auto: 0 on CPU, up to 8 "
                               "on GPU).", resumable=True)
    seed: int = setting(0, "Random seed (split, init, shuffling, augmentation).")
    name: str = setting("", "Run name (empty: ARCH-SIZE, numbered when taken).")
    out: str = setting("runs", "Folder holding run folders.")
    patience: int = setting(0, "Early stop after P epochs without a val gain (accuracy, then lower loss; 0 = off).",
                            resumable=True)
    device: str = setting("auto", "Training device.", choices=TRAIN_DEVICES, resumable=True)
    # "auto" since bf16's accuracy on the CPU was measured equal to fp32's (README: benchmarks/accuracy.py, 5 kinds
    # of real images, 3 seeds) at about 2x the speed where the CPU has AMX.
    amp: str = setting("auto", "Mixed precision. auto (default) = bf16 (else fp16) on CUDA, and on the CPU bf16 "
                               "autocast when it has AMX/AVX512-BF16 and a start-up probe shows it faster, else "
                               "fp32; cuda = mixed precision on CUDA only, fp32 on the CPU; on = bf16 always; "
                               "off = fp32.",
                       choices=AMP_MODES, resumable=True)
    # What the run decided on the CPU (clf/train/precision.py): "fp32", "bf16", each optionally "+channels_last";
    # "" until decided. A resumed run replays it, whatever --amp says now (bit-exact resume, same numerics).
    precision: str = ""
    cache_images: bool | None = setting(None, "Keep decoded, resized images in RAM. [default: auto, when they take "
                                              "at most 2 GiB and a quarter of the free memory]",
                                        flags=("--cache-images/--no-cache-images",), show_default=False,
                                        resumable=True)  # None: auto (clf/train/build.py)
    pretrained: bool = setting(False, "Start from timm's pretrained weights (local cache only).")
    # Fine-tuning (clf/models/pretrained.py, clf/train/schedule.py): weights from a file the user has (its sha256 is
    # recorded when it is read: the run is traceable to the exact file; resume never reads it again), layer-wise LR
    # decay (the head at --lr, each earlier layer D times the next), and epochs that train the head alone.
    pretrained_path: str | None = setting(None, "Start from weights you have: a clf checkpoint (best.pt, last.pt, a "
                                                "run folder), a torch.save state dict or .safetensors; the head is "
                                                "re-initialised for another class count.")
    pretrained_sha256: str | None = None
    layer_decay: float | None = setting(None, "Layer-wise LR decay D (e.g. 0.75): the head trains at --lr, each "
                                              "earlier layer at D times the next one's. [default: off]")
    freeze_epochs: int = setting(0, "Train only the head for the first N epochs (body frozen, its BatchNorm in eval "
                                    "mode), then everything.")
    strict: bool = setting(False, "Fail on the first unreadable image instead of skipping it.", resumable=True)
    labels_csv: str | None = setting(None, "CSV of filename,label for the images in DATA (Kaggle style).")
    id_col: str = setting("filename", "Filename column of --labels-csv.")
    label_col: str = setting("label", "Label column of --labels-csv (--task multilabel: space-separated tags; "
                                      "without this column, one 0/1 column per class).")
    # None: the classes the CSV holds, sorted (clf/data/multilabel.py reads the list)
    classes: str | None = setting(None, "The classes of --labels-csv and their order: a,b,c or a file with one name "
                                        "per line; a label outside them is refused, and so is a class no image "
                                        "holds. [default: the labels found, sorted]", show_default=False)
    # Groups (clf/data/split.py): no group has images on both sides of the split or in two folds. None / False: the
    # item split every run before these fields made. They shape the split, so a resumed run keeps them.
    group_col: str | None = setting(None, "Column of --labels-csv naming each image's group (a patient, a source "
                                          "picture): the split and the folds keep every group on one side.")
    dedup: bool = setting(False, "Keep near-duplicate images (as `clf check` finds them) together on one side of the "
                                 "split and in one fold.")
    # Pseudo-labels (clf/data/pseudo_labels.py, clf/train/pseudo_rows.py): the confident rows of `clf infer --probs`
    # on unlabelled images join the training split. The file's sha256 is recorded on first read (resume, the folds and
    # a refit refuse a changed file); its path and the folder may move between sittings, as DATA may.
    pseudo_labels: str | None = setting(None, "Pseudo-labels: the PROBS.csv `clf infer IMAGES --probs` wrote for "
                                              "unlabelled images; rows whose top probability reaches "
                                              "--pseudo-threshold join the training split (never validation).",
                                        resumable=True)
    pseudo_images: str | None = setting(None, "The folder the ids of --pseudo-labels name (the test images; never "
                                              "DATA or a folder inside or around it).", resumable=True)
    pseudo_threshold: float = setting(0.9, "Top probability a --pseudo-labels row needs to join training (> 0, <= 1).")
    pseudo_soft: bool = setting(False, "Train pseudo-labelled images on their probability row (a soft target) "
                                       "instead of its top class.")
    pseudo_sha256: str | None = None
    resize: str = setting("stretch", "stretch, or shorter_crop (shorter side + center crop).", choices=RESIZE_MODES)
    # "area" (OpenCV's INTER_AREA: anti-aliased when shrinking) since benchmarks/accuracy.py measured it against
    # "linear" on five kinds of real images (README): textures +2.8 points, no kind worse beyond seed noise.
    interpolation: str = setting("area", "OpenCV resize filter, recorded in the checkpoint and the ONNX model so "
                                         "inference resizes the same way.", choices=INTERPOLATIONS)
    quiet: bool = setting(False, "No progress bar, one line per epoch.", flags=("--quiet", "-q"), resumable=True)
    # k-fold cross-validation (clf/train/folds.py): K stratified folds seeded by fold_seed; `fold` is set on the
    # member runs only (fold k validates on the items of fold k and trains on the rest).
    folds: int | None = setting(None, "Cross-validate: K stratified folds, K runs in runs/NAME/fold-k, then oof.csv "
                                      "and the CV score (--resume runs/NAME continues the group).")
    fold_seed: int = setting(0, "Seed of the fold assignment (with --folds).")
    fold: int | None = None
    # --refit (clf/train/refit.py): after this validated run, the same recipe on every image for the epochs validation
    # chose, in OUT/NAME/refit. `refit_of` and `refit_epoch` are set on that refit run only (the validated run's name
    # and its best epoch). Resumable: `--resume RUN --refit` adds a refit to a run trained without it.
    refit: bool = setting(False, "After the validated run, train the same recipe on every image for the epoch count "
                                 "validation chose, in runs/NAME/refit (--resume runs/NAME continues either).",
                          resumable=True)
    refit_of: str | None = None
    refit_epoch: int | None = None
    # Experiment tracking (clf/train/tracking.py; the extras clf[mlflow] and clf[tensorboard]). Resumable: a resumed
    # run keeps logging where it did (the MLflow run its folder's mlflow.json names). --mlflow-uri implies --mlflow.
    mlflow: bool = setting(False, "Log the config, per-epoch metrics (history.csv's columns) and curves.png, "
                                  "config.json, split.json to MLflow.", resumable=True)
    mlflow_uri: str | None = setting(None, "Where --mlflow logs (implies --mlflow): a folder (an SQLite store and the "
                                           "artifacts in it), sqlite:///FILE or http(s)://SERVER. [default: "
                                           "$MLFLOW_TRACKING_URI, else ./mlruns]", show_default=False,
                                     metavar="URI", resumable=True)
    mlflow_checkpoint: bool = setting(False, "With --mlflow: log best.pt too.", resumable=True)
    tensorboard: str | None = setting(None, "Write TensorBoard scalars per epoch (losses, accuracy, metric, lr) and "
                                            "a few augmented training images to DIR/RUN.", metavar="DIR",
                                      resumable=True)
    # `clf train --config FILE` (clf/train/config_file.py): the settings file the run took its settings from (absolute
    # path) and its sha256. Resumable: a later sitting may be configured from another file (or from none).
    config_file: str | None = setting(None, resumable=True)
    config_sha256: str | None = setting(None, resumable=True)


    @classmethod
    def from_saved(cls, data: dict[str, Any]) -> "TrainConfig":
        """The config a checkpoint or config.json recorded; fields it predates take the values it trained with."""
        return cls.from_dict({**LEGACY_VALUES, **data})

    def augment_overrides(self) -> dict[str, Any]:
        """The augmentation knobs given explicitly (those that override the --augment preset). A multi-label run
        leaves the random crop out unless --crop-scale is given: a crop can cut a tagged object out of the image while
        its tag stays (benchmarks/multilabel.py: macro-F1 0.864 without the crop, 0.840 with the light preset's)."""
        given = {knob: getattr(self, knob) for knob in AUGMENT_KNOBS if getattr(self, knob) is not None}
        if self.task == "multilabel" and "crop_scale" not in given:
            given["crop_scale"] = 1.0
        return given

    @classmethod
    def resumable_fields(cls) -> frozenset[str]:
        """The fields a resumed run may change (declared resumable above)."""
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
        if isinstance(self.amp, bool):  # config.json before --amp cuda|auto|on|off: true meant "on CUDA only"
            object.__setattr__(self, "amp", "cuda" if self.amp else "off")
        if self.img_size is None:
            object.__setattr__(self, "img_size", DEFAULT_IMG_SIZES.get(self.arch, DEFAULT_IMG_SIZE))
        if self.warmup_epochs is None:
            object.__setattr__(self, "warmup_epochs", int(WARMUP_FRACTION * self.epochs))
        if self.focal_gamma is None and self.loss == "focal":
            object.__setattr__(self, "focal_gamma", DEFAULT_FOCAL_GAMMA)
        if self.mlflow_uri is not None and not self.mlflow:  # saying where to log asks for the logging
            object.__setattr__(self, "mlflow", True)
        if self.metric is None and self.task in TASK_METRICS:
            object.__setattr__(self, "metric", TASK_METRICS[self.task][0])
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
            *group_checks(self.group_col, self.labels_csv, self.id_col, self.label_col),
            *task_checks(self.task, self.labels_csv, self.classes),
            (self.loss is None or self.loss.strip() != "", "--loss is empty; give a loss name or leave the option out"),
            (0 <= self.seed < MAX_SEED, f"--seed must be >= 0 and < {MAX_SEED} (2**31), got {self.seed}"),
            (0.0 <= self.label_smoothing < 1.0, "--label-smoothing must be >= 0 and < 1"),
            *self._loss_checks(),
            *self._class_weight_checks(),
            *self._task_checks(),
            check_choice("--optimizer", self.optimizer, OPTIMIZERS),
            check_choice("--amp", self.amp, AMP_MODES),
            check_choice("--task", self.task, TASK_NAMES),
            check_choice("--metric", self.metric, COMPETITION_METRICS),
            (self.task not in TASK_METRICS or self.metric in TASK_METRICS[self.task],
             f"--metric {self.metric} does not apply to --task {self.task}; choose one of "
             f"{', '.join(TASK_METRICS.get(self.task, ()))}"),
            check_choice("--scheduler", self.scheduler, SCHEDULERS),
            check_choice("--device", self.device, TRAIN_DEVICES),
            check_choice("--resize", self.resize, RESIZE_MODES),
            check_choice("--interpolation", self.interpolation, INTERPOLATIONS),
            check_choice("--sampler", self.sampler, SAMPLERS),
            *self._fold_checks(),
            *self._fine_tune_checks(),
            *self._refit_checks(),
            *self._pseudo_checks(),
            *self._distill_checks(),
            *tracking_checks(self.mlflow, self.mlflow_uri, self.mlflow_checkpoint, self.tensorboard),
        )
        for ok, message in checks:
            if not ok:
                raise ClfError(message)

    def _loss_checks(self) -> tuple[tuple[bool, str], ...]:
        gamma, task = self.focal_gamma, self.task
        own = TASK_LOSSES.get(task, ())
        other = next((name for name, losses in TASK_LOSSES.items() if self.loss in losses and name != task), None)
        return (
            (gamma is None or gamma >= 0, f"--focal-gamma must be >= 0 (0 is cross-entropy), got {gamma}"),
            (gamma is None or self.loss == "focal",
             "--focal-gamma applies to --loss focal; add --loss focal or leave it out"),
            (other is None, f"--loss {self.loss} trains --task {other}; with --task {task} choose one of "
                            f"{', '.join(own)}"),
        )

    def _task_checks(self) -> tuple[tuple[bool, str], ...]:
        """What a multi-label run cannot do: weigh classes by the effective number of samples (a single-label rule).
        --sampler balanced draws a multi-label set by each image's rarest class (clf/train/sampler.py)."""
        multilabel = self.task == "multilabel"
        return (
            (not (multilabel and self.class_weights == "effective"),
             "--class-weights effective is a single-label rule; with --task multilabel use auto (each class's "
             "positives weigh negatives / positives) or a CSV file of class,weight"),
        )

    def _class_weight_checks(self) -> tuple[tuple[bool, str], ...]:
        resolved = self.resolved_class_weights
        return (
            (self.class_weights is None or self.class_weights.strip() != "",
             "--class-weights is empty; give auto, effective or a CSV file of class,weight, or leave it out"),
            (resolved is None or all(isinstance(w, (int, float)) and math.isfinite(w) and w > 0 for w in resolved),
             f"resolved_class_weights must be positive finite numbers, got {resolved}"),
        )

    def _augment_checks(self) -> tuple[tuple[bool, str], ...]:
        check_augment_knobs(self.augment_overrides())
        return (check_choice("--augment", self.augment, AUGMENT_PRESETS),)

    def _fold_checks(self) -> tuple[tuple[bool, str], ...]:
        folds = self.folds
        return (
            (folds is None or folds >= 2, f"--folds must be >= 2 (each of K folds validates on 1/K of the data), "
                                          f"got {folds}"),
            (0 <= self.fold_seed < MAX_SEED,
             f"--fold-seed must be >= 0 and < {MAX_SEED} (2**31), got {self.fold_seed}"),
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

    def _pseudo_checks(self) -> tuple[tuple[bool, str], ...]:
        labels, images, threshold = self.pseudo_labels, self.pseudo_images, self.pseudo_threshold
        return (
            (labels is None or labels.strip() != "", "--pseudo-labels is empty; give the PROBS.csv of `clf infer "
                                                     "--probs`, or leave the option out"),
            (labels is None or bool(images and images.strip()),
             "--pseudo-labels needs --pseudo-images DIR: the folder of the images its ids name (the test images)"),
            (images is None or labels is not None, "--pseudo-images names the images of --pseudo-labels PROBS.csv; "
                                                   "add it or leave out --pseudo-images"),
            (not self.pseudo_soft or labels is not None, "--pseudo-soft trains the rows of --pseudo-labels PROBS.csv; "
                                                         "add it or leave out --pseudo-soft"),
            (0.0 < threshold <= 1.0, f"--pseudo-threshold must be > 0 and <= 1 (a top probability), got {threshold}"),
            (labels is None or self.task != "multilabel",
             "--pseudo-labels takes single-label probabilities (one class per image); leave it out with --task "
             "multilabel"),
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
