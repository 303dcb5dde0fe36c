"""The losses training can use: a registry of name -> builder, and the criterion of a run built from its task.

    LOSSES["cross_entropy"]              hard labels [B], with --label-smoothing (torch's rule)
    LOSSES["soft_target_cross_entropy"]  soft targets [B, C] (mixup/CutMix: clf.train.mixing smooths and mixes them)
    LOSSES["focal"]                      hard labels [B]: cross-entropy weighted by (1 - p)^gamma per class term
    LOSSES["bce"]                        multi-label: multi-hot (or mixed) float targets [B, C], binary
                                         cross-entropy on each class's logit (sigmoid), with --label-smoothing
    LOSSES["asl"]                        multi-label: the asymmetric loss (Ridnik et al., 2021), same targets

Class weights (--class-weights, resolved by clf.train.class_weights) weight each class term of every single-label
loss; the batch's loss is then the weighted sum divided by the batch's sum of weights (torch's rule for `weight=`),
so that the weights' scale does not matter, only their ratios. Without weights every loss computes exactly what it
did before weights existed (the same operations, bit for bit). For the multi-label losses the weights are each
class's positive weight (torch's BCE `pos_weight`: the positive term of class c counts w_c times).

The multi-label losses take float targets [B, C] (0/1, or blends of them after mixup/CutMix) and smooth them
themselves, y * (1 - eps) + eps / 2 (the mixer leaves multi-hot targets unsmoothed), so one loss serves hard and
mixed batches alike; each is the mean over the B * C (image, class) terms, computed in fp32.

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

from clf.choices import TASK_LOSSES
from clf.errors import ClfError
from clf.tasks import Task

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LossSettings:
    """What a loss may depend on: the class count, the run's label smoothing, focal's gamma and the class weights
    (None: every class weighs 1)."""

    num_classes: int
    label_smoothing: float = 0.0
    focal_gamma: float = 2.0
    class_weights: tuple[float, ...] | None = None

    def weight_tensor(self) -> ClassWeights | None:
        """The class weights as float32 [C] on whichever device asks (None without weights)."""
        return None if self.class_weights is None else ClassWeights(self.class_weights)


class ClassWeights:
    """Class weights, copied once to each device the logits come on: a host-to-GPU copy every batch would wait for
    the GPU (a sync per step)."""

    def __init__(self, weights: tuple[float, ...]) -> None:
        self.cpu = torch.tensor(weights, dtype=torch.float32)
        self.copies: dict[torch.device, torch.Tensor] = {self.cpu.device: self.cpu}

    def on(self, device: torch.device) -> torch.Tensor:
        if device not in self.copies:
            self.copies[device] = self.cpu.to(device)
        return self.copies[device]


def cross_entropy(settings: LossSettings) -> LossFn:
    """Cross-entropy on hard labels [B], label smoothing and class weights as torch applies them (a weighted mean:
    divided by the batch's sum of its labels' weights)."""
    weights, smoothing = settings.weight_tensor(), settings.label_smoothing
    if weights is None:
        return nn.CrossEntropyLoss(label_smoothing=smoothing)
    # functional, not a module holding the weights: they follow the logits to whichever device the run is on
    return lambda logits, labels: F.cross_entropy(logits.float(), labels, weight=weights.on(logits.device),
                                                  label_smoothing=smoothing)


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of sum_c -t_c * log_softmax(logits)_c, computed in fp32 (under autocast too)."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def weighted_soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                                       weights: torch.Tensor) -> torch.Tensor:
    """sum_i sum_c -w_c t_ic log p_ic divided by sum_i sum_c w_c t_ic, in fp32: for one-hot targets exactly torch's
    weighted cross-entropy (whose mean divides by the sum of the labels' weights); a mixed row weighs as the blend
    of its classes' weights."""
    weighted = targets.float() * weights
    return torch.sum(-weighted * F.log_softmax(logits.float(), dim=-1)) / weighted.sum()


def soft_target(settings: LossSettings) -> LossFn:
    """Cross-entropy on soft targets [B, C] that are already smoothed (clf.train.mixing.mix_targets); with class
    weights, each class term weighted (weighted_soft_target_cross_entropy)."""
    weights = settings.weight_tensor()
    if weights is None:
        return soft_target_cross_entropy
    return lambda logits, targets: weighted_soft_target_cross_entropy(logits, targets, weights.on(logits.device))


def focal(settings: LossSettings) -> LossFn:
    """Focal loss (Lin et al., 2017, gamma 2 as there; --focal-gamma): each class term of the cross-entropy weighted
    by (1 - p)^gamma, so that examples the model already gets right weigh less than the hard ones. Label smoothing
    spreads the target as it does for cross-entropy; gamma 0 is cross-entropy. With class weights each class term
    is also weighted by w_c and the batch's sum is divided by the sum of its labels' weights (torch's rule: gamma 0
    is then torch's weighted, smoothed cross-entropy)."""
    gamma, weights = settings.focal_gamma, settings.weight_tensor()

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=-1)
        targets = F.one_hot(labels, settings.num_classes).float()
        targets = targets * (1.0 - settings.label_smoothing) + settings.label_smoothing / settings.num_classes
        terms = -targets * (1.0 - log_p.exp()).pow(gamma) * log_p
        if weights is None:
            return torch.sum(terms, dim=-1).mean()
        on_device = weights.on(logits.device)
        return torch.sum(terms * on_device) / on_device[labels].sum()

    return loss


