"""The pure image transforms and box draws behind the augmentation ops: uint8 HWC RGB in, uint8 out.

Separate from clf.data.augment (the ops, their parameters and the seeded Pipeline) so that each transform can be
tested against a hand-computed output, and so the policy tables (clf.data.augment_policies) can reuse them without
the op classes. ``crop_box`` and ``erase_box`` are the draws of torchvision's RandomResizedCrop and timm's
RandomErasing: plain numpy given a generator. Geometric transforms fill the uncovered border by mirroring
(BORDER_REFLECT_101), never with black. numpy + OpenCV only: no torch, no PIL.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


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


# --- random boxes (crop, erase) and geometry ---


def _area_and_aspect(area: int, scale: tuple[float, float], ratio: tuple[float, float],
                     rng: np.random.Generator) -> tuple[float, float]:
    """One try of a random box: its area (a share of `area` in `scale`) and aspect (log-uniform in `ratio`).
    Two draws, in this order: a run's recorded streams depend on it."""
    target_area = area * rng.uniform(scale[0], scale[1])
    return target_area, math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))


def crop_box(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
             rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random-resized-crop: torchvision's ``RandomResizedCrop.get_params`` on numpy."""
    for _ in range(10):
        target_area, aspect = _area_and_aspect(height * width, scale, ratio, rng)
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


def shift_draw(height: int, width: int, max_fraction: float, rng: np.random.Generator) -> tuple[int, int]:
    """(dy, dx) of a pad-and-random-crop: whole pixels uniform in [-m, m], m = round(max_fraction x side), at most
    side - 1 (mirroring needs a pixel left to reflect). Two draws, dy then dx: a run's recorded streams depend on it."""
    limits = (min(round(max_fraction * side), side - 1) for side in (height, width))
    dy, dx = (int(rng.integers(-limit, limit + 1)) for limit in limits)
    return dy, dx


def shift(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``image`` moved down by ``dy`` and right by ``dx`` pixels (negative: up, left), same shape, no resampling;
    the uncovered border mirrored (BORDER_REFLECT_101), as a reflect-padded random crop. ``image`` itself for (0, 0).
    """
    if not (dy or dx):
        return image
    height, width = image.shape[:2]
    padded = cv2.copyMakeBorder(image, max(dy, 0), max(-dy, 0), max(dx, 0), max(-dx, 0), cv2.BORDER_REFLECT_101)
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[top:top + height, left:left + width].reshape(image.shape)


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


def erase_box(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
              rng: np.random.Generator) -> tuple[int, int, int, int] | None:
    """(top, left, h, w) of the box to erase, or None after 10 tries: timm's ``RandomErasing`` draw."""
    for _ in range(10):
        target_area, aspect = _area_and_aspect(height * width, scale, ratio, rng)
        h = round(math.sqrt(target_area * aspect))
        w = round(math.sqrt(target_area / aspect))
        if 0 < w < width and 0 < h < height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    return None
