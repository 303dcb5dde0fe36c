"""clf.train.mixing: soft targets (label smoothing composed), the soft-target loss, the CutMix box, and the Mixer's
draws from torch's global generator."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from clf.config import TrainConfig
from clf.train.loop import train_one_epoch
from clf.train.mixing import (
    Box,
    Mixer,
    box_lam,
    cutmix_box,
    cutmix_images,
    mix_targets,
    mixup_images,
    smoothed_one_hot,
)
from clf.train.losses import soft_target_cross_entropy
from clf.train.runtime import Runtime


def test_soft_target_loss_equals_a_hand_computation_on_2x3():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    targets = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    log_z = 3.0 + math.log(1.0 + math.exp(-1.0) + math.exp(-2.0))  # logsumexp(1, 2, 3)
    row0 = 0.5 * (log_z - 1.0) + 0.5 * (log_z - 2.0)  # 1.9076...
    row1 = math.log(3.0)  # uniform logits: -log(1/3)
    assert soft_target_cross_entropy(logits, targets).item() == pytest.approx((row0 + row1) / 2, abs=1e-6)
    assert (row0 + row1) / 2 == pytest.approx(1.5031091, abs=1e-6)


def test_one_hot_targets_give_torch_cross_entropy_with_its_label_smoothing():
    logits, labels = torch.randn(5, 4, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 3, 1, 1, 2])
    for smoothing in (0.0, 0.1):
        expected = nn.CrossEntropyLoss(label_smoothing=smoothing)(logits, labels)
        got = soft_target_cross_entropy(logits, smoothed_one_hot(labels, 4, smoothing))
        assert got.item() == pytest.approx(expected.item(), abs=1e-6)


def test_label_smoothing_is_applied_to_each_one_hot_then_mixed():
    # smoothing 0.3 over 3 classes: 0.1 off, 0.8 on; lam 0.75 with the batch flipped (row 0 <-> row 1)
    targets = mix_targets(torch.tensor([0, 2]), 3, lam=0.75, smoothing=0.3)
    assert torch.allclose(targets, torch.tensor([[0.625, 0.1, 0.275], [0.275, 0.1, 0.625]]))


@pytest.mark.parametrize("lam, smoothing", [(1.0, 0.0), (0.3, 0.0), (0.6, 0.1), (0.0, 0.2)])
def test_targets_sum_to_one_per_row(lam, smoothing):
    targets = mix_targets(torch.tensor([0, 1, 2, 2, 4]), 5, lam, smoothing)
    assert targets.shape == (5, 5)
    assert torch.allclose(targets.sum(dim=1), torch.ones(5))


def test_cutmix_box_clipped_at_the_border_and_lam_corrected():
    # lam 0.64 -> a 6x6 box (area 1 - lam); centred at row 1, col 8 it is clipped to rows 0-4, cols 5-10
    box = cutmix_box(10, 10, 0.64, centre=(1, 8))
    assert box == Box(top=0, bottom=4, left=5, right=10) and box.area() == 20
    assert box_lam(box, 10, 10) == pytest.approx(0.8)  # not 0.64: only 20 of the 36 pixels fit
    inside = cutmix_box(10, 10, 0.64, centre=(5, 5))
    assert inside == Box(2, 8, 2, 8) and box_lam(inside, 10, 10) == pytest.approx(0.64)


def test_cutmix_pastes_the_box_from_the_flipped_batch():
    images = torch.stack([torch.full((1, 4, 4), float(i)) for i in range(3)])  # image i is all i
    mixed = cutmix_images(images, Box(1, 3, 0, 2))
    assert torch.equal(images[:, 0, 0, 0], torch.tensor([0.0, 1.0, 2.0]))  # the input is left as it was
    for i, partner in enumerate((2, 1, 0)):
        expected = torch.full((4, 4), float(i))
        expected[1:3, 0:2] = float(partner)
        assert torch.equal(mixed[i, 0], expected)


def test_mixup_blends_each_image_with_its_flipped_partner():
    images = torch.tensor([1.0, 2.0, 4.0]).view(3, 1, 1, 1)
    assert mixup_images(images, 0.75).flatten().tolist() == [1.75, 2.0, 3.25]


def mixer(**options) -> Mixer:
    return Mixer(**{"mixup": 0.0, "cutmix": 0.0, "prob": 1.0, "switch": 0.5, "num_classes": 3, **options})


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 1])


def test_the_mixer_draws_from_the_global_torch_generator_only():
    images, labels = batch()
    mix = mixer(mixup=0.4, cutmix=1.0)
    torch.manual_seed(7)
    first = [mix(images, labels) for _ in range(6)]
    state = torch.get_rng_state()
    torch.manual_seed(7)
    again = [mix(images, labels) for _ in range(6)]
    assert torch.equal(state, torch.get_rng_state())  # the same number of draws, all from the saved generator
    for (x1, t1), (x2, t2) in zip(first, again):
        assert torch.equal(x1, x2) and torch.equal(t1, t2)
        assert torch.allclose(t1.sum(dim=1), torch.ones(4))


def test_mixup_lam_is_the_beta_draw():
    images, labels = batch()
    torch.manual_seed(3)
    mixed, targets = mixer(mixup=0.4)(images, labels)
    torch.manual_seed(3)
    lam = float(torch.distributions.Beta(torch.tensor(0.4, dtype=torch.float64),
                                         torch.tensor(0.4, dtype=torch.float64)).sample())
    assert torch.allclose(mixed, images * lam + images.flip(0) * (1 - lam))
    assert torch.allclose(targets, mix_targets(labels, 3, lam))


def test_cutmix_targets_follow_the_pasted_area():
    images, labels = batch()
    torch.manual_seed(5)
    mixed, targets = mixer(cutmix=1.0)(images, labels)
    pasted = (mixed != images).any(dim=1)[0]  # [H, W] of image 0: where its partner's pixels are
    lam = 1.0 - float(pasted.sum()) / 64
    assert torch.allclose(targets, mix_targets(labels, 3, lam), atol=1e-6)


def test_switch_and_probability():
    images, labels = batch()
    torch.manual_seed(0)
    assert {mixer(mixup=0.2, cutmix=1.0, switch=1.0).draw_kind() for _ in range(20)} == {"cutmix"}
    assert {mixer(mixup=0.2, cutmix=1.0, switch=0.0).draw_kind() for _ in range(20)} == {"mixup"}
    assert {mixer(mixup=0.2, prob=0.0).draw_kind() for _ in range(20)} == {None}
    kinds = [mixer(mixup=0.2, cutmix=1.0, prob=0.5).draw_kind() for _ in range(400)]
    assert 150 < kinds.count(None) < 250 and kinds.count("mixup") > 50 and kinds.count("cutmix") > 50
    same, targets = mixer(mixup=0.2, prob=0.0, smoothing=0.3)(images, labels)
    assert same is images and torch.allclose(targets, smoothed_one_hot(labels, 3, 0.3))


def test_from_config():
    assert Mixer.from_config(TrainConfig(data="x"), 3) is None
    mix = Mixer.from_config(TrainConfig(data="x", mixup=0.2, cutmix=1.0, mix_prob=0.5, mix_switch=0.25,
                                        label_smoothing=0.1), 3)
    settings = (mix.mixup, mix.cutmix, mix.prob, mix.switch, mix.num_classes, mix.smoothing)
    assert settings == (0.2, 1.0, 0.5, 0.25, 3, 0.1)


def test_a_mixed_epoch_has_no_train_accuracy_and_a_soft_target_loss():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    images, labels = batch()
    mix = mixer(mixup=0.4)
    torch.manual_seed(11)
    metrics = train_one_epoch(net, [(images, labels)], nn.CrossEntropyLoss(), optimizer, scheduler, scaler,
                              Runtime(torch.device("cpu"), None), mixer=mix)
    torch.manual_seed(11)
    mixed, targets = mix(images, labels)
    with torch.no_grad():
        expected = soft_target_cross_entropy(net(mixed), targets).item()
    assert metrics.accuracy is None and metrics.images == 4
    assert metrics.loss == pytest.approx(expected, abs=1e-6)