def smoothed_multi_hot(targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Multi-label label smoothing: y * (1 - eps) + eps / 2 (each class's target pulled towards 1/2), fp32."""
    targets = targets.float()
    return targets if smoothing == 0 else targets * (1.0 - smoothing) + smoothing / 2


def bce(settings: LossSettings) -> LossFn:
    """Binary cross-entropy with logits on float targets [B, C], smoothed (smoothed_multi_hot), the mean over every
    (image, class); class weights are the per-class pos_weight."""
    weights, smoothing = settings.weight_tensor(), settings.label_smoothing

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        pos_weight = None if weights is None else weights.on(logits.device)
        return F.binary_cross_entropy_with_logits(logits.float(), smoothed_multi_hot(targets, smoothing),
                                                  pos_weight=pos_weight)

    return loss


ASL_GAMMA_NEG, ASL_GAMMA_POS, ASL_CLIP = 4.0, 0.0, 0.05  # Ridnik et al. (2021), their defaults for multi-label
ASL_EPS = 1e-8  # the log's floor (the paper's implementation)


def asymmetric_loss(logits: torch.Tensor, targets: torch.Tensor, gamma_neg: float = ASL_GAMMA_NEG,
                    gamma_pos: float = ASL_GAMMA_POS, clip: float = ASL_CLIP,
                    pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """The asymmetric loss, mean over every (image, class), in fp32:

        p = sigmoid(x), p_m = max(p - clip, 0)   (probability shifting: easy negatives below `clip` cost nothing)
        L = -[ y (1 - p)^gamma_pos log(p) + (1 - y) p_m^gamma_neg log(1 - p_m) ]

    For soft targets y in [0, 1] both terms are weighted by y and 1 - y (as in the authors' implementation, whose
    focusing weight is (1 - p_t)^(gamma_pos y + gamma_neg (1 - y)) with p_t = p y + (1 - p_m)(1 - y): equal to the
    above for 0/1 targets). pos_weight [C] multiplies the positive term per class."""
    logits, targets = logits.float(), targets.float()
    p = torch.sigmoid(logits)
    p_neg = (p - clip).clamp(min=0) if clip > 0 else p  # the shifted probability of a negative
    positive = torch.log(p.clamp(min=ASL_EPS)) * (1 - p).pow(gamma_pos)
    negative = torch.log((1 - p_neg).clamp(min=ASL_EPS)) * p_neg.pow(gamma_neg)
    if pos_weight is not None:
        positive = positive * pos_weight
    return -(targets * positive + (1 - targets) * negative).mean()


def asl(settings: LossSettings) -> LossFn:
    """The asymmetric loss (asymmetric_loss: gamma_neg 4, gamma_pos 0, clip 0.05) on smoothed float targets
    [B, C]; class weights are the per-class weight of the positive term."""
    weights, smoothing = settings.weight_tensor(), settings.label_smoothing

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        pos_weight = None if weights is None else weights.on(logits.device)
        return asymmetric_loss(logits, smoothed_multi_hot(targets, smoothing), pos_weight=pos_weight)

    return loss


LOSSES: dict[str, Callable[[LossSettings], LossFn]] = {
    "cross_entropy": cross_entropy,
    "soft_target_cross_entropy": soft_target,
    "focal": focal,
    "bce": bce,
    "asl": asl,
}
# The losses that take soft targets [B, C] only: the task's mixed_loss, never a --loss on class labels.
SOFT_TARGET_LOSSES = frozenset({"soft_target_cross_entropy"})
assert {name for names in TASK_LOSSES.values() for name in names} == set(LOSSES) - SOFT_TARGET_LOSSES


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
    `task` they train (whose decision rule the epoch loop counts correct predictions with). A multi-label task's
    targets are [B, C] floats whether mixed or not: its one loss takes both (`hard`, the run's --loss)."""

    def __init__(self, task: Task, hard: LossFn, mixed: LossFn) -> None:
        super().__init__()
        self.task, self.hard, self.mixed = task, hard, mixed

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.task.multilabel or target.dim() != logits.dim():
            return self.hard(logits, target)
        return self.mixed(logits, target)


def build_criterion(task: Task, num_classes: int, label_smoothing: float = 0.0, loss: str | None = None, *,
                    focal_gamma: float | None = None, class_weights: tuple[float, ...] | None = None) -> Criterion:
    """The criterion of a run of `task`: its loss for hard labels (`loss`, default the task's) and its loss for
    mixed soft targets, both with the class weights (None: unweighted). A multi-label task trains mixed batches
    with the same loss (`loss`: bce or asl take float targets).

    Args:
        focal_gamma: focal's gamma (None: focal's default, 2).

    Raises:
        ClfError: an unknown loss name, or class weights that are not one per class.
    """
    if class_weights is not None and len(class_weights) != num_classes:
        raise ClfError(f"{len(class_weights)} class weights for {num_classes} classes; give one weight per class")
    gamma = LossSettings.focal_gamma if focal_gamma is None else focal_gamma
    weights = None if class_weights is None else tuple(class_weights)
    settings = LossSettings(num_classes, label_smoothing, gamma, weights)
    hard = build_loss(loss or task.loss, settings)
    return Criterion(task, hard, hard if task.multilabel else build_loss(task.mixed_loss, settings))
