"""Preprocess: how an image file becomes the model's input, the one contract of training, parity and inference."""

from __future__ import annotations

import math
from dataclasses import dataclass

from clf.choices import INTERPOLATIONS, RESIZE_MODES
from clf.config.base import JsonMixin
from clf.errors import SettingError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


MAX_INPUT_SIZE = 4096  # pixels a side of a network input; far above any classifier's, far below what exhausts memory


@dataclass(frozen=True)
class Preprocess(JsonMixin):
    """How an image file becomes the model's input; identical in training, parity and inference.

    Args:
        size: (height, width) of the network input.
        resize: "stretch" (ignore aspect ratio) or "shorter_crop" (resize the shorter side, center-crop).
        interpolation: OpenCV interpolation name used when resizing.
        color: channel order fed to the network (always "RGB").
        scale: multiplier applied to uint8 pixels before normalising (1/255).
        mean, std: per-channel normalisation after scaling.
        channels: number of input channels (3).
    """

    size: tuple[int, int] = (224, 224)
    resize: str = "stretch"
    interpolation: str = "linear"
    color: str = "RGB"
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channels: int = 3

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise SettingError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise SettingError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if self.color != "RGB" or self.channels != 3:
            raise SettingError("only 3-channel RGB input is supported")
        if len(self.size) != 2 or min(self.size) < 1:
            raise SettingError(f"size must be (height, width) of positive ints, got {self.size!r}")
        if max(self.size) > MAX_INPUT_SIZE:  # one 100000x100000 input is 120 GB: refused, not allocated
            raise SettingError(f"size must be at most {MAX_INPUT_SIZE} pixels a side, got {self.size!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or not all(v > 0 for v in self.std):  # NaN is not > 0
            raise SettingError("mean and std need 3 values each, std > 0")
        if not all(map(math.isfinite, (*self.mean, *self.std, self.scale))):
            raise SettingError(f"mean, std and scale must be finite numbers, got {self.mean}, {self.std}, {self.scale}")
        object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
