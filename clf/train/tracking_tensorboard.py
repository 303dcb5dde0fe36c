"""TensorBoard tracking (the clf[tensorboard] extra): per-epoch scalars and a few augmented training images.

`--tensorboard DIR` writes each run to DIR/RUN (a fold to DIR/GROUP/fold-k, a refit to DIR/RUN/refit), so
`tensorboard --logdir DIR` shows the runs side by side. The scalars are history.csv's columns, tagged by their names,
one step per epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from clf.config import TrainConfig
from clf.train.history import HISTORY_COLUMNS, METRIC_COLUMNS
from clf.train.trackers import Tracker

SCALARS = tuple(c for c in HISTORY_COLUMNS + METRIC_COLUMNS if c != "epoch")


def log_dir(cfg: TrainConfig, run_dir: Path) -> Path:
    """DIR/RUN, or DIR/PARENT/RUN for a run inside another folder (a fold in its group, a refit in its run)."""
    assert cfg.tensorboard is not None
    nested = cfg.fold is not None or cfg.refit_of is not None
    return Path(cfg.tensorboard) / (Path(run_dir.parent.name) / run_dir.name if nested else run_dir.name)


class TensorBoardTracker(Tracker):
    """One event file folder, written with torch's SummaryWriter (it needs the tensorboard package)."""

    name = "TensorBoard"

    def __init__(self, directory: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        directory.mkdir(parents=True, exist_ok=True)  # an unwritable DIR fails here, at the start
        self.writer = SummaryWriter(log_dir=str(directory))

    def log_epoch(self, row: dict[str, Any]) -> None:
        epoch = int(row["epoch"])
        for tag in SCALARS:
            value = row.get(tag)
            if value is not None:
                self.writer.add_scalar(tag, float(value), epoch)
        self.writer.flush()

    def log_images(self, tag: str, images: np.ndarray) -> None:
        self.writer.add_images(tag, images, 0, dataformats="NHWC")
        self.writer.flush()

    def log_summary(self, metrics: dict[str, float]) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, float(value), 0)
        self.writer.flush()

    def finish(self, status: str) -> None:
        self.writer.close()
