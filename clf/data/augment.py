"""Training augmentation: a pipeline of ops on the resized uint8 HWC RGB image, before the one normalisation.

Each op draws from its own generator, derived from the per-sample seed and the op's name (and, for a repeated
name, its occurrence) through ``np.random.SeedSequence``: adding, removing or reordering an op never shifts
another op's draws, so a resumed training and an old config reproduce exactly. A pipeline describes itself as
plain data, ``[{"op": "hflip", "p": 0.5}, {"op": "rotate", "max_degrees": 15.0}]``, for config.json and
checkpoints. Adding an op is one class here plus its ``@register``. numpy + OpenCV only: no torch, no PIL.

Each random op splits into a small draw function (``crop_box``, ``erase_box``, ``trivial_augment_draw``...) and a
pure transform, so tests can check a known draw and a hand-computed output separately. Geometric ops fill the
uncovered border by mirroring (BORDER_REFLECT_101), never with black.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

from clf.errors import ClfError

OPS: dict[str, type[Op]] = {}


def register(op: type[Op]) -> type[Op]:
    """Class decorator: make ``op`` known to ``Pipeline.from_dict`` by its ``name``."""
    if op.name in OPS:
        raise ValueError(f"augmentation op {op.name!r} is already registered")
    OPS[op.name] = op
    return op


class Op:
    """One augmentation: ``apply(image, rng)`` returns a new uint8 image of the same shape (or ``image`` itself).

    Subclasses are frozen dataclasses whose fields are the op's parameters (plain numbers), with a unique ``name``.
    """

    name: ClassVar[str] = ""

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        params = asdict(self)  # type: ignore[call-overload]
        return {"op": self.name, **{k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}}


@register
@dataclass(frozen=True)
class HorizontalFlip(Op):
    """Mirror left-right with probability ``p`` (one uniform draw)."""

    name: ClassVar[str] = "hflip"
    p: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"hflip: p is a probability in [0, 1], got {self.p}")

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return flip_horizontal(image) if rng.random() < self.p else image


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


def flip_horizontal(image: np.ndarray) -> np.ndarray:
    """Mirror left-right (a new array)."""
    return cv2.flip(image, 1)


def rotate(image: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rotate about the centre, keeping the shape; ``image`` itself for 0.

    Counter-clockwise for positive angles (OpenCV's convention); the corners it uncovers are filled by mirroring
    (BORDER_REFLECT_101) rather than with black, so the network does not learn "black corners mean augmented".
    """
    if not angle_deg:
        return image
    height, width = image.shape[:2]
    # (w-1)/2, (h-1)/2 is the exact pixel-grid centre: 180 degrees maps pixels onto pixels.
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), float(angle_deg), 1.0)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


# --- parameter checks (a ValueError naming the op; Pipeline.from_dict turns it into a ClfError) ---


def _require(ok: bool, op: str, message: str) -> None:
    if not ok:
        raise ValueError(f"{op}: {message}")


def _probability(op: str, p: float) -> None:
    _require(isinstance(p, (int, float)) and 0.0 <= p <= 1.0, op, f"p is a probability in [0, 1], got {p}")


def _range(op: str, field: str, value: Any, low: float, high: float, open_low: bool = False) -> tuple[float, float]:
    """A (lo, hi) pair of finite numbers with low <= lo <= hi <= high (low < lo when open_low), as floats."""
    try:
        if isinstance(value, (str, bytes)):  # "12" would unpack to (1, 2)
            raise TypeError
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{op}: {field} is a (low, high) pair of numbers, got {value!r}") from None
    bound = "(" if open_low else "["
    inside = (low < lo if open_low else low <= lo) and lo <= hi <= high
    _require(math.isfinite(lo) and math.isfinite(hi) and inside, op,
             f"{field} is a (low, high) pair with low <= high in {bound}{low:g}, {high:g}], got {value!r}")
    return lo, hi


