"""The job behind `clf infer`: a folder of images in, a submission CSV (and probabilities) out. No torch."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from clf.atomic import check_outputs
from clf.config import InferConfig
from clf.data.files import list_images
from clf.errors import DataError, IncompleteError, SettingError
from clf.serve.loading import labels_file, make_predictor
from clf.serve.predictor import Predictor
from clf.serve.ray_infer import check_data_extra, predict_on_ray
from clf.serve.submission import check_sample_ids, make_ids, write_probs, write_submission

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferResult:
    csv: Path
    images: int
    predicted: int
    failures: list[tuple[str, str]]
    provider: str
    seconds: float
    not_in_sample: list[str] = field(default_factory=list)
    tta: str = "none"  # the TTA views averaged at run time (clf.choices.TTA_VIEWS)
    on_ray: bool = False  # predicted on Ray Data (--ray, --address)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def check_infer_outputs(cfg: InferConfig, images: list[str]) -> None:
    """--csv and --probs: writable file paths, not each other, not an input (sample, model, labels, an image).

    Raises:
        ClfError / StorageError: naming the flag and the user's path.
    """
    check_outputs(
        {"--csv": cfg.csv, "--probs": cfg.probs},
        inputs={"--sample-submission": cfg.sample_submission, "--model": cfg.model, "--labels": labels_file(cfg)},
        input_files=images,
    )


def check_task_options(cfg: InferConfig, predictor: Predictor) -> None:
    """--topk ranks the classes of a single-label model; a multi-label model's label cell already holds every tag
    that reaches its threshold, so a top-k list would be another, unthresholded answer: refused.

    Raises:
        SettingError: --topk above 1 for a multi-label model.
    """
    if predictor.task.multilabel and cfg.topk > 1:
        raise SettingError(f"--topk {cfg.topk}: {cfg.model} is a multilabel model; its label column holds every tag "
                           "whose probability reaches the class's threshold (space-separated); leave out --topk, "
                           "and pass --probs FILE for every class's probability")


def run_inference(
    cfg: InferConfig, progress: Callable[[int], None] | None = None, on_start: Callable[[int, str], None] | None = None,
    verbose: bool = False,
) -> InferResult:
    """Predict every image under cfg.images and write the submission (and probabilities) CSV atomically.

    Everything that can be checked before the model runs is checked first (outputs writable and not an input,
    ids unique, every id of the sample submission has an image), so a mistake costs seconds, not a whole run.

    Args:
        progress: called with the running count of images done.
        on_start: called once with (number of images, provider actually used) before decoding starts.

    Raises:
        DataError, DeviceError, StorageError: bad input, device or output (exit 2), before any output is written.
        ModelError: the model outputs NaN or inf (nothing is written).
        IncompleteError: no image could be read (nothing is written), or cfg.strict and some images could not be
            read (raised after every other row was written).
    """
    if cfg.on_ray:
        check_data_extra()
    # --strict: a sub-folder that cannot be listed stops the run too (its images would be missing rows).
    paths = [str(p) for p in list_images(cfg.images, recursive=cfg.recursive, strict=cfg.strict)]
    check_infer_outputs(cfg, paths)
    all_ids = make_ids(paths, cfg.images, cfg.id_format)
    if cfg.sample_submission:
        check_sample_ids(cfg.sample_submission, all_ids, cfg.id_col, cfg.label_col)
    predictor = make_predictor(cfg, verbose)
    check_task_options(cfg, predictor)
    if cfg.probs and cfg.id_col in predictor.classes:
        raise DataError(f"{cfg.model}: a class is named '{cfg.id_col}' like the id column of --probs; "
                        "give another --id-col")
    if on_start is not None:
        on_start(len(paths), predictor.provider)
    started = time.perf_counter()
    # Even with --strict every readable image gets its row; strict only turns skipped images into a failing exit.
    if cfg.on_ray:
        result = predict_on_ray(cfg, predictor, paths, progress)
    else:
        result = predictor.predict(paths, strict=False, progress=progress)
    seconds = time.perf_counter() - started
    ids = [all_ids[i] for i in result.ok_indices]
    if not ids:
        raise IncompleteError(f"{cfg.images}: none of the {len(paths)} image(s) could be read (each is named above); "
                              f"nothing was written to {cfg.csv}")
    predicted = set(result.ok_indices.tolist())
    unreadable = [image_id for i, image_id in enumerate(all_ids) if i not in predicted]
    not_in_sample = write_submission(
        cfg.csv, ids, result.labels(), id_col=cfg.id_col, label_col=cfg.label_col,
        topk=result.topk_labels(cfg.topk) if cfg.topk > 1 else None, topk_format=cfg.topk_format,
        sample_submission=cfg.sample_submission, unreadable=unreadable,
    )
    if cfg.probs:
        write_probs(cfg.probs, ids, predictor.classes, result.probs(), id_col=cfg.id_col)
    if cfg.strict and result.failures:
        raise IncompleteError(f"{len(result.failures)} of {len(paths)} image(s) could not be read (--strict); "
                              f"the other rows were written to {cfg.csv}")
    return InferResult(Path(cfg.csv), len(paths), len(ids), list(result.failures), predictor.provider, seconds,
                       not_in_sample, predictor.tta, cfg.on_ray)
