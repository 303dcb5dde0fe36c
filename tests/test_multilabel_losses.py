"""clf.train.losses, multi-label: bce and asl on multi-hot float targets, their smoothing and positive weights, and
the criterion that sends hard and mixed multi-label batches to the run's one loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from clf.config import TrainConfig
from clf.errors import ClfError
from clf.tasks import MULTILABEL
from clf.train.losses import LOSSES, LossSettings, asymmetric_loss, build_criterion, smoothed_multi_hot


def case(seed: int = 0, batch: int = 6, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(batch, classes, generator=generator)
    targets = (torch.rand(batch, classes, generator=generator) < 0.4).float()
    return logits, targets


def reference_asl(logits: np.ndarray, y: np.ndarray, gamma_neg=4.0, gamma_pos=0.0, clip=0.05, eps=1e-8) -> float:
    """The asymmetric loss as written in Ridnik et al. (2021), eq. (5)-(7) / their AsymmetricLossOptimized, per
    element, averaged: L+ = (1-p)^g+ log p, L- = p_m^g- log(1-p_m), p_m = max(p - m, 0)."""
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    xs_neg = np.minimum(1 - p + clip, 1.0)  # 1 - p_m
    loss = y * np.log(np.maximum(p, eps)) + (1 - y) * np.log(np.maximum(xs_neg, eps))
    pt = p * y + xs_neg * (1 - y)
    loss *= (1 - pt) ** (gamma_pos * y + gamma_neg * (1 - y))
    return float(-loss.mean())


def test_both_losses_are_registered_and_the_task_default_is_bce():
    assert {"bce", "asl"} <= set(LOSSES) and MULTILABEL.loss == "bce"


@pytest.mark.parametrize("seed", range(4))
def test_asl_equals_the_papers_formula(seed):
    logits, targets = case(seed)
    expected = reference_asl(logits.numpy(), targets.numpy())
    assert float(asymmetric_loss(logits, targets)) == pytest.approx(expected, rel=1e-5)
    criterion = build_criterion(MULTILABEL, 4, loss="asl")
    assert float(criterion(logits, targets)) == pytest.approx(expected, rel=1e-5)


def test_asl_ignores_easy_negatives_below_the_clip_and_without_focusing_is_bce_on_positives():
    easy = torch.tensor([[-4.0]])  # p = 0.018 < 0.05: shifted to 0, no loss
    assert float(asymmetric_loss(easy, torch.zeros(1, 1))) == 0.0
    logits, targets = case(1)
    positives = torch.ones_like(targets)
    assert float(asymmetric_loss(logits, positives)) == pytest.approx(
        float(nn.BCEWithLogitsLoss()(logits, positives)), rel=1e-5)  # gamma_pos 0: log p on every positive


def test_bce_is_torchs_on_smoothed_targets_with_pos_weight():
    logits, targets = case(2)
    plain = build_criterion(MULTILABEL, 4)
    assert torch.equal(plain(logits, targets), nn.BCEWithLogitsLoss()(logits, targets))
    smoothed = build_criterion(MULTILABEL, 4, label_smoothing=0.2)
    expected = nn.BCEWithLogitsLoss()(logits, targets * 0.8 + 0.1)
    assert torch.allclose(smoothed(logits, targets), expected)
    weights = (1.0, 2.0, 3.0, 0.5)
    weighted = build_criterion(MULTILABEL, 4, class_weights=weights)
    assert torch.allclose(weighted(logits, targets),
                          nn.BCEWithLogitsLoss(pos_weight=torch.tensor(weights))(logits, targets))


def test_smoothing_pulls_each_target_towards_one_half():
    assert smoothed_multi_hot(torch.tensor([[1.0, 0.0]]), 0.1)[0].tolist() == pytest.approx([0.95, 0.05])


def test_mixed_multilabel_targets_go_to_the_runs_loss_not_the_tasks_mixed_loss():
    logits, targets = case(3)
    mixed = 0.7 * targets + 0.3 * targets.flip(0)
    criterion = build_criterion(MULTILABEL, 4, loss="asl")
    assert torch.equal(criterion(logits, mixed), asymmetric_loss(logits, mixed))
    assert torch.equal(criterion(logits, targets), asymmetric_loss(logits, targets))


def test_the_asl_gradient_is_finite_where_probabilities_saturate():
    logits = torch.tensor([[40.0, -40.0, 0.0]], requires_grad=True)
    asymmetric_loss(logits, torch.tensor([[0.0, 1.0, 1.0]])).backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(("settings", "message"), [
    (dict(task="multilabel", labels_csv="labels.csv", loss="focal"),
     "--loss focal trains --task single_label; with --task multilabel choose one of bce, asl"),
    (dict(task="multilabel", labels_csv="labels.csv", loss="cross_entropy"),
     "--loss cross_entropy trains --task single_label; with --task multilabel choose one of bce, asl"),
    (dict(loss="bce"), "--loss bce trains --task multilabel; with --task single_label choose one of cross_entropy, "
                       "focal"),
    (dict(loss="asl"), "--loss asl trains --task multilabel; with --task single_label choose one of cross_entropy, "
                       "focal"),
    (dict(task="multilabel", labels_csv="labels.csv", class_weights="effective"),
     "--class-weights effective is a single-label rule; with --task multilabel use auto (each class's positives "
     "weigh negatives / positives) or a CSV file of class,weight"),
])
def test_a_loss_or_option_of_the_other_task_is_refused_in_one_line(settings, message):
    with pytest.raises(ClfError) as caught:
        TrainConfig(**settings)
    assert str(caught.value) == message


def test_the_multilabel_losses_and_options_are_accepted():
    for loss in (None, "bce", "asl"):
        assert TrainConfig(task="multilabel", labels_csv="labels.csv", loss=loss, class_weights="auto").loss == loss
    assert LossSettings(3).label_smoothing == 0.0


def test_the_mixer_mixes_multi_hot_targets_as_they_are():
    from clf.train.mixing import Mixer, mix_multi_hot

    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    assert torch.equal(mix_multi_hot(targets, 0.75), 0.75 * targets + 0.25 * targets.flip(0))
    torch.manual_seed(0)
    mixer = Mixer(mixup=0.4, cutmix=0.0, prob=1.0, switch=0.5, num_classes=3, smoothing=0.1)
    images = torch.rand(3, 3, 8, 8)
    mixed_images, mixed = mixer(images, targets)
    lam = float((mixed_images - images.flip(0))[0, 0, 0, 0] / (images - images.flip(0))[0, 0, 0, 0])
    # no one-hot step and no smoothing here (the loss smooths): a class both images hold stays 1
    assert torch.allclose(mixed, lam * targets + (1 - lam) * targets.flip(0), atol=1e-5)
    assert mixed[0, 0] == pytest.approx(1.0)
