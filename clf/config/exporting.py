"""ExportConfig: what `clf export` needs, checked once before anything is loaded, and the export defaults."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from clf.choices import (AVERAGES, CALIBRATION_METHODS, DEVICES, EXPORT_TARGETS, EXPORTERS, MAX_BATCH, MAX_OPSET,
                         MIN_INT8_OPSET, MIN_OPSET, OPSETS, TTA_VIEWS, check_exporter_opset)
from clf.config.base import JsonMixin, check_choice, raise_first_failure, setting
from clf.errors import ClfError

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


def _batch_sizes_from_text(text: str) -> tuple[int, ...]:
    """"1,8" -> (1, 8); ExportConfig checks the values."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ClfError(f"--batch-sizes takes comma-separated integers like 1,8, got {text!r}") from None


def _weights_from_text(text: str) -> tuple[float, ...]:
    """"1,2" -> (1.0, 2.0); ExportConfig checks the values, the export their count."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ClfError(f"--weights takes comma-separated numbers like 1,2, got {text!r}") from None


_OPSET_RANGES = ", ".join(f"{name} {low}-{high}" for name, (low, high) in OPSETS.items())


@dataclass(frozen=True)
class ExportConfig(JsonMixin):
    """What ``clf export`` needs: which checkpoint, which target, where to write, how to prove parity.

    The choices are checked here, once, before anything is loaded, against clf/choices.py: the target against
    EXPORT_TARGETS, the exporter and opset against EXPORTERS and OPSETS, the device against DEVICES. Each field with a
    help line is a `clf export` option (clf/cli/options.py).
    """

    checkpoint: str = ""  # the first RUN argument
    output: str | None = setting(None, "Model file, or an existing folder to write model.onnx into (default: beside "
                                       "the checkpoint). Missing folders are created.", flags=("--output", "-o"))
    target: str = "onnx"  # a name of EXPORT_TARGETS (the command line: triton with --triton)
    opset: int = setting(18, f"ONNX opset, {MIN_OPSET}-{MAX_OPSET} ({_OPSET_RANGES}).")
    fp16: bool = setting(False, "Half-precision weights and compute; input/output stay float32.")
    simplify: bool = setting(False, "Simplify the graph with onnxslim, then re-check parity.")
    check_images: str | None = setting(None, "Images for the parity check (default: the validation images listed in "
                                             "the run's split.json).")
    atol: float | None = setting(None, f"Max abs logit difference allowed, >= 0 (default {DEFAULT_ATOL:g}, "
                                       f"{DEFAULT_ATOL_FP16:g} with --fp16).")
    batch_sizes: tuple[int, ...] = setting((1, 8), f"Batch sizes the parity check runs, 1-{MAX_BATCH} (one > 1 "
                                                   "proves the dynamic axis).", parse=_batch_sizes_from_text)
    # the onnxruntime provider used for the parity check (the one inference will use)
    device: str = setting("auto", "onnxruntime device for the parity check (the one inference will use).",
                          choices=DEVICES)
    exporter: str = setting("auto", "auto: dynamo, then TorchScript.", choices=EXPORTERS)
    max_images: int = 32
    # Ensemble / TTA / calibration (clf/export/ensemble.py): `checkpoint` is the first member, or a fold group.
    more_runs: tuple[str, ...] = ()  # the other members (runs or checkpoints); -o is required with them
    average: str = setting("prob", "Ensemble and TTA views: average softmax probabilities (output: their log) or "
                                   "logits.", choices=AVERAGES)
    weights: tuple[float, ...] = setting((), "One weight per member, e.g. 1,2 (normalised; default equal).",
                                         parse=_weights_from_text)  # () = equal
    tta: str = setting("none", "Flipped views averaged inside the graph.", choices=tuple(TTA_VIEWS))
    calibrate: bool = setting(False, "Fit a temperature on the validation images (a fold group: its oof.csv) and "
                                     "bake it in.")
    force: bool = setting(False, "--tta with flips the runs were not trained with.")
    # --int8 (the calibration and gate options are None unless --int8; then they take the defaults above)
    int8: bool = setting(False, "Static int8 (QDQ) quantisation of the proven fp32 model, behind an accuracy gate "
                                "on the validation images (model_int8.onnx).")
    calibration_images: int | None = setting(None, "--int8: training images to calibrate on, spread over the "
                                                   f"classes (default {DEFAULT_CALIBRATION_IMAGES}, or all when "
                                                   "fewer).")
    calibration_method: str | None = setting(None, "--int8: how activation ranges are chosen (default "
                                                   f"{CALIBRATION_METHODS[0]}).", choices=CALIBRATION_METHODS)
    min_agreement: float | None = setting(None, "--int8 gate: least top-1 agreement with the fp32 model, 0-1 "
                                                f"(default {DEFAULT_MIN_AGREEMENT:g}).")
    max_drop: float | None = setting(None, "--int8 gate: most lost in the run's --metric (accuracy unless trained "
                                           f"with another; log_loss: its rise), 0-1 (default {DEFAULT_MAX_DROP:g} = "
                                           "half a point).")
    # --triton REPO (target "triton"): the model folder REPO/<model_name>/ (default name: the run's)
    triton: str | None = setting(None, "Write a Triton model repository entry REPO/<model>/ (config.pbtxt, "
                                       "labels.txt, preprocess.json, 1/model.onnx); composes with --int8/--fp16.",
                                 metavar="REPO")
    max_batch_size: int | None = setting(None, f"--triton: the largest batch Triton forms, 1-{MAX_BATCH} (default "
                                               f"{DEFAULT_TRITON_MAX_BATCH}).")
    model_name: str | None = setting(None, "--triton: the model's name and folder (default: the run's name).")
    # clf/train/tracking_mlflow.py (called by the command line: export itself never imports train)
    mlflow: bool = setting(False, "Log the model and its proof to the MLflow run `clf train --mlflow` recorded in the "
                                  "run folder (its mlflow.json).")

    def __post_init__(self) -> None:
        raise_first_failure((
            # an unset shell variable: not "here" nor "the default"
            *((value is None or value.strip() != "", f"{flag} is empty; give a path or leave the option out")
              for flag, value in (("--output", self.output), ("--check-images", self.check_images))),
            check_choice("export target", self.target, EXPORT_TARGETS),
        ))
        check_exporter_opset(self.exporter, self.opset)
        sizes = self.batch_sizes
        raise_first_failure((
            check_choice("--device", self.device, DEVICES),
            (self.atol is None or (math.isfinite(self.atol) and self.atol >= 0),
             f"--atol must be a finite number >= 0, got {self.atol}"),
            (bool(sizes) and all(not isinstance(n, bool) and isinstance(n, int) and 1 <= n <= MAX_BATCH
                                 for n in sizes),
             f"--batch-sizes takes integers from 1 to {MAX_BATCH} like 1,8, got {','.join(map(str, sizes)) or 'none'}"),
            (self.max_images >= 1, f"max_images must be >= 1, got {self.max_images}"),
        ))
        self._check_ensemble_options()
        self._check_int8()
        self._check_triton(MAX_BATCH)

    def _check_ensemble_options(self) -> None:
        """--average, --tta and --weights values, and -o with several runs (counts are checked once the members
        are known: a fold group names its own)."""
        raise_first_failure((check_choice("--average", self.average, AVERAGES),
                             check_choice("--tta", self.tta, tuple(TTA_VIEWS))))
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
        raise_first_failure((
            check_choice("--calibration-method", self.calibration_method, CALIBRATION_METHODS),
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
    overflows (each weight becomes 0 and the graph outputs NaN), or a weight too small next to the others for
    float32."""
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
