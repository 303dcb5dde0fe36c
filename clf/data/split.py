"""Deterministic stratified train/validation split and folds, by item or keeping groups whole."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from clf.data.duplicates import split_groups
from clf.data.multilabel_split import iterative_folds, iterative_split

if TYPE_CHECKING:
    from clf.data.datasets import LabelledSet


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


# ---------------------------------------------------------------- groups (--group-col, --dedup)
#
# A group (a patient, a source picture, a set of near-duplicates) never spans training and validation. Groups are
# dealt whole: in a seeded random order, each goes to the side (or fold) where it brings the per-class counts
# closest to their targets (the side's share of each class, errors weighted by 1/class size so that small classes
# count as much as large ones). Every group a singleton is the item case: those calls use the item functions above,
# so a run whose groups are all distinct gets exactly the split it got before groups existed.


def group_ids(groups: Sequence[object] | np.ndarray) -> np.ndarray:
    """Dense int64 ids 0..G-1 of the items' groups, numbered in order of first appearance."""
    _, first, inverse = np.unique(np.asarray(groups, dtype=object).astype(str), return_index=True,
                                  return_inverse=True)
    order = np.argsort(np.argsort(first, kind="stable"), kind="stable")  # rank of each group's first item
    return order[inverse.reshape(-1)].astype(np.int64)


def stratified_group_split(
    labels: Sequence[int] | np.ndarray, groups: Sequence[object] | np.ndarray | None, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """`stratified_split` that keeps every group on one side: no group has items in both training and validation.

    Each class's validation share is as close to ``val_fraction`` as its groups allow; a class whose items would all
    end in validation gets its smallest group there moved back to training (no class vanishes from training).

    Args:
        groups: the group of each item (any values, compared as text); None or all distinct: `stratified_split`.

    Returns:
        (train_idx, val_idx): sorted int64 arrays that partition ``range(len(labels))``.
    """
    if groups is None or _all_singletons(groups):
        return stratified_split(labels, val_fraction, seed)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be >= 0 and < 1, got {val_fraction}")
    labels_arr, ids = _codes(labels), group_ids(groups)
    if val_fraction == 0:
        return np.arange(len(labels_arr), dtype=np.int64), np.zeros(0, dtype=np.int64)
    counts = _group_class_counts(labels_arr, ids)
    side = _deal_groups(counts, np.array([1.0 - val_fraction, val_fraction]), np.random.default_rng(seed))
    side = _keep_every_class_in_training(counts, side)
    in_val = side[ids] == 1
    return np.flatnonzero(~in_val).astype(np.int64), np.flatnonzero(in_val).astype(np.int64)


def stratified_group_folds(
    labels: Sequence[int] | np.ndarray, groups: Sequence[object] | np.ndarray | None, folds: int, seed: int
) -> np.ndarray:
    """`stratified_folds` that keeps every group in one fold (stratified group k-fold).

    Args:
        groups: the group of each item (any values, compared as text); None or all distinct: `stratified_folds`.

    Returns:
        int64 array: the validation fold (0..K-1) of each item; the items of a group share one fold.
    """
    if groups is None or _all_singletons(groups):
        return stratified_folds(labels, folds, seed)
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    labels_arr, ids = _codes(labels), group_ids(groups)
    counts = _group_class_counts(labels_arr, ids)
    fold_of_group = _deal_groups(counts, np.full(folds, 1.0 / folds), np.random.default_rng(seed))
    return fold_of_group[ids].astype(np.int64)


def _all_singletons(groups: Sequence[object] | np.ndarray) -> bool:
    ids = group_ids(groups)
    return len(ids) == 0 or int(ids.max()) + 1 == len(ids)


def _codes(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    """Labels as class indices 0..C-1 in sorted class order (the item functions' order)."""
    return np.unique(np.asarray(labels), return_inverse=True)[1].reshape(-1)


def _group_class_counts(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """[G, C] item counts of each group per class."""
    counts = np.zeros((int(ids.max()) + 1 if len(ids) else 0, int(labels.max()) + 1 if len(labels) else 0),
                      dtype=np.int64)
    np.add.at(counts, (ids, labels), 1)
    return counts


def _deal_groups(counts: np.ndarray, shares: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The bin (side or fold) of each group: groups in a seeded random order, each into the bin whose squared,
    class-size-weighted distance to its targets grows least; ties go to the bin with fewer items, then the lower one.

    Adding group counts v to bin k changes that bin's cost sum_c (F_kc + v_c - t_kc)^2 / N_c by
    sum_c (2 (F_kc - t_kc) v_c + v_c^2) / N_c, so each step is one small matrix product.
    """
    totals = np.maximum(counts.sum(axis=0), 1).astype(np.float64)
    targets = shares[:, None] * totals[None, :]  # [K, C]
    filled = np.zeros_like(targets)
    items = np.zeros(len(shares))
    bins = np.empty(len(counts), dtype=np.int64)
    for group in rng.permutation(len(counts)):
        v = counts[group].astype(np.float64)
        growth = ((2.0 * (filled - targets) * v + v * v) / totals).sum(axis=1)
        best = np.flatnonzero(np.isclose(growth, growth.min(), rtol=0.0, atol=1e-9))
        k = int(best[np.argmin(items[best])])
        bins[group] = k
        filled[k] += v
        items[k] += v.sum()
    return bins


def _keep_every_class_in_training(counts: np.ndarray, side: np.ndarray) -> np.ndarray:
    """A class with items but none in training gets its smallest validation group back (as `_val_count` keeps one)."""
    side = side.copy()
    for cls in range(counts.shape[1]):
        members = np.flatnonzero(counts[:, cls] > 0)
        if len(members) and not np.any(side[members] == 0):
            smallest = members[np.argmin(counts[members].sum(axis=1))]
            side[smallest] = 0
    return side


# ---------------------------------------------------------------- the split `clf train` makes (and `clf check` shows)


def labelled_split(labelled: LabelledSet, val_fraction: float, seed: int,
                   dedup: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The training and validation indices of `labelled`: its groups (--group-col) joined, with `dedup`, by
    near-duplicate signatures, kept whole; without either, `stratified_split`. A multi-label set is split by
    iterative stratification of its targets (clf.data.multilabel_split)."""
    if labelled.multilabel:
        return iterative_split(labelled.targets, val_fraction, seed, _groups(labelled, dedup))
    return stratified_group_split(labelled.labels, _groups(labelled, dedup), val_fraction, seed)


def labelled_folds(labelled: LabelledSet, folds: int, seed: int, dedup: bool = False) -> np.ndarray:
    """The validation fold of each item of `labelled`, groups kept whole as in `labelled_split` (multi-label:
    iterative stratification)."""
    if labelled.multilabel:
        return iterative_folds(labelled.targets, folds, seed, _groups(labelled, dedup))
    return stratified_group_folds(labelled.labels, _groups(labelled, dedup), folds, seed)


def _groups(labelled: LabelledSet, dedup: bool) -> np.ndarray | None:
    if dedup and labelled.signatures is None:
        raise ValueError("dedup needs the images' signatures (clf.data.datasets.verify_and_sign)")
    return split_groups(labelled.groups, labelled.signatures if dedup else None)
