"""The files of a run folder and of a fold group: their names, and the one reader and writer of each record.

    runs/NAME/                 a run folder: `clf train` writes it; export, eval, `clf runs` and preview read it
      .clf-folder.json         clf's marker, written first                      clf.ownership
      config.json              the resolved training config                     write_config / read_config
      split.json               the data root and its val/train image lists      write_split / load_split / read_split
      history.csv, curves.png  one row per epoch and its plot                   clf.train.history
      last.pt, best.pt         the checkpoints                                  clf.models.checkpoint
      refit.json, refit/       a --refit run's record and its own run folder    clf.train.refit
    runs/GROUP/                a fold group (`clf train --folds K`)
      group.json, oof.csv      the group record, the out-of-fold predictions    clf.data.folds
      fold-0 .. fold-(K-1)     ordinary run folders

A ground module (it imports only clf's other ground modules): train, export, data, models and serve all take these
names from here, and no record is parsed twice. Reading never follows a FIFO or a device and never reads an
unbounded file: a run folder is data, and may be someone else's.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clf.atomic import atomic_write_text
from clf.errors import one_line
from clf.ownership import MARKER_NAME
from clf.reading import read_small_regular_file

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
SPLIT_FILE = "split.json"
HISTORY_FILE = "history.csv"
CURVES_FILE = "curves.png"
LAST_CKPT = "last.pt"
BEST_CKPT = "best.pt"
CHECKPOINT_FILES = (LAST_CKPT, BEST_CKPT)
# Every file training writes in a run folder (export adds its model and proof files to the marker itself).
RUN_FILES = (CONFIG_FILE, SPLIT_FILE, HISTORY_FILE, CURVES_FILE, LAST_CKPT, BEST_CKPT)
# A run trained with --refit holds its refit, an ordinary run folder of its own (own marker), and the record of it.
REFIT_DIR = "refit"
REFIT_FILE = "refit.json"
GROUP_FILE = "group.json"
MLFLOW_RUN_FILE = "mlflow.json"  # the MLflow run a run folder or fold group logged to (clf/train/tracking_mlflow.py)
OOF_FILE = "oof.csv"
MARKER_FILE = MARKER_NAME

# split.json: {"format": 1, "root": "<absolute data root>", "val": ["<class>/<file>", ...], "train": [...]}, and for a
# group split {"grouping": {"group_col": "<column>" or null, "dedup": true/false}} (readers of format 1 ignore it)
SPLIT_FORMAT = 1
MAX_RECORD_BYTES = 256 * 2**20  # a list of a few million paths; more is not a file list
NOT_A_RUN_CONFIG = "config.json is not a clf run config"


class RunFileError(ValueError):
    """A run file that can be read but is not what clf writes there; its text says what is wrong (never quoting
    the file's contents)."""


def checkpoint_names(prefer: str = "best") -> tuple[str, str]:
    """The checkpoint file names of a run folder in the order to try them: best.pt first, or last.pt first."""
    return (BEST_CKPT, LAST_CKPT) if prefer == "best" else (LAST_CKPT, BEST_CKPT)


def has_checkpoint(run_dir: Path) -> bool:
    """The run folder holds a finished epoch (last.pt or best.pt)."""
    return any((run_dir / name).is_file() for name in CHECKPOINT_FILES)


def read_small_file(path: Path, limit: int = MAX_RECORD_BYTES) -> str:
    """The UTF-8 text of a regular file of at most `limit` bytes; a FIFO or device is never read from.

    Raises:
        FileNotFoundError: no such file. OSError: unreadable. ValueError: not a regular file, too big, not UTF-8.
    """
    return read_small_regular_file(path, limit, "a file list")


# ---------------------------------------------------------------- config.json


def write_config(run_dir: Path, resolved: dict[str, Any]) -> None:
    """config.json: the resolved training config and what it produced (assembled by clf.train.run_folder)."""
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(resolved, indent=2) + "\n")


