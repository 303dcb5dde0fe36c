"""A small, learnable, competition-shaped dataset of drawn shapes (the demo and test fixture).

Layout written under ``out_dir``::

    train/<class>/<class>_0001.png, <class>_0002.jpg, ...   labelled, one folder per class
    test/img_0001.png, img_0002.jpg, ...                      unlabelled, classes shuffled
    test_labels.csv                                           id,label (the answers)
    sample_submission.csv                                     id,label with a placeholder label
    .clf-folder.json                                          clf's marker: written first, lists every file

``--overwrite`` clears only a folder carrying clf's sample-data marker and nothing else (see ``clf.ownership``):
a user's real competition in the same place is refused, never deleted.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from clf.atomic import atomic_write_bytes
from clf.errors import DataError
from clf.ownership import clear_owned, mark_folder, record_files

logger = logging.getLogger(__name__)

SHAPES = ("circle", "square", "triangle", "star", "cross")
DEFAULT_CLASSES = ("circle", "square", "triangle", "star")

_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 3]
_JPEG_PARAMS = [cv2.IMWRITE_JPEG_QUALITY, 92, cv2.IMWRITE_JPEG_OPTIMIZE, 0, cv2.IMWRITE_JPEG_PROGRESSIVE, 0]
_SUBPIXEL_SHIFT = 4  # fillPoly vertices in 1/16 pixel: smooth edges at 32 px
_DARK_MAX, _LIGHT_MIN = 110.0, 150.0  # channel bands of the background and of the shape
# Drawing takes ~24 bytes per pixel of float temporaries: 1024 px is ~75 MB per image, already far more than a demo
# needs (the shapes are learnable from 32 px); 4096 would be 1.2 GB per image, 100000 a MemoryError.
MIN_SIZE, MAX_SIZE = 16, 1024
KIND = "sample-data"


def generate_sample_competition(
    out_dir: str | os.PathLike,
    seed: int = 0,
    n_train_per_class: int = 60,
    n_test: int = 80,
    image_size: int = 64,
    classes: Sequence[str] = DEFAULT_CLASSES,
    overwrite: bool = False,
) -> dict:
    """Write filled shapes of random colour, size, position and rotation on noisy backgrounds.

    Byte-identical output for the same arguments. Files alternate PNG and JPEG.

    Args:
        out_dir: folder to create or fill; must be empty unless ``overwrite``. It gets clf's marker first, and
            every file is listed in it before it is written.
        seed: seed of everything drawn.
        n_train_per_class: labelled images per class.
        n_test: unlabelled test images, classes balanced and shuffled.
        image_size: side of the square images in pixels, ``MIN_SIZE..MAX_SIZE``.
        classes: shape names, a subset of ``SHAPES``.
        overwrite: replace the files of an earlier run: only in a folder carrying clf's sample-data marker
            and holding nothing clf did not write there.

    Raises:
        DataError: a bad argument, or ``out_dir`` is not a folder / is not empty; nothing is written.
        ClfError: ``overwrite`` of a folder that is not clf's sample-data folder or holds foreign files.

    Returns:
        summary: out_dir, train_dir, test_dir, test_labels_csv, sample_submission_csv (str paths),
        classes, n_train, n_test, image_size, seed.
    """
    out = Path(out_dir)
    classes = list(classes)
    _check_arguments(out, classes, n_train_per_class, n_test, image_size, seed)
    _prepare_folder(out, overwrite)
    ids = [f"img_{i + 1:04d}" for i in range(n_test)]
    # The whole plan goes into the marker at once, before any of it is written (one marker write, not one per image).
    record_files(out, _planned_files(classes, n_train_per_class, ids))
    rng = np.random.default_rng(seed)

    n_train = 0
    for cls in classes:
        class_dir = out / "train" / cls
        class_dir.mkdir(parents=True, exist_ok=True)
        for i in range(n_train_per_class):
            image = draw_sample(cls, image_size, rng)
            _write_image(class_dir / _image_name(cls, i), image)
            n_train += 1

    test_dir = out / "test"
    test_dir.mkdir(exist_ok=True)
    test_labels = [classes[k] for k in rng.permutation(np.arange(n_test) % len(classes))]
    for i, (image_id, cls) in enumerate(zip(ids, test_labels)):
        _write_image(test_dir / _image_name(image_id, i, numbered=False), draw_sample(cls, image_size, rng))

    _write_csv(out / "test_labels.csv", zip(ids, test_labels))
    _write_csv(out / "sample_submission.csv", ((image_id, classes[0]) for image_id in ids))
    logger.debug("wrote %d train and %d test images to %s", n_train, n_test, out)  # the CLI reports it
    return {
        "out_dir": str(out),
        "train_dir": str(out / "train"),
        "test_dir": str(test_dir),
        "test_labels_csv": str(out / "test_labels.csv"),
        "sample_submission_csv": str(out / "sample_submission.csv"),
        "classes": classes,
        "n_train": n_train,
        "n_test": n_test,
        "image_size": image_size,
        "seed": seed,
    }


def _check_arguments(
    out: Path, classes: list[str], n_train_per_class: int, n_test: int, image_size: int, seed: int
) -> None:
    """Every argument, before anything is written (messages name the CLI flags)."""
    unknown = [c for c in classes if c not in SHAPES]
    if unknown:
        raise DataError(f"{out}: unknown shape '{unknown[0]}'; choose from {', '.join(SHAPES)}")
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise DataError(f"{out}: need at least 2 different classes, got {', '.join(classes) or 'none'}")
    if not MIN_SIZE <= image_size <= MAX_SIZE:
        raise DataError(f"--size {image_size}: the image side must be {MIN_SIZE}..{MAX_SIZE} pixels "
                        f"(the shapes are learnable from 32); choose a size in that range")
    if n_train_per_class < 1:
        raise DataError(f"--per-class {n_train_per_class}: need at least 1 training image per class")
    if n_test < 0:
        raise DataError(f"--test {n_test}: need 0 or more test images")
    if seed < 0:
        raise DataError(f"--seed {seed}: the seed must be 0 or more")
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    parent = next((p for p in out.parents if p.exists() or p.is_symlink()), Path("."))
    if not parent.is_dir():
        raise DataError(f"{out}: {parent} is a file, not a folder; choose another place")


def _prepare_folder(out: Path, overwrite: bool) -> None:
    """Create and mark ``out``; refuse a non-empty one unless ``overwrite``, then clear only clf's own files there."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise DataError(f"{out}: folder is not empty; choose a new folder or pass --overwrite")
        clear_owned(out, KIND, "sample-data folder")  # refuses a user's folder, or foreign files in ours
        return
    mark_folder(out, KIND)


