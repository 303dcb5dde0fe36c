"""Training augmentation: a pipeline of ops on the resized uint8 HWC RGB image, before the one normalisation.

Each op draws from its own generator, derived from the per-sample seed and the op's name (and, for a repeated
name, its occurrence) through ``np.random.SeedSequence``: adding, removing or reordering an op never shifts
another op's draws, so a resumed training and an old config reproduce exactly. A pipeline describes itself as
plain data, ``[{"op": "hflip", "p": 0.5}, {"op": "rotate", "max_degrees": 15.0}]``, for config.json and
checkpoints. Adding an op is one class here plus its ``@register``. numpy + OpenCV only: no torch, no PIL.

Each random op splits into a small draw function (``crop_box``, ``erase_box``, ``trivial_augment_draw``...) and a
pure transform, so tests can check a known draw and a hand-computed output separately: the transforms and box draws
live in clf.data.augment_kernels, the TrivialAugment/RandAugment tables and draws in clf.data.augment_policies, the
op base class, its registry and the parameter checks in clf.data.augment_op; this module holds the ops (their
parameters and draws) and the Pipeline. Geometric ops fill the uncovered border by mirroring (BORDER_REFLECT_101),
never with black.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

from clf.data.augment_kernels import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    affine_matrix,
    crop_box,
    erase_box,
    flip_horizontal,
    gaussian_blur,
    resized_crop,
    rotate,
    shift,
    shift_draw,
    to_grayscale,
    warp,
)
from clf.data.augment_op import (
    OPS,
    Op,
    RandomlyApplied,
    check_number,
    check_probability,
    check_range,
    register,
    require,
)
from clf.data.augment_policies import MAGNITUDE_BINS, apply_policy_op, rand_augment_draws, trivial_augment_draw
from clf.errors import ClfError


@register
@dataclass(frozen=True)
class HorizontalFlip(RandomlyApplied):
    """Mirror left-right with probability ``p`` (one uniform draw)."""

    name: ClassVar[str] = "hflip"
    p: float = 0.5

    def transform(self, image: np.ndarray) -> np.ndarray:
        return flip_horizontal(image)


@register
@dataclass(frozen=True)
class Rotate(Op):
    """Rotate about the centre by an angle uniform in [-max_degrees, max_degrees] (one draw)."""

    name: ClassVar[str] = "rotate"
    max_degrees: float = 15.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_degrees) and self.max_degrees >= 0):
            raise ValueError(f"rotate: max_degrees is an angle >= 0, got {self.max_degrees}")

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rotate(image, float(rng.uniform(-self.max_degrees, self.max_degrees)))


class Pipeline:
    """Ops applied in order, each with its own generator derived from the per-sample seed.

    Args:
        ops: the ops, in the order they apply.
    """

    def __init__(self, ops: Sequence[Op] = ()) -> None:
        self.ops = tuple(ops)
        self._stream_keys = _stream_keys([op.name for op in self.ops])

    def __call__(self, image: np.ndarray, seed: int) -> np.ndarray:
        """The augmented image for the per-sample ``seed`` (any int >= 0); deterministic."""
        _check_image(image)
        shape = image.shape
        for op, key in zip(self.ops, self._stream_keys):
            image = op.apply(image, op_rng(seed, key))
        return image if image.shape == shape else image.reshape(shape)  # OpenCV drops a size-1 channel axis

    def __bool__(self) -> bool:
        return bool(self.ops)

    def __len__(self) -> int:
        return len(self.ops)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pipeline) and self.ops == other.ops

    def __repr__(self) -> str:
        return f"Pipeline({list(self.ops)!r})"

    def to_dict(self) -> list[dict[str, Any]]:
        """The pipeline as plain data: ``[{"op": name, **params}, ...]`` (JSON- and weights_only-safe)."""
        return [op.to_dict() for op in self.ops]

    @classmethod
    def from_dict(cls, spec: Sequence[Mapping[str, Any]]) -> Pipeline:
        """The pipeline ``to_dict`` described.

        Raises:
            ClfError: an unknown op name, a missing "op", an unknown or bad parameter (one line naming the op).
        """
        ops = []
        for index, entry in enumerate(spec):
            params = dict(entry)
            name = params.pop("op", None)
            if name not in OPS:
                known = ", ".join(sorted(OPS))
                raise ClfError(f"augmentation op #{index + 1}: unknown op {name!r}; known ops: {known}")
            try:
                ops.append(OPS[name](**params))
            except (TypeError, ValueError) as exc:
                raise ClfError(f"augmentation op #{index + 1} ({name}): {exc}") from None
        return cls(ops)

    @classmethod
    def from_flags(cls, hflip: float = 0.0, rotate: float = 0.0) -> Pipeline:
        """The pipeline of the --hflip/--rotate flags: a flip, then a rotation; ops at 0 are left out."""
        ops: list[Op] = []
        if hflip > 0:
            ops.append(HorizontalFlip(p=float(hflip)))
        if rotate > 0:
            ops.append(Rotate(max_degrees=float(rotate)))
        return cls(ops)


def _stream_keys(names: Sequence[str]) -> list[tuple[int, int]]:
    """(crc32 of the name, occurrence of that name so far): independent of the other ops' names and positions."""
    seen: dict[str, int] = {}
    keys = []
    for name in names:
        keys.append((zlib.crc32(name.encode("utf-8")), seen.get(name, 0)))
        seen[name] = seen.get(name, 0) + 1
    return keys


