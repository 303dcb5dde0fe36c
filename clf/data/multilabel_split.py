"""Iterative stratification of multi-label sets (Sechidis, Tsoumakas, Vlahavas, "On the Stratification of Multi-Label
Data", ECML PKDD 2011): the validation split and the folds of `clf train --task multilabel`.

A random split of multi-hot targets leaves a rare class's few images wherever chance puts them; stratifying on one
stratum per image (as single-label does) cannot keep the other classes in proportion. The iterative algorithm deals
out the images of the rarest class first, each to the part that still needs most of that class (ties: the part that
still needs most images, then a seeded draw), and goes on with the next rarest class over what remains; images with
no class go last, to the parts that still need images.

Units: an image, or a group (--group-col, --dedup near-duplicates) dealt whole, whose label vector is the sum of its
members' (so a group of three images holding class a counts three a's) and whose size is its image count. Seeded by
its own generator: the same targets, groups and seed give the same split whatever the global state.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def iterative_split(targets: np.ndarray, val_fraction: float, seed: int,
                    groups: Sequence[object] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split multi-hot ``targets`` [N, C] so that each class keeps about ``val_fraction`` of its images in validation.

    A class whose units would all end in validation gets its smallest one back: every class keeps training images
    (a class with a single unit stays in training).

    Args:
        targets: multi-hot [N, C] (any integer or bool dtype).
        val_fraction: share of validation, ``0 <= val_fraction < 1``.
        seed: seed of the draws.
        groups: the group of each item (compared as text), kept on one side; None: each item alone.

    Returns:
        (train_idx, val_idx): sorted int64 arrays that partition ``range(N)``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be >= 0 and < 1, got {val_fraction}")
    counts, sizes, unit_of = _units(targets, groups)
    if val_fraction == 0 or not len(unit_of):
        return np.arange(len(unit_of), dtype=np.int64), np.zeros(0, dtype=np.int64)
    side = iterative_assign(counts, sizes, np.array([1.0 - val_fraction, val_fraction]), np.random.default_rng(seed))
    side = _keep_every_class_in_training(counts, side)
    in_val = side[unit_of] == 1
    return np.flatnonzero(~in_val).astype(np.int64), np.flatnonzero(in_val).astype(np.int64)


def iterative_folds(targets: np.ndarray, folds: int, seed: int,
                    groups: Sequence[object] | np.ndarray | None = None) -> np.ndarray:
    """Assign each item to one of ``folds`` validation folds, every class spread as evenly as its units allow.

    Returns:
        int64 [N]: the validation fold (0..K-1) of each item; the items of a group share one fold.
    """
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    counts, sizes, unit_of = _units(targets, groups)
    fold_of_unit = iterative_assign(counts, sizes, np.full(folds, 1.0 / folds), np.random.default_rng(seed))
    return fold_of_unit[unit_of].astype(np.int64)


def iterative_assign(counts: np.ndarray, sizes: np.ndarray, shares: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """The part (0..K-1) of each unit: Sechidis et al.'s Algorithm 1 over units.

    Args:
        counts: [U, C] how many of each unit's images hold each class.
        sizes: [U] each unit's image count.
        shares: [K] each part's share of the images (sums to 1).
        rng: the seeded generator (the order units are visited in, and the last ties).
    """
    label_need = shares[:, None] * counts.sum(axis=0)[None, :].astype(np.float64)  # [K, C] still wanted
    size_need = shares * float(sizes.sum())  # [K]
    part = np.full(len(counts), -1, dtype=np.int64)
    order = rng.permutation(len(counts))  # the visiting order: a seeded shuffle, as the paper's random tie-breaks
    remaining = counts.sum(axis=0).astype(np.int64)  # [C] images of each class not dealt yet
    while remaining.any():
        label = int(np.argmin(np.where(remaining > 0, remaining, np.iinfo(np.int64).max)))  # the rarest left
        for unit in order[(counts[order, label] > 0) & (part[order] < 0)]:
            k = _pick(label_need[:, label], size_need, rng)
            part[unit] = k
            label_need[k] -= counts[unit]
            size_need[k] -= sizes[unit]
            remaining -= counts[unit]
    for unit in order[part[order] < 0]:  # units with no class: wherever images are still wanted
        k = _pick(size_need, size_need, rng)
        part[unit] = k
        size_need[k] -= sizes[unit]
    return part


def _pick(need: np.ndarray, size_need: np.ndarray, rng: np.random.Generator) -> int:
    """The part that needs most; ties: the one that needs most images; still tied: a seeded draw."""
    best = np.flatnonzero(np.isclose(need, need.max(), rtol=0.0, atol=1e-9))
    if len(best) > 1:
        sizes = size_need[best]
        best = best[np.isclose(sizes, sizes.max(), rtol=0.0, atol=1e-9)]
    return int(best[0]) if len(best) == 1 else int(rng.choice(best))


def _units(targets: np.ndarray, groups: Sequence[object] | np.ndarray | None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """([U, C] class counts per unit, [U] images per unit, [N] the unit of each item): a unit is a group or an item."""
    targets = np.asarray(targets).astype(np.int64)
    if targets.ndim != 2:
        raise ValueError(f"targets must be [N, C], got shape {targets.shape}")
    if groups is None:
        unit_of = np.arange(len(targets), dtype=np.int64)
    else:  # dense ids in sorted group order (the groups compared as text, as clf.data.split compares them)
        unit_of = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)[1].reshape(-1)
    units = int(unit_of.max()) + 1 if len(unit_of) else 0
    counts = np.zeros((units, targets.shape[1]), dtype=np.int64)
    np.add.at(counts, unit_of, targets)
    return counts, np.bincount(unit_of, minlength=units).astype(np.int64), unit_of


def _keep_every_class_in_training(counts: np.ndarray, side: np.ndarray) -> np.ndarray:
    """A class held only by validation units gets its smallest one back in training."""
    side = side.copy()
    for cls in range(counts.shape[1]):
        holders = np.flatnonzero(counts[:, cls] > 0)
        if len(holders) and not np.any(side[holders] == 0):
            side[holders[np.argmin(counts[holders].sum(axis=1))]] = 0
    return side
