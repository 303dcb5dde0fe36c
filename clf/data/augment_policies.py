"""The TrivialAugment-wide and RandAugment policies: their op tables (torchvision's ranges), their draws, and the
one policy op at a magnitude.

Separate from clf.data.augment, whose ``TrivialAugment`` and ``RandAugment`` ops apply these draws, because the two
tables and their op dispatch are one job (matching torchvision) apart from the op classes and the Pipeline.
numpy + OpenCV only (through clf.data.augment_kernels): no torch.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from clf.data.augment_kernels import (
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    adjust_sharpness,
    affine_matrix,
    autocontrast,
    equalize,
    posterize,
    rotate,
    solarize,
    warp,
)

MAGNITUDE_BINS = 31  # torchvision's num_magnitude_bins: RandAugment magnitudes 0..30
# TrivialAugment-wide translates up to 32 px (torchvision, the paper) at 224 px: a fraction keeps it size-independent.
WIDE_TRANSLATE = 32.0 / 224.0
RAND_TRANSLATE = 150.0 / 331.0  # torchvision's RandAugment


@functools.lru_cache(maxsize=64)
def policy_space(wide: bool, height: int, width: int) -> dict[str, tuple[np.ndarray, bool]]:
    """op name -> (magnitude per bin, signed): torchvision's TrivialAugmentWide (wide) / RandAugment ranges.

    The ops and their order are torchvision's; an op whose magnitude array is empty takes no magnitude. Cached per
    image size (the arrays are shared: read them, never write).
    """
    bins = MAGNITUDE_BINS
    strong, translate = (0.99, WIDE_TRANSLATE) if wide else (0.9, RAND_TRANSLATE)
    none = np.zeros(0)
    return {
        "identity": (none, False),
        "shear_x": (np.linspace(0.0, 0.99 if wide else 0.3, bins), True),
        "shear_y": (np.linspace(0.0, 0.99 if wide else 0.3, bins), True),
        "translate_x": (np.linspace(0.0, translate * width, bins), True),
        "translate_y": (np.linspace(0.0, translate * height, bins), True),
        "rotate": (np.linspace(0.0, 135.0 if wide else 30.0, bins), True),
        "brightness": (np.linspace(0.0, strong, bins), True),
        "color": (np.linspace(0.0, strong, bins), True),
        "contrast": (np.linspace(0.0, strong, bins), True),
        "sharpness": (np.linspace(0.0, strong, bins), True),
        "posterize": (8 - np.round(np.arange(bins) / ((bins - 1) / (6 if wide else 4))).astype(int), False),
        "solarize": (np.linspace(255.0, 0.0, bins), False),
        "autocontrast": (none, False),
        "equalize": (none, False),
    }


def apply_policy_op(image: np.ndarray, op: str, magnitude: float) -> np.ndarray:
    """One policy op at ``magnitude`` (torchvision's ``_apply_op`` semantics; shears about the centre)."""
    height, width = image.shape[:2]
    if op == "identity":
        return image
    if op in ("shear_x", "shear_y"):
        angle = math.degrees(math.atan(magnitude))
        shear = (angle, 0.0) if op == "shear_x" else (0.0, angle)
        return warp(image, affine_matrix(height, width, shear=shear))
    if op in ("translate_x", "translate_y"):
        shift = (float(int(magnitude)), 0.0) if op == "translate_x" else (0.0, float(int(magnitude)))
        return warp(image, affine_matrix(height, width, translate=shift))
    if op == "rotate":
        return rotate(image, magnitude)
    if op == "brightness":
        return adjust_brightness(image, 1.0 + magnitude)
    if op == "color":
        return adjust_saturation(image, 1.0 + magnitude)
    if op == "contrast":
        return adjust_contrast(image, 1.0 + magnitude)
    if op == "sharpness":
        return adjust_sharpness(image, 1.0 + magnitude)
    if op == "posterize":
        return posterize(image, int(magnitude))
    if op == "solarize":
        return solarize(image, magnitude)
    if op == "autocontrast":
        return autocontrast(image)
    if op == "equalize":
        return equalize(image)
    raise ValueError(f"unknown policy op {op!r}")


def _draw_policy_op(space: dict[str, tuple[np.ndarray, bool]], rng: np.random.Generator,
                    magnitude_bin: int | None) -> tuple[str, float]:
    """An op uniform over ``space``, its magnitude (bin uniform when ``magnitude_bin`` is None), a random sign.

    Always three draws (op, bin, sign), whatever the op, so the draws of a policy have a fixed layout.
    """
    names = list(space)
    op = names[int(rng.integers(len(names)))]
    drawn_bin = int(rng.integers(MAGNITUDE_BINS))
    negative = rng.random() < 0.5
    magnitudes, signed = space[op]
    if magnitudes.size == 0:
        return op, 0.0
    magnitude = float(magnitudes[drawn_bin if magnitude_bin is None else magnitude_bin])
    return op, -magnitude if signed and negative else magnitude


def trivial_augment_draw(height: int, width: int, rng: np.random.Generator) -> tuple[str, float]:
    """TrivialAugment-wide's draw: one op uniform over ``policy_space(wide=True)``, a magnitude uniform over its
    bins."""
    return _draw_policy_op(policy_space(True, height, width), rng, None)


def rand_augment_draws(height: int, width: int, num_ops: int, magnitude: int,
                       rng: np.random.Generator) -> list[tuple[str, float]]:
    """RandAugment's draws: ``num_ops`` ops uniform with replacement, each at bin ``magnitude``, a random sign."""
    space = policy_space(False, height, width)
    return [_draw_policy_op(space, rng, magnitude) for _ in range(num_ops)]
