"""Exact and near-duplicate images: content digests, perceptual hashes and the pairs within a Hamming distance.

- Exact duplicates compare a digest of the DECODED pixels (blake2b of the shape and the RGB bytes), not of the file:
  the same picture saved again as PNG with another compression level or without its metadata, or converted
  losslessly (PNG <-> BMP), has other bytes but is the same training example. The pixels are decoded anyway for the
  perceptual hash, so the digest costs one pass over them.
- Near-duplicates compare a signature of the grey image: a 64-bit DCT perceptual hash (pHash: the 8x8 lowest
  frequencies of a 32x32 area thumbnail, each bit "above the median of the 63 AC terms") within
  `NEAR_DUPLICATE_DISTANCE` bits, and the thumbnail's brightness and contrast (mean within `MAX_MEAN_SHIFT` grey
  levels, standard deviations within a ratio of `MAX_CONTRAST_RATIO`) and colour (the means of R - G and B - G within
  `MAX_MEAN_SHIFT` too). Re-encoding, resizing and slight crops move few bits and barely change the tones or the
  colour; distinct pictures differ in about half the bits, and the few distinct pictures with the same coarse layout
  (a dark top over a bright bottom; one shape drawn again elsewhere on a plain background) mostly differ in their
  tones or colours. The thresholds are measured (benchmarks/near_duplicates.py).

Images are read through clf's one decode path (clf.data.preprocess): an unreadable file costs only its own row.
Hashing N images is O(N) (in threads: OpenCV and hashlib release the GIL); the pair search is vectorised numpy
(XOR and popcount of packed 64-bit hashes, block by block), a few seconds for 50,000 images. Torch-free.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from clf.config.checking import NEAR_DUPLICATE_DISTANCE
from clf.data.image_header import header_mode
from clf.data.preprocess import decode_rgb, read_bytes
from clf.errors import DataError

logger = logging.getLogger(__name__)

# Measured on crops of real photos (benchmarks/near_duplicates.py --crops 60: 840 crops of 14 photos, 3360 copies):
# at these thresholds 98.3 % of JPEG-q60 copies, 99.4 % of 0.5x resizes and 94-96 % of 5 % crops are found; none of
# 11,019 pairs of disjoint crops of one photo nor of 327,600 pairs of crops of different photos is flagged (the bits
# alone flagged 1 and 6). On 2,047,500 pairs of crops of different photos the tones cut the false pairs from 33 to 2.
# The copies missed are nearly flat crops (a patch of sky, grey std under ~8 levels): their AC terms are as small
# as JPEG's rounding, so part of their bits are noise.
# NEAR_DUPLICATE_DISTANCE (12 bits) lives in clf.config.checking: `clf check --max-distance` shows it as its default.
MAX_MEAN_SHIFT = 12.0  # grey levels between the thumbnails' means (copies: 99th percentile 5.6)
MAX_CONTRAST_RATIO = 1.3  # between the thumbnails' standard deviations (copies: 99th percentile 1.24)
HASH_SIDE = 32  # the thumbnail the DCT runs on
HASH_FREQUENCIES = 8  # the 8x8 lowest frequencies: 64 bits
# One signature per image: the pHash bits and the thumbnail's grey mean and standard deviation.
SIGNATURE = np.dtype([("phash", "<u8"), ("mean", "<f4"), ("std", "<f4"), ("chroma", "<f4", (2,))])
_INTEGRAL_MAX_PIXELS = 4_000_000  # the float64 integral image: 32 MB at most
_BLOCK_ELEMENTS = 1 << 18  # pairs compared per numpy step (2 MB of XORed hashes: stays in the cache)
_BYTE_BITS = np.array([bin(b).count("1") for b in range(256)], dtype=np.uint8)


def signature(image: np.ndarray) -> tuple[int, float, float, tuple[float, float]]:
    """(pHash, mean, std, (mean R - G, mean B - G)) of an RGB (H, W, 3) or grey (H, W) uint8 image: one row of a
    SIGNATURE array (a grey image's chroma is (0, 0))."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    thumb = box_thumbnail(grey)
    low = cv2.dct(thumb)[:HASH_FREQUENCIES, :HASH_FREQUENCIES].reshape(-1)
    # above the median of the 63 AC terms (the DC term, the mean brightness, would only shift it); 63 is odd
    median = np.partition(low[1:], 31)[31]
    bits = int(np.packbits(low > median).view(">u8")[0])
    mean, std = cv2.meanStdDev(thumb)  # one call: numpy's mean and std cost a third of the signature
    return bits, float(mean[0, 0]), float(std[0, 0]), _chroma(image)


def _chroma(image: np.ndarray) -> tuple[float, float]:
    """The image's mean R - G and B - G: two pictures of one layout in other colours (the same shape drawn in red
    and in blue, on grounds of similar brightness) have the same grey hash and tones, not the same chroma."""
    if image.ndim != 3:
        return 0.0, 0.0
    red, green, blue = cv2.mean(image)[:3]
    return red - green, blue - green


def signatures(rows: Sequence[tuple[int, float, float, tuple[float, float]]]) -> np.ndarray:
    """A SIGNATURE array from `signature` rows."""
    return np.array(list(rows), dtype=SIGNATURE)


def box_thumbnail(grey: np.ndarray) -> np.ndarray:
    """The HASH_SIDE x HASH_SIDE float32 means of an even grid of boxes over the image (an area resize).

    Exact box sums, so the means stay unrounded and a flat picture's tiny contrasts survive: through the integral
    image up to `_INTEGRAL_MAX_PIXELS` (1.3 ms for 1.5 megapixels where INTER_AREA's fractional path took 9 ms), by
    summing rows then columns above it (memory: a strip of boxes, not 8 bytes a pixel). A side under HASH_SIDE
    pixels gets one box a pixel, and the small grid is stretched to HASH_SIDE (never the whole image: a 1 x 1,000,000
    strip stays 1 MB).
    """
    height, width = grey.shape
    rows, cols, inverse_area = _box_grid(height, width)
    if height * width <= _INTEGRAL_MAX_PIXELS:
        corners = cv2.integral(grey, sdepth=cv2.CV_64F)[rows][:, cols]
        sums = corners[1:, 1:] - corners[:-1, 1:] - corners[1:, :-1] + corners[:-1, :-1]
    elif len(rows) * width <= height * len(cols):  # sum along the axis that leaves the smaller strip first
        sums = np.add.reduceat(np.add.reduceat(grey, rows[:-1], axis=0, dtype=np.uint64), cols[:-1], axis=1)
    else:
        sums = np.add.reduceat(np.add.reduceat(grey, cols[:-1], axis=1, dtype=np.uint64), rows[:-1], axis=0)
    thumb = (sums * inverse_area).astype(np.float32)
    if thumb.shape != (HASH_SIDE, HASH_SIDE):
        thumb = cv2.resize(thumb, (HASH_SIDE, HASH_SIDE), interpolation=cv2.INTER_LINEAR)
    return thumb


@functools.lru_cache(maxsize=256)
def _box_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The box edges along each axis (HASH_SIDE boxes, or one a pixel on a shorter side) and 1 / each box's area.
    Data sets repeat a few sizes: computed once each."""
    rows = np.linspace(0, height, min(height, HASH_SIDE) + 1).round().astype(np.int64)
    cols = np.linspace(0, width, min(width, HASH_SIDE) + 1).round().astype(np.int64)
    grid = (rows, cols, 1.0 / np.outer(np.diff(rows), np.diff(cols)))
    for array in grid:
        array.flags.writeable = False  # shared by every call
    return grid


def pixel_digest(image: np.ndarray) -> str:
    """A digest of the decoded pixels: equal for equal images, whatever file bytes they came from."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(image.shape).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


@dataclass(frozen=True)
class ImageFacts:
    """What one decoded image says about itself: size, stored colour layout, near-duplicate signature, pixel digest."""

    width: int
    height: int
    mode: str | None  # header_mode: grey, RGB, RGBA, ...; None when the header does not say
    signature: tuple[int, float, float]
    digest: str | None = None  # with exact=True only


def image_facts(path: str | os.PathLike, exact: bool = True) -> ImageFacts:
    """Read and decode `path` once; its facts.

    Raises:
        DataError: the file cannot be read or decoded (one line naming it).
    """
    data = read_bytes(path)
    image = decode_rgb(data, str(path))
    return ImageFacts(width=int(image.shape[1]), height=int(image.shape[0]), mode=header_mode(data),
                      signature=signature(image), digest=pixel_digest(image) if exact else None)


@dataclass(frozen=True)
class Scan:
    """The facts of every readable path (None for the others) and the one-line reason of each unreadable one."""

    facts: list[ImageFacts | None]
    problems: list[tuple[str, str]]  # (path, "<path>: reason")

    def readable(self) -> list[int]:
        return [i for i, facts in enumerate(self.facts) if facts is not None]

    def signatures(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """The SIGNATURE array of the readable paths (or of `indices`, which must be readable)."""
        chosen = self.readable() if indices is None else indices
        return signatures([self.facts[i].signature for i in chosen])  # type: ignore[union-attr]


def scan_images(paths: Sequence[str | os.PathLike], exact: bool = True, workers: int = 4,
                progress: Callable[[int], None] | None = None) -> Scan:
    """`image_facts` of every path, in threads; an unreadable file is reported, never raised."""
    facts: list[ImageFacts | None] = []
    problems: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, (path, result) in enumerate(zip(paths, pool.map(lambda p: _facts_or_problem(p, exact), paths)), 1):
            if isinstance(result, str):
                facts.append(None)
                problems.append((str(path), result))
            else:
                facts.append(result)
            if progress is not None:
                progress(done)
    return Scan(facts, problems)


def _facts_or_problem(path: str | os.PathLike, exact: bool) -> ImageFacts | str:
    try:
        return image_facts(path, exact)
    except DataError as exc:
        return str(exc)


# ---------------------------------------------------------------- pairs


def popcount(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (numpy >= 2 counts them natively; older numpy through a byte table)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values)
    return _BYTE_BITS[values.view(np.uint8)].reshape(*values.shape, 8).sum(axis=-1, dtype=np.uint8)


def near_pairs(sigs: np.ndarray, others: np.ndarray | None = None,
               max_distance: int = NEAR_DUPLICATE_DISTANCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The near-duplicate pairs: (i, j, Hamming distance) int64 arrays, i < j inside `sigs` alone, else i indexing
    `sigs` and j `others` (SIGNATURE arrays).

    The bits are compared block by block in numpy (XOR, popcount: O(N*M) bit operations, memory bounded by the
    block), then the few pairs within `max_distance` bits are checked for their tones.
    """
    within = others is None
    reference = sigs if others is None else others
    i, j, distance = hamming_pairs(sigs["phash"], None if within else reference["phash"], max_distance)
    same_tone = np.abs(sigs["mean"][i] - reference["mean"][j]) <= MAX_MEAN_SHIFT
    low, high = np.minimum(sigs["std"][i], reference["std"][j]), np.maximum(sigs["std"][i], reference["std"][j])
    same_tone &= high <= MAX_CONTRAST_RATIO * np.maximum(low, 1.0)  # a flat picture's std is noise: floor 1 level
    same_tone &= np.all(np.abs(sigs["chroma"][i] - reference["chroma"][j]) <= MAX_MEAN_SHIFT, axis=1)
    return i[same_tone], j[same_tone], distance[same_tone]


def hamming_pairs(hashes: np.ndarray, others: np.ndarray | None = None,
                  max_distance: int = NEAR_DUPLICATE_DISTANCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs of uint64 hashes within `max_distance` bits: (i, j, distance), as `near_pairs` (bits only)."""
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    within = others is None
    reference = hashes if within else np.ascontiguousarray(others, dtype=np.uint64)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    width = max(1, len(reference))
    rows = max(1, _BLOCK_ELEMENTS // width)
    xor = np.empty(rows * width, dtype=np.uint64)  # reused: a fresh 2 MB array per block costs its page faults
    for start in range(0, len(hashes), rows):
        block = hashes[start : start + rows]
        first = start if within else 0  # inside one set, only the pairs right of the diagonal
        part = xor[: len(block) * (len(reference) - first)].reshape(len(block), len(reference) - first)
        np.bitwise_xor(block[:, None], reference[None, first:], out=part)
        distance = popcount(part)
        close = distance <= max_distance
        if not close.any():
            continue
        i, j = np.divmod(np.flatnonzero(close), close.shape[1])  # 2-D nonzero took 20x as long
        if within:
            keep = j + first > i + start
            i, j = i[keep], j[keep]
        found.append((i + start, j + first, distance[i, j]))
    if not found:
        return tuple(np.zeros(0, dtype=np.int64) for _ in range(3))  # type: ignore[return-value]
    return tuple(np.concatenate([f[k] for f in found]).astype(np.int64) for k in range(3))  # type: ignore


def has_near_duplicate(sigs: np.ndarray, others: np.ndarray,
                       max_distance: int = NEAR_DUPLICATE_DISTANCE) -> np.ndarray:
    """Bool per signature of `sigs`: some signature of `others` is its near-duplicate."""
    found = np.zeros(len(sigs), dtype=bool)
    if len(sigs) and len(others):
        found[near_pairs(sigs, others, max_distance)[0]] = True
    return found


def connected_groups(count: int, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Component ids 0..G-1 (numbered by first item) of `count` items joined by the (i, j) index arrays in `pairs`."""
    parent = np.arange(count)

    def root(item: int) -> int:
        while parent[item] != item:
            parent[item] = parent[parent[item]]  # path halving
            item = parent[item]
        return item

    for left, right in pairs:
        for a, b in zip(left.tolist(), right.tolist()):
            ra, rb = root(a), root(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([root(i) for i in range(count)], dtype=np.int64)
    _, first, inverse = np.unique(roots, return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first, kind="stable"), kind="stable")[inverse.reshape(-1)].astype(np.int64)


def split_groups(groups: Sequence[str] | None, sigs: np.ndarray | None,
                 max_distance: int = NEAR_DUPLICATE_DISTANCE) -> np.ndarray | None:
    """The groups a split keeps whole: --group-col's groups, joined (with --dedup: `sigs` given) by every
    near-duplicate pair into connected components. None when there is neither."""
    if groups is None and sigs is None:
        return None
    count = len(groups) if groups is not None else len(sigs)  # type: ignore[arg-type]
    links: list[tuple[np.ndarray, np.ndarray]] = []
    if groups is not None:
        _, first, inverse = np.unique(np.asarray(groups, dtype=str), return_index=True, return_inverse=True)
        links.append((np.arange(count), first[inverse.reshape(-1)]))  # each item to its group's first item
    if sigs is not None:
        i, j, _ = near_pairs(sigs, max_distance=max_distance)
        links.append((i, j))
        logger.debug("--dedup: %d near-duplicate pair(s) within %d bits", len(i), max_distance)
    return connected_groups(count, links)
