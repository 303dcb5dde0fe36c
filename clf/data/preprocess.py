"""The ONE preprocessing path: file bytes -> RGB uint8 -> resized -> normalised float32 CHW.

Training (eval transform), the export parity check and inference all call these functions with
the same ``Preprocess``. This module must not import torch: it runs on inference hosts that only
have onnxruntime, numpy and OpenCV.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2  # (clf/data/__init__.py has already quieted OpenCV's own logging)
import numpy as np

from clf.config import Preprocess
from clf.errors import DataError

ImageSource = str | os.PathLike | bytes | np.ndarray

_INTERPOLATION = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "area": cv2.INTER_AREA,
    "cubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
}

# IMREAD_COLOR expands grayscale/palette to 3 channels, drops alpha and applies EXIF orientation;
# IMREAD_ANYDEPTH keeps 16-bit samples so we can scale them down ourselves instead of truncating.
_IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH


def read_bytes(path: str | os.PathLike) -> bytes:
    """Read a file's bytes, turning OS errors into a one-line DataError naming the file."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an image") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def decode_rgb(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to an RGB uint8 array of shape (H, W, 3).

    Accepts 8/16-bit, grayscale, RGB, RGBA (alpha dropped), palette images and EXIF-rotated JPEGs.
    cv2.imdecode works on bytes, so paths with non-ASCII characters are fine.
    """
    return cv2.cvtColor(decode_bgr(data, source), cv2.COLOR_BGR2RGB)


def decode_bgr(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Like decode_rgb, in OpenCV's BGR order (so the channel swap can wait until after resizing)."""
    if not data:
        raise DataError(f"{source}: empty file, not an image")
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(buffer, _IMREAD_FLAGS)
    except cv2.error as exc:
        raise DataError(f"{source}: cannot decode image ({str(exc).strip().splitlines()[-1]})") from None
    if image is None or image.size == 0:
        raise DataError(f"{source}: not a readable image (corrupt, truncated or unsupported format)")
    return _to_bgr_uint8(image)


def _to_bgr_uint8(image: np.ndarray) -> np.ndarray:
    """OpenCV gives 1, 3 or 4 channels in uint8/uint16/float32; make it 3-channel BGR uint8."""
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)  # 65535 -> 255 exactly
    elif image.dtype != np.uint8:
        image = np.clip(image.astype(np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)  # float in [0, 1]
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def load_rgb(source: ImageSource) -> np.ndarray:
    """Load an image from a path, encoded bytes, or an RGB array, as RGB uint8 (H, W, 3).

    An array is taken as already-decoded RGB: uint8 (H, W, 3) or (H, W) grayscale.
    """
    if isinstance(source, np.ndarray):
        return _array_as_rgb(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_rgb(bytes(source))
    return decode_rgb(read_bytes(source), str(source))


def _array_as_rgb(array: np.ndarray) -> np.ndarray:
    if array.dtype != np.uint8:
        raise DataError(f"in-memory image: expected uint8 RGB array, got dtype {array.dtype}")
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    if array.ndim == 3 and array.shape[2] == 3:
        return array
    raise DataError(f"in-memory image: expected shape (H, W, 3) or (H, W), got {array.shape}")


def resize_rgb(image: np.ndarray, pre: Preprocess) -> np.ndarray:
    """Resize RGB uint8 to ``pre.size``: stretch, or shorter side + center crop."""
    height, width = pre.size
    interpolation = _INTERPOLATION[pre.interpolation]
    if pre.resize == "stretch":
        if image.shape[:2] == (height, width):
            return image
        return cv2.resize(image, (width, height), interpolation=interpolation)
    # shorter_crop: scale so the image covers the target, then take the centre.
    src_h, src_w = image.shape[:2]
    scale = max(height / src_h, width / src_w)
    new_h, new_w = max(height, round(src_h * scale)), max(width, round(src_w * scale))
    if (new_h, new_w) != (src_h, src_w):
        image = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return image[top : top + height, left : left + width]


def normalize(image: np.ndarray, pre: Preprocess) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 (3, H, W): (x * scale - mean) / std."""
    return normalize_batch(image[None], pre)[0]


def normalize_batch(images: np.ndarray, pre: Preprocess, out: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 (N, H, W, 3) -> float32 (N, 3, H, W), contiguous, ready for the network.

    `out`, a contiguous float32 (N, 3, H, W) array, is filled instead of allocating one (inference reuses it).
    """
    mean = np.asarray(pre.mean, dtype=np.float32) / np.float32(pre.scale)
    inv_std = np.float32(pre.scale) / np.asarray(pre.std, dtype=np.float32)
    if out is None:
        out = np.empty((images.shape[0], 3, images.shape[1], images.shape[2]), dtype=np.float32)
    for c in range(3):  # per-channel keeps the temporaries small and the output contiguous
        np.subtract(images[..., c], mean[c], out=out[:, c], dtype=np.float32)
        out[:, c] *= inv_std[c]
    return out


def load_resized(source: ImageSource, pre: Preprocess) -> np.ndarray:
    """Decode and resize: the RGB uint8 (H, W, 3) image that augmentation and caching work on."""
    if isinstance(source, np.ndarray):
        return resize_rgb(_array_as_rgb(source), pre)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), "<bytes>"
    else:
        data, name = read_bytes(source), str(source)
    # Resizing works per channel, so swapping B and R commutes with it: do the swap on the small image
    # (identical pixels, ~20% less decode time for photos much larger than the network input).
    return cv2.cvtColor(resize_rgb(decode_bgr(data, name), pre), cv2.COLOR_BGR2RGB)


def preprocess(source: ImageSource, pre: Preprocess) -> np.ndarray:
    """The preprocessing function: path/bytes/array -> float32 (3, H, W) network input."""
    return normalize(load_resized(source, pre), pre)
