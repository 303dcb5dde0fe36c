"""Knowledge distillation on the training side: the loss, the teacher's cached predictions and the dataset whose
epoch e yields view e mod K of each image (the image the teacher predicted).

    loss = T^2 * KL(teacher_T || student_T)  +  alpha * hard(student logits, label)   (labelled rows only)

teacher_T is the teacher's probability row softened by the temperature T (softmax(log p / T)), student_T
softmax(z / T); the KL term is the batch mean over every row (labelled and unlabelled), the hard term (the run's own
loss on class labels: cross-entropy with its --label-smoothing and class weights, or focal) the mean over the batch's
labelled rows (0 when it has none). Hinton et al. (2015) scale the soft term by T^2 so its gradients keep their size
as T changes.

The teacher's predictions are computed once, before the first epoch, by whoever can run the teacher (clf/distill/,
through serve's Predictor: train never imports serve): `Teacher.soft_targets`. Rank 0 asks for them and writes
TEACHER_FILE in the run folder; every rank (and every resumed sitting) loads that file. A resumed run never asks
the teacher again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from clf.config import DEFAULT_KD_VIEWS, TrainConfig
from clf.data.augment import Pipeline
from clf.data.datasets import LabelledSet
from clf.data.views import augmented_view
from clf.errors import DataError
from clf.data.preprocess import load_resized
from clf.data.pseudo_labels import check_not_data_paths
from clf.train import runtime as rt
from clf.train.build import Split, preprocess_for
from clf.train.kd_data import (TEACHER_FILE, UNLABELLED, TeacherTargets, ViewMaker, image_keys,
                                read_teacher_targets, write_teacher_targets)
from clf.train.losses import Criterion, LossFn
from clf.train.pseudo_rows import joined_sets

logger = logging.getLogger(__name__)

PROB_FLOOR = 1e-12  # log(0) of a teacher's probability: the tempered target is then (numerically) 0 too

def kd_loss(logits: torch.Tensor, teacher_probs: torch.Tensor, labels: torch.Tensor, temperature: float,
            alpha: float, hard: LossFn) -> torch.Tensor:
    """T^2 * mean KL(teacher_T || student_T) + alpha * hard(logits, labels) over the labelled rows, in fp32.

    Args:
        logits: the student's [B, C].
        teacher_probs: the teacher's probabilities [B, C] (rows summing to 1).
        labels: [B] class indices, UNLABELLED for a row without a label.
        hard: the loss on class labels (the run's criterion.hard).
    """
    logits = logits.float()
    teacher = F.log_softmax(torch.log(teacher_probs.float().clamp(min=PROB_FLOOR)) / temperature, dim=-1)
    student = F.log_softmax(logits / temperature, dim=-1)
    kl = F.kl_div(student, teacher, reduction="batchmean", log_target=True)
    loss = kl * temperature**2
    labelled = labels >= 0
    if alpha > 0 and bool(labelled.any()):
        loss = loss + alpha * hard(logits[labelled], labels[labelled])
    return loss


def kd_target_loss(temperature: float, alpha: float, hard: LossFn) -> LossFn:
    """The loss on KD targets [B, C + 1]: the teacher's probabilities, then the label (UNLABELLED: none)."""
    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return kd_loss(logits, target[:, :-1], target[:, -1].long(), temperature, alpha, hard)

    return loss


def distill_criterion(base: Criterion, cfg: TrainConfig) -> Criterion:
    """`base` (the run's criterion: validation's loss on class labels stays it) whose loss on 2-D targets is the
    KD loss."""
    return Criterion(base.task, base.hard, kd_target_loss(cfg.kd_temperature, cfg.kd_alpha, base.hard))


def resolve_views(cfg: TrainConfig, augment: Pipeline) -> int:
    """--kd-views as given; unset, DEFAULT_KD_VIEWS with augmentation on and 1 without (more views of an
    un-augmented image would be the same image)."""
    if cfg.kd_views is not None:
        return cfg.kd_views
    return DEFAULT_KD_VIEWS if augment else 1


class Teacher(Protocol):
    """What the distillation asks of a teacher (clf/distill/ runs it through serve's Predictor)."""

    def soft_targets(self, paths: Sequence[str], keys: Sequence[str], views: int, make_view: ViewMaker,
                     classes: Sequence[str]) -> np.ndarray:
        """float32 [N, K, C]: the teacher's probabilities on view k of each image, columns in `classes` order
        (view 0: the image file as `clf infer` reads it)."""
        ...

    def record(self) -> dict[str, Any]:
        """What config.json records about the teacher (file, sha256, members)."""
        ...

    @property
    def unlabelled(self) -> Sequence[str]:
        """The --unlabelled images (checked apart from DATA), predicted after the training split."""
        ...


def teacher_split(split: Split, targets: TeacherTargets, unlabelled_rows: int) -> Split:
    """`split` training on the teacher's images: the labelled training part, then the unlabelled images (labelled
    by the teacher's top class on view 0, for the sampler), with the cached targets attached."""
    extra = LabelledSet(targets.paths[len(targets.paths) - unlabelled_rows:],
                        targets.probs[len(targets.paths) - unlabelled_rows:, 0].argmax(axis=1).tolist(),
                        list(split.train.classes))
    train = joined_sets(split.train, extra) if unlabelled_rows else split.train
    return replace(split, train=train, pseudo_images=unlabelled_rows, teacher=targets)


def teacher_targets(cfg: TrainConfig, split: Split, run_dir: Path, augment: Pipeline, teacher: Teacher,
                    runtime: rt.Runtime, resumed: bool) -> tuple[Split, dict[str, Any]]:
    """The split with the teacher's targets, and what config.json records about them: read from the run folder when
    a sitting wrote them (resume), else computed once on rank 0 and written there; every rank reads the file.

    Validation images never get a teacher target: only the training split and the unlabelled images are predicted.

    Raises:
        DataError: an unlabelled image that is a file of DATA, or cached targets of other images than the run's.
    """
    path = run_dir / TEACHER_FILE
    unlabelled = list(teacher.unlabelled)
    check_not_data_paths(unlabelled, list(split.train.paths) + list(split.val.paths), cfg.unlabelled or "")
    paths = list(split.train.paths) + unlabelled
    keys = image_keys(split.train.paths, cfg.data) + (image_keys(unlabelled, cfg.unlabelled) if unlabelled else [])

    def compute() -> None:
        if resumed and path.exists():
            return
        views = resolve_views(cfg, augment)

        pre = preprocess_for(cfg)

        def make_view(image: str, key: str, view: int) -> np.ndarray:
            return augmented_view(load_resized(image, pre), augment, cfg.seed, key, view)

        logger.info("teacher: predicting %d images x %d views", len(paths), views)
        probs = teacher.soft_targets(paths, keys, views, make_view, list(split.train.classes))
        labels = np.concatenate([np.asarray(split.train.labels, dtype=np.int64),
                                 np.full(len(unlabelled), UNLABELLED, dtype=np.int64)])
        meta = {**teacher.record(), "views": views, "temperature": cfg.kd_temperature, "alpha": cfg.kd_alpha,
                "unlabelled": cfg.unlabelled, "unlabelled_images": len(unlabelled),
                "labelled_images": len(split.train.paths)}
        write_teacher_targets(run_dir, TeacherTargets(paths, keys, probs.astype(np.float32), labels), meta)

    rt.on_main(compute, runtime)
    cached, meta = read_teacher_targets(path)
    if cached.keys != keys:  # the data may move between sittings (paths change), its images may not
        raise DataError(f"{path}: the teacher predicted other images than this run trains on (DATA or --unlabelled "
                        "changed since); give the folders the run started with, or start a new run")
    targets = replace(cached, paths=paths)
    return teacher_split(split, targets, len(unlabelled)), meta
