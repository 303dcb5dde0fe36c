"""Labelled image sets: one sub-folder per class, or a folder of images plus a labels CSV."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from clf.data.duplicates import signature, signatures
from clf.data.files import check_folder, find_images, is_hidden
from clf.data.labels_csv import check_every_class_held, match_rows, read_csv_rows, sorted_classes
from clf.data.labelled_set import LabelledSet  # defined apart for clf.data.multilabel; imported from here
from clf.data.multilabel import declared_classes, read_multilabel_csv
from clf.data.preprocess import decode_rgb, read_bytes
from clf.errors import DataError

logger = logging.getLogger(__name__)


def scan_class_folders(root: str | os.PathLike) -> LabelledSet:
    """Read ``root/<class>/<image>``: one sub-folder per class, class names sorted.

    Only the images directly inside each class folder count (not nested ones: passing the parent
    of ``train/`` by mistake then fails loudly instead of learning "train" vs "test"). Hidden
    folders and non-image files are ignored.

    Raises:
        DataError: missing root, fewer than 2 class folders, a class folder without images.
    """
    root_path = check_folder(root)
    class_dirs = sorted((d for d in root_path.iterdir() if d.is_dir() and not is_hidden(d.name)), key=lambda d: d.name)
    if len(class_dirs) < 2:
        raise DataError(
            f"{root_path}: found {len(class_dirs)} class folder(s), need at least 2 "
            f"(layout: {root_path}/<class>/<image>)"
        )
    paths: list[str] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        images = find_images(class_dir)
        if not images:
            raise DataError(_empty_class_message(class_dir))
        paths.extend(str(p) for p in images)
        labels.extend([label] * len(images))
    return LabelledSet(paths, labels, [d.name for d in class_dirs])


def _empty_class_message(class_dir: Path) -> str:
    message = f"{class_dir}: class folder has no images"
    if any(d.is_dir() and not is_hidden(d.name) for d in class_dir.iterdir()):
        message += f"; it holds sub-folders, so the data folder is probably {class_dir}"
    return message


def read_labels_csv(
    csv_path: str | os.PathLike,
    image_dir: str | os.PathLike,
    id_col: str = "filename",
    label_col: str = "label",
    group_col: str | None = None,
    classes: Sequence[str] | None = None,
) -> LabelledSet:
    """Read a labels CSV whose ``id_col`` names files in ``image_dir``.

    An id matches, in order: a file name in ``image_dir`` (``a.jpg``), a relative path under it
    (``sub/a.jpg``), or the stem of one image in ``image_dir`` (``a`` -> ``a.png``). Rows keep the
    CSV order. Classes are sorted, numerically when every label is an integer, or ``classes`` (--classes) in
    its order. With ``group_col``, each image's group (a patient, a source picture) is read from that column.

    Raises:
        DataError: missing/empty CSV, missing columns, an empty cell, an id listed twice, an id
            matching no file or several, a label outside ``classes`` or a class of it no image holds; the
            message names the CSV line.
    """
    csv_file = Path(csv_path)
    folder = check_folder(image_dir)
    header, rows = read_csv_rows(csv_file)
    for col in (id_col, label_col):
        if col not in header:
            raise DataError(
                f"{csv_file}: no column '{col}' (columns: {', '.join(header)}); "
                "name the id and label columns with --id-col and --label-col"
            )

    def label_of(line: int, row: dict[str, str]) -> str:
        name = (row.get(label_col) or "").strip()
        if not name:
            raise DataError(f"{csv_file}: line {line}: empty '{label_col}'")
        if classes is not None and name not in classes:
            raise DataError(f"{csv_file}: line {line}: label '{name}' is not one of --classes "
                            f"({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}); add it to --classes "
                            "or fix the label")
        return name

    matched = match_rows(csv_file, header, rows, folder, id_col, group_col, label_of)
    names = matched.values
    if classes is None:
        found = sorted_classes(set(names))
    else:
        found = list(classes)
        check_every_class_held(csv_file, found, set(names))
    if len(found) < 2:
        raise DataError(f"{csv_file}: found {len(found)} class(es) in '{label_col}', need at least 2")
    index = {c: i for i, c in enumerate(found)}
    return LabelledSet(matched.paths, [index[n] for n in names], found, matched.groups)


def load_labelled(
    root: str | os.PathLike,
    labels_csv: str | os.PathLike | None = None,
    id_col: str = "filename",
    label_col: str = "label",
    group_col: str | None = None,
    task: str = "single_label",
    classes: str | None = None,
) -> LabelledSet:
    """Class folders under ``root``, or the images in ``root`` labelled by ``labels_csv`` (and grouped by its
    ``group_col``). ``task`` "multilabel" reads each image's classes from the CSV (clf.data.multilabel); ``classes``
    is --classes (a,b,c or a file of one name per line): the classes and their order.

    Raises:
        DataError: as the readers; class folders with --task multilabel or --classes.
    """
    if labels_csv is None:
        if task == "multilabel" or classes is not None:
            raise DataError(f"{root}: class folders hold one class per image and name the classes themselves; "
                            f"{'--task multilabel' if task == 'multilabel' else '--classes'} reads --labels-csv: "
                            "add --labels-csv FILE")
        return scan_class_folders(root)
    names = declared_classes(classes) if classes is not None else None
    if task == "multilabel":
        return read_multilabel_csv(labels_csv, root, id_col=id_col, label_col=label_col, group_col=group_col,
                                   classes=names)
    return read_labels_csv(labels_csv, root, id_col=id_col, label_col=label_col, group_col=group_col, classes=names)


def verify_images(paths: Sequence[str | os.PathLike], strict: bool = False, workers: int = 4) -> list[int]:
    """Decode every file (in threads: OpenCV releases the GIL) and return the indices that decode.

    Each bad file is logged as a WARNING ``"<path>: <reason>; skipped"``.

    Raises:
        DataError: with ``strict``, on the first bad file in ``paths`` order.
    """
    return _verify(paths, strict, workers, _decode_problem)[0]


def verify_and_sign(paths: Sequence[str | os.PathLike], strict: bool = False,
                    workers: int = 4) -> tuple[list[int], np.ndarray]:
    """`verify_images`, computing each readable image's near-duplicate signature from the same decode.

    Returns:
        (the indices that decode, their SIGNATURE array in that order).
    """
    ok, rows = _verify(paths, strict, workers, _signature_or_problem)
    return ok, signatures(rows)


def _verify(paths: Sequence[str | os.PathLike], strict: bool, workers: int,
            check: Callable[[str | os.PathLike], Any]) -> tuple[list[int], list[Any]]:
    """`check` of every path in threads: each returns a problem line (str) or a value (None counts as fine)."""
    ok: list[int] = []
    values: list[Any] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for index, result in enumerate(pool.map(check, paths)):
            if not isinstance(result, str):
                ok.append(index)
                values.append(result)
            elif strict:
                pool.shutdown(wait=False, cancel_futures=True)
                raise DataError(f"{result}; stopped (--strict)")
            else:
                logger.warning("%s; skipped", result)
    return ok, values


def _decode_problem(path: str | os.PathLike) -> str | None:
    """None when the file decodes, else the one-line reason "<path>: <what is wrong>"."""
    try:
        decode_rgb(read_bytes(path), str(path))
    except DataError as exc:
        return str(exc)
    return None


def _signature_or_problem(path: str | os.PathLike) -> tuple[int, float, float] | str:
    try:
        return signature(decode_rgb(read_bytes(path), str(path)))
    except DataError as exc:
        return str(exc)
