"""The ONE preprocessing path: file bytes -> RGB uint8 -> resized -> normalised float32 CHW.

Training (eval transform), the export parity check and inference all call these functions with
the same ``Preprocess``. This module must not import torch: it runs on inference hosts that only
have onnxruntime, numpy and OpenCV.

Hostile files cannot exhaust the machine: only regular files are opened (a FIFO, a device such as
/dev/zero behind a ``.jpg`` link, a socket: one line, never a hang), and an image whose header declares
more pixels than ``max_image_pixels()`` is refused before it is decoded.
"""

from __future__ import annotations

import os
import stat

import cv2  # (clf/data/__init__.py has already quieted OpenCV's own logging)
import numpy as np

from clf.config import Preprocess
from clf.data.image_header import header_size
from clf.errors import DataError, one_line

PIXEL_BUDGET_ENV = "CLF_MAX_IMAGE_PIXELS"
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000
# The pixel budget: None reads CLF_MAX_IMAGE_PIXELS (else DEFAULT_MAX_IMAGE_PIXELS) at each call; a program
# embedding clf may set an int here instead. 0 disables the check. 100 megapixels is 300 MB decoded (8-bit RGB),
# ~1.2 GB for four decode threads, and above any camera photo but the rare 200 MP phone mode.
MAX_IMAGE_PIXELS: int | None = None

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


_FILE_KINDS = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
               (stat.S_ISSOCK, "socket"))


def read_bytes(path: str | os.PathLike) -> bytes:
    """Read a regular file's bytes (symlinks followed), turning OS errors into a one-line DataError naming the file.

    Anything else is refused before it is opened: a FIFO would block forever, /dev/zero would never end. The file is
    opened non-blocking and checked again, so a FIFO swapped in between the two checks cannot hang either.
    """
    if not isinstance(path, (str, os.PathLike)):  # an int would be taken as a file descriptor (0: stdin)
        raise DataError(f"{str(path)[:40]}: not an image source ({type(path).__name__}); "
                        "give a path, encoded bytes or an RGB uint8 array")
    try:
        _check_regular(path, os.stat(path).st_mode)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or one_line(exc)})") from None
    try:
        _check_regular(path, os.fstat(fd).st_mode)
        with open(fd, "rb", closefd=False) as handle:
            return handle.read()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or one_line(exc)})") from None
    finally:
        os.close(fd)


def _check_regular(path: str | os.PathLike, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise DataError(f"{path}: is a folder, not an image")
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "special file")
    raise DataError(f"{path}: not a regular file ({kind})")


def max_image_pixels() -> int:
    """The pixel budget in force: ``MAX_IMAGE_PIXELS`` when set, else $CLF_MAX_IMAGE_PIXELS, else the default."""
    if MAX_IMAGE_PIXELS is not None:
        return int(MAX_IMAGE_PIXELS)
    text = os.environ.get(PIXEL_BUDGET_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = -1
    if value < 0:
        raise DataError(f"{PIXEL_BUDGET_ENV}={text}: not a whole number of pixels; "
                        "set e.g. 200000000 (0 = no limit) or unset it")
    return value


def check_pixel_budget(data: bytes, source: str) -> None:
    """Refuse an image whose header declares more pixels than the budget, before decoding it."""
    budget = max_image_pixels()
    size = header_size(data) if budget else None
    if size is None or size[0] * size[1] <= budget:
        return
    width, height = size
    raise DataError(
        f"{source}: image is {width}x{height} ({_megapixels(width * height)}), above the "
        f"budget of {_megapixels(budget)}; if it is genuine, raise it with {PIXEL_BUDGET_ENV}=<pixels> (0 = no limit)"
    )


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.4g} megapixels"


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
    check_pixel_budget(data, source)
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(buffer, _IMREAD_FLAGS)
    except cv2.error as exc:
        raise DataError(f"{source}: cannot decode image ({one_line(exc)})") from None
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
    if array.size == 0:
        raise DataError(f"in-memory image: empty array of shape {array.shape}")
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
    return _shorter_crop(image, height, width, interpolation)


# The scaled image before the crop may be this many times the output (or the source, if larger) before the crop
# is moved ahead of the resize: a 1x1,000,000 strip at 224 px would otherwise become a 224x224,000,000 image.
_MAX_INTERMEDIATE_RATIO = 16


def _shorter_crop(image: np.ndarray, height: int, width: int, interpolation: int) -> np.ndarray:
    """Scale so the image covers (height, width), then take the centre.

    Ordinary shapes scale the whole image then crop (the path every model so far was trained with: pixels are
    unchanged). When the scaled image would be far larger than both the source and the output (extreme aspect
    ratios), only the source window under the centre crop is resized, so time and memory stay bounded.
    """
    src_h, src_w = image.shape[:2]
    scale = max(height / src_h, width / src_w)
    new_h, new_w = max(height, round(src_h * scale)), max(width, round(src_w * scale))
    top, left = (new_h - height) // 2, (new_w - width) // 2
    if new_h * new_w > _MAX_INTERMEDIATE_RATIO * max(src_h * src_w, height * width):
        return _crop_then_resize(image, (new_h, new_w), (top, left), (height, width), interpolation)
    if (new_h, new_w) != (src_h, src_w):
        image = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    return image[top : top + height, left : left + width]


def _crop_then_resize(
    image: np.ndarray, scaled: tuple[int, int], offset: tuple[int, int], size: tuple[int, int], interpolation: int
) -> np.ndarray:
    """The ``size`` crop at ``offset`` of ``image`` resized to ``scaled``, resizing only the source window under it.

    Per axis: the window covers the crop's source span plus a margin for the interpolation kernel, and is resized
    by the same factor as the whole image would be (up to rounding the window's scaled length to whole pixels, a
    sub-pixel shift at most; see tests/test_preprocess.py for the measured difference).
    """
    windows = [_source_window(n_src, n_new, start, n_out) for n_src, n_new, start, n_out in
               zip(image.shape[:2], scaled, offset, size)]
    (y0, y1, h_scaled, top), (x0, x1, w_scaled, left) = windows
    part = cv2.resize(image[y0:y1, x0:x1], (w_scaled, h_scaled), interpolation=interpolation)
    return part[top : top + size[0], left : left + size[1]]


def _source_window(n_src: int, n_new: int, start: int, n_out: int) -> tuple[int, int, int, int]:
    """(first, end) source indices to resize along one axis, its scaled length, and the crop start inside it.

    When the window can start and end on source pixels that land exactly on scaled pixels (the scale is
    n_new/n_src: every n_src/gcd source pixels), OpenCV samples the window at the very positions it would sample
    the whole image at, and the pixels are those of the full resize. Otherwise the scaled length is rounded.
    """
    factor = n_new / n_src
    margin = 4 / min(factor, 1.0) + 2  # Lanczos reaches 4 output pixels each side; in source pixels when shrinking
    first = max(0, int(np.floor(start / factor - margin)))
    end = min(n_src, int(np.ceil((start + n_out) / factor + margin)))
    period = n_src // np.gcd(n_src, n_new)
    if period <= 4 * (end - first):  # aligned: exact
        first, end = first // period * period, min(n_src, -(-end // period) * period)
        scaled = (end - first) * n_new // n_src
        return first, end, scaled, start - first * n_new // n_src
    scaled = max(n_out, round((end - first) * factor))
    crop_start = min(max(0, round(start - first * factor)), scaled - n_out)
    return first, end, scaled, crop_start


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
