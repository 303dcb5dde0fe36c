"""A tiny multi-label training set for the training tests, built directly as a LabelledSet (multi-hot targets):
each 32 px image shows a bright patch in the colour channel of each class it holds (red, green, blue)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from clf.data.datasets import LabelledSet

CLASSES = ["blue", "green", "red"]
CHANNEL = {"blue": 0, "green": 1, "red": 2}  # OpenCV writes BGR


def make_multilabel_set(root: Path, n: int = 48, seed: int = 0) -> LabelledSet:
    """`n` images under `root`, every class on about half of them (some images hold none)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    targets = (rng.random((n, len(CLASSES))) < 0.5).astype(np.uint8)
    targets[: len(CLASSES)] = np.eye(len(CLASSES), dtype=np.uint8)  # every class held at least once
    paths = []
    for index, row in enumerate(targets):
        image = rng.normal(50, 15, (32, 32, 3))
        for c in np.flatnonzero(row):
            image[8:24, 8:24, CHANNEL[CLASSES[c]]] += 150
        path = root / f"img_{index:03d}.png"
        cv2.imwrite(str(path), np.clip(image, 0, 255).astype(np.uint8))
        paths.append(str(path))
    counts = targets.sum(axis=0)
    rarest = [int(np.flatnonzero(row)[np.argmin(counts[row > 0])]) if row.any() else -1 for row in targets]
    return LabelledSet(paths, rarest, list(CLASSES), targets=targets)


def train_on(labelled: LabelledSet, monkeypatch: pytest.MonkeyPatch) -> None:
    """Training (single runs, fold groups, refits) reads `labelled` instead of DATA (the multi-label CSV reader is
    the data part's)."""
    import clf.train.fit as fit_module
    import clf.train.folds as folds_module
    import clf.train.refit as refit_module

    for module in (fit_module, folds_module, refit_module):
        monkeypatch.setattr(module, "load_training_set", lambda cfg: labelled)
