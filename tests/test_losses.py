"""clf.train.losses: the loss registry, and the criterion a run's task builds (hard labels or mixed soft targets)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clf.errors import ClfError
from clf.tasks import SINGLE_LABEL
from clf.train.loop import evaluate, task_of, train_one_epoch
from clf.train.losses import (LOSSES, Criterion, LossSettings, build_criterion, build_loss, check_loss_option, focal,
                              soft_target_cross_entropy)
from clf.train.mixing import smoothed_one_hot
from clf.train.runtime import Runtime

CPU = Runtime(torch.device("cpu"), None)


def test_the_registry_holds_cross_entropy_and_the_soft_target_loss():
    assert set(LOSSES) >= {"cross_entropy", "soft_target_cross_entropy"}
    assert SINGLE_LABEL.loss in LOSSES and SINGLE_LABEL.mixed_loss in LOSSES


def test_an_unknown_loss_is_refused_naming_the_known_ones():
    with pytest.raises(ClfError, match="^loss 'nope': unknown; choose one of cross_entropy, "
                                       "soft_target_cross_entropy, focal, bce, asl$"):
        build_loss("nope", LossSettings(3))


def test_hard_labels_get_torch_cross_entropy_with_the_runs_label_smoothing():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    criterion = build_criterion(SINGLE_LABEL, 4, label_smoothing=0.1)
    expected = nn.CrossEntropyLoss(label_smoothing=0.1)(logits, labels)
    assert torch.equal(criterion(logits, labels), expected)


def test_soft_targets_get_the_soft_target_loss_without_smoothing_twice():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    targets = smoothed_one_hot(labels, 4, 0.1)  # the mixer smooths before mixing
    criterion = build_criterion(SINGLE_LABEL, 4, label_smoothing=0.1)
    assert torch.equal(criterion(logits, targets), soft_target_cross_entropy(logits, targets))
    # and it is the smoothed cross-entropy of the hard labels: smoothing was applied once
    assert criterion(logits, targets).item() == pytest.approx(criterion(logits, labels).item(), abs=1e-6)


def test_the_epoch_loop_counts_correct_predictions_by_the_criterions_task():
    criterion = build_criterion(SINGLE_LABEL, 3)
    assert isinstance(criterion, Criterion) and task_of(criterion) is SINGLE_LABEL
    assert task_of(nn.CrossEntropyLoss()) is SINGLE_LABEL  # a plain torch loss: single-label
    net = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
    images, labels = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, -2.0], [2.0, 0.0]]), torch.tensor([0, 1, 2, 1])
    metrics = evaluate(net, [(images, labels)], criterion, CPU)
    assert metrics.accuracy == 0.75
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    trained = train_one_epoch(net, [(images, labels)], criterion, optimizer, scheduler,
                              torch.amp.GradScaler("cuda", enabled=False), CPU)
    assert trained.accuracy == 0.75 and trained.loss == pytest.approx(metrics.loss, abs=1e-6)


def test_a_run_may_name_another_registered_loss_for_its_hard_labels(monkeypatch):
    calls = []

    def doubled(settings: LossSettings):
        calls.append(settings)
        plain = nn.CrossEntropyLoss()
        return lambda logits, labels: 2 * plain(logits, labels)

    monkeypatch.setitem(LOSSES, "doubled", doubled)  # a new loss is one builder and one registry line
    criterion = build_criterion(SINGLE_LABEL, 3, label_smoothing=0.2, loss="doubled")
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    assert calls == [LossSettings(3, 0.2)]
    assert torch.equal(criterion(logits, labels), 2 * nn.CrossEntropyLoss()(logits, labels))
    assert torch.equal(criterion(logits, smoothed_one_hot(labels, 3, 0.0)),
                       soft_target_cross_entropy(logits, smoothed_one_hot(labels, 3, 0.0)))


def test_focal_loss_with_gamma_0_is_cross_entropy_with_the_same_smoothing():
    torch.manual_seed(0)
    logits, labels = torch.randn(8, 5), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    focal_0 = focal(LossSettings(5, label_smoothing=0.1, focal_gamma=0.0))
    expected = nn.CrossEntropyLoss(label_smoothing=0.1)(logits, labels)
    assert torch.allclose(focal_0(logits, labels), expected, atol=1e-6)


def test_focal_loss_weighs_an_example_the_model_gets_right_less_than_one_it_gets_wrong():
    """Per example, focal / cross-entropy is (1 - p)^2 on the true class: ~0 when confident and right, ~1 when wrong."""
    labels = torch.tensor([0])
    right, wrong = torch.tensor([[4.0, 0.0, 0.0]]), torch.tensor([[0.0, 4.0, 0.0]])
    settings = LossSettings(3)
    ce, fl = build_loss("cross_entropy", settings), build_loss("focal", settings)
    assert fl(right, labels) / ce(right, labels) < 0.01
    assert fl(wrong, labels) / ce(wrong, labels) > 0.9


def test_a_run_with_loss_focal_trains_with_the_focal_loss_and_mixup_keeps_the_soft_target_loss():
    criterion = build_criterion(SINGLE_LABEL, 3, loss="focal")
    logits, labels = torch.tensor([[4.0, 0.0, 0.0]]), torch.tensor([0])
    assert torch.equal(criterion(logits, labels), focal(LossSettings(3))(logits, labels))
    soft = smoothed_one_hot(labels, 3, 0.0)
    assert torch.equal(criterion(logits, soft), soft_target_cross_entropy(logits, soft))


@pytest.mark.parametrize("name", ["nope", "soft_target_cross_entropy"])
def test_loss_option_takes_the_losses_on_class_labels_only(name):
    with pytest.raises(ClfError, match=f"^--loss '{name}': unknown; choose one of cross_entropy, focal, bce, asl$"):
        check_loss_option(name)
    check_loss_option("focal")
    check_loss_option(None)  # the task's own


def test_focal_gamma_zero_is_cross_entropy_and_gamma_reaches_the_loss():
    torch.manual_seed(0)
    logits, labels = torch.randn(8, 4), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    zero = build_criterion(SINGLE_LABEL, 4, label_smoothing=0.1, loss="focal", focal_gamma=0.0)
    expected = nn.CrossEntropyLoss(label_smoothing=0.1)(logits, labels)
    assert zero(logits, labels).item() == pytest.approx(expected.item(), abs=1e-6)
    # by hand: sum_c -t_c (1 - p_c)^gamma log p_c, averaged over the batch
    p = torch.softmax(logits, dim=-1)
    t = smoothed_one_hot(labels, 4, 0.1)
    by_hand = (-t * (1 - p) ** 0.5 * p.log()).sum(dim=-1).mean()
    half = build_criterion(SINGLE_LABEL, 4, label_smoothing=0.1, loss="focal", focal_gamma=0.5)
    assert half(logits, labels).item() == pytest.approx(by_hand.item(), rel=1e-5)
    # the default is Lin et al.'s gamma 2, computed as before the option existed
    assert torch.equal(build_criterion(SINGLE_LABEL, 4, loss="focal")(logits, labels),
                       focal(LossSettings(4))(logits, labels))
    assert LossSettings(4).focal_gamma == 2.0


WEIGHTS = (0.5, 1.0, 3.0, 2.0)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_weighted_cross_entropy_is_torchs_with_the_same_weights(smoothing):
    torch.manual_seed(0)
    logits, labels = torch.randn(8, 4), torch.tensor([0, 1, 2, 3, 0, 0, 2, 3])
    criterion = build_criterion(SINGLE_LABEL, 4, label_smoothing=smoothing, class_weights=WEIGHTS)
    expected = nn.CrossEntropyLoss(weight=torch.tensor(WEIGHTS), label_smoothing=smoothing)(logits, labels)
    assert torch.equal(criterion(logits, labels), expected)
    assert not torch.equal(criterion(logits, labels), nn.CrossEntropyLoss(label_smoothing=smoothing)(logits, labels))


def test_the_weighted_soft_target_loss_of_one_hot_targets_is_torchs_weighted_mean():
    """sum_i sum_c -w_c t_ic log p_ic / sum_i sum_c w_c t_ic == torch's weighted cross-entropy for one-hot targets."""
    torch.manual_seed(0)
    logits, labels = torch.randn(8, 4), torch.tensor([0, 1, 2, 3, 0, 0, 2, 3])
    criterion = build_criterion(SINGLE_LABEL, 4, class_weights=WEIGHTS)
    one_hot = smoothed_one_hot(labels, 4, 0.0)
    expected = nn.CrossEntropyLoss(weight=torch.tensor(WEIGHTS))(logits, labels)
    assert criterion(logits, one_hot).item() == pytest.approx(expected.item(), rel=1e-6)
    # a mixed row by hand: the terms weighted by class, over the batch's sum of w_c t_c
    mixed = 0.7 * one_hot + 0.3 * one_hot.flip(0)
    w = torch.tensor(WEIGHTS)
    by_hand = (-(w * mixed) * torch.log_softmax(logits, -1)).sum() / (w * mixed).sum()
    assert criterion(logits, mixed).item() == pytest.approx(by_hand.item(), rel=1e-6)


