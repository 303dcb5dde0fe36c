"""Finding image files on disk (no decoding here; see ``clf.data.preprocess``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from clf.errors import DataError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def is_hidden(name: str) -> bool:
    """Dot-names are tool litter (``.ipynb_checkpoints``, macOS ``._img.jpg``), never data."""
    return name.startswith(".")


def is_image_file(path: str | os.PathLike) -> bool:
    """True when the name has an image extension (any case) and is not a hidden file.

    Only the name is looked at; whether the bytes decode is checked when the image is read.
    """
    name = Path(path).name
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS and not is_hidden(name)


def find_images(folder: Path, recursive: bool = False) -> list[Path]:
    """The image files in ``folder`` sorted by path string; empty when there are none.

    Hidden files and, when recursive, hidden sub-folders are skipped. Does not check that
    ``folder`` exists: see ``list_images`` for the checked version.
    """
    images: list[Path] = []
    skipped = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        if not recursive:
            dirnames.clear()
        dirnames[:] = [d for d in dirnames if not is_hidden(d)]
        for filename in filenames:
            if is_image_file(filename):
                images.append(Path(dirpath) / filename)
            else:
                skipped += 1
    if skipped:
        logger.debug("%s: ignored %d non-image file(s)", folder, skipped)
    return sorted(images, key=str)


def check_folder(folder: str | os.PathLike) -> Path:
    """``folder`` as a Path, or a DataError when it is missing or is a file."""
    path = Path(folder)
    if not path.exists():
        raise DataError(f"{path}: folder not found")
    if not path.is_dir():
        raise DataError(f"{path}: not a folder")
    return path


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """The image files in ``folder`` (optionally in its sub-folders too), sorted by path string.

    Raises:
        DataError: the folder is missing, is a file, or holds no images.
    """
    path = check_folder(folder)
    images = find_images(path, recursive)
    if not images:
        raise DataError(f"{path}: no images (.jpg, .png, ...) found")
    return images
