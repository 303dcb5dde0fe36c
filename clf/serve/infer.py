"""The jobs behind `clf infer`, `clf eval` and `clf score`: folders in, CSV / report out. No torch."""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from clf.atomic import check_output_file
from clf.config import InferConfig
from clf.data.files import list_images
from clf.errors import DataError
from clf.serve.metadata import has_clf_metadata
from clf.serve.metrics import classification_report
from clf.serve.predictor import Predictor
from clf.serve.submission import TOPK_FORMATS, check_sample_ids, make_ids, write_probs, write_submission

logger = logging.getLogger(__name__)

ID_FORMATS = ("stem", "name", "relpath")


@dataclass(frozen=True)
class InferResult:
    csv: Path
    images: int
    predicted: int
    failures: list[tuple[str, str]]
    provider: str
    seconds: float
    not_in_sample: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def _explicit_preprocess(cfg: InferConfig) -> tuple[dict[str, Any] | None, list[str] | None]:
    """The --img-size/--mean/--std given (as Preprocess fields) and --labels (None where not given)."""
    fields: dict[str, Any] = {}
    if cfg.img_size:
        fields["size"] = (cfg.img_size, cfg.img_size)
    if cfg.mean:
        fields["mean"] = tuple(cfg.mean)
    if cfg.std:
        fields["std"] = tuple(cfg.std)
    classes = None
    if cfg.labels:
        path = Path(cfg.labels)
        if path.is_file():
            classes = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        else:
            classes = [name.strip() for name in cfg.labels.split(",") if name.strip()]
    return fields or None, classes


def make_predictor(cfg: InferConfig, verbose: bool = False) -> Predictor:
    """A Predictor for cfg.model; a model without clf metadata needs all of --img-size, --mean, --std, --labels.

    Guessing any of them (ImageNet statistics, class names "0", "1", ...) is exactly the silent preprocessing
    drift this tool exists to prevent, so nothing is assumed.
    """
    fields, classes = _explicit_preprocess(cfg)
    predictor = Predictor(
        cfg.model, device=cfg.device, batch_size=cfg.batch_size, preprocess=fields, classes=classes,
        workers=cfg.threads or None, verbose=verbose,
    )
    if not has_clf_metadata(predictor.session.get_modelmeta().custom_metadata_map):
        missing = [flag for flag, value in (("--img-size", cfg.img_size), ("--mean", cfg.mean), ("--std", cfg.std),
                                            ("--labels", cfg.labels)) if not value]
        if missing:
            raise DataError(f"{cfg.model}: no clf metadata (exported by another tool?); also pass {', '.join(missing)} "
                            "(--img-size, --mean, --std and --labels describe how it was trained)")
    return predictor


def run_inference(
    cfg: InferConfig, progress: Callable[[int], None] | None = None, on_start: Callable[[int, str], None] | None = None,
    verbose: bool = False,
) -> InferResult:
    """Predict every image under cfg.images and write the submission (and probabilities) CSV atomically.

    Everything that can be checked before the model runs is checked first (ids unique, every id of the
    sample submission has an image), so a mistake costs seconds, not a whole inference run.

    Args:
        progress: called with the running count of images done.
        on_start: called once with (number of images, provider actually used) before decoding starts.
    """
    if cfg.id_format not in ID_FORMATS:
        raise DataError(f"--id-format must be one of {', '.join(ID_FORMATS)}, got {cfg.id_format!r}")
    if cfg.topk < 0:
        raise DataError(f"--topk must be >= 1, got {cfg.topk}")
    if cfg.topk_format not in TOPK_FORMATS:
        raise DataError(f"--topk-format must be one of {', '.join(TOPK_FORMATS)}, got {cfg.topk_format!r}")
    for output in (cfg.csv, cfg.probs):
        if output:
            check_output_file(output)  # before minutes of inference, not after
    paths = [str(p) for p in list_images(cfg.images, recursive=cfg.recursive)]
    all_ids = make_ids(paths, cfg.images, cfg.id_format)
    if cfg.sample_submission:
        check_sample_ids(cfg.sample_submission, all_ids, cfg.id_col, cfg.label_col)
    predictor = make_predictor(cfg, verbose)
    if on_start is not None:
        on_start(len(paths), predictor.provider)
    started = time.perf_counter()
    # Even with --strict every readable image gets its row; strict only turns skipped images into a failing exit.
    result = predictor.predict(paths, strict=False, progress=progress)
    seconds = time.perf_counter() - started
    ids = [all_ids[i] for i in result.ok_indices]
    predicted = set(result.ok_indices.tolist())
    unreadable = [image_id for i, image_id in enumerate(all_ids) if i not in predicted]
    topk = result.topk_labels(cfg.topk) if cfg.topk > 1 else None
    not_in_sample = write_submission(
        cfg.csv, ids, result.labels(), id_col=cfg.id_col, label_col=cfg.label_col, topk=topk,
        topk_format=cfg.topk_format,
        sample_submission=cfg.sample_submission, unreadable=unreadable,
    )
    if cfg.probs:
        write_probs(cfg.probs, ids, predictor.classes, result.probs(), id_col=cfg.id_col)
    return InferResult(Path(cfg.csv), len(paths), len(ids), list(result.failures), predictor.provider, seconds,
                       not_in_sample)


def evaluate_labelled(predictor: Predictor, paths: list[str], true_labels: list[str], strict: bool = False,
                      progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix of `predictor` on labelled images.

    True labels are names; a label the model does not know is an error (wrong model for this data).
    """
    classes = predictor.classes
    unknown = sorted(set(true_labels) - set(classes))
    if unknown:
        raise DataError(f"labels {unknown[:5]} are not classes of the model ({', '.join(classes)}); wrong model or data?")
    result = predictor.predict(paths, strict=strict, progress=progress)
    index = {name: i for i, name in enumerate(classes)}
    y_true = np.array([index[true_labels[i]] for i in result.ok_indices], dtype=np.int64)
    report = classification_report(y_true, result.top1(), classes)
    report["failures"] = [{"source": str(s), "reason": r} for s, r in result.failures]
    report["provider"] = predictor.provider
    return report


def score_submission(submission: str, answers: str, id_col: str = "id", label_col: str = "label") -> tuple[float, int]:
    """Accuracy of a submission CSV against an answers CSV (same id/label columns); returns (accuracy, rows)."""
    predicted, truth = _read_labels(submission, id_col, label_col), _read_labels(answers, id_col, label_col)
    missing = [i for i in truth if i not in predicted]
    if missing:
        raise DataError(f"{submission}: {len(missing)} ids of {answers} have no prediction (e.g. {missing[0]})")
    correct = sum(predicted[i] == label for i, label in truth.items())
    return correct / max(len(truth), 1), len(truth)


def _read_labels(path: str, id_col: str, label_col: str) -> dict[str, str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or id_col not in reader.fieldnames or label_col not in reader.fieldnames:
                raise DataError(f"{path}: needs columns '{id_col}' and '{label_col}' (has {reader.fieldnames})")
            return {row[id_col]: row[label_col] for row in reader}
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