def op_rng(seed: int, key: tuple[int, int]) -> np.random.Generator:
    """The generator of the op stream ``key`` for the per-sample ``seed``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=key)))


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"augmentation expects a uint8 (H, W, C) image, got {image.dtype} {image.shape}")


# --- geometry ---


@register
@dataclass(frozen=True)
class VerticalFlip(RandomlyApplied):
    """Mirror top-bottom with probability ``p`` (one uniform draw)."""

    name: ClassVar[str] = "vflip"
    p: float = 0.5

    def transform(self, image: np.ndarray) -> np.ndarray:
        return cv2.flip(image, 0)


@register
@dataclass(frozen=True)
class RandomResizedCrop(Op):
    """A random crop (area fraction in ``scale``, aspect log-uniform in ``ratio``) resized back to the image's size.

    torchvision's algorithm (10 tries, then a centre crop); the image is the already Preprocess-resized one.
    """

    name: ClassVar[str] = "random_resized_crop"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", check_range(self.name, "scale", self.scale, 0.0, 1.0, open_low=True))
        object.__setattr__(self, "ratio", check_range(self.name, "ratio", self.ratio, 0.0, math.inf, open_low=True))

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        height, width = image.shape[:2]
        return resized_crop(image, crop_box(height, width, self.scale, self.ratio, rng))


@register
@dataclass(frozen=True)
class Translate(Op):
    """With probability ``p``, a shift by whole pixels uniform in [-max_fraction, max_fraction] x each side, the
    border mirrored: the CIFAR "pad and random crop" (reflect padding, no rescale), unlike ``random_resized_crop``,
    which zooms. Three draws, always: apply, dy, dx.
    """

    name: ClassVar[str] = "translate"
    max_fraction: float = 0.125
    p: float = 1.0

    def __post_init__(self) -> None:
        check_number(self.name, "max_fraction", self.max_fraction, 0.0, 0.5)
        check_probability(self.name, self.p)

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        apply = rng.random() < self.p
        dy, dx = shift_draw(image.shape[0], image.shape[1], self.max_fraction, rng)
        return shift(image, dy, dx) if apply else image


@register
@dataclass(frozen=True)
class Affine(Op):
    """A random translation (fraction of each side), scale and x-shear (degrees) about the centre, like
    torchvision's ``RandomAffine(degrees=0, translate, scale, shear)``; rotation is the ``rotate`` op.
    """

    name: ClassVar[str] = "affine"
    translate: float = 0.1
    scale: tuple[float, float] = (0.9, 1.1)
    shear: float = 10.0

    def __post_init__(self) -> None:
        check_number(self.name, "translate", self.translate, 0.0, 1.0)
        object.__setattr__(self, "scale", check_range(self.name, "scale", self.scale, 0.0, 10.0, open_low=True))
        check_number(self.name, "shear", self.shear, 0.0, 89.0)

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        height, width = image.shape[:2]
        tx = rng.uniform(-self.translate, self.translate) * width
        ty = rng.uniform(-self.translate, self.translate) * height
        scale = rng.uniform(self.scale[0], self.scale[1])
        shear = rng.uniform(-self.shear, self.shear)
        return warp(image, affine_matrix(height, width, translate=(tx, ty), scale=scale, shear=(shear, 0.0)))


# --- colour ---


@register
@dataclass(frozen=True)
class ColorJitter(Op):
    """Brightness, contrast, saturation factors uniform in [max(0, 1 - x), 1 + x], a hue shift uniform in
    [-hue, hue] of a full turn; applied in that fixed order (four draws, always).
    """

    name: ClassVar[str] = "color_jitter"
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.05

    def __post_init__(self) -> None:
        for field in ("brightness", "contrast", "saturation"):
            check_number(self.name, field, getattr(self, field), 0.0, 10.0)
        check_number(self.name, "hue", self.hue, 0.0, 0.5)

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        b, c, s = (rng.uniform(max(0.0, 1.0 - x), 1.0 + x) for x in (self.brightness, self.contrast, self.saturation))
        h = rng.uniform(-self.hue, self.hue)
        return adjust_hue(adjust_saturation(adjust_contrast(adjust_brightness(image, b), c), s), h)


@register
@dataclass(frozen=True)
class Grayscale(RandomlyApplied):
    """With probability ``p``, the luma (OpenCV's RGB2GRAY) replicated to the three channels."""

    name: ClassVar[str] = "grayscale"
    p: float = 0.1

    def transform(self, image: np.ndarray) -> np.ndarray:
        return to_grayscale(image)


@register
@dataclass(frozen=True)
class GaussianBlur(Op):
    """With probability ``p``, a Gaussian blur of sigma uniform in ``sigma`` (kernel from ``blur_kernel_size``)."""

    name: ClassVar[str] = "gaussian_blur"
    p: float = 0.5
    sigma: tuple[float, float] = (0.1, 2.0)

    def __post_init__(self) -> None:
        check_probability(self.name, self.p)
        object.__setattr__(self, "sigma", check_range(self.name, "sigma", self.sigma, 0.0, 50.0, open_low=True))

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        apply, sigma = rng.random() < self.p, rng.uniform(self.sigma[0], self.sigma[1])
        return gaussian_blur(image, sigma) if apply else image


# --- policies (the tables and draws are clf.data.augment_policies') ---


@register
@dataclass(frozen=True)
class TrivialAugment(Op):
    """TrivialAugment-wide: one op uniform over identity, brightness, colour, contrast, sharpness, posterize,
    solarize, autocontrast, equalize, rotate, shear x/y, translate x/y, at a magnitude uniform over its 31 bins.
    """

    name: ClassVar[str] = "trivial_augment"

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        op, magnitude = trivial_augment_draw(image.shape[0], image.shape[1], rng)
        return apply_policy_op(image, op, magnitude)


@register
@dataclass(frozen=True)
class RandAugment(Op):
    """RandAugment: ``num_ops`` ops at magnitude bin ``magnitude`` (0..30), torchvision's ranges."""

    name: ClassVar[str] = "rand_augment"
    num_ops: int = 2
    magnitude: int = 9

    def __post_init__(self) -> None:
        def whole(value: Any, high: int) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= high

        require(whole(self.num_ops, 10), self.name, f"num_ops is an integer in [0, 10], got {self.num_ops}")
        require(whole(self.magnitude, MAGNITUDE_BINS - 1), self.name,
                f"magnitude is an integer in [0, {MAGNITUDE_BINS - 1}], got {self.magnitude}")

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for op, magnitude in rand_augment_draws(image.shape[0], image.shape[1], self.num_ops, self.magnitude, rng):
            image = apply_policy_op(image, op, magnitude)
        return image


# --- occlusion ---


@register
@dataclass(frozen=True)
class RandomErasing(Op):
    """With probability ``p``, a box (area fraction in ``scale``, aspect log-uniform in ``ratio``) filled with
    per-pixel uniform uint8 noise: timm's RandomErasing (one box, 10 tries). Put it last in a pipeline.
    """

    name: ClassVar[str] = "random_erasing"
    p: float = 0.25
    scale: tuple[float, float] = (0.02, 1 / 3)
    ratio: tuple[float, float] = (0.3, 3.3)

    def __post_init__(self) -> None:
        check_probability(self.name, self.p)
        object.__setattr__(self, "scale", check_range(self.name, "scale", self.scale, 0.0, 1.0, open_low=True))
        object.__setattr__(self, "ratio", check_range(self.name, "ratio", self.ratio, 0.0, math.inf, open_low=True))

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() >= self.p:
            return image
        height, width = image.shape[:2]
        box = erase_box(height, width, self.scale, self.ratio, rng)
        if box is None:
            return image
        top, left, h, w = box
        out = image.copy()
        out[top:top + h, left:left + w] = rng.integers(0, 256, (h, w, *image.shape[2:]), dtype=np.uint8)
        return out
