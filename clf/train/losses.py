"""The losses training can use: a registry of name -> builder, and the criterion of a run built from its task.

    LOSSES["cross_entropy"]              hard labels [B], with --label-smoothing (torch's rule)
    LOSSES["soft_target_cross_entropy"]  soft targets [B, C] (mixup/CutMix: clf.train.mixing smooths and mixes them)
    LOSSES["focal"]                      hard labels [B]: cross-entropy weighted by (1 - p)^2 per class term

A builder takes the run's `LossSettings` and returns a loss function (logits, target) -> scalar tensor. The trainer
builds its criterion only through `build_criterion`: its task (clf.tasks) names the loss for hard labels and the one
for mixed soft targets, and `Criterion` picks between them by the target's shape, so the mixup path goes through
the same criterion as every other batch. Adding a loss (focal, asymmetric, ...): one builder here and one line in
LOSSES (CONTRIBUTING.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clf.errors import ClfError
from clf.tasks import Task

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LossSettings:
    """What a loss may depend on: the class count and the run's label smoothing."""

    num_classes: int
    label_smoothing: float = 0.0


def cross_entropy(settings: LossSettings) -> LossFn:
    """Cross-entropy on hard labels [B], label smoothing as torch applies it."""
    return nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of sum_c -t_c * log_softmax(logits)_c, computed in fp32 (under autocast too)."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def soft_target(settings: LossSettings) -> LossFn:
    """Cross-entropy on soft targets [B, C] that are already smoothed (clf.train.mixing.mix_targets)."""
    return soft_target_cross_entropy


def focal(settings: LossSettings, gamma: float = 2.0) -> LossFn:
    """Focal loss (Lin et al., 2017, gamma 2 as there): each class term of the cross-entropy weighted by
    (1 - p)^gamma, so that examples the model already gets right weigh less than the hard ones. Label smoothing
    spreads the target as it does for cross-entropy; gamma 0 is cross-entropy."""

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=-1)
        targets = F.one_hot(labels, settings.num_classes).float()
        targets = targets * (1.0 - settings.label_smoothing) + settings.label_smoothing / settings.num_classes
        return torch.sum(-targets * (1.0 - log_p.exp()).pow(gamma) * log_p, dim=-1).mean()

    return loss


LOSSES: dict[str, Callable[[LossSettings], LossFn]] = {
    "cross_entropy": cross_entropy,
    "soft_target_cross_entropy": soft_target,
    "focal": focal,
}
# The losses that take soft targets [B, C] only: the task's mixed_loss, never a --loss on class labels.
SOFT_TARGET_LOSSES = frozenset({"soft_target_cross_entropy"})


def check_loss_option(name: str | None) -> None:
    """--loss NAME names a registered loss on class labels (None: the task's own).

    Raises:
        ClfError: naming the flag and the losses it takes.
    """
    choices = [loss for loss in LOSSES if loss not in SOFT_TARGET_LOSSES]
    if name is not None and name not in choices:
        raise ClfError(f"--loss {name!r}: unknown; choose one of {', '.join(choices)}")


def build_loss(name: str, settings: LossSettings) -> LossFn:
    """The loss registered as `name`.

    Raises:
        ClfError: an unknown name, listing the known ones.
    """
    if name not in LOSSES:
        raise ClfError(f"loss {name!r}: unknown; choose one of {', '.join(LOSSES)}")
    return LOSSES[name](settings)


class Criterion(nn.Module):
    """A run's training loss: `hard` on class labels [B], `mixed` on soft targets [B, C] (a mixed batch), and the
    `task` they train (whose decision rule the epoch loop counts correct predictions with)."""

    def __init__(self, task: Task, hard: LossFn, mixed: LossFn) -> None:
        super().__init__()
        self.task, self.hard, self.mixed = task, hard, mixed

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.mixed(logits, target) if target.dim() == logits.dim() else self.hard(logits, target)


def build_criterion(task: Task, num_classes: int, label_smoothing: float = 0.0, loss: str | None = None) -> Criterion:
    """The criterion of a run of `task`: its loss for hard labels (`loss`, default the task's) and its loss for
    mixed soft targets.

    Raises:
        ClfError: an unknown loss name.
    """
    settings = LossSettings(num_classes, label_smoothing)
    return Criterion(task, build_loss(loss or task.loss, settings), build_loss(task.mixed_loss, settings))
