"""The augmented views a distillation teacher predicts once and the student trains on (clf/train/distillation.py).

View v of an image is the run's augmentation pipeline applied with a seed drawn from (run seed, image key, v): the
same numbers in the process that asks the teacher and in every DataLoader worker of every sitting, so the student
trains in epoch e on exactly the image the teacher predicted. View 0 is the image itself (resized, not augmented).
Torch-free: numpy and OpenCV only.
"""

from __future__ import annotations

import hashlib

import numpy as np

from clf.data.augment import Pipeline


def view_seed(seed: int, key: str, view: int) -> int:
    """A per-sample augmentation seed (0 <= s < 2**62) from the run seed, the image's key and the view index."""
    digest = hashlib.sha256(f"{seed}\0{key}\0{view}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**62 - 1)


def augmented_view(image: np.ndarray, augment: Pipeline, seed: int, key: str, view: int) -> np.ndarray:
    """View `view` of a resized uint8 (H, W, 3) image: itself for view 0 (or without augmentation), else the
    pipeline's output for view_seed(seed, key, view)."""
    if view == 0 or not augment:
        return image
    return augment(image, view_seed(seed, key, view))
