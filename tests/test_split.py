"""clf.data.split: stratified, deterministic, independent of global RNG state."""

from __future__ import annotations

import numpy as np
import pytest

from clf.data.split import stratified_split


def counts(labels: np.ndarray, idx: np.ndarray) -> dict[int, int]:
    values, n = np.unique(labels[idx], return_counts=True)
    return dict(zip(values.tolist(), n.tolist()))


def test_per_class_counts_and_partition():
    labels = np.array([0] * 10 + [1] * 20 + [2] * 3 + [3] * 2 + [4] * 1)
    rng = np.random.default_rng(7)
    labels = labels[rng.permutation(len(labels))]  # classes interleaved
    train, val = stratified_split(labels, 0.2, seed=0)
    # round(n * 0.2): 10 -> 2, 20 -> 4, 3 -> 0.6 -> 1, 2 -> 0.4 -> at least 1, 1 -> none (no class leaves training)
    assert counts(labels, val) == {0: 2, 1: 4, 2: 1, 3: 1}
    assert counts(labels, train) == {0: 8, 1: 16, 2: 2, 3: 1, 4: 1}
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)  # sorted, no duplicates
    assert train.dtype == np.int64 and val.dtype == np.int64


def test_large_fraction_keeps_one_per_class_in_training():
    labels = [0, 0, 1, 1, 1, 1]
    train, val = stratified_split(labels, 0.9, seed=1)
    assert counts(np.array(labels), train) == {0: 1, 1: 1}
    assert len(val) == 4


def test_zero_fraction_puts_everything_in_train():
    train, val = stratified_split([1, 0, 1, 0, 2], 0.0, seed=3)
    assert train.tolist() == [0, 1, 2, 3, 4]
    assert val.size == 0 and val.dtype == np.int64


def test_deterministic_for_a_seed_and_independent_of_global_rng():
    labels = np.repeat(np.arange(5), 40)
    np.random.seed(1)
    first = stratified_split(labels, 0.25, seed=42)
    np.random.seed(999)
    np.random.rand(10)
    second = stratified_split(labels.tolist(), 0.25, seed=42)
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    other = stratified_split(labels, 0.25, seed=43)
    assert not np.array_equal(first[1], other[1])
    assert counts(labels, first[1]) == {c: 10 for c in range(5)}


def test_string_labels_and_empty_input():
    train, val = stratified_split(["cat", "dog", "cat", "dog"], 0.5, seed=0)
    assert len(train) == 2 and len(val) == 2
    assert sorted(np.array(["cat", "dog", "cat", "dog"])[val].tolist()) == ["cat", "dog"]
    train, val = stratified_split([], 0.2, seed=0)
    assert train.size == 0 and val.size == 0


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_bad_fraction(fraction: float):
    with pytest.raises(ValueError) as err:
        stratified_split([0, 1], fraction, seed=0)
    assert str(err.value) == f"val_fraction must be >= 0 and < 1, got {fraction}"
