"""A PNG grid of augmented samples, so a user sees what the model sees.

One row per source image: first its un-augmented (Preprocess-resized) image, then ``columns`` augmented draws,
with thin separators. Deterministic under ``seed``. numpy + OpenCV only: no torch. The plan of `clf augment-preview`
comes from a data folder and the training flags (``plan_for_data``), from a run folder's record (``plan_for_run``) or
from a fold group's (``plan_for_group``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from clf.atomic import atomic_write_bytes, check_outputs
from clf.config import Preprocess, TrainConfig
from clf.data.augment import Pipeline
from clf.data.datasets import LabelledSet, load_labelled
from clf.data.folds import member_folders, read_group
from clf.data.preprocess import ImageSource, load_resized
from clf.errors import ClfError, DataError, one_line
from clf.run_files import CHECKPOINT_FILES, CONFIG_FILE, GROUP_FILE, MARKER_FILE, RunFileError, read_config

logger = logging.getLogger(__name__)

SEPARATOR = 2  # pixels between cells
SEPARATOR_VALUE = 255  # white lines
MIN_CELL = 96  # tiny inputs (32-px digits) are upscaled (nearest) so that each cell is at least this many pixels
# Bounds of a grid, checked before any image is read: 1e6 x 1e6 ran 82 s and died of OpenCV's out-of-memory. 64 x 65
# cells is more than a screen shows; 100 megapixels (300 MB of RGB, as the decode budget of one image) is what the
# largest grid may hold (one 4096-px image and its draw are 34 megapixels: a 1 x 1 grid always fits).
MAX_ROWS = 64
MAX_COLUMNS = 64
MAX_GRID_PIXELS = 100_000_000


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


def check_grid_counts(rows: int, columns: int) -> None:
    """--rows and --columns within 1..MAX_ROWS and 1..MAX_COLUMNS.

    Raises:
        ClfError: naming both flags and the values given.
    """
    if rows < 1 or columns < 1:
        raise ClfError(f"--rows and --columns must be >= 1, got {rows} and {columns}")
    if rows > MAX_ROWS or columns > MAX_COLUMNS:
        raise ClfError(f"--rows must be <= {MAX_ROWS} and --columns <= {MAX_COLUMNS}, got {rows} and {columns}")


def grid_size(rows: int, columns: int, pre: Preprocess) -> tuple[int, int]:
    """The (height, width) in pixels of the grid `preview_grid` draws for `rows` images of `pre`'s size."""
    scale = preview_cell_scale(*pre.size)
    cell_h, cell_w = pre.size[0] * scale, pre.size[1] * scale
    return rows * (cell_h + SEPARATOR) - SEPARATOR, (columns + 1) * (cell_w + SEPARATOR) - SEPARATOR


def check_grid(rows: int, columns: int, pre: Preprocess) -> None:
    """The grid's counts and its pixel count (at most MAX_GRID_PIXELS), before any image is read.

    Raises:
        ClfError: one line with the grid's size and what to lower.
    """
    check_grid_counts(rows, columns)
    height, width = grid_size(rows, columns, pre)
    if height * width > MAX_GRID_PIXELS:
        raise ClfError(f"--rows {rows} x --columns {columns} of {pre.size[1]}x{pre.size[0]}-pixel images make a "
                       f"{width}x{height} grid ({height * width / 1e6:.1f} megapixels), above the limit of "
                       f"{MAX_GRID_PIXELS // 1_000_000}; use fewer --rows or --columns")


def preview_image(paths: Sequence[ImageSource], pre: Preprocess, pipeline: Pipeline, columns: int = 8,
                  seed: int = 0) -> np.ndarray:
    """The preview grid of ``paths`` (each through the one preprocessing, resize only) as uint8 RGB HWC.

    Raises:
        DataError: an image that cannot be read (from ``load_resized``).
    """
    images = [load_resized(path, pre) for path in paths]
    return preview_grid(images, pipeline, columns, seed, cell_scale=preview_cell_scale(*pre.size))


def write_preview(paths: Sequence[ImageSource], pre: Preprocess, pipeline: Pipeline, output: str | os.PathLike,
                  columns: int = 8, seed: int = 0) -> Path:
    """Load ``paths`` through the one preprocessing (resize only), write the preview grid as a PNG, atomically.

    Returns:
        the output path.

    Raises:
        DataError: an image that cannot be read (from ``load_resized``).
        StorageError: the PNG cannot be written.
    """
    grid = preview_image(paths, pre, pipeline, columns, seed)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 3-channel array as PNG
        raise ValueError("OpenCV could not encode the preview grid as PNG")
    atomic_write_bytes(output, encoded.tobytes())
    return Path(output)


@dataclass(frozen=True)
class PreviewPlan:
    """What `clf augment-preview` shows: candidate images (in showing order), their preprocessing, the pipeline."""

    candidates: list[str]
    pre: Preprocess
    pipeline: Pipeline
    source: str  # where the pipeline came from, for the summary line: "--augment default" or the run folder


