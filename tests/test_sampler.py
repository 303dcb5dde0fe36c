"""clf.train.sampler: --sampler balanced draws every class about equally often, the same draw per (seed, epoch)."""

from __future__ import annotations

import numpy as np
import pytest

from clf.train.sampler import BalancedSampler, balanced_probabilities

LABELS = [0] * 60 + [1] * 30 + [2] * 10  # n = (60, 30, 10), N = 100


def test_each_image_is_drawn_with_probability_one_over_its_class_count_normalised():
    p = balanced_probabilities(LABELS)
    assert p[0] == pytest.approx(1 / (3 * 60)) and p[60] == pytest.approx(1 / (3 * 30))
    assert p[90] == pytest.approx(1 / (3 * 10)) and p.sum() == pytest.approx(1.0)


def test_an_epoch_draws_len_train_images_with_replacement_and_the_classes_balance_over_many_epochs():
    sampler = BalancedSampler(LABELS, seed=0)
    labels = np.asarray(LABELS)
    per_image = np.zeros(100)
    repeated = False
    for epoch in range(200):
        sampler.set_epoch(epoch)
        drawn = list(sampler)
        assert len(drawn) == len(sampler) == 100 and all(0 <= i < 100 for i in drawn)
        repeated |= len(set(drawn)) < len(drawn)
        per_image += np.bincount(drawn, minlength=100)
    assert repeated  # with replacement
    shares = np.bincount(labels, weights=per_image) / per_image.sum()
    assert shares == pytest.approx([1 / 3] * 3, abs=0.02)  # 20,000 draws: a share's std is about 0.0033
    # within a class the images are drawn alike: each rare image about 1/30 of the draws (std about 0.0013)
    assert per_image[90:] / per_image.sum() == pytest.approx([1 / 30] * 10, abs=0.006)


def test_the_draw_depends_on_seed_and_epoch_alone():
    a, b = BalancedSampler(LABELS, seed=3), BalancedSampler(LABELS, seed=3)
    a.set_epoch(5)
    first = list(a)
    a.set_epoch(6)
    assert list(a) != first  # another epoch, another draw
    b.set_epoch(5)
    assert list(b) == first  # a fresh sampler (a resumed run) draws the same for the same (seed, epoch)
    a.set_epoch(5)
    assert list(a) == first  # and iterating does not move any state
    other = BalancedSampler(LABELS, seed=4)
    other.set_epoch(5)
    assert list(other) != first


def test_under_torchrun_the_ranks_deal_out_one_draw_with_equal_shares():
    whole = BalancedSampler(LABELS, seed=1, world_size=3, rank=0).epoch_draw()
    shares = [list(BalancedSampler(LABELS, seed=1, world_size=3, rank=r)) for r in range(3)]
    assert [len(s) for s in shares] == [34, 34, 34]  # ceil(100 / 3): every rank steps as often
    assert sorted(sum(shares, [])) == sorted(whole.tolist())
    assert shares[1] == whole[1::3].tolist()
