"""The run folder: its name, clf's marker, --overwrite, and the config.json that describes the run.

A new run folder gets clf's marker first (`clf.ownership`), and every file training writes there is recorded in it
before it is written. `--overwrite` accepts only a marked run folder holding nothing of the user's, and removes the
old run's files only when the new run is about to write its first checkpoint: a new run that fails or is interrupted
in its first epoch leaves the old one as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clf import __version__
from clf.atomic import clean_stale_temps, storage_error
from clf.config import Preprocess, TrainConfig
from clf.data.augment import Pipeline
from clf.data.folds import is_fold_group
from clf.errors import ClfError
from clf.ownership import check_clearable, clear_owned, mark_folder, read_marker, record_files
from clf.run_files import CONFIG_FILE, REFIT_DIR, RUN_FILES, has_checkpoint
from clf.run_files import write_config as write_config_file

logger = logging.getLogger(__name__)

RUN_KIND = "run"
RUN_WHAT = "run folder"
NO_EPOCH_TO_RESUME = "no finished epoch to resume; start it again with --overwrite"
# A run trained with --refit holds its refit (clf/train/refit.py), an ordinary run folder of its own (own marker):
# --overwrite of the run clears the refit too, by the refit's own marker.
NESTED_RUNS = (REFIT_DIR,)


def check_run_name(name: str) -> None:
    """A run name is one folder name: no path separators, no '.' or '..'."""
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ClfError(f"--name {name!r}: a run name is a plain folder name (no '/', '..'); "
                       "use --out for the parent folder")


def default_run_name(cfg: TrainConfig) -> str:
    """arch-size, numbered when taken: resnet18-128, resnet18-128-2, ..."""
    base = f"{cfg.arch}-{cfg.img_size}"
    out, name, n = Path(cfg.out), base, 1
    while (out / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def prepare_new_run_dir(run_dir: Path, overwrite: bool) -> bool:
    """Create and mark `run_dir` for a new run; returns True when an old run there waits to be replaced.

    Raises:
        ClfError: the folder is taken and --overwrite was not given (with the advice that fits what is there),
            or --overwrite was given for a folder that is not clf's run folder or holds files clf did not write.
    """
    if not run_dir.exists() or (run_dir.is_dir() and not any(run_dir.iterdir())):
        try:
            mark_folder(run_dir, RUN_KIND)
        except OSError as exc:  # --out under a file, a read-only folder
            raise storage_error(run_dir, exc) from None
        record_files(run_dir, RUN_FILES)
        return False
    if is_fold_group(run_dir):
        raise ClfError(f"{run_dir}: is a fold group (clf train --folds); continue it with --resume {run_dir}, "
                       "replace it with --folds K --overwrite, or use another --name")
    if not overwrite:
        if has_checkpoint(run_dir):
            raise ClfError(f"{run_dir}: run folder already exists; use --resume {run_dir} to continue it, "
                           "--overwrite to start over, or another --name")
        if read_marker(run_dir) is not None or (run_dir / CONFIG_FILE).exists():
            raise ClfError(f"{run_dir}: run folder already exists; {NO_EPOCH_TO_RESUME}, or use another --name")
        raise ClfError(f"{run_dir}: exists and is not a clf run folder; choose another --name or --out")
    check_clearable(run_dir, RUN_KIND, RUN_WHAT, nested=NESTED_RUNS)
    return True


def replace_old_run(run_dir: Path) -> None:
    """Remove the old run's files (clf's own only, checked again) before the new run's first checkpoint."""
    clear_owned(run_dir, RUN_KIND, RUN_WHAT, nested=NESTED_RUNS)
    record_files(run_dir, RUN_FILES)
    logger.info("%s: the old run's files were removed (--overwrite)", run_dir)


def open_existing_run_dir(run_dir: Path) -> None:
    """A resumed run folder: clf's stale temp files go; a marked folder lists the run files (a v0.1 folder
    without a marker is resumed as it is: nothing there is ever deleted)."""
    for stale in clean_stale_temps(run_dir):
        logger.info("%s: removed a temp file left by an interrupted write", stale)
    record_files(run_dir, RUN_FILES)


def write_config(run_dir: Path, cfg: TrainConfig, classes: Sequence[str], images: int, pre: Preprocess,
                 model_kwargs: dict[str, Any], params: int, augment: Pipeline,
                 pseudo_labels: dict[str, Any] | None = None, distillation: dict[str, Any] | None = None) -> None:
    """config.json: the resolved training config plus what it produced (augmentation, classes, model, preprocessing;
    the pseudo-labelled images added, per class: clf.train.pseudo_rows; a distilled run's teacher: file, sha256,
    members, views, temperature, alpha, the unlabelled folder and its image count: clf.train.distillation)."""
    resolved = {
        "train": cfg.to_dict(),
        "augment": augment.to_dict(),
        "arch": cfg.arch,
        "model_kwargs": model_kwargs,
        "classes": list(classes),
        "preprocess": pre.to_dict(),
        "params": params,
        "images": images,
        "clf_version": __version__,
    }
    if pseudo_labels is not None:
        resolved["pseudo_labels"] = pseudo_labels
    if distillation is not None:
        resolved["distillation"] = distillation
    write_config_file(run_dir, resolved)
