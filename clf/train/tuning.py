"""A multi-label run's per-class thresholds, tuned after training on its best checkpoint's validation predictions.

    best.pt         gains "thresholds": one probability per class (what export writes into the ONNX metadata)
    config.json     gains "thresholds" beside the resolved settings (the run's summary)

The thresholds maximise each class's F1 on the validation images (clf.thresholds.tune_thresholds). Without
validation images (--val-split 0) every class keeps 0.5, said in a log line; a refit (trained on every image)
takes the thresholds its validated run tuned. A single-label run has no thresholds: nothing is written.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from clf.config import TrainConfig
from clf.data.datasets import LabelledSet
from clf.errors import ClfError
from clf.metrics_multilabel import f1_macro
from clf.models.checkpoint import save_checkpoint
from clf.models.checkpoint_load import load_checkpoint
from clf.run_files import BEST_CKPT, read_config
from clf.run_files import write_config as write_config_file
from clf.tasks import DEFAULT_THRESHOLD, get_task
from clf.thresholds import tune_thresholds
from clf.train.fold_scoring import predict_probabilities

logger = logging.getLogger(__name__)

THRESHOLDS_KEY = "thresholds"  # in best.pt, config.json and group.json


def tune_run_thresholds(run_dir: Path, val: LabelledSet, cfg: TrainConfig, device: torch.device
                        ) -> list[float] | None:
    """Tune a multi-label run's thresholds and record them in its best.pt and config.json (rank 0 only).

    Returns:
        The thresholds in class order; None for a single-label run.
    """
    if not get_task(cfg.task).multilabel:
        return None
    ckpt = load_checkpoint(run_dir / BEST_CKPT)
    classes = list(ckpt["classes"])
    if len(val.paths) and val.targets is not None:
        probs = predict_probabilities(ckpt, val.paths, device, batch_size=2 * (cfg.batch_size or 32),
                                      task=get_task(cfg.task))
        thresholds = [float(t) for t in tune_thresholds(val.targets, probs)]
        logger.info("thresholds tuned on %d validation images (epoch %s): macro F1 %.4f at 0.5, %.4f tuned",
                    len(val.paths), ckpt.get("epoch"), f1_macro(val.targets, probs),
                    f1_macro(val.targets, probs, np.asarray(thresholds)))
    else:
        thresholds = inherited_thresholds(run_dir, cfg, len(classes))
    save_checkpoint({**ckpt, THRESHOLDS_KEY: thresholds}, run_dir / BEST_CKPT)
    config = read_config(run_dir)
    write_config_file(run_dir, {**config, THRESHOLDS_KEY: thresholds})
    logger.info("thresholds: %s", ", ".join(f"{name} {t:.3g}" for name, t in zip(classes, thresholds)))
    return thresholds


def inherited_thresholds(run_dir: Path, cfg: TrainConfig, classes: int) -> list[float]:
    """A run without validation images: a refit's validated run's thresholds, else DEFAULT_THRESHOLD each."""
    if cfg.refit_of is not None:
        try:
            recorded = load_checkpoint(run_dir.parent / BEST_CKPT).get(THRESHOLDS_KEY)
        except ClfError:  # an unreadable validated run: the default, said below
            recorded = None
        if isinstance(recorded, list) and len(recorded) == classes:
            logger.info("thresholds: the validated run's (%s), tuned on its validation images", run_dir.parent)
            return [float(t) for t in recorded]
    logger.warning("no validation images to tune the per-class thresholds on: every class keeps %g (train with "
                   "a validation split, or --folds, to tune them)", DEFAULT_THRESHOLD)
    return [DEFAULT_THRESHOLD] * classes
