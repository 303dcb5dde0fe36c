"""clf.train.loop: one training epoch and one evaluation pass on a tiny model and hand-made batches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clf.train.loop import EpochMetrics, evaluate, train_one_epoch
from clf.train.runtime import Runtime

CPU = Runtime(torch.device("cpu"), None)


def batches(n_batches: int = 3, size: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(size, 3, 4, 4, generator=generator), torch.randint(0, 2, (size,), generator=generator))
            for _ in range(n_batches)]


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(48, 2))


def parts(net: nn.Module, lr: float = 0.1):
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return nn.CrossEntropyLoss(), optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=False)


def test_train_one_epoch_steps_once_per_batch_and_reports_means():
    net, data = model(), batches()
    criterion, optimizer, scheduler, scaler = parts(net)
    before = [p.clone() for p in net.parameters()]
    metrics = train_one_epoch(net, data, criterion, optimizer, scheduler, scaler, CPU)
    assert scheduler.last_epoch == 3 and net.training
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert metrics.images == 12 and 0.0 <= metrics.accuracy <= 1.0 and metrics.loss > 0


def test_the_epoch_loss_is_the_mean_of_the_batch_losses_weighted_by_size():
    net, data = model(), batches()
    criterion, optimizer, scheduler, scaler = parts(net, lr=0.0)  # lr 0: the model does not change
    with torch.no_grad():
        expected = sum(float(criterion(net(x), y)) * len(y) for x, y in data) / 12
    metrics = train_one_epoch(net, data, criterion, optimizer, scheduler, scaler, CPU)
    assert metrics.loss == pytest.approx(expected)


def test_progress_is_reported_after_the_first_and_the_last_batch():
    net, data = model(), batches(n_batches=5)
    calls = []
    train_one_epoch(net, data, *parts(net), CPU, on_batch=lambda i, loss, ips: calls.append((i, loss, ips)))
    assert calls[0][0] == 0 and calls[-1][0] == 4
    assert all(loss > 0 and ips > 0 for _, loss, ips in calls)


def test_evaluate_gives_loss_and_accuracy_in_eval_mode():
    net = nn.Sequential(nn.Flatten(), nn.Linear(48, 2), nn.Dropout(0.5))
    data = batches(n_batches=2)
    metrics = evaluate(net, data, nn.CrossEntropyLoss(), CPU)
    assert not net.training  # dropout off: evaluating twice gives the same numbers
    assert evaluate(net, data, nn.CrossEntropyLoss(), CPU) == EpochMetrics(
        metrics.loss, metrics.accuracy, 8, pytest.approx(metrics.seconds, abs=10))
    with torch.no_grad():
        correct = sum(int((net(x).argmax(1) == y).sum()) for x, y in data)
    assert metrics.accuracy == correct / 8 and metrics.images == 8


def test_an_empty_loader_gives_zeros_not_a_division_error():
    net = model()
    assert evaluate(net, [], nn.CrossEntropyLoss(), CPU).images == 0
    metrics = train_one_epoch(net, [], *parts(net), CPU)
    assert (metrics.loss, metrics.accuracy, metrics.images) == (0.0, 0.0, 0)
