"""Mixup and CutMix on a batch and their soft targets (label smoothing composed); their loss is in clf.train.losses.

Every draw comes from torch's global generator, whose state last.pt saves: a resumed run mixes exactly as an
uninterrupted one. The partner of image i is image B-1-i (the batch flipped, as timm does): the loader already
shuffles, so a flip pairs random images without a randperm per batch, and the pairing needs no extra draw.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from clf.config import TrainConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Box:
    """A CutMix box in pixel rows [top, bottom) and columns [left, right)."""

    top: int
    bottom: int
    left: int
    right: int

    def area(self) -> int:
        return (self.bottom - self.top) * (self.right - self.left)


def smoothed_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """[B] int labels -> [B, C] targets: 1 - s + s/C on the label, s/C elsewhere (torch's label_smoothing rule)."""
    off = smoothing / num_classes
    targets = torch.full((labels.shape[0], num_classes), off, device=labels.device, dtype=torch.float32)
    return targets.scatter_(1, labels.long().unsqueeze(1), 1.0 - smoothing + off)


def mix_targets(labels: torch.Tensor, num_classes: int, lam: float, smoothing: float = 0.0) -> torch.Tensor:
    """lam * smooth(onehot(y)) + (1 - lam) * smooth(onehot(y flipped)); each row sums to 1 (timm's mixup_target)."""
    targets = smoothed_one_hot(labels, num_classes, smoothing)
    return targets * lam + targets.flip(0) * (1.0 - lam)


def mix_multi_hot(targets: torch.Tensor, lam: float) -> torch.Tensor:
    """lam * t + (1 - lam) * t flipped, for multi-hot targets [B, C] (multi-label: each class's target is the share
    of the picture that shows the image holding it). Unsmoothed: the multi-label losses smooth their targets."""
    targets = targets.float()
    return targets * lam + targets.flip(0) * (1.0 - lam)


def cutmix_box(height: int, width: int, lam: float, centre: tuple[int, int]) -> Box:
    """A box of area about (1 - lam) * H * W centred at `centre` (row, col), clipped to the image (timm's rand_bbox)."""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    row, col = centre
    return Box(
        top=min(max(row - cut_h // 2, 0), height),
        bottom=min(max(row + cut_h // 2, 0), height),
        left=min(max(col - cut_w // 2, 0), width),
        right=min(max(col + cut_w // 2, 0), width),
    )


def box_lam(box: Box, height: int, width: int) -> float:
    """The share of each image that is still its own after pasting `box` (lam corrected for clipping)."""
    return 1.0 - box.area() / float(height * width)


def mixup_images(images: torch.Tensor, lam: float) -> torch.Tensor:
    """lam * x + (1 - lam) * x flipped along the batch."""
    return images * lam + images.flip(0) * (1.0 - lam)


def cutmix_images(images: torch.Tensor, box: Box) -> torch.Tensor:
    """x with `box` pasted from the flipped batch ([B, C, H, W]; a new tensor, the input is left as it was)."""
    mixed = images.clone()
    mixed[:, :, box.top:box.bottom, box.left:box.right] = images.flip(0)[:, :, box.top:box.bottom, box.left:box.right]
    return mixed


class Mixer:
    """Mixes a batch per TrainConfig's mixup/cutmix/mix_prob/mix_switch and returns soft targets.

    Args:
        mixup, cutmix: Beta(alpha, alpha) parameters; 0 turns that kind off.
        prob: probability that a batch is mixed at all.
        switch: probability of CutMix rather than mixup when both are on.
        num_classes: target width.
        smoothing: label smoothing applied to each one-hot before mixing.
    """

    def __init__(self, mixup: float, cutmix: float, prob: float, switch: float, num_classes: int,
                 smoothing: float = 0.0) -> None:
        self.mixup, self.cutmix, self.prob, self.switch = mixup, cutmix, prob, switch
        self.num_classes, self.smoothing = num_classes, smoothing

    @classmethod
    def from_config(cls, cfg: TrainConfig, num_classes: int) -> Mixer | None:
        """The run's mixer, or None when neither --mixup nor --cutmix is on (plain hard-label training)."""
        if cfg.mixup <= 0 and cfg.cutmix <= 0:
            return None
        return cls(cfg.mixup, cfg.cutmix, cfg.mix_prob, cfg.mix_switch, num_classes, cfg.label_smoothing)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """([B, C, H, W] images, [B] labels or multi-hot [B, num_classes] targets) -> (mixed images,
        [B, num_classes] soft targets)."""
        kind = self.draw_kind()
        if kind is None:
            return images, self.targets(labels, 1.0)
        alpha = self.cutmix if kind == "cutmix" else self.mixup
        lam = _beta(alpha)
        if kind == "mixup":
            return mixup_images(images, lam), self.targets(labels, lam)
        height, width = images.shape[-2:]
        centre = (int(torch.randint(height, ())), int(torch.randint(width, ())))
        box = cutmix_box(height, width, lam, centre)
        lam = box_lam(box, height, width)
        return cutmix_images(images, box), self.targets(labels, lam)

    def targets(self, labels: torch.Tensor, lam: float) -> torch.Tensor:
        """The mixed targets: of class labels [B], smoothed one-hots mixed; of multi-hot targets [B, C], the targets
        mixed as they are (mix_multi_hot)."""
        if labels.dim() == 2:
            return mix_multi_hot(labels, lam)
        return mix_targets(labels, self.num_classes, lam, self.smoothing)

    def draw_kind(self) -> str | None:
        """"mixup", "cutmix" or None (this batch is not mixed), from the global torch generator."""
        if self.prob < 1.0 and float(torch.rand(())) >= self.prob:
            return None
        if self.mixup > 0 and self.cutmix > 0:
            return "cutmix" if float(torch.rand(())) < self.switch else "mixup"
        return "cutmix" if self.cutmix > 0 else "mixup"


def _beta(alpha: float) -> float:
    """One draw of Beta(alpha, alpha) from the global torch generator (on the CPU: the same on every device)."""
    concentration = torch.tensor(float(alpha), dtype=torch.float64)
    return float(torch.distributions.Beta(concentration, concentration).sample())
