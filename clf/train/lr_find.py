"""`clf lr-find`: the LR range test (Smith 2015; fastai's lr_find) on the data pipeline and model `clf train` builds.

The learning rate grows exponentially from `start_lr` to `end_lr` over `steps` optimizer steps; the loss is smoothed
with a bias-corrected EMA, and the sweep stops once the smoothed loss exceeds DIVERGENCE times the best one. The
suggestion is fastai's "valley": the middle of the longest stretch of steadily falling loss. Nothing is saved but the
plot: no run folder, no checkpoint.
"""

from __future__ import annotations

import io
import itertools
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from clf.atomic import atomic_write_bytes
from clf.config import TrainConfig, auto_batch_size
from clf.errors import ClfError, IncompleteError
from clf.ownership import check_replaceable_file, head_holds
from clf.tasks import get_task
from clf.train import runtime as rt
from clf.train.build import (augment_pipeline, build_loaders, build_model, load_training_set, preprocess_for,
                             pretrained_weights, split_training_set)
from clf.train.fit import with_class_weights
from clf.train.losses import build_criterion
from clf.train.schedule import build_optimizer

logger = logging.getLogger(__name__)

DEFAULT_START_LR, DEFAULT_END_LR, DEFAULT_STEPS = 1e-7, 10.0, 100
SMOOTHING = 0.98  # the EMA's beta, as fastai's
DIVERGENCE = 4.0  # stop once the smoothed loss is this many times the best
PLOT_SOFTWARE = "clf lr-find"  # in the PNG's Software text chunk: the mark of a plot clf may overwrite


@dataclass(frozen=True)
class LrFindResult:
    lrs: list[float]  # the LR of each step taken
    losses: list[float]  # the smoothed loss after each step
    suggestion: float  # fastai's valley
    diverged: bool  # the sweep stopped before end_lr
    plot: Path


def check_sweep(start_lr: float, end_lr: float, steps: int) -> None:
    """Raises ClfError (one line) for a sweep that cannot run."""
    if not (0 < start_lr < end_lr) or not math.isfinite(end_lr):
        raise ClfError(f"--start-lr and --end-lr must satisfy 0 < start < end, got {start_lr:g} and {end_lr:g}")
    if steps < 5:
        raise ClfError(f"--steps must be >= 5 (the suggestion needs a curve), got {steps}")


def check_plot_output(path: str | Path) -> Path:
    """A writable file path, and not a file clf did not write (clf replaces only its own plots)."""
    return check_replaceable_file(path, is_clf_plot, "exists and is not a plot clf lr-find wrote; clf replaces only "
                                  "its own: choose another -o or remove the file")


def is_clf_plot(path: Path) -> bool:
    return head_holds(path, PLOT_SOFTWARE.encode(), start=b"\x89PNG")


def sweep_lrs(start_lr: float, end_lr: float, steps: int) -> list[float]:
    """The exponential sweep: step i's LR is start * (end / start) ** (i / (steps - 1))."""
    return [start_lr * (end_lr / start_lr) ** (i / (steps - 1)) for i in range(steps)]


