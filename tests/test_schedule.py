"""clf.train.schedule: the LR multiplier by hand, optimizer parameter groups, the scheduler's per-step values."""

import io
import itertools
import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from clf.config import TrainConfig
from clf.errors import ClfError
from clf.train.schedule import body_lr_factor, build_optimizer, build_scheduler, lr_factor


def cfg(**kw):
    return TrainConfig(**{"data": "x", **kw})


def test_no_schedule_is_flat():
    c = cfg(scheduler="none", epochs=3)
    assert [lr_factor(s, 10, c) for s in (0, 9, 10, 29, 100)] == [1.0] * 5


def test_warmup_is_linear_then_schedule_starts_at_one():
    c = cfg(scheduler="none", warmup_epochs=2, epochs=5)  # 2 epochs x 4 steps = 8 warmup steps
    assert [lr_factor(s, 4, c) for s in range(9)] == [1 / 8, 2 / 8, 3 / 8, 4 / 8, 5 / 8, 6 / 8, 7 / 8, 1.0, 1.0]
    cos = cfg(scheduler="cosine", warmup_epochs=1, epochs=3)
    assert lr_factor(3, 4, cos) == 1.0  # last warmup step
    assert lr_factor(4, 4, cos) == 1.0  # first cosine step: progress 0


def test_the_default_warmup_is_30_percent_of_the_epochs_rounded_down():
    """OneCycle's shape by default (README, "Defaults"); an explicit --warmup-epochs (0 included) is kept."""
    assert [cfg(epochs=e).warmup_epochs for e in (1, 3, 4, 10, 30, 45)] == [0, 0, 1, 3, 9, 13]
    assert cfg(epochs=30, warmup_epochs=0).warmup_epochs == 0
    assert cfg(epochs=30, warmup_epochs=2).warmup_epochs == 2
    c = cfg(epochs=30)  # the LR rises for 9 epochs, then the cosine starts from the full rate
    assert lr_factor(8 * 10, 10, c) == pytest.approx(81 / 90) and lr_factor(90, 10, c) == 1.0


def test_a_resolved_warmup_survives_a_config_round_trip_and_a_longer_resume():
    """Recorded resolved: raising --epochs on --resume does not move the warm-up of the steps already taken."""
    saved = TrainConfig.from_saved(cfg(epochs=30).to_dict())
    assert saved.warmup_epochs == 9
    assert replace(saved, epochs=60).warmup_epochs == 9


def test_cosine_values():
    c = cfg(scheduler="cosine", epochs=2)  # 2 x 10 = 20 steps, no warmup
    assert lr_factor(0, 10, c) == 1.0
    assert lr_factor(10, 10, c) == pytest.approx(0.01 + 0.99 * 0.5)  # half way: cos(pi/2) = 0
    assert lr_factor(5, 10, c) == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(20, 10, c) == pytest.approx(0.01)  # the floor, 1 % of the base LR
    assert lr_factor(1000, 10, c) == pytest.approx(0.01)  # never below it
    with_warmup = cfg(scheduler="cosine", epochs=3, warmup_epochs=1)  # cosine over steps 10..30
    assert lr_factor(20, 10, with_warmup) == pytest.approx(0.01 + 0.99 * 0.5)


def test_cosine_is_monotone_after_warmup():
    c = cfg(scheduler="cosine", epochs=4, warmup_epochs=1)
    values = [lr_factor(s, 5, c) for s in range(5, 20)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_step_decays_at_half_and_three_quarters():
    c = cfg(scheduler="step", epochs=8, warmup_epochs=0)  # epochs 0-3: 1, 4-5: 0.1, 6-7: 0.01 (0-based)
    per_epoch = [lr_factor(e * 3, 3, c) for e in range(8)]
    assert per_epoch == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])
    assert lr_factor(11, 3, c) == 1.0 and lr_factor(12, 3, c) == pytest.approx(0.1)  # changes on the epoch boundary


def test_raising_epochs_stretches_the_schedule():
    """A pure function of (step, config): the resumed run with more epochs continues the longer schedule."""
    short, long = cfg(scheduler="cosine", epochs=2), cfg(scheduler="cosine", epochs=4, warmup_epochs=0)
    assert lr_factor(20, 10, short) == pytest.approx(0.01)
    assert lr_factor(20, 10, long) == pytest.approx(0.01 + 0.99 * 0.5)


