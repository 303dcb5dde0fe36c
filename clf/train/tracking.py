"""Experiment tracking: a run's config, per-epoch metrics, sample images and files, sent to MLflow and TensorBoard.

A Tracker is five calls: log_params, log_epoch, log_images, log_artifacts, finish. This base class is also the no-op
tracker. The implementations (clf/train/tracking_mlflow.py, clf/train/tracking_tensorboard.py) import their library
lazily: they are the optional extras clf[mlflow] and clf[tensorboard]; without one, its flag is one error line.

Tracking never costs a run: every call goes through `Guarded`, which turns the first failure (a server down, a folder
that cannot be written) into one warning and then leaves that tracker out; training goes on. Only rank 0 tracks.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from clf.config import Preprocess, TrainConfig
from clf.config.tracking import MLFLOW_EXTRA, TENSORBOARD_EXTRA
from clf.data.augment import Pipeline
from clf.errors import ClfError
from clf.run_files import BEST_CKPT, CONFIG_FILE, CURVES_FILE, GROUP_FILE, HISTORY_FILE, OOF_FILE, SPLIT_FILE
from clf.train.trackers import Tracker, Trackers, opened
from clf.train.trainer import TrainReporter

logger = logging.getLogger(__name__)

SAMPLE_IMAGES = 8  # augmented training images shown once, at the start of a run
FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"  # how a tracked run ended (MLflow's run statuses)
RUN_ARTIFACTS = (CURVES_FILE, CONFIG_FILE, SPLIT_FILE, HISTORY_FILE)
GROUP_ARTIFACTS = (GROUP_FILE, OOF_FILE)


def check_tracking_extras(cfg: TrainConfig) -> None:
    """Before any run folder: each tracking flag given has its library installed.

    Raises:
        ClfError: one line naming the extra to install.
    """
    wanted = ((cfg.mlflow, "--mlflow", "mlflow", MLFLOW_EXTRA), (cfg.tensorboard is not None, "--tensorboard",
                                                                 "tensorboard", TENSORBOARD_EXTRA))
    for asked, flag, module, extra in wanted:
        if asked and importlib.util.find_spec(module) is None:
            raise ClfError(f"{flag} needs the {module} package, which is not installed; pip install 'clf[{extra}]' "
                           f"(or leave out {flag})")


class TrackingReporter(TrainReporter):
    """The trainer's progress hooks, plus each finished epoch's history row to the tracker."""

    def __init__(self, inner: TrainReporter, tracker: Tracker) -> None:
        self.inner, self.tracker = inner, tracker

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        self.inner.epoch_start(epoch, epochs, batches)

    def batch(self, index: int, loss: float, images_per_second: float) -> None:
        self.inner.batch(index, loss, images_per_second)

    def epoch_end(self, row: dict[str, Any], is_best: bool) -> None:
        self.tracker.log_epoch(row)
        self.inner.epoch_end(row, is_best)


def open_run_tracker(cfg: TrainConfig, run_dir: Path, resumed: bool, parent: Tracker | None = None) -> Tracker:
    """The trackers `cfg` asks for, for the run in `run_dir` (a fold's: a child of its group's MLflow run)."""
    trackers: list[Tracker] = []
    if cfg.mlflow:
        from clf.train.tracking_mlflow import MlflowTracker, parent_run

        trackers.append(opened("MLflow", lambda: MlflowTracker.for_run(cfg, run_dir, resumed, parent_run(parent))))
    if cfg.tensorboard is not None:
        from clf.train.tracking_tensorboard import TensorBoardTracker, log_dir

        directory = log_dir(cfg, run_dir)
        trackers.append(opened("TensorBoard", lambda: TensorBoardTracker(directory)))
    tracker = Trackers(trackers) if trackers else Tracker()
    if not resumed:
        tracker.log_params(cfg.to_dict())
    return tracker


@contextmanager
def tracked_run(cfg: TrainConfig, run_dir: Path, resumed: bool, enabled: bool,
                parent: Tracker | None = None) -> Iterator[Tracker]:
    """The run's tracker for the epochs inside; on the way out its files are logged and it is finished (FINISHED,
    KILLED by Ctrl-C/SIGTERM, FAILED by an error). `enabled` is False on ranks other than 0: nothing is tracked."""
    tracker = open_run_tracker(cfg, run_dir, resumed, parent) if enabled else Tracker()
    try:
        yield tracker
    except KeyboardInterrupt:
        _close(tracker, cfg, run_dir, KILLED)
        raise
    except BaseException:
        _close(tracker, cfg, run_dir, FAILED)
        raise
    _close(tracker, cfg, run_dir, FINISHED)


@contextmanager
def tracked_group(cfg: TrainConfig, group_dir: Path, resumed: bool, enabled: bool) -> Iterator[Tracker]:
    """A fold group's MLflow run, the parent of its folds' (pass it to fit as tracking_parent); finished with the
    group's CV score and its group.json and oof.csv. TensorBoard has no parent: each fold writes DIR/GROUP/fold-k."""
    tracker: Tracker = Tracker()
    if enabled and cfg.mlflow:
        from clf.train.tracking_mlflow import MlflowTracker

        tracker = opened("MLflow", lambda: MlflowTracker.for_run(cfg, group_dir, resumed))
        if not resumed:
            tracker.log_params(cfg.to_dict())
    status = FAILED
    try:
        yield tracker
        status = FINISHED
    except KeyboardInterrupt:
        status = KILLED
        raise
    finally:
        tracker.log_artifacts([group_dir / name for name in GROUP_ARTIFACTS if (group_dir / name).is_file()])
        tracker.finish(status)


def _close(tracker: Tracker, cfg: TrainConfig, run_dir: Path, status: str) -> None:
    names = RUN_ARTIFACTS + ((BEST_CKPT,) if cfg.mlflow_checkpoint else ())
    tracker.log_artifacts([run_dir / name for name in names if (run_dir / name).is_file()])
    tracker.finish(status)


def log_samples(tracker: Tracker, cfg: TrainConfig, paths: Sequence[str], pre: Preprocess, augment: Pipeline
                ) -> None:
    """A few augmented training images, once, for TensorBoard (the only tracker that shows them)."""
    if cfg.tensorboard is None or type(tracker) is Tracker:  # not asked for, or nothing tracks here (rank > 0)
        return
    images = sample_images(paths, pre, augment, cfg.seed)
    if images is not None:
        tracker.log_images("augmented training images", images)


def sample_images(paths: Sequence[str], pre: Preprocess, augment: Pipeline, seed: int,
                  count: int = SAMPLE_IMAGES) -> np.ndarray | None:
    """Up to `count` training images as the model sees them (resized, augmented): uint8 (N, H, W, 3) RGB, or None when
    none is readable. The draws come from `seed` alone: torch's RNG, and so training, is not touched."""
    from clf.data.preprocess import load_resized
    from clf.errors import DataError

    images = []
    rng = np.random.default_rng(seed)
    for index in rng.permutation(len(paths)):  # spread over the classes (the split lists them class by class)
        try:
            images.append(augment(load_resized(paths[index], pre), int(rng.integers(0, 2**62))))
        except DataError:  # an unreadable image: training skips it too
            continue
        if len(images) == count:
            break
    return np.stack(images) if images else None
