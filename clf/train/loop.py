"""One training epoch and one evaluation pass: small functions, no bookkeeping beyond their metrics."""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from clf.metrics import score as competition_score
from clf.tasks import SINGLE_LABEL, Task
from clf.train.ema import ModelEma
from clf.train.losses import Criterion
from clf.train.mixing import Mixer
from clf.train.runtime import Runtime

# on_batch(batch_index, mean_loss_so_far, images_per_second): after the first and the last batch, and at most
# every REPORT_EVERY_S in between
BatchCallback = Callable[[int, float, float], None]
REPORT_EVERY_S = 0.2


@dataclass
class EpochMetrics:
    loss: float
    accuracy: float | None  # None for a training epoch on mixed images: their labels are blends, not classes
    images: int
    seconds: float
    metric: float | None = None  # the run's --metric on these images, when it is not accuracy


def _autocast(runtime: Runtime):
    if runtime.amp_dtype is None:
        return nullcontext()
    return torch.autocast(device_type=runtime.device.type, dtype=runtime.amp_dtype)


def _to_device(images: torch.Tensor, labels: torch.Tensor, runtime: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    non_blocking = runtime.cuda  # pinned host memory + async copy overlaps the transfer with compute
    images = images.to(runtime.device, non_blocking=non_blocking)
    if runtime.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(runtime.device, non_blocking=non_blocking)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    runtime: Runtime,
    on_batch: BatchCallback | None = None,
    mixer: Mixer | None = None,
    ema: ModelEma | None = None,
    frozen_norms: Sequence[nn.Module] = (),
) -> EpochMetrics:
    """Train for one pass over `loader`; the scheduler steps once per batch.

    Args:
        criterion: the loss of (logits, target): class labels [B], or the mixer's soft targets [B, C], or a
            multi-label set's multi-hot targets [B, C] (clf.train.losses.Criterion takes each; so does torch's
            CrossEntropyLoss the first two). Its task's decision rule counts the correct predictions.
        mixer: mixes each batch (mixup/CutMix) and gives soft targets, which go to the criterion.
        ema: averaged weights, updated after every optimizer step.
        frozen_norms: BatchNorm layers of a frozen body (--freeze-epochs): kept in eval mode, so that they
            normalise with, and do not update, the running statistics of the weights they came with.

    Returns this process's loss sum / correct / count folded into means (the caller reduces over ranks);
    accuracy is None with a mixer.
    """
    task = task_of(criterion)
    model.train()
    for norm in frozen_norms:
        norm.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=runtime.device)
    correct = torch.zeros((), dtype=torch.int64, device=runtime.device)
    seen = 0
    start = reported = time.perf_counter()
    batches = len(loader) if hasattr(loader, "__len__") else -1
    for index, (images, labels) in enumerate(loader):
        images, labels = _to_device(images, labels, runtime)
        targets = labels
        if mixer is not None:
            images, targets = mixer(images, labels)  # soft targets [B, C]
        with _autocast(runtime):
            logits = model(images)  # [B, C]
            loss = criterion(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if ema is not None:
            ema.update(_unwrapped(model))
        # Accumulate on the device: no host sync per batch (the progress callback syncs only when it is shown).
        loss_sum += loss.detach().double() * labels.shape[0]
        correct += task.correct(logits.detach(), _decided(labels, task, logits.shape[-1])).sum()
        seen += labels.shape[0]
        last = index == batches - 1  # always report the end: the bar reaches 100 %, the rate covers the epoch
        if on_batch is not None and (index == 0 or last or time.perf_counter() - reported >= REPORT_EVERY_S):
            # float() waits for the GPU: doing it every batch would stall the launch queue, so only a few times a
            # second.
            reported = time.perf_counter()
            on_batch(index, float(loss_sum) / seen, seen / (reported - start))
    seconds = time.perf_counter() - start
    accuracy = None if mixer is not None else int(correct) / max(seen, 1)
    return EpochMetrics(float(loss_sum) / max(seen, 1), accuracy, seen, seconds)


def _decided(labels: torch.Tensor, task: Task, classes: int) -> torch.Tensor:
    """What a batch's predictions are judged against: its labels, or a single-label batch's soft targets [B, C]
    (--pseudo-soft; a distilled run's teacher probabilities, its [B, C + 1] targets' first C columns) decided by
    their top class."""
    return labels if task.multilabel or labels.dim() == 1 else labels[:, :classes].argmax(-1)


def task_of(criterion: nn.Module) -> Task:
    """The task whose decision rule counts correct predictions: the criterion's (a plain torch loss: single-label)."""
    return criterion.task if isinstance(criterion, Criterion) else SINGLE_LABEL


def _unwrapped(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel: its parameters in the order the EMA copy has them."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, criterion: nn.Module, runtime: Runtime, metric: str = "accuracy",
             classes: Sequence[str] | None = None) -> EpochMetrics:
    """Mean loss and accuracy (by the criterion's task's decision rule: top-1; multi-label: every class decided
    right at 0.5, an exact match) over `loader` in eval mode, and the competition's `metric` (clf.metrics; computed
    from the task's scores, `classes` naming the columns; multi-label: sigmoid scores against the multi-hot targets)
    when it is not accuracy."""
    task = task_of(criterion)
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    scores: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    start = time.perf_counter()
    for images, labels in loader:
        images, labels = _to_device(images, labels, runtime)
        with _autocast(runtime):
            logits = model(images)
            loss = criterion(logits.float(), labels)
        loss_sum += float(loss) * labels.shape[0]
        correct += int(task.correct(logits, labels).sum())
        seen += labels.shape[0]
        if metric != "accuracy":
            scores.append(task.scores(logits.float().cpu().numpy(), np.float64))
            targets.append(labels.cpu().numpy())
    value = None
    if metric != "accuracy" and seen:
        value = competition_score(metric, np.concatenate(targets), np.concatenate(scores),
                                  list(classes) if classes is not None else None)
    return EpochMetrics(loss_sum / max(seen, 1), correct / max(seen, 1), seen, time.perf_counter() - start, value)
