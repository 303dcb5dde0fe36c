"""The fold-group record: `clf train --folds K` writes K ordinary runs into one group folder.

    runs/NAME/group.json      this record (kind, K, fold seed, members, finished members, CV score)
    runs/NAME/oof.csv         out-of-fold predictions: id, label, fold, then one probability column per class
                              (multi-label: the label column holds the image's classes space-separated, the
                              columns their sigmoid scores; group.json then holds the thresholds tuned on them)
    runs/NAME/fold-0 .. fold-(K-1)   ordinary run folders (config.json, split.json, best.pt, last.pt, ...)

It lives in `data` because both `train` (which writes it) and `export` (which reads a group as an ensemble) use it,
and neither may import the other. Torch-free.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clf.atomic import atomic_write_text
from clf.errors import DataError
from clf.run_files import GROUP_FILE

GROUP_KIND = "clf-fold-group"
GROUP_VERSION = 1
OOF_FIXED_COLUMNS = ("id", "label", "fold")  # then one probability column per class, in class order


def member_name(fold: int) -> str:
    """The run folder of fold k inside its group."""
    return f"fold-{fold}"


@dataclass
class FoldGroup:
    """What group.json holds. `cv` is filled once every fold has finished (see `cv_score`)."""

    folds: int
    fold_seed: int
    members: list[str]
    done: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    arch: str = ""
    cv: dict[str, Any] | None = None  # numbers, and with another --metric its name (see cv_score)
    config: dict[str, Any] | None = None  # the group's resolved training settings (each fold's, less its fold)
    thresholds: list[float] | None = None  # multi-label: per-class thresholds tuned on the out-of-fold scores

    @property
    def finished(self) -> bool:
        return set(self.done) >= set(self.members)

    def to_json(self) -> dict[str, Any]:
        return {"kind": GROUP_KIND, "version": GROUP_VERSION, **asdict(self)}


def is_fold_group(folder: str | Path) -> bool:
    """True when `folder` holds a group record (the record's contents are checked by `read_group`)."""
    return (Path(folder) / GROUP_FILE).is_file()


def read_group(folder: str | Path) -> FoldGroup:
    """The group record of `folder`.

    Raises:
        DataError: no record, or one that is not valid JSON of this kind (one line naming the file).
    """
    path = Path(folder) / GROUP_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{folder}: not a fold group (no {GROUP_FILE}); train one with `clf train --folds K`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable fold-group record ({type(exc).__name__}); "
                        "retrain with --overwrite") from None
    if not isinstance(raw, dict) or raw.get("kind") != GROUP_KIND:
        raise DataError(f"{path}: not a clf fold-group record; retrain with `clf train --folds K --overwrite`")
    try:
        group = FoldGroup(
            folds=int(raw["folds"]), fold_seed=int(raw["fold_seed"]), members=[str(m) for m in _list(raw, "members")],
            done=[str(m) for m in _list(raw, "done")], classes=[str(c) for c in raw.get("classes", [])],
            arch=str(raw.get("arch", "")), cv=_optional_dict(raw, "cv"), config=_optional_dict(raw, "config"),
            thresholds=_optional_floats(raw, "thresholds"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: damaged fold-group record (field {exc}); retrain with --overwrite") from None
    _check_members(group, path)
    return group


def _list(raw: dict[str, Any], key: str) -> list[Any]:
    value = raw[key] if key == "members" else raw.get(key, [])
    if not isinstance(value, list):
        raise TypeError(f"{key!r} is {type(value).__name__}, not a list")
    return value


def _optional_dict(raw: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, dict):
        raise TypeError(f"{key!r} is {type(value).__name__}, not a mapping")
    return value


def _optional_floats(raw: dict[str, Any], key: str) -> list[float] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise TypeError(f"{key!r} is not a list of numbers")
    return [float(v) for v in value]


def _check_members(group: FoldGroup, path: Path) -> None:
    """Members are plain sub-folder names: a record is data, never a list of paths to follow."""
    for name in group.members:
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise DataError(f"{path}: member {name!r} is not a folder name inside the group; retrain with --overwrite")
    if len(group.members) != group.folds or len(set(group.members)) != group.folds:
        raise DataError(f"{path}: lists {len(group.members)} member(s) for {group.folds} folds; "
                        "retrain with --overwrite")


def write_group(folder: str | Path, group: FoldGroup) -> Path:
    """Write group.json atomically; returns its path."""
    path = Path(folder) / GROUP_FILE
    atomic_write_text(path, json.dumps(group.to_json(), indent=2) + "\n")
    return path


def member_folders(folder: str | Path, group: FoldGroup) -> list[Path]:
    """The member run folders, in fold order."""
    return [Path(folder) / name for name in group.members]


@dataclass
class OutOfFold:
    """Out-of-fold predictions: for each training image, the probabilities of the fold model that did not train
    on it."""

    ids: list[str]
    labels: list[str]
    folds: np.ndarray  # int64 [N]
    classes: list[str]
    probs: np.ndarray  # float64 [N, C]

    def label_indices(self) -> np.ndarray:
        index = {name: i for i, name in enumerate(self.classes)}
        return np.array([index[label] for label in self.labels], dtype=np.int64)

    def targets(self) -> np.ndarray:
        """Multi-hot uint8 [N, C] of the labels: a class name, or (multi-label) class names space-separated."""
        index = {name: i for i, name in enumerate(self.classes)}
        targets = np.zeros((len(self.labels), len(self.classes)), dtype=np.uint8)
        for row, label in enumerate(self.labels):
            for name in [label] if label in index else label.split():
                targets[row, index[name]] = 1
        return targets


def is_label(label: str, classes: list[str]) -> bool:
    """A class name, or (multi-label) class names separated by spaces (none: an image without a class)."""
    return label in classes or all(tag in classes for tag in label.split())


def write_oof(path: str | Path, oof: OutOfFold) -> None:
    """oof.csv: id, label, fold, then one column per class (header: the class names), atomically."""
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*OOF_FIXED_COLUMNS, *oof.classes])
    for i, (image_id, label) in enumerate(zip(oof.ids, oof.labels)):
        writer.writerow([image_id, label, int(oof.folds[i]), *(f"{p:.6g}" for p in oof.probs[i])])
    atomic_write_text(path, buffer.getvalue())


def read_oof(path: str | Path) -> OutOfFold:
    """Read an oof.csv written by `write_oof`. Class columns are taken by position (a class may be named "id").

    Raises:
        DataError: missing file, wrong header, a label not among the classes, or a probability that is not a number.
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the out-of-fold predictions ({type(exc).__name__})") from None
    if not rows or tuple(rows[0][:3]) != OOF_FIXED_COLUMNS or len(rows[0]) < 5:
        raise DataError(f"{path}: not an out-of-fold file (header must start with id,label,fold and list the classes)")
    classes = rows[0][3:]
    ids, labels, folds, probs = [], [], [], []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(rows[0]) or not is_label(row[1], classes):
            raise DataError(f"{path}: line {line} has {len(row)} fields or an unknown label; rewrite it by retraining")
        try:
            values = [float(v) for v in row[3:]]
            fold = int(row[2])
        except ValueError:
            raise DataError(f"{path}: line {line} has a value that is not a number") from None
        if not all(math.isfinite(v) for v in values):
            raise DataError(f"{path}: line {line} has a probability that is not finite")
        ids.append(row[0])
        labels.append(row[1])
        folds.append(fold)
        probs.append(values)
    return OutOfFold(ids, labels, np.array(folds, dtype=np.int64), classes,
                     np.array(probs, dtype=np.float64).reshape(len(ids), len(classes)))
