"""The job behind `clf eval`: labelled images and an ONNX model in; accuracy, log-loss, ECE, per-class
precision/recall/F1 and the confusion matrix out, with the JSON report and the confusion PNG written atomically; with
--tta, the scores without and with the flipped views side by side, from one decode pass. No torch: a checkpoint is
turned into an ONNX model first (clf.export.for_eval), by the caller."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clf.atomic import atomic_write_text, check_outputs
from clf.config import EvalConfig
from clf.data.datasets import LabelledSet, load_labelled
from clf.data.multilabel import read_tagged_images
from clf.errors import DataError
from clf.probabilities import ECE_BINS, expected_calibration_error, log_loss
from clf.serve.evaluate_multilabel import evaluate_tags
from clf.serve.loading import labels_file, make_predictor
from clf.serve.metrics import classification_report, save_confusion_png
from clf.serve.predictions import PredictionResult
from clf.serve.predictor import Predictor
from clf.tasks import SINGLE_LABEL, Task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalResult:
    """What `evaluate` measured.

    Attributes:
        report: the JSON-ready report: classification_report's keys (from the predictions with TTA when asked)
            plus "log_loss", "ece" and "ece_bins" (None without a readable image), "failures" ([{source, reason}]),
            "provider", and "tta": {"views": name} and, with TTA, "without" and "with": {"accuracy", "log_loss",
            "ece"} side by side.
        report_path, confusion_path: the files written (None where not asked for).
    """

    report: dict[str, Any]
    report_path: Path | None = None
    confusion_path: Path | None = None

    @property
    def accuracy(self) -> float:
        return self.report["accuracy"]

    @property
    def failures(self) -> list[dict[str, str]]:
        return self.report["failures"]

    @property
    def log_loss(self) -> float | None:
        return self.report["log_loss"]

    @property
    def ece(self) -> float | None:
        return self.report["ece"]


def load_eval_data(cfg: EvalConfig) -> LabelledSet | TaggedSet:
    """The labelled images, with the outputs checked against them and the inputs: the checks to make before any
    long work (a checkpoint's export included).

    Raises:
        DataError: a missing or unusable folder or labels CSV.
        ClfError / StorageError: --report or --confusion cannot be written, name each other or an input.
    """
    if cfg.task == "multilabel":
        paths, tags = read_tagged_images(cfg.labels_csv, cfg.labelled, cfg.id_col, cfg.label_col)
        data = TaggedSet(paths, tags)
    else:
        data = load_labelled(cfg.labelled, cfg.labels_csv, id_col=cfg.id_col, label_col=cfg.label_col)
    check_eval_outputs(cfg, data)
    return data


@dataclass(frozen=True)
class TaggedSet:
    """Multi-label evaluation images and each one's tags (read by clf.data.multilabel.read_tagged_images)."""

    paths: list[str]
    tags: list[list[str]]


def evaluate(
    cfg: EvalConfig, data: LabelledSet | TaggedSet | None = None, on_start: Callable[[int, str], None] | None = None,
    progress: Callable[[int], None] | None = None, verbose: bool = False,
) -> EvalResult:
    """Evaluate the ONNX model cfg.model on the labelled images; write cfg.report / cfg.confusion when given.

    The Predictor is made exactly as `clf infer` makes it (clf.serve.loading.make_predictor).

    Args:
        data: the labelled set from `load_eval_data` (loaded and checked here when None).
        on_start: called once with (number of images, provider actually used) before decoding starts.
        progress: called with the running count of images done.

    Raises:
        DataError: a label the model does not know, bad data; ModelError: NaN/inf outputs; DeviceError.
    """
    if data is None:
        data = load_eval_data(cfg)
    else:
        check_eval_outputs(cfg, data)
    predictor = make_predictor(cfg, verbose)
    if on_start is not None:
        on_start(len(data.paths), predictor.provider)
    if isinstance(data, TaggedSet):
        report = evaluate_tags(predictor, data.paths, data.tags, progress=progress)
    else:
        report = evaluate_labelled(predictor, data.paths, [data.classes[i] for i in data.labels], progress=progress)
    if cfg.report:
        atomic_write_text(cfg.report, json.dumps(report, indent=2) + "\n")
    if cfg.confusion:
        save_confusion_png(report["confusion_matrix"], report["classes"], cfg.confusion)
    return EvalResult(report, Path(cfg.report) if cfg.report else None, Path(cfg.confusion) if cfg.confusion else None)


def check_eval_outputs(cfg: EvalConfig, data: LabelledSet | TaggedSet) -> None:
    """--report and --confusion: writable file paths, not each other, not an input (model, labels, an image)."""
    check_outputs(
        {"--report": cfg.report, "--confusion": cfg.confusion},
        inputs={"--model": cfg.model, "--labels-csv": cfg.labels_csv, "--labels": labels_file(cfg)},
        input_files=data.paths,
    )


def evaluate_labelled(predictor: Predictor, paths: list[str], true_labels: list[str], strict: bool = False,
                      progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Accuracy, log-loss, ECE, per-class precision/recall/F1 and the confusion matrix of `predictor` on labelled
    images; with the predictor's TTA, also the scores of its unflipped view alone (the same session runs).

    True labels are names; a label the model does not know is an error (wrong model for this data).
    """
    result, y_true = predict_labelled(predictor, paths, true_labels, strict, progress)
    return labelled_report(predictor, result, y_true)


def predict_labelled(predictor: Predictor, paths: list[str], true_labels: list[str], strict: bool = False,
                     progress: Callable[[int], None] | None = None) -> tuple[PredictionResult, np.ndarray]:
    """The predictions of `predictor` on labelled images, and the true class index of each predicted row.

    Raises:
        DataError: a true label the model does not know (wrong model for this data).
    """
    classes = predictor.classes
    unknown = sorted(set(true_labels) - set(classes))
    if unknown:
        raise DataError(f"labels {unknown[:5]} are not classes of the model ({', '.join(classes)}); "
                        "wrong model or data?")
    result = predictor.predict(paths, strict=strict, progress=progress)
    index = {name: i for i, name in enumerate(classes)}
    return result, np.array([index[true_labels[i]] for i in result.ok_indices], dtype=np.int64)


def labelled_report(predictor: Predictor, result: PredictionResult, y_true: np.ndarray) -> dict[str, Any]:
    """`evaluate_labelled`'s report of predictions made by `predict_labelled`."""
    report = classification_report(y_true, result.top1(), predictor.classes)
    report.update(probability_scores(result.probs(), y_true))
    report["ece_bins"] = ECE_BINS
    report["tta"] = {"views": predictor.tta}
    if result.plain_logits is not None:
        plain = result.task.scores(result.plain_logits)
        report["tta"]["without"] = {"accuracy": _accuracy(result.plain_logits, y_true, result.task),
                                    **probability_scores(plain, y_true)}
        report["tta"]["with"] = {key: report[key] for key in ("accuracy", "log_loss", "ece")}
    report["failures"] = [{"source": str(s), "reason": r} for s, r in result.failures]
    report["provider"] = predictor.provider
    return report


def probability_scores(probs: np.ndarray, y_true: np.ndarray) -> dict[str, float | None]:
    """{"log_loss", "ece"} of the probabilities against the true class indices (None for no rows)."""
    if len(y_true) == 0:
        return {"log_loss": None, "ece": None}
    return {"log_loss": log_loss(probs, y_true), "ece": expected_calibration_error(probs, y_true, ECE_BINS)}


def _accuracy(logits: np.ndarray, y_true: np.ndarray, task: Task = SINGLE_LABEL) -> float:
    """Top-1 accuracy as classification_report counts it from PredictionResult.top1 (ties -> the lowest index)."""
    return float(np.mean(task.correct(logits, y_true))) if len(y_true) else 0.0