def plan_for_data(cfg: TrainConfig) -> PreviewPlan:
    """The images of ``cfg.data`` with the pipeline ``clf train`` would build from the same flags."""
    from clf.data.augment_presets import build_pipeline, resolve_knobs

    labelled = load_labelled(cfg.data, cfg.labels_csv, id_col=cfg.id_col, label_col=cfg.label_col)
    pipeline = build_pipeline(resolve_knobs(cfg.augment, cfg.augment_overrides()))
    pre = Preprocess(size=(cfg.img_size, cfg.img_size), resize=cfg.resize, interpolation=cfg.interpolation)
    return PreviewPlan(spread_over_classes(labelled, cfg.seed), pre, pipeline, f"--augment {cfg.augment}")


def plan_for_run(run_dir: Path) -> PreviewPlan:
    """A run folder's own recorded pipeline and preprocessing, on its training images (split.json, else its data).

    Raises:
        DataError: config.json unreadable or without the augmentation record (a run of clf 0.1), or the data is gone.
    """
    config = _run_config(run_dir)
    try:
        pipeline = Pipeline.from_dict(config["augment"])
        pre = Preprocess.from_dict(config["preprocess"])
        train = config["train"]
        labelled = load_labelled(train["data"], train.get("labels_csv"), id_col=train.get("id_col", "filename"),
                                 label_col=train.get("label_col", "label"))
    except (KeyError, TypeError, ValueError, ClfError) as exc:
        raise DataError(f"{run_dir / CONFIG_FILE}: cannot rebuild the run's augmentation ({one_line(exc)}); "
                        "preview the data folder with the run's flags instead") from None
    return PreviewPlan(spread_over_classes(labelled, int(train.get("seed", 0))), pre, pipeline, str(run_dir))


def plan_for_group(group_dir: Path) -> PreviewPlan:
    """A fold group's recorded pipeline (its folds share one recipe): the first fold run that recorded it, else,
    before any fold has started, the one the group record's settings build.

    Raises:
        DataError: an unreadable group record or fold config.json, or a record without training settings.
    """
    group = read_group(group_dir)
    for member in member_folders(group_dir, group):
        if not member.is_symlink() and is_run_folder(member):  # a record is data: nothing outside is followed
            return replace(plan_for_run(member), source=str(group_dir))
    record = group_dir / GROUP_FILE
    try:
        if group.config is None:
            raise ValueError("no training settings")
        cfg = TrainConfig.from_saved(group.config)
    except (ClfError, TypeError, ValueError) as exc:
        raise DataError(f"{record}: cannot rebuild the group's augmentation ({one_line(exc)}); preview the data "
                        "folder with the group's flags instead") from None
    return replace(plan_for_data(cfg), source=str(group_dir))


def _run_config(run_dir: Path) -> dict:
    path = run_dir / CONFIG_FILE
    try:
        config = read_config(run_dir)
    except RunFileError:
        config = {}  # JSON, but not an object: it records no augmentation either
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the run's settings ({one_line(exc)})") from None
    if "augment" not in config:
        raise DataError(f"{path}: the run records no augmentation (trained before clf 0.2); preview its data folder "
                        "with the run's flags instead")
    return config


def is_run_folder(path: Path) -> bool:
    """A clf run folder (config.json beside a checkpoint or clf's marker), not a data folder."""
    return (path / CONFIG_FILE).is_file() and (
        (path / MARKER_FILE).exists() or any((path / name).exists() for name in CHECKPOINT_FILES)
    )


def spread_over_classes(labelled: LabelledSet, seed: int) -> list[str]:
    """Every image, ordered round-robin over the classes (each class shuffled under ``seed``): the first N rows of a
    grid show as many classes as possible."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[str]] = {}
    for path, label in zip(labelled.paths, labelled.labels):
        by_class.setdefault(int(label), []).append(str(path))
    queues = [list(rng.permutation(paths)) for _, paths in sorted(by_class.items())]
    order: list[str] = []
    for rank in range(max((len(q) for q in queues), default=0)):
        order.extend(str(q[rank]) for q in queues if rank < len(q))
    return order


def readable_images(candidates: Sequence[str], pre: Preprocess, count: int) -> list[str]:
    """The first ``count`` candidates that decode; each unreadable one is reported and skipped.

    Raises:
        DataError: none of the candidates can be read.
    """
    chosen: list[str] = []
    for path in candidates:
        if len(chosen) == count:
            break
        try:
            load_resized(path, pre)
        except DataError as exc:
            logger.warning("skipped: %s", exc)
            continue
        chosen.append(path)
    if not chosen:
        raise DataError(f"none of the {len(candidates)} images can be read; nothing to preview")
    return chosen


def write_plan_preview(plan: PreviewPlan, output: str | os.PathLike, rows: int = 8, columns: int = 8,
                       seed: int = 0) -> list[str]:
    """Write the preview of ``plan`` (``rows`` images x ``columns`` draws) to ``output``; returns the images shown.

    Raises:
        ClfError: rows or columns out of bounds, a grid above MAX_GRID_PIXELS, an output that would replace an
            input image.
        DataError: no image can be read.
        StorageError: the PNG cannot be written.
    """
    check_grid(rows, columns, plan.pre)
    check_outputs({"--output": output}, input_files=plan.candidates)
    paths = readable_images(plan.candidates, plan.pre, rows)
    write_preview(paths, plan.pre, plan.pipeline, output, columns=columns, seed=seed)
    return paths