def valley(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """fastai's valley: in the longest run of decreasing losses (a longest decreasing subsequence), the point 2/3 of
    the way down it, where the loss falls fastest before it flattens."""
    n = len(losses)
    lengths = [1] * n
    start = end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lengths[i] < lengths[j] + 1:
                lengths[i] = lengths[j] + 1
        if lengths[end] < lengths[i]:
            end, start = i, i - lengths[i]
    third = (end - start) / 3
    return lrs[min(n - 1, start + int(third) + int(third / 2))]


def lr_find(cfg: TrainConfig, output: str | Path, start_lr: float = DEFAULT_START_LR, end_lr: float = DEFAULT_END_LR,
            steps: int = DEFAULT_STEPS) -> LrFindResult:
    """The LR range test of `cfg`'s data and model; writes the plot to `output` (atomically).

    Raises:
        ClfError: bad sweep settings, an output clf may not write, or the bad inputs of `clf train`.
        IncompleteError: the loss was not finite from the first step (nothing to suggest).
    """
    check_sweep(start_lr, end_lr, steps)
    output = check_plot_output(output)
    with rt.process_group(cfg.device, cfg.amp) as runtime:
        if runtime.distributed:
            raise ClfError("clf lr-find runs in one process; start it without torchrun")
        lrs, losses, diverged = _sweep(cfg, runtime, sweep_lrs(start_lr, end_lr, steps))
    if len(losses) < 2:
        raise IncompleteError(f"the loss was not finite at --start-lr {start_lr:g}; try a lower --start-lr")
    suggestion = valley(lrs, losses)
    write_plot(lrs, losses, suggestion, output, title=f"{cfg.arch}, {cfg.img_size}px")
    return LrFindResult(lrs, losses, suggestion, diverged, output)


def _sweep(cfg: TrainConfig, runtime: rt.Runtime, lrs: list[float]) -> tuple[list[float], list[float], bool]:
    """Train one step at each LR on `clf train`'s loaders and model; (LRs taken, smoothed losses, diverged)."""
    torch.manual_seed(cfg.seed)
    labelled = load_training_set(cfg)
    split = split_training_set(labelled, cfg)
    cfg = with_class_weights(cfg, None, split)
    cfg, weights = pretrained_weights(cfg)
    model, _ = build_model(cfg, len(labelled.classes), runtime, weights=weights, classes=list(labelled.classes))
    if cfg.batch_size is None:
        cfg = replace(cfg, batch_size=auto_batch_size(len(split.train.paths)))
    pre = preprocess_for(cfg)
    train_loader, _, _ = build_loaders(split, cfg, pre, runtime, augment_pipeline(cfg))
    optimizer = build_optimizer(model, cfg)
    criterion = build_criterion(get_task(cfg.task), len(labelled.classes), cfg.label_smoothing, cfg.loss,
                                focal_gamma=cfg.focal_gamma, class_weights=cfg.resolved_class_weights)
    model.train()
    taken, smoothed, average, best = [], [], 0.0, math.inf
    for step, (lr, (images, targets)) in enumerate(zip(lrs, _endless(train_loader))):
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = _train_step(model, criterion, optimizer, images.to(runtime.device), targets.to(runtime.device))
        if not math.isfinite(loss):
            return taken, smoothed, True
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        value = average / (1 - SMOOTHING ** (step + 1))  # bias-corrected: the first steps are not pulled to 0
        taken.append(lr)
        smoothed.append(value)
        best = min(best, value)
        if value > DIVERGENCE * best:
            logger.info("lr-find: the loss diverged at lr %.3g (step %d); sweep stopped", lr, step + 1)
            return taken, smoothed, True
    return taken, smoothed, False


def _endless(loader: torch.utils.data.DataLoader) -> Iterator:
    """The loader's batches, epoch after epoch (a sweep may be longer than one epoch)."""
    for _ in itertools.count():
        yield from loader


def _train_step(model: torch.nn.Module, criterion: torch.nn.Module, optimizer: torch.optim.Optimizer,
                images: torch.Tensor, targets: torch.Tensor) -> float:
    optimizer.zero_grad(set_to_none=True)
    loss = criterion(model(images), targets)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def write_plot(lrs: Sequence[float], losses: Sequence[float], suggestion: float, path: Path, title: str = "") -> None:
    """The smoothed loss against the LR (log axis), the suggestion marked; PNG, atomically, marked as clf's."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4), dpi=100)
    axis = figure.subplots()
    axis.plot(lrs, losses)
    axis.axvline(suggestion, color="tab:red", linestyle="--", label=f"valley: {suggestion:.2e}")
    axis.set_xscale("log")
    axis.set_xlabel("learning rate")
    axis.set_ylabel("smoothed training loss")
    axis.grid(alpha=0.3)
    axis.legend()
    if title:
        axis.set_title(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": PLOT_SOFTWARE})
    atomic_write_bytes(path, buffer.getvalue())
