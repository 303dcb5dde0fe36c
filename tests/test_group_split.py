"""clf.data.split's group split and group k-fold: no group on two sides, classes balanced as groups allow, and the
item split of older runs unchanged bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from clf.data.datasets import LabelledSet
from clf.data.duplicates import SIGNATURE
from clf.data.split import (
    group_ids,
    labelled_folds,
    labelled_split,
    stratified_folds,
    stratified_group_folds,
    stratified_group_split,
    stratified_split,
)

# The split and folds clf made before groups existed (computed with that version's split.py): fixed forever.
OLD_LABELS = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 3, 3]
OLD_VAL = [1, 3, 4, 8, 12, 17, 20]  # stratified_split(OLD_LABELS, 0.25, seed=5)
OLD_FOLDS = [1, 0, 3, 2, 3, 3, 2, 3, 2, 3, 2, 1, 0, 1, 0, 0, 1, 2, 1, 0, 0, 1]  # stratified_folds(.., 4, seed=2)


def test_the_item_split_and_folds_are_the_ones_older_runs_made():
    assert stratified_split(OLD_LABELS, 0.25, seed=5)[1].tolist() == OLD_VAL
    assert stratified_folds(OLD_LABELS, 4, seed=2).tolist() == OLD_FOLDS


@pytest.mark.parametrize("groups", [None, [f"g{i}" for i in range(len(OLD_LABELS))]], ids=["none", "all-distinct"])
def test_without_real_groups_the_group_functions_give_the_old_split(groups):
    assert stratified_group_split(OLD_LABELS, groups, 0.25, seed=5)[1].tolist() == OLD_VAL
    assert stratified_group_folds(OLD_LABELS, groups, 4, seed=2).tolist() == OLD_FOLDS
    labelled = LabelledSet([f"{i}.png" for i in range(len(OLD_LABELS))], OLD_LABELS, ["a", "b", "c", "d"], groups)
    assert labelled_split(labelled, 0.25, 5)[1].tolist() == OLD_VAL
    assert labelled_folds(labelled, 4, 2).tolist() == OLD_FOLDS


def random_groups(seed: int, items: int, classes: int, mean_group: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels and groups: group sizes 1..2*mean, mostly one class per group (a patient), some mixed."""
    rng = np.random.default_rng(seed)
    labels, groups, g = [], [], 0
    while len(labels) < items:
        size = int(rng.integers(1, 2 * mean_group + 1))
        main = int(rng.integers(classes))
        for _ in range(size):
            labels.append(main if rng.random() < 0.9 else int(rng.integers(classes)))
            groups.append(f"patient-{g}")
        g += 1
    return np.array(labels[:items]), np.array(groups[:items])


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize(("items", "mean_group"), [(30, 2), (200, 3), (1000, 5), (3000, 1.5)])
def test_no_group_spans_train_and_validation(seed, items, mean_group):
    labels, groups = random_groups(seed, items, classes=4, mean_group=mean_group)
    train, val = stratified_group_split(labels, groups, 0.2, seed)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(items))
    assert not set(groups[train]) & set(groups[val])
    assert set(labels[train]) == set(labels)  # no class vanishes from training
    if items >= 1000:  # as balanced as groups allow: each class's validation share near 0.2
        for cls in np.unique(labels):
            share = np.sum(labels[val] == cls) / np.sum(labels == cls)
            assert abs(share - 0.2) < 0.03, (cls, share)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize(("items", "folds"), [(40, 2), (300, 5), (2000, 5), (2000, 10)])
def test_group_folds_keep_every_group_in_one_fold(seed, items, folds):
    labels, groups = random_groups(seed + 100, items, classes=3, mean_group=3)
    assignment = stratified_group_folds(labels, groups, folds, seed)
    assert assignment.dtype == np.int64 and set(assignment.tolist()) == set(range(folds))
    for group in np.unique(groups):
        assert len(set(assignment[groups == group].tolist())) == 1, group
    if items >= 2000:  # every fold holds about 1/K of every class
        for cls in np.unique(labels):
            per_fold = np.bincount(assignment[labels == cls], minlength=folds)
            expected = np.sum(labels == cls) / folds
            assert np.all(np.abs(per_fold - expected) <= 0.15 * expected + 3), per_fold


def test_group_split_is_seeded_and_independent_of_global_rng():
    labels, groups = random_groups(0, 500, classes=3, mean_group=4)
    np.random.seed(1)
    first = stratified_group_split(labels, groups, 0.2, seed=7)
    np.random.seed(2)
    again = stratified_group_split(labels.tolist(), groups.tolist(), 0.2, seed=7)
    other = stratified_group_split(labels, groups, 0.2, seed=8)
    assert np.array_equal(first[1], again[1]) and not np.array_equal(first[1], other[1])


def test_a_class_living_in_one_group_stays_in_training():
    labels = [0] * 10 + [1] * 10 + [2] * 4
    groups = [f"a{i // 2}" for i in range(10)] + [f"b{i // 2}" for i in range(10)] + ["c"] * 4
    train, val = stratified_group_split(labels, groups, 0.5, seed=0)
    assert set(np.array(labels)[train]) == {0, 1, 2}
    assert sorted(set(np.array(labels)[val])) == [0, 1]


def test_zero_fraction_and_group_ids():
    train, val = stratified_group_split([0, 0, 1, 1], ["x", "x", "y", "z"], 0.0, seed=0)
    assert train.tolist() == [0, 1, 2, 3] and val.size == 0
    assert group_ids(["b", "a", "b", "c"]).tolist() == [0, 1, 0, 2]
    with pytest.raises(ValueError, match="folds must be >= 2"):
        stratified_group_folds([0, 1], ["x", "x"], 1, seed=0)


def test_dedup_keeps_near_duplicates_together_in_the_split_and_the_folds():
    """Pairs of images with one signature (a copy of each picture): --dedup never separates a pair."""
    rng = np.random.default_rng(3)
    pictures = 60
    hashes = rng.integers(0, 2**63, pictures, dtype=np.int64).astype(np.uint64)
    sigs = np.zeros(2 * pictures, dtype=SIGNATURE)
    sigs["phash"] = np.repeat(hashes, 2) ^ np.tile(np.array([0, 0b101], dtype=np.uint64), pictures)  # 2 bits apart
    sigs["mean"], sigs["std"] = 100.0, 30.0
    labels = np.repeat(np.arange(pictures) % 3, 2)
    labelled = LabelledSet([f"{i}.png" for i in range(2 * pictures)], labels.tolist(), ["a", "b", "c"],
                           signatures=sigs)
    pair = np.arange(2 * pictures) // 2
    for seed in range(5):
        train, val = labelled_split(labelled, 0.25, seed, dedup=True)
        assert not set(pair[train]) & set(pair[val])
        folds = labelled_folds(labelled, 3, seed, dedup=True)
        assert np.all(folds[0::2] == folds[1::2])
    split_apart = [labelled_split(labelled, 0.25, seed)[1] for seed in range(5)]  # without --dedup: they do split
    assert any(set(pair[val]) & set(pair[np.setdiff1d(np.arange(2 * pictures), val)]) for val in split_apart)