def _number(op: str, field: str, value: Any, low: float, high: float) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    _require(ok and low <= value <= high, op, f"{field} is a number in [{low:g}, {high:g}], got {value}")


# --- geometry ---


@register
@dataclass(frozen=True)
class VerticalFlip(Op):
    """Mirror top-bottom with probability ``p`` (one uniform draw)."""

    name: ClassVar[str] = "vflip"
    p: float = 0.5

    def __post_init__(self) -> None:
        _probability(self.name, self.p)

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return cv2.flip(image, 0) if rng.random() < self.p else image


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
        object.__setattr__(self, "scale", _range(self.name, "scale", self.scale, 0.0, 1.0, open_low=True))
        object.__setattr__(self, "ratio", _range(self.name, "ratio", self.ratio, 0.0, math.inf, open_low=True))

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        height, width = image.shape[:2]
        return resized_crop(image, crop_box(height, width, self.scale, self.ratio, rng))


def crop_box(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
             rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random-resized-crop: torchvision's ``RandomResizedCrop.get_params`` on numpy."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    # Fallback: the largest centre crop whose aspect is inside the range.
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def resized_crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The ``box`` (top, left, h, w) of ``image`` resized to the image's own size; ``image`` itself for the full box."""
    height, width = image.shape[:2]
    top, left, h, w = box
    if (h, w) == (height, width):
        return image
    crop = image[top:top + h, left:left + w]
    interpolation = cv2.INTER_AREA if h > height or w > width else cv2.INTER_LINEAR
    return cv2.resize(crop, (width, height), interpolation=interpolation)


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
        _number(self.name, "translate", self.translate, 0.0, 1.0)
        object.__setattr__(self, "scale", _range(self.name, "scale", self.scale, 0.0, 10.0, open_low=True))
        _number(self.name, "shear", self.shear, 0.0, 89.0)

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        height, width = image.shape[:2]
        tx = rng.uniform(-self.translate, self.translate) * width
        ty = rng.uniform(-self.translate, self.translate) * height
        scale = rng.uniform(self.scale[0], self.scale[1])
        shear = rng.uniform(-self.shear, self.shear)
        return warp(image, affine_matrix(height, width, translate=(tx, ty), scale=scale, shear=(shear, 0.0)))


def affine_matrix(height: int, width: int, translate: tuple[float, float] = (0.0, 0.0), scale: float = 1.0,
                  shear: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The 2x3 matrix that scales and shears (x, y degrees) about the pixel-grid centre, then translates (pixels)."""
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    shear_x = np.array([[1.0, math.tan(math.radians(shear[0]))], [0.0, 1.0]])
    shear_y = np.array([[1.0, 0.0], [math.tan(math.radians(shear[1])), 1.0]])
    linear = scale * shear_x @ shear_y
    offset = np.array([cx + translate[0], cy + translate[1]]) - linear @ np.array([cx, cy])
    return np.hstack([linear, offset[:, None]])


def warp(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``image`` moved by the 2x3 ``matrix`` (bilinear, mirrored border); ``image`` itself for the identity."""
    if np.array_equal(matrix, np.eye(2, 3)):
        return image
    height, width = image.shape[:2]
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


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
            _number(self.name, field, getattr(self, field), 0.0, 10.0)
        _number(self.name, "hue", self.hue, 0.0, 0.5)

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        b, c, s = (rng.uniform(max(0.0, 1.0 - x), 1.0 + x) for x in (self.brightness, self.contrast, self.saturation))
        h = rng.uniform(-self.hue, self.hue)
        return adjust_hue(adjust_saturation(adjust_contrast(adjust_brightness(image, b), c), s), h)


@register
@dataclass(frozen=True)
class Grayscale(Op):
    """With probability ``p``, the luma (OpenCV's RGB2GRAY) replicated to the three channels."""

    name: ClassVar[str] = "grayscale"
    p: float = 0.1

    def __post_init__(self) -> None:
        _probability(self.name, self.p)

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return to_grayscale(image) if rng.random() < self.p else image


@register
@dataclass(frozen=True)
class GaussianBlur(Op):
    """With probability ``p``, a Gaussian blur of sigma uniform in ``sigma`` (kernel from ``blur_kernel_size``)."""

    name: ClassVar[str] = "gaussian_blur"
    p: float = 0.5
    sigma: tuple[float, float] = (0.1, 2.0)

    def __post_init__(self) -> None:
        _probability(self.name, self.p)
        object.__setattr__(self, "sigma", _range(self.name, "sigma", self.sigma, 0.0, 50.0, open_low=True))

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        apply, sigma = rng.random() < self.p, rng.uniform(self.sigma[0], self.sigma[1])
        return gaussian_blur(image, sigma) if apply else image


def blur_kernel_size(sigma: float) -> int:
    """The odd kernel side that holds +-3 sigma."""
    return 2 * math.ceil(3.0 * sigma) + 1


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    size = blur_kernel_size(sigma)
    return cv2.GaussianBlur(image, (size, size), sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)


def _channels(image: np.ndarray) -> int:
    return image.shape[2] if image.ndim == 3 else 1


def _lut(image: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``table`` (256 floats) applied to every sample, rounded and clipped to uint8."""
    table = np.rint(table)
    np.minimum(table, 255, out=table)  # np.clip's wrapper costs more than the whole LUT pass at 64 px
    np.maximum(table, 0, out=table)
    return cv2.LUT(image, table.astype(np.uint8)).reshape(image.shape)


def _blend(image: np.ndarray, other: np.ndarray, factor: float) -> np.ndarray:
    """factor * image + (1 - factor) * other, rounded and saturated to uint8 (torchvision's _blend)."""
    return cv2.addWeighted(image, factor, other, 1.0 - factor, 0.0).reshape(image.shape)


def _scale_shift(image: np.ndarray, factor: float, shift: float) -> np.ndarray:
    """factor * image + shift, rounded and saturated to uint8 (one OpenCV pass: ~6x faster than a LUT at 64 px)."""
    return cv2.addWeighted(image, factor, image, 0.0, shift).reshape(image.shape)


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if _channels(image) == 3 else image.reshape(image.shape[:2])


def adjust_brightness(image: np.ndarray, factor: float) -> np.ndarray:
    """Every sample times ``factor`` (a blend with black)."""
    return image if factor == 1.0 else _scale_shift(image, factor, 0.0)


def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
    """A blend with the mean grey level of the image."""
    if factor == 1.0:
        return image
    mean = cv2.mean(_gray(image))[0]
    return _scale_shift(image, factor, (1.0 - factor) * mean)


def adjust_saturation(image: np.ndarray, factor: float) -> np.ndarray:
    """A blend with the image's own luma (identity on a one-channel image)."""
    if factor == 1.0 or _channels(image) != 3:
        return image
    return _blend(image, cv2.cvtColor(_gray(image), cv2.COLOR_GRAY2RGB), factor)


def adjust_hue(image: np.ndarray, shift: float) -> np.ndarray:
    """Hue rotated by ``shift`` of a full turn, in OpenCV's uint8 HSV (hue in 2-degree steps: pure red + 1/3 turn is
    exactly pure green); a one-channel image or a shift under one step is returned as it is.

    uint8 HSV is ~10x faster than float HSV (0.5 ms against 4 ms at 224 px) for a round trip within a few levels,
    like PIL's 8-bit HSV that torchvision's hue jitter uses.
    """
    steps = round(shift * 180.0)
    if steps % 180 == 0 or _channels(image) != 3:
        return image
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = cv2.LUT(hsv[..., 0], ((np.arange(256) + steps) % 180).astype(np.uint8))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """The luma replicated to three channels (a one-channel image unchanged)."""
    if _channels(image) != 3:
        return image
    return cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)


_SHARPNESS_KERNEL = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13.0


def adjust_sharpness(image: np.ndarray, factor: float) -> np.ndarray:
    """A blend with the image smoothed by PIL's 3x3 kernel (border pixels kept): factor > 1 sharpens."""
    if factor == 1.0 or min(image.shape[:2]) < 3:
        return image
    smooth = cv2.filter2D(image, -1, _SHARPNESS_KERNEL, borderType=cv2.BORDER_REFLECT_101).reshape(image.shape)
    smooth[0], smooth[-1], smooth[:, 0], smooth[:, -1] = image[0], image[-1], image[:, 0], image[:, -1]
    return _blend(image, smooth, factor)


def posterize(image: np.ndarray, bits: int) -> np.ndarray:
    """Keep the ``bits`` high bits of every sample."""
    return image if bits >= 8 else image & np.uint8((0xFF << (8 - bits)) & 0xFF)


def solarize(image: np.ndarray, threshold: float) -> np.ndarray:
    """Invert every sample >= ``threshold``."""
    levels = np.arange(256)
    return _lut(image, np.where(levels >= threshold, 255 - levels, levels))


def autocontrast(image: np.ndarray) -> np.ndarray:
    """Stretch each channel to [0, 255] (a constant channel unchanged): one per-channel LUT."""
    channels = _channels(image)
    planes = cv2.split(image) if channels > 1 else [image.reshape(image.shape[:2])]
    extremes = np.array([cv2.minMaxLoc(plane)[:2] for plane in planes])  # numpy's axis min is ~30x slower
    low, high = extremes[:, 0], extremes[:, 1]
    levels = np.arange(256, dtype=np.float64)[:, None]
    stretched = (levels - low) * 255.0 / np.where(high > low, high - low, 1.0)
    table = np.clip(np.rint(np.where(high > low, stretched, levels)), 0, 255).astype(np.uint8)  # (256, C)
    lut = table[:, 0] if channels == 1 else table.reshape(256, 1, channels)
    return cv2.LUT(image, lut).reshape(image.shape)


def equalize(image: np.ndarray) -> np.ndarray:
    """Histogram equalisation of each channel (OpenCV's)."""
    if image.ndim == 2:
        return cv2.equalizeHist(image)
    return np.dstack([cv2.equalizeHist(np.ascontiguousarray(image[..., c])) for c in range(image.shape[2])])


# --- policies: TrivialAugment-wide and RandAugment over the ops above ---

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
    """TrivialAugment-wide's draw: one op uniform over ``policy_space(wide=True)``, a magnitude uniform over its bins."""
    return _draw_policy_op(policy_space(True, height, width), rng, None)


def rand_augment_draws(height: int, width: int, num_ops: int, magnitude: int,
                       rng: np.random.Generator) -> list[tuple[str, float]]:
    """RandAugment's draws: ``num_ops`` ops uniform with replacement, each at bin ``magnitude``, a random sign."""
    space = policy_space(False, height, width)
    return [_draw_policy_op(space, rng, magnitude) for _ in range(num_ops)]


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

        _require(whole(self.num_ops, 10), self.name, f"num_ops is an integer in [0, 10], got {self.num_ops}")
        _require(whole(self.magnitude, MAGNITUDE_BINS - 1), self.name,
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
        _probability(self.name, self.p)
        object.__setattr__(self, "scale", _range(self.name, "scale", self.scale, 0.0, 1.0, open_low=True))
        object.__setattr__(self, "ratio", _range(self.name, "ratio", self.ratio, 0.0, math.inf, open_low=True))

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


def erase_box(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
              rng: np.random.Generator) -> tuple[int, int, int, int] | None:
    """(top, left, h, w) of the box to erase, or None after 10 tries: timm's ``RandomErasing`` draw."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        h = round(math.sqrt(target_area * aspect))
        w = round(math.sqrt(target_area / aspect))
        if 0 < w < width and 0 < h < height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    return None
