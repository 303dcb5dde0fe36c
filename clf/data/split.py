"""Deterministic stratified train/validation split."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def stratified_split(
    labels: Sequence[int] | np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices so that every class keeps its share in validation.

    Per class of ``n`` items, ``round(n * val_fraction)`` go to validation, at least 1 when
    ``n >= 2`` and ``val_fraction > 0``, and at most ``n - 1`` so that no class vanishes from
    training. Uses its own RNG: the same labels and seed give the same split whatever the
    global numpy/torch state.

    Args:
        labels: class label of each item (ints or any sortable values).
        val_fraction: share of each class in validation, ``0 <= val_fraction < 1``.
        seed: seed of the split.

    Returns:
        (train_idx, val_idx): sorted int64 arrays that partition ``range(len(labels))``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be >= 0 and < 1, got {val_fraction}")
    labels_arr = np.asarray(labels)
    rng = np.random.default_rng(seed)
    val_parts: list[np.ndarray] = []
    for cls in np.unique(labels_arr):  # sorted: the draw order does not depend on item order
        members = np.flatnonzero(labels_arr == cls)
        n_val = _val_count(len(members), val_fraction)
        if n_val:
            val_parts.append(rng.permutation(members)[:n_val])
    val_mask = np.zeros(len(labels_arr), dtype=bool)
    if val_parts:
        val_mask[np.concatenate(val_parts)] = True
    return np.flatnonzero(~val_mask).astype(np.int64), np.flatnonzero(val_mask).astype(np.int64)


def _val_count(n: int, val_fraction: float) -> int:
    if val_fraction == 0 or n < 2:
        return 0
    return min(max(1, round(n * val_fraction)), n - 1)


def stratified_folds(labels: Sequence[int] | np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Assign every item to one of ``folds`` validation folds, each class spread evenly over them.

    Per class, the items are shuffled with the fold seed and dealt round-robin, starting at a fold that rotates from
    class to class, so that fold sizes differ by at most one overall and every class's count differs by at most one
    between folds. Uses its own RNG: the same labels and seed give the same folds whatever the global state.

    Args:
        labels: class label of each item (ints or any sortable values).
        folds: number of folds K, >= 2.
        seed: seed of the assignment.

    Returns:
        int64 array: the validation fold (0..K-1) of each item.
    """
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    labels_arr = np.asarray(labels)
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(labels_arr), dtype=np.int64)
    start = 0
    for cls in np.unique(labels_arr):  # sorted: the draw order does not depend on item order
        members = rng.permutation(np.flatnonzero(labels_arr == cls))
        assignment[members] = (start + np.arange(len(members))) % folds
        start = (start + len(members)) % folds  # the next class fills the folds this one left short
    return assignment