def _image_name(stem: str, index: int, numbered: bool = True) -> str:
    """``<stem>_0001.png``, ``<stem>_0002.jpg``, ...: files alternate PNG and JPEG."""
    name = f"{stem}_{index + 1:04d}" if numbered else stem
    return name + (".png" if index % 2 == 0 else ".jpg")


def _planned_files(classes: list[str], n_train_per_class: int, test_ids: list[str]) -> list[str]:
    """Every file this call writes, relative to the output folder."""
    train = [f"train/{cls}/{_image_name(cls, i)}" for cls in classes for i in range(n_train_per_class)]
    test = [f"test/{_image_name(image_id, i, numbered=False)}" for i, image_id in enumerate(test_ids)]
    return train + test + ["test_labels.csv", "sample_submission.csv"]


def draw_sample(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One BGR uint8 (size, size, 3) image: a light filled ``shape`` on a noisy dark background.

    The background is a gradient between two random colours with a few thin random lines; the
    shape has a random colour, size, position and rotation; Gaussian noise covers everything.
    """
    background, foreground = _pick_colours(rng)
    image = _gradient(size, background, rng)
    _draw_clutter(image, rng)
    radius = rng.uniform(0.30, 0.42) * size  # circumradius: the shape always fits inside
    centre = rng.uniform(radius + 1, size - radius - 1, size=2)
    angle = rng.uniform(0.0, 2 * np.pi)
    points = _outline(shape, centre, radius, angle)
    vertices = np.round(points * (1 << _SUBPIXEL_SHIFT)).astype(np.int32)
    cv2.fillPoly(image, [vertices], foreground, cv2.LINE_AA, _SUBPIXEL_SHIFT)
    noise = rng.normal(0.0, rng.uniform(6.0, 20.0), size=image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def _pick_colours(rng: np.random.Generator) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Two dark background colours (gradient ends) and a light shape colour, hues random.

    Every channel of the shape is at least 40 levels brighter than the background. One fixed
    polarity matters: with hue-only contrast, or light and dark shapes mixed, 48-60 images per
    class are too few for a small CNN to learn from in a dozen epochs.
    """
    background = rng.uniform(0.0, _DARK_MAX, size=(2, 3))
    foreground = rng.uniform(_LIGHT_MIN, 255.0, size=3)
    return background, tuple(float(v) for v in foreground)


def _gradient(size: int, ends: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """float32 (size, size, 3) linear blend between two colours along a random direction."""
    theta = rng.uniform(0.0, 2 * np.pi)
    coords = (np.arange(size, dtype=np.float32) - (size - 1) / 2) / size
    t = np.clip(0.5 + np.cos(theta) * coords[None, :] + np.sin(theta) * coords[:, None], 0.0, 1.0)
    return (ends[0] * (1 - t[..., None]) + ends[1] * t[..., None]).astype(np.float32)


def _draw_clutter(image: np.ndarray, rng: np.random.Generator) -> None:
    """A few thin random lines: background structure the network must learn to ignore."""
    size = image.shape[0]
    for _ in range(int(rng.integers(0, 4))):
        p1, p2 = rng.uniform(0, size, size=(2, 2))
        colour = tuple(float(v) for v in rng.uniform(0, 255, size=3))
        cv2.line(image, (int(p1[0]), int(p1[1])), (int(p2[0]), int(p2[1])), colour, 1, cv2.LINE_AA)


def _outline(shape: str, centre: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """Polygon vertices (N, 2) in pixel coordinates (x, y)."""
    if shape == "circle":
        radii, n = np.array([1.0]), 48
    elif shape == "square":
        radii, n = np.array([1.0]), 4
    elif shape == "triangle":
        radii, n = np.array([1.0]), 3
    elif shape == "star":
        radii, n = np.array([1.0, 0.45]), 10
    elif shape == "cross":
        return _cross(centre, radius, angle)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    theta = angle + 2 * np.pi * np.arange(n) / n
    r = radius * np.resize(radii, n)
    return centre + np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)


def _cross(centre: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """A plus sign with arms of half-width 0.3 * arm length, rotated by ``angle``."""
    a, w = radius / np.sqrt(1 + 0.09), 0.3 * radius / np.sqrt(1 + 0.09)  # arm tip corners on the circle
    quarter = np.array([[w, -w], [a, -w], [a, w]])
    rot90 = np.array([[0.0, -1.0], [1.0, 0.0]])
    corners = np.concatenate([quarter @ np.linalg.matrix_power(rot90, k).T for k in range(4)])
    c, s = np.cos(angle), np.sin(angle)
    return centre + corners @ np.array([[c, s], [-s, c]])


def _write_image(path: Path, image: np.ndarray) -> None:
    params = _PNG_PARAMS if path.suffix == ".png" else _JPEG_PARAMS
    ok, encoded = cv2.imencode(path.suffix, image, params)
    if not ok:  # pragma: no cover - OpenCV always has PNG and JPEG encoders
        raise DataError(f"{path}: OpenCV could not encode the image")
    atomic_write_bytes(path, encoded.tobytes())


def _write_csv(path: Path, rows) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "label"])
    writer.writerows(rows)
    atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))