def read_config(run_dir: Path) -> dict[str, Any]:
    """A run folder's config.json, a JSON object (its parts are checked by `train_settings` and their readers).

    Raises:
        FileNotFoundError / OSError: missing or unreadable. ValueError: not a small regular UTF-8 JSON file.
        RunFileError: JSON, but not an object.
    """
    config = json.loads(read_small_file(run_dir / CONFIG_FILE))
    if not isinstance(config, dict):
        raise RunFileError(NOT_A_RUN_CONFIG)
    return config


def train_settings(config: dict[str, Any]) -> dict[str, Any]:
    """config.json's "train": the resolved TrainConfig fields (every clf version writes them).

    Raises:
        RunFileError: no "train" object (not a run's config).
    """
    train = config.get("train")
    if not isinstance(train, dict):
        raise RunFileError(NOT_A_RUN_CONFIG)
    return train


# ---------------------------------------------------------------- split.json


def split_record(root: str | os.PathLike, val_paths: Sequence[str], train_paths: Sequence[str],
                 grouping: dict[str, Any] | None = None) -> dict[str, Any]:
    """split.json's content: the data root (absolute) and the validation and training images relative to it; and,
    for a split that kept groups whole, how they were formed ("grouping": --group-col and --dedup)."""
    root = Path(root).resolve()
    record = {
        "format": SPLIT_FORMAT,
        "root": str(root),
        "val": [_relative(p, root) for p in val_paths],
        "train": [_relative(p, root) for p in train_paths],
    }
    if grouping:
        record["grouping"] = grouping
    return record


def split_grouping(settings: Any) -> dict[str, Any] | None:
    """split.json's "grouping" for a run's settings (a TrainConfig): None for the item split of older runs."""
    if getattr(settings, "group_col", None) is None and not getattr(settings, "dedup", False):
        return None
    return {"group_col": settings.group_col, "dedup": bool(settings.dedup)}


def _relative(path: str, root: Path) -> str:
    absolute = Path(path) if Path(path).is_absolute() else root / path
    return Path(os.path.relpath(absolute, root)).as_posix()


def write_split(run_dir: Path, record: dict[str, Any]) -> None:
    """split.json, rewritten only when it changed (a resumed run whose DATA moved)."""
    path = run_dir / SPLIT_FILE
    try:
        if json.loads(path.read_text(encoding="utf-8")) == record:
            return
    except (OSError, ValueError):
        pass
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")


def load_split(path: Path) -> dict[str, Any]:
    """split.json as {"root": str, "val": list, "train": list} (entries unchecked: see clf.export.parity).

    Raises:
        FileNotFoundError / OSError: missing or unreadable. ValueError: not a small regular UTF-8 file.
        RunFileError: not a split record of a format this clf reads.
    """
    problem = _split_problem(read_small_file(path))
    if isinstance(problem, str):
        raise RunFileError(problem)
    return problem


def read_split(path: Path) -> dict[str, Any] | None:
    """`load_split` for the parity images: None when absent (logged at debug), else logged when unusable."""
    try:
        return load_split(path)
    except FileNotFoundError:
        logger.debug("%s: not found (a run of clf 0.1, or a bare checkpoint)", path)
    except RunFileError as exc:
        logger.warning("%s: %s; not used for the parity check", path, exc)
    except (OSError, ValueError) as exc:
        logger.warning("%s: cannot read it (%s); not used for the parity check", path, _reason(exc))
    return None


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or one_line(exc)


def _split_problem(text: str) -> dict[str, Any] | str:
    """The parsed split, or what is wrong with it (never quoting the file's contents)."""
    try:
        data = json.loads(text)
    except ValueError:
        return "not valid JSON"
    if not isinstance(data, dict):
        return "not a JSON object"
    version = data.get("format")
    if isinstance(version, bool) or not isinstance(version, int):
        return "no format number"
    if version > SPLIT_FORMAT:
        return f"format {version} is newer than this clf reads ({SPLIT_FORMAT}); upgrade clf"
    root = data.get("root")
    if not isinstance(root, str) or not os.path.isabs(root):
        return "its root is not an absolute path"
    lists = {key: data.get(key, []) for key in ("val", "train")}
    if not all(isinstance(v, list) for v in lists.values()):
        return "val and train must be lists of paths"
    return {"root": root, **lists}