def test_unit_weights_change_nothing_and_only_the_ratios_matter():
    torch.manual_seed(0)
    logits, labels = torch.randn(8, 4), torch.tensor([0, 1, 2, 3, 0, 0, 2, 3])
    for loss in ("cross_entropy", "focal"):
        plain = build_criterion(SINGLE_LABEL, 4, 0.1, loss)
        ones = build_criterion(SINGLE_LABEL, 4, 0.1, loss, class_weights=(1.0,) * 4)
        assert ones(logits, labels).item() == pytest.approx(plain(logits, labels).item(), rel=1e-6)
        scaled = build_criterion(SINGLE_LABEL, 4, 0.1, loss, class_weights=tuple(10 * w for w in WEIGHTS))
        weighted = build_criterion(SINGLE_LABEL, 4, 0.1, loss, class_weights=WEIGHTS)
        assert scaled(logits, labels).item() == pytest.approx(weighted(logits, labels).item(), rel=1e-6)


def test_weighted_focal_weights_each_class_term_and_gamma_zero_is_torchs_weighted_cross_entropy():
    torch.manual_seed(0)
    logits, labels = torch.randn(8, 4), torch.tensor([0, 1, 2, 3, 0, 0, 2, 3])
    w = torch.tensor(WEIGHTS)
    zero = build_criterion(SINGLE_LABEL, 4, 0.1, "focal", focal_gamma=0.0, class_weights=WEIGHTS)
    expected = nn.CrossEntropyLoss(weight=w, label_smoothing=0.1)(logits, labels)
    assert zero(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    p, t = torch.softmax(logits, -1), smoothed_one_hot(labels, 4, 0.1)
    by_hand = (-w * t * (1 - p) ** 1.5 * p.log()).sum() / w[labels].sum()
    focal_15 = build_criterion(SINGLE_LABEL, 4, 0.1, "focal", focal_gamma=1.5, class_weights=WEIGHTS)
    assert focal_15(logits, labels).item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_class_weights_must_be_one_per_class():
    with pytest.raises(ClfError, match="^3 class weights for 4 classes; give one weight per class$"):
        build_criterion(SINGLE_LABEL, 4, class_weights=(1.0, 2.0, 3.0))
