"""`clf distill TEACHER DATA`: the student's config, the teacher opened and checked, then an ordinary fit()."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from clf import system
from clf.config import TrainConfig
from clf.data.datasets import load_labelled, verify_images
from clf.data.files import list_images
from clf.data.pseudo_labels import check_folder_apart
from clf.distill.teacher import OnnxTeacher, check_classes, folder_teacher_classes, open_predictor, teacher_sha256
from clf.errors import DataError
from clf.train.fit import FitResult, TrainReporter, fit, resolve_config

logger = logging.getLogger(__name__)

UNLABELLED_ADVICE = ("--unlabelled is for images without labels: give the test folder (check your competition's "
                     "rules on training with it)")


def distill(given: dict[str, Any], teacher: str, resume: str | None = None, overwrite: bool = False,
            reporter: TrainReporter | None = None) -> FitResult:
    """Train the student `given` describes on `teacher`'s soft predictions (a new run, or `resume`'s).

    Raises:
        DataError: a missing teacher, a file that is not a clf model, a teacher of other classes than DATA's, an
            --unlabelled folder that is (inside, around) DATA, a resumed run whose teacher changed.
        ClfError: what `clf train` refuses.
    """
    source = Path(teacher)
    sha256 = teacher_sha256(source)
    cfg, ckpt = resolve_config({**given, "teacher": str(source.resolve())}, resume)
    if ckpt is not None:
        check_same_teacher(cfg, sha256, source)
    cfg = replace(cfg, teacher_sha256=sha256)
    unlabelled = unlabelled_images(cfg)
    device = "cpu" if cfg.device == "cpu" else "auto"
    # checked before any run folder is made: a file's classes from its metadata, a folder's from its checkpoints
    teacher_classes = open_predictor(source, device).classes if source.is_file() else folder_teacher_classes(source)
    check_classes(source, teacher_classes, data_classes(cfg))
    return fit(cfg, resume_ckpt=ckpt, overwrite=overwrite, reporter=reporter,
               teacher=OnnxTeacher(source, sha256, unlabelled, device))


def check_same_teacher(cfg: TrainConfig, sha256: str, source: Path) -> None:
    """A resumed student continues with the teacher it started with.

    Raises:
        DataError: the run trained without a teacher, or with another one (its sha256 differs).
    """
    if cfg.teacher_sha256 is None:
        raise DataError(f"{source}: the run being resumed trained without a teacher; resume it with `clf train "
                        "--resume`, or distill into a new run")
    if cfg.teacher_sha256 != sha256:
        raise DataError(f"{source}: not the teacher the run started with (sha256 {sha256[:12]}..., the run recorded "
                        f"{cfg.teacher_sha256[:12]}...); pass that teacher, or distill into a new run")


def data_classes(cfg: TrainConfig) -> list[str]:
    """DATA's classes (class folders, or --labels-csv's)."""
    return load_labelled(cfg.data, cfg.labels_csv, id_col=cfg.id_col, label_col=cfg.label_col,
                         group_col=cfg.group_col, task=cfg.task, classes=cfg.classes).classes


def unlabelled_images(cfg: TrainConfig) -> list[str]:
    """The readable images of --unlabelled (none without it); unreadable ones are skipped (--strict: refused).

    Raises:
        DataError: the folder is DATA, inside it or around it (or the same folder under another name), is missing
            or holds no images.
    """
    if cfg.unlabelled is None:
        return []
    check_folder_apart(cfg.unlabelled, cfg.data, flag="--unlabelled", advice=UNLABELLED_ADVICE)
    paths = [str(path) for path in list_images(cfg.unlabelled)]
    ok = verify_images(paths, strict=cfg.strict, workers=max(2, system.usable_cpus()))
    if len(ok) < len(paths):
        logger.warning("%d of %d unlabelled images could not be read and are left out", len(paths) - len(ok),
                       len(paths))
    return [paths[i] for i in ok]
