"""clf.train.ema: the update rule with its warm-up (by hand on a 2-parameter model), buffers copied, state round
trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clf.train.ema import ModelEma, warmed_decay


def two_parameters(weight: float, bias: float) -> nn.Linear:
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(weight)
        model.bias.fill_(bias)
    return model


def set_to(model: nn.Linear, weight: float, bias: float) -> None:
    with torch.no_grad():
        model.weight.fill_(weight)
        model.bias.fill_(bias)


def values(ema: ModelEma) -> tuple[float, float]:
    return float(ema.module.weight), float(ema.module.bias)


def test_warm_up_of_the_decay():
    assert warmed_decay(0.999, 0) == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    assert warmed_decay(0.999, 1) == pytest.approx(2 / 11)
    assert warmed_decay(0.9, 79) == pytest.approx(80 / 89)  # still below 0.9
    assert warmed_decay(0.9, 80) == 0.9 and warmed_decay(0.9, 10_000) == 0.9  # capped from t = 80 on


def test_update_rule_by_hand_on_two_parameters():
    model = two_parameters(1.0, 2.0)
    ema = ModelEma(model, decay=0.9)
    assert values(ema) == (1.0, 2.0) and ema.updates == 0

    set_to(model, 3.0, 4.0)
    ema.update(model)  # t = 0: decay 0.1 -> 0.1 * old + 0.9 * new
    assert values(ema) == pytest.approx((0.1 * 1 + 0.9 * 3, 0.1 * 2 + 0.9 * 4))  # (2.8, 3.8)
    assert ema.updates == 1

    set_to(model, 5.0, 0.0)
    ema.update(model)  # t = 1: decay 2/11
    assert values(ema) == pytest.approx((2 / 11 * 2.8 + 9 / 11 * 5, 2 / 11 * 3.8))  # (4.6, 0.6909...)

    ema.updates = 500  # past the warm-up: the decay itself
    set_to(model, 10.0, 10.0)
    before = values(ema)
    ema.update(model)
    assert values(ema) == pytest.approx((0.9 * before[0] + 1.0, 0.9 * before[1] + 1.0))


def test_the_copy_is_separate_frozen_and_in_eval_mode():
    model = two_parameters(1.0, 2.0)
    ema = ModelEma(model, decay=0.5)
    set_to(model, 7.0, 7.0)
    assert values(ema) == (1.0, 2.0)  # the model's changes reach the average only through update()
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())


def test_buffers_are_copied_not_averaged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    ema = ModelEma(model, decay=0.99)
    model.train()
    for _ in range(3):
        model(torch.randn(2, 3, 8, 8) * 5 + 2)  # moves the running statistics
    ema.update(model)
    bn, ema_bn = model[1], ema.module[1]
    assert torch.equal(ema_bn.running_mean, bn.running_mean) and torch.equal(ema_bn.running_var, bn.running_var)
    assert int(ema_bn.num_batches_tracked) == 3
    with torch.no_grad():
        bn.weight.fill_(3.0)
    ema.update(model)  # t = 1: decay 2/11; parameters are averaged, buffers copied
    assert torch.allclose(ema_bn.weight, torch.full((4,), 2 / 11 * 1.0 + 9 / 11 * 3.0))


def test_state_round_trip_continues_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    straight = ModelEma(model, decay=0.95)
    steps = [torch.randn(3, 4) for _ in range(6)]

    def step(ema: ModelEma, i: int) -> None:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(steps[i].mean() * 0.1)
        ema.update(model)

    snapshot_model = {k: v.clone() for k, v in model.state_dict().items()}
    for i in range(3):
        step(straight, i)
    saved = {k: v.clone() for k, v in straight.state_dict().items()}
    resumed = ModelEma(model, decay=0.95)
    resumed.load(saved, straight.updates)
    for i in range(3, 6):
        step(straight, i)
    model.load_state_dict(snapshot_model)
    for i in range(3):  # replay the model's first steps (the averages are not touched)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(steps[i].mean() * 0.1)
    for i in range(3, 6):
        step(resumed, i)
    assert resumed.updates == straight.updates == 6
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
