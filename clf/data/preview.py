"""A PNG grid of augmented samples, so a user sees what the model sees.

One row per source image: first its un-augmented (Preprocess-resized) image, then ``columns`` augmented draws,
with thin separators. Deterministic under ``seed``. numpy + OpenCV only: no torch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from clf.atomic import atomic_write_bytes
from clf.config import Preprocess
from clf.data.augment import Pipeline
from clf.data.preprocess import ImageSource, load_resized

SEPARATOR = 2  # pixels between cells
SEPARATOR_VALUE = 255  # white lines
MIN_CELL = 96  # tiny inputs (32-px digits) are upscaled (nearest) so that each cell is at least this many pixels


def cell_seeds(rows: int, columns: int, seed: int) -> np.ndarray:
    """The per-sample augmentation seed of every augmented cell, (rows, columns) int64, from ``seed`` alone."""
    return np.random.default_rng(seed).integers(0, 2**62, (rows, columns), dtype=np.int64)


def preview_grid(images: Sequence[np.ndarray], pipeline: Pipeline, columns: int, seed: int,
                 cell_scale: int = 1) -> np.ndarray:
    """The RGB uint8 grid: a row per image, the image itself then ``columns`` draws of ``pipeline``.

    Args:
        images: uint8 (H, W, 3) RGB images of one shape (the Preprocess-resized images).
        pipeline: the augmentation to show.
        columns: augmented draws per image (>= 1).
        seed: the grid's seed; the same seed gives the same grid.
        cell_scale: integer upscaling of every cell (nearest neighbour), to make tiny images visible.
    """
    if not images:
        raise ValueError("preview_grid needs at least one image")
    if columns < 1 or cell_scale < 1:
        raise ValueError(f"preview_grid needs columns >= 1 and cell_scale >= 1, got {columns} and {cell_scale}")
    shape = images[0].shape
    if any(image.shape != shape or image.dtype != np.uint8 for image in images) or len(shape) != 3:
        raise ValueError(f"preview_grid needs uint8 (H, W, 3) images of one shape, got {[i.shape for i in images]}")
    seeds = cell_seeds(len(images), columns, seed)
    rows = [[image] + [pipeline(image, int(s)) for s in row_seeds] for image, row_seeds in zip(images, seeds)]
    cell_h, cell_w = shape[0] * cell_scale, shape[1] * cell_scale
    grid = np.full(
        (len(rows) * (cell_h + SEPARATOR) - SEPARATOR, (columns + 1) * (cell_w + SEPARATOR) - SEPARATOR, shape[2]),
        SEPARATOR_VALUE, np.uint8,
    )
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            if cell_scale > 1:
                cell = cv2.resize(cell, (cell_w, cell_h), interpolation=cv2.INTER_NEAREST).reshape(cell_h, cell_w, -1)
            top, left = r * (cell_h + SEPARATOR), c * (cell_w + SEPARATOR)
            grid[top:top + cell_h, left:left + cell_w] = cell
    return grid


def preview_cell_scale(height: int, width: int, min_cell: int = MIN_CELL) -> int:
    """The integer upscaling that makes the shorter side of a cell at least ``min_cell`` pixels (1 for large inputs)."""
    return max(1, math.ceil(min_cell / max(1, min(height, width))))


def write_preview(paths: Sequence[ImageSource], pre: Preprocess, pipeline: Pipeline, output: str | os.PathLike,
                  columns: int = 8, seed: int = 0) -> Path:
    """Load ``paths`` through the one preprocessing (resize only), write the preview grid as a PNG, atomically.

    Returns:
        the output path.

    Raises:
        DataError: an image that cannot be read (from ``load_resized``).
        StorageError: the PNG cannot be written.
    """
    images = [load_resized(path, pre) for path in paths]
    scale = preview_cell_scale(*pre.size)
    grid = preview_grid(images, pipeline, columns, seed, cell_scale=scale)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 3-channel array as PNG
        raise ValueError("OpenCV could not encode the preview grid as PNG")
    atomic_write_bytes(output, encoded.tobytes())
    return Path(output)
