"""clf.data.multilabel_split: iterative stratification (Sechidis et al. 2011) of multi-hot targets, and the split and
folds clf.data.split makes of a multi-label set."""

from __future__ import annotations

import numpy as np
import pytest

from clf.data.multilabel import multilabel_set
from clf.data.multilabel_split import iterative_folds, iterative_split
from clf.data.split import labelled_folds, labelled_split


def skewed_targets(n: int = 600, classes: int = 12, seed: int = 0) -> np.ndarray:
    """Multi-hot [n, classes] with class frequencies from 40 % down to 1 % (a long tail, as real tags have) and
    correlated pairs; some rows hold no class."""
    rng = np.random.default_rng(seed)
    frequencies = np.geomspace(0.4, 0.01, classes)
    targets = (rng.random((n, classes)) < frequencies).astype(np.uint8)
    targets[:, 1] |= targets[:, 0] & (rng.random(n) < 0.5)  # class 1 often comes with class 0
    return targets


def proportion_error(targets: np.ndarray, val_idx: np.ndarray, fraction: float) -> float:
    """Mean over classes of |validation share of the class - fraction| (Sechidis et al.'s label distribution)."""
    totals = targets.sum(axis=0)
    shares = targets[val_idx].sum(axis=0) / np.maximum(totals, 1)
    return float(np.abs(shares - fraction)[totals > 0].mean())


def random_split(n: int, fraction: float, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(n)[: round(n * fraction)])


def test_iterative_split_keeps_each_class_closer_to_the_fraction_than_a_random_split():
    targets = skewed_targets()
    errors, random_errors = [], []
    for seed in range(5):
        train_idx, val_idx = iterative_split(targets, 0.2, seed)
        assert np.array_equal(np.sort(np.concatenate([train_idx, val_idx])), np.arange(len(targets)))
        assert len(val_idx) == pytest.approx(0.2 * len(targets), abs=6)
        errors.append(proportion_error(targets, val_idx, 0.2))
        random_errors.append(proportion_error(targets, random_split(len(targets), 0.2, seed), 0.2))
    assert np.mean(errors) < 0.5 * np.mean(random_errors), (errors, random_errors)
    assert max(errors) < 0.03


def test_the_rarest_class_is_shared_out_by_the_fraction():
    targets = skewed_targets()
    rare = int(np.argmin(targets.sum(axis=0)))
    n_rare = int(targets[:, rare].sum())
    _, val_idx = iterative_split(targets, 0.25, seed=3)
    assert abs(int(targets[val_idx, rare].sum()) - 0.25 * n_rare) <= 1


def test_the_split_is_deterministic_and_seeded():
    targets = skewed_targets(200)
    first = iterative_split(targets, 0.2, 7)
    assert all(np.array_equal(a, b) for a, b in zip(first, iterative_split(targets, 0.2, 7)))
    assert not np.array_equal(first[1], iterative_split(targets, 0.2, 8)[1])
    np.random.seed(123)  # the global state does not matter
    assert np.array_equal(first[1], iterative_split(targets, 0.2, 7)[1])


def test_every_class_keeps_training_images():
    targets = np.zeros((10, 3), dtype=np.uint8)
    targets[:, 0] = 1
    targets[0, 1] = 1  # class 1: one image
    targets[[1, 2], 2] = 1  # class 2: two images
    train_idx, val_idx = iterative_split(targets, 0.5, 0)
    assert (targets[train_idx].sum(axis=0) > 0).all()
    assert 0 in train_idx and len(val_idx) >= 3


def test_no_val_and_empty_sets():
    targets = skewed_targets(20)
    train_idx, val_idx = iterative_split(targets, 0.0, 0)
    assert len(train_idx) == 20 and len(val_idx) == 0
    train_idx, val_idx = iterative_split(np.zeros((0, 3), dtype=np.uint8), 0.2, 0)
    assert len(train_idx) == len(val_idx) == 0
    with pytest.raises(ValueError, match="val_fraction"):
        iterative_split(targets, 1.0, 0)


def test_groups_stay_on_one_side_and_the_classes_stay_stratified():
    targets = skewed_targets(600)
    groups = [f"g{i // 3}" for i in range(len(targets))]  # 200 groups of 3
    train_idx, val_idx = iterative_split(targets, 0.2, 0, groups=groups)
    train_groups, val_groups = {groups[i] for i in train_idx}, {groups[i] for i in val_idx}
    assert not train_groups & val_groups
    assert len(val_idx) == pytest.approx(120, abs=9)
    assert proportion_error(targets, val_idx, 0.2) < 0.05


def test_folds_spread_every_class_and_keep_groups_whole():
    targets = skewed_targets(500)
    folds = iterative_folds(targets, 5, seed=1)
    assert sorted(set(folds.tolist())) == [0, 1, 2, 3, 4]
    assert np.bincount(folds).max() - np.bincount(folds).min() <= 6
    for fold in range(5):
        assert proportion_error(targets, np.flatnonzero(folds == fold), 0.2) < 0.04
    groups = [i // 4 for i in range(len(targets))]
    grouped = iterative_folds(targets, 5, seed=1, groups=groups)
    for group in set(groups):
        assert len({int(grouped[i]) for i in range(len(targets)) if groups[i] == group}) == 1
    assert np.array_equal(grouped, iterative_folds(targets, 5, seed=1, groups=groups))


def test_labelled_split_and_folds_of_a_multilabel_set_use_iterative_stratification():
    targets = skewed_targets(120)
    data = multilabel_set([f"{i}.png" for i in range(len(targets))], targets, [f"c{c}" for c in range(12)],
                          groups=[f"g{i // 2}" for i in range(len(targets))])
    train_idx, val_idx = labelled_split(data, 0.25, 4)
    assert np.array_equal(val_idx, iterative_split(targets, 0.25, 4, data.groups)[1])
    assert not {data.groups[i] for i in train_idx} & {data.groups[i] for i in val_idx}
    assert np.array_equal(labelled_folds(data, 3, 2), iterative_folds(targets, 3, 2, data.groups))