def test_unknown_scheduler_is_refused_by_the_config():
    with pytest.raises(ClfError, match=r"^--scheduler must be one of cosine, step, none, got 'exp'$"):
        cfg(scheduler="exp")


def _model():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))


@pytest.mark.parametrize("name, kind", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)])
def test_optimizer_groups_skip_decay_on_biases_and_norms(name, kind):
    model = _model()
    opt = build_optimizer(model, cfg(optimizer=name, lr=0.5, weight_decay=0.1))
    assert isinstance(opt, kind)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert len(no_decay["params"]) == 4  # conv bias, BN weight + bias, linear bias
    assert all(g["lr"] == 0.5 for g in opt.param_groups)
    if name == "sgd":
        assert decay["momentum"] == 0.9 and decay["nesterov"]


def test_scheduler_steps_per_batch_through_the_factor():
    c = cfg(scheduler="cosine", epochs=2, warmup_epochs=1, lr=1.0, optimizer="sgd")
    opt = build_optimizer(_model(), c)
    sched = build_scheduler(opt, c, steps_per_epoch=3)
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([lr_factor(s, 3, c) for s in range(6)])
    assert seen[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    buffer = io.BytesIO()  # plain data: a weights_only checkpoint can hold it
    torch.save(sched.state_dict(), buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["last_epoch"] == 6


# ---------------------------------------------------------------- fine-tuning: --layer-decay and --freeze-epochs


def _group_lrs(opt: torch.optim.Optimizer) -> dict[int, set[float]]:
    lrs: dict[int, set[float]] = {}
    for group in opt.param_groups:
        lrs.setdefault(group["layer"], set()).add(group["lr"])
    return lrs


@pytest.mark.parametrize("arch, layers", [("cnn", 5), ("alexnet", 6), ("resnet18", 10)])
def test_layer_decay_gives_each_earlier_layer_d_times_the_next_ones_lr(arch, layers):
    from clf.models.registry import create_model

    c = cfg(arch=arch, lr=0.4, layer_decay=0.5, img_size=64)
    opt = build_optimizer(create_model(arch, 3, img_size=64), c)
    lrs = _group_lrs(opt)
    assert sorted(lrs) == list(range(layers))
    assert all(len(values) == 1 for values in lrs.values())  # decayed and undecayed groups of a layer agree
    by_layer = [lrs[layer].pop() for layer in range(layers)]
    assert by_layer[-1] == 0.4  # the head: the base LR
    assert [a / b for a, b in itertools.pairwise(by_layer)] == pytest.approx([0.5] * (layers - 1), rel=1e-12)
    assert by_layer[0] == 0.4 * 0.5 ** (layers - 1)
    assert [g["head"] for g in opt.param_groups] == [g["layer"] == layers - 1 for g in opt.param_groups]


def test_layer_decay_keeps_no_weight_decay_on_biases_and_norms():
    from clf.models.registry import create_model

    model = create_model("cnn", 3, img_size=32)
    opt = build_optimizer(model, cfg(arch="cnn", layer_decay=0.75, weight_decay=0.05))
    for group in opt.param_groups:
        assert group["weight_decay"] == (0.0 if all(p.ndim <= 1 for p in group["params"]) else 0.05)
        assert len({p.ndim <= 1 for p in group["params"]}) == 1
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_without_fine_tuning_options_the_two_groups_of_earlier_runs_stay():
    from clf.models.registry import create_model

    opt = build_optimizer(create_model("cnn", 3, img_size=32), cfg(arch="cnn"))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert all("layer" not in g and g["lr"] == 3e-3 for g in opt.param_groups)


def test_the_schedule_multiplies_each_groups_own_lr_and_the_frozen_body_gets_zero():
    from clf.models.registry import create_model

    c = cfg(arch="cnn", lr=1.0, layer_decay=0.5, scheduler="cosine", epochs=3, freeze_epochs=1, pretrained_path="w.pt",
            optimizer="sgd")
    opt = build_optimizer(create_model("cnn", 3, img_size=32), c)
    initial = [g["lr"] for g in opt.param_groups]
    sched = build_scheduler(opt, c, steps_per_epoch=2)
    for step in range(6):
        head = lr_factor(step, 2, c)
        expected = [lr * (head if g["head"] or step >= 2 else 0.0) for g, lr in zip(opt.param_groups, initial)]
        assert [g["lr"] for g in opt.param_groups] == expected
        opt.step()
        sched.step()
    assert [body_lr_factor(s, 2, c) for s in range(3)] == [0.0, 0.0, lr_factor(2, 2, c)]
