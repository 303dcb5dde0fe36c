"""The data of a distilled run (clf.train.distillation): the teacher's cached predictions of the training images
(TEACHER_FILE in the run folder) and the dataset whose item in epoch e is view (e - 1) mod K of an image, with the
teacher's probabilities on that very view."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clf.atomic import atomic_output
from clf.config import Preprocess
from clf.data.augment import Pipeline
from clf.data.preprocess import normalize
from clf.data.torch_dataset import ImageDataset
from clf.data.views import augmented_view
from clf.errors import DataError
from clf.ownership import record_files

TEACHER_FILE = "teacher_targets.npz"
UNLABELLED = -1  # the hard-label column of a row the teacher alone labels

# (image path, its key, the view index) -> the view the student trains on: uint8 (H, W, 3) at the student's input
# size (clf.data.views.augmented_view of the resized image, bound to the run's augmentation and seed)
ViewMaker = Callable[[str, str, int], np.ndarray]


@dataclass(frozen=True)
class TeacherTargets:
    """The cached teacher predictions of a run's training images.

    Attributes:
        paths: the images, in training order (the labelled training split, then the unlabelled images).
        keys: each image's key (its path relative to DATA or to --unlabelled: the view seeds' input).
        probs: float32 [N, K, C].
        labels: int64 [N]: the class of a labelled image, UNLABELLED for the others.
    """

    paths: list[str]
    keys: list[str]
    probs: np.ndarray
    labels: np.ndarray

    @property
    def views(self) -> int:
        return int(self.probs.shape[1])

    @property
    def unlabelled(self) -> int:
        return int((self.labels == UNLABELLED).sum())


def image_keys(paths: Sequence[str], root: str | os.PathLike) -> list[str]:
    """Each path relative to `root`, '/'-separated (the view seeds' key; stable when the folder moves)."""
    base = Path(root).resolve()
    return [Path(path).resolve().relative_to(base).as_posix() if Path(path).resolve().is_relative_to(base)
            else Path(path).name for path in paths]


def write_teacher_targets(run_dir: Path, targets: TeacherTargets, meta: dict[str, Any]) -> Path:
    """TEACHER_FILE in the run folder (recorded as clf's, written atomically)."""
    path = run_dir / TEACHER_FILE
    record_files(run_dir, [TEACHER_FILE])
    with atomic_output(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, paths=np.asarray(targets.paths, dtype=str), keys=np.asarray(targets.keys, dtype=str),
                 probs=targets.probs.astype(np.float32), labels=targets.labels.astype(np.int64),
                 meta=np.asarray(json.dumps(meta)))
    return path


def read_teacher_targets(path: Path) -> tuple[TeacherTargets, dict[str, Any]]:
    """The targets and the meta TEACHER_FILE holds.

    Raises:
        DataError: the file cannot be read.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            targets = TeacherTargets([str(p) for p in data["paths"]], [str(k) for k in data["keys"]],
                                     data["probs"].astype(np.float32), data["labels"].astype(np.int64))
            meta = json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: cannot read the cached teacher predictions ({exc}); start the run again") from None
    return targets, meta


class ViewDataset(ImageDataset):
    """Training images whose item in epoch e is view (e - 1) mod K (epochs count from 1: the first trains on the
    images themselves) with its target [C + 1]: the teacher's probabilities on that view, then the label
    (UNLABELLED: none). Set the epoch before iterating (the loader's workers start each epoch: they see it)."""

    def __init__(self, targets: TeacherTargets, pre: Preprocess, augment: Pipeline, seed: int,
                 cache: bool = False) -> None:
        super().__init__(targets.paths, np.maximum(targets.labels, 0).tolist(), pre, train=False, cache=cache)
        self.teacher = targets
        self.view_augment, self.seed, self.view = augment, seed, 0
        labels = torch.from_numpy(targets.labels.astype(np.float32))[:, None, None].expand(-1, targets.views, 1)
        self.kd_targets = torch.cat([torch.from_numpy(targets.probs), labels], dim=-1).contiguous()  # [N, K, C + 1]

    def set_epoch(self, epoch: int) -> None:
        self.view = (epoch - 1) % self.teacher.views

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = augmented_view(self._resized(index), self.view_augment, self.seed, self.teacher.keys[index],
                               self.view)
        return torch.from_numpy(normalize(image, self.pre)), self.kd_targets[index, self.view]
