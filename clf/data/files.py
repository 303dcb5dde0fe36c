"""Finding image files on disk (no decoding here; see ``clf.data.preprocess``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from clf.errors import DataError, one_line

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


def find_images(
    folder: Path, recursive: bool = False, problems: list[str] | None = None, strict: bool = False
) -> list[Path]:
    """The image files in ``folder`` sorted by path string; empty when there are none.

    Hidden files and, when recursive, hidden sub-folders are skipped. A sub-folder that cannot be listed (no
    permission, a path longer than the system allows, removed meanwhile) or a link to a folder (not followed:
    links can loop) is never dropped silently: each is logged as a WARNING ``"<folder>: <reason>; its images
    are not included"`` and appended to ``problems`` when given. Does not check that ``folder`` exists: see
    ``list_images`` for the checked version.

    Raises:
        DataError: ``folder`` itself cannot be listed; with ``strict``, any sub-folder that cannot.
    """
    images: list[Path] = []
    skipped = 0
    found: list[str] = []

    def report(path: str | os.PathLike, reason: str) -> None:
        message = f"{path}: {reason}; its images are not included"
        if strict:
            raise DataError(f"{path}: {reason}; stopped (--strict)")
        logger.warning("%s", message)
        found.append(message)

    def on_error(exc: OSError) -> None:
        where = exc.filename if exc.filename is not None else folder
        if Path(where) == Path(folder):
            raise DataError(f"{folder}: cannot list the folder ({_reason(exc)})")
        report(where, f"cannot list the folder ({_reason(exc)})")

    for dirpath, dirnames, filenames in os.walk(folder, onerror=on_error):
        if not recursive:
            dirnames.clear()
        dirnames[:] = [d for d in dirnames if not is_hidden(d)]
        for name in sorted(d for d in dirnames if os.path.islink(os.path.join(dirpath, d))):
            report(Path(dirpath) / name, "a link to a folder, not followed")
        for filename in filenames:
            if is_image_file(filename):
                images.append(Path(dirpath) / filename)
            else:
                skipped += 1
    if skipped:
        logger.debug("%s: ignored %d non-image file(s)", folder, skipped)
    if problems is not None:
        problems.extend(found)
    return sorted(images, key=str)


def _reason(exc: OSError) -> str:
    return exc.strerror or one_line(exc)


def check_folder(folder: str | os.PathLike) -> Path:
    """``folder`` as a Path, or a DataError when it is missing or is a file."""
    path = Path(folder)
    if not path.exists() and path.is_symlink():  # "not found" sent the user looking for a folder that is there
        raise DataError(f"{path}: a symbolic link to nothing (a loop, or its target is gone: {os.readlink(path)}); "
                        "give the real folder")
    if not path.exists():
        raise DataError(f"{path}: folder not found")
    if not path.is_dir():
        raise DataError(f"{path}: not a folder")
    return path


def list_images(
    folder: str | os.PathLike, recursive: bool = False, problems: list[str] | None = None, strict: bool = False
) -> list[Path]:
    """The image files in ``folder`` (optionally in its sub-folders too), sorted by path string.

    Sub-folders that cannot be listed are reported as in ``find_images`` (and collected in ``problems``).

    Raises:
        DataError: the folder is missing, is a file, cannot be listed or holds no images; with ``strict``, a
            sub-folder that cannot be listed.
    """
    path = check_folder(folder)
    images = find_images(path, recursive, problems=problems, strict=strict)
    if not images:
        raise DataError(f"{path}: no images (.jpg, .png, ...) found")
    return images
