"""Scoring a fold group: each image's out-of-fold probabilities from the one fold model that did not train on it
(torch inference with the eval preprocessing), oof.csv, and group.json's `cv` score.

Separate from clf.train.folds (the orchestration: plan, train, score) because this is the torch inference over
finished checkpoints, which needs no training machinery, only the checkpoints and the data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from clf.config import TrainConfig
from clf.data.datasets import LabelledSet
from clf.data.folds import FoldGroup, OutOfFold, write_group, write_oof
from clf.data.torch_dataset import ImageDataset
from clf.models import outputs
from clf.models.checkpoint_load import load_checkpoint, model_from_checkpoint, preprocess_from_checkpoint
from clf.metrics import score as competition_score
from clf.metrics_multilabel import decisions
from clf.metrics_multilabel import log_loss as multilabel_log_loss
from clf.probabilities import log_loss
from clf.run_files import BEST_CKPT, OOF_FILE, split_record
from clf.tasks import SINGLE_LABEL, Task, get_task
from clf.thresholds import tune_thresholds
from clf.train import runtime as rt
from clf.train.build import fold_assignment
from clf.train.fold_group_dir import check_fold_split

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldScore:
    """One member's result, as the CV table shows it."""

    fold: int
    run_dir: Path
    val_acc: float | None
    val_images: int
    trained_now: bool


def score_group(group_dir: Path, group: FoldGroup, cfg: TrainConfig, labelled: LabelledSet, runtime: rt.Runtime,
                 trained_now: list[bool]) -> list[FoldScore]:
    """oof.csv and group.json's `cv` from every fold's best.pt (multi-label: and the thresholds tuned on the
    out-of-fold scores); returns each fold's score."""
    task = get_task(cfg.task)
    oof, val_accs = out_of_fold(group_dir, group, cfg, labelled, runtime.device)
    write_oof(group_dir / OOF_FILE, oof)
    if task.multilabel:
        group.thresholds = [float(t) for t in tune_thresholds(oof.targets(), oof.probs)]
        logger.info("thresholds tuned on the out-of-fold scores: %s",
                    ", ".join(f"{name} {t:.3g}" for name, t in zip(oof.classes, group.thresholds)))
        group.cv = multilabel_cv_score(oof, val_accs, cfg.metric, np.asarray(group.thresholds))
    else:
        group.cv = cv_score(oof, val_accs, metric=cfg.metric)
    write_group(group_dir, group)
    return [FoldScore(k, group_dir / name, val_accs[k], int(np.sum(oof.folds == k)), trained_now[k])
            for k, name in enumerate(group.members)]


def out_of_fold(group_dir: Path, group: FoldGroup, cfg: TrainConfig, labelled: LabelledSet,
                device: torch.device) -> tuple[OutOfFold, list[float | None]]:
    """Each image's class probabilities from the one fold model that did not train on it (eval preprocessing).

    Returns:
        (the out-of-fold predictions in the order of the labelled images, each fold's best val accuracy).
    """
    assert cfg.folds is not None
    task = get_task(cfg.task)
    assignment = fold_assignment(labelled, cfg)
    probs = np.zeros((len(labelled.paths), len(labelled.classes)), dtype=np.float64)
    val_accs: list[float | None] = []
    for fold, name in enumerate(group.members):
        check_fold_split(group_dir / name, fold, cfg, labelled)
        ckpt = load_checkpoint(group_dir / name / BEST_CKPT)
        rows = np.flatnonzero(assignment == fold)
        probs[rows] = predict_probabilities(ckpt, [labelled.paths[i] for i in rows], device,
                                            batch_size=2 * (cfg.batch_size or 32), task=task)
        val_accs.append(None if ckpt.get("best_val_acc") is None else float(ckpt["best_val_acc"]))
    ids = split_record(cfg.data, labelled.paths, [])["val"]  # relative to DATA, posix: as split.json lists them
    if labelled.targets is not None:  # multi-label: each image's classes, space-separated (Kaggle's tags)
        labels = [" ".join(labelled.classes[c] for c in np.flatnonzero(row)) for row in labelled.targets]
    else:
        labels = [labelled.classes[label] for label in labelled.labels]
    return OutOfFold(ids, labels, assignment, list(labelled.classes), probs), val_accs


@torch.no_grad()
def predict_probabilities(ckpt: dict[str, Any], paths: list[str], device: torch.device,
                          batch_size: int = 64, task: Task = SINGLE_LABEL) -> np.ndarray:
    """The task's scores [N, C] (float64; single-label: softmax probabilities) of a checkpoint's model on `paths`,
    eval mode, eval preprocessing."""
    model = model_from_checkpoint(ckpt).to(device)
    pre = preprocess_from_checkpoint(ckpt)
    loader = DataLoader(ImageDataset(paths, [0] * len(paths), pre, train=False), batch_size=batch_size)
    parts = [outputs.scores(task, model(images.to(device)).float()).double().cpu() for images, _ in loader]
    return torch.cat(parts).numpy() if parts else np.zeros((0, len(ckpt["classes"])))


def multilabel_cv_score(oof: OutOfFold, val_accs: list[float | None], metric: str,
                        thresholds: np.ndarray) -> dict[str, Any]:
    """group.json's `cv` of a multi-label group: the folds' best val exact-match accuracy (mean, std), and of the
    out-of-fold scores: the exact-match accuracy and the binary log-loss, the metric at 0.5 (`oof_metric`, as each
    fold's validation measured it) and at the thresholds tuned on these same scores (`oof_metric_tuned`: optimistic,
    the thresholds saw the answers)."""
    accs = np.array([a for a in val_accs if a is not None], dtype=np.float64)
    truth = oof.targets()
    return {
        "mean_val_acc": float(accs.mean()) if len(accs) else float("nan"),
        "std_val_acc": float(accs.std()) if len(accs) else float("nan"),
        "oof_acc": float(np.mean((decisions(oof.probs, thresholds) == (truth > 0)).all(axis=1))),
        "oof_log_loss": multilabel_log_loss(truth, oof.probs),
        "metric": metric,
        "oof_metric": competition_score(metric, truth, oof.probs),
        "oof_metric_tuned": competition_score(metric, truth, oof.probs, thresholds=thresholds),
    }


def cv_score(oof: OutOfFold, val_accs: list[float | None], task: Task = SINGLE_LABEL,
             metric: str = "accuracy") -> dict[str, Any]:
    """group.json's `cv`: mean and (population) std of the folds' best val accuracy, OOF accuracy and log-loss, and
    with another --metric its name and OOF value (`metric`, `oof_metric`)."""
    accs = np.array([a for a in val_accs if a is not None], dtype=np.float64)
    truth = oof.label_indices()
    cv: dict[str, Any] = {
        "mean_val_acc": float(accs.mean()) if len(accs) else float("nan"),
        "std_val_acc": float(accs.std()) if len(accs) else float("nan"),
        "oof_acc": float(np.mean(task.correct(oof.probs, truth))),
        "oof_log_loss": log_loss(oof.probs, truth),
    }
    if metric != "accuracy":
        cv.update(metric=metric, oof_metric=competition_score(metric, truth, oof.probs, oof.classes))
    return cv
