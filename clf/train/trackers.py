"""The Tracker interface of experiment tracking (clf/train/tracking.py), its no-op base and the two wrappers: Guarded
(a failure is one warning, then the tracker is left out) and Trackers (several as one)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clf.errors import one_line

logger = logging.getLogger(__name__)


class Tracker:
    """Where a run's record goes; this base logs nothing (no tracking asked for, or a rank other than 0)."""

    name = "no tracking"

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_epoch(self, row: dict[str, Any]) -> None: ...

    def log_images(self, tag: str, images: np.ndarray) -> None:
        """`images`: uint8 (N, H, W, 3) RGB."""

    def log_artifacts(self, paths: Sequence[Path]) -> None: ...

    def log_summary(self, metrics: dict[str, float]) -> None:
        """Numbers of the whole run (a fold group's CV score), not of an epoch."""

    def finish(self, status: str) -> None: ...


class Guarded(Tracker):
    """A tracker whose failures are warnings: the first one is logged once and the tracker is left out after it."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker: Tracker | None = tracker
        self.name = tracker.name

    def _call(self, method: str, *args: Any) -> None:
        if self.tracker is None:
            return
        try:
            getattr(self.tracker, method)(*args)
        except Exception as exc:  # noqa: BLE001 -- any failure of a tracker: training goes on without it
            logger.warning("%s: %s failed (%s); training goes on without %s", self.name, method, one_line(exc),
                           self.name)
            self.tracker = None

    def log_params(self, params: dict[str, Any]) -> None:
        self._call("log_params", params)

    def log_epoch(self, row: dict[str, Any]) -> None:
        self._call("log_epoch", row)

    def log_images(self, tag: str, images: np.ndarray) -> None:
        self._call("log_images", tag, images)

    def log_artifacts(self, paths: Sequence[Path]) -> None:
        self._call("log_artifacts", paths)

    def log_summary(self, metrics: dict[str, float]) -> None:
        self._call("log_summary", metrics)

    def finish(self, status: str) -> None:
        self._call("finish", status)
        self.tracker = None


class Trackers(Tracker):
    """Several trackers as one (MLflow and TensorBoard together)."""

    def __init__(self, trackers: Sequence[Tracker]) -> None:
        self.trackers = list(trackers)
        self.name = ", ".join(t.name for t in trackers) or Tracker.name

    def log_params(self, params: dict[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.log_params(params)

    def log_epoch(self, row: dict[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.log_epoch(row)

    def log_images(self, tag: str, images: np.ndarray) -> None:
        for tracker in self.trackers:
            tracker.log_images(tag, images)

    def log_artifacts(self, paths: Sequence[Path]) -> None:
        for tracker in self.trackers:
            tracker.log_artifacts(paths)

    def log_summary(self, metrics: dict[str, float]) -> None:
        for tracker in self.trackers:
            tracker.log_summary(metrics)

    def finish(self, status: str) -> None:
        for tracker in self.trackers:
            tracker.finish(status)


def opened(name: str, open_tracker: Any) -> Tracker:
    """`open_tracker()` guarded: a tracker that cannot even start (server down, folder unwritable) is a warning."""
    try:
        return Guarded(open_tracker())
    except Exception as exc:  # noqa: BLE001 -- see Guarded
        logger.warning("%s: cannot start (%s); training goes on without %s", name, one_line(exc), name)
        return Tracker()
