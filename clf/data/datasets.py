"""Labelled image sets: one sub-folder per class, or a folder of images plus a labels CSV."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np

from clf.data.csv_table import read_csv_table
from clf.data.duplicates import signature, signatures
from clf.data.files import check_folder, find_images, is_hidden
from clf.data.preprocess import decode_rgb, read_bytes
from clf.errors import DataError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelledSet:
    """Image paths with integer labels indexing ``classes`` (and, for a multi-label set, their multi-hot targets).

    Args:
        paths: image file paths.
        labels: class index of each path. In a multi-label set (``targets`` given), the index of the image's rarest
            class, or -1 for an image with no class: a stratum for the places that need one integer per image
            (the balanced sampler, a group's class profile), never a training target.
        classes: class names; label ``i`` means ``classes[i]``.
        groups: the group of each path (--group-col: a patient, a source picture), or None; a split never puts
            one group on both sides.
        signatures: the near-duplicate signature of each path (a clf.data.duplicates.SIGNATURE array), or None
            when not computed.
        targets: a multi-label set's classes per image, multi-hot uint8 [N, C] (row i, column c: image i holds
            class c), or None for a single-label set. Training targets, splits and metrics read these.
    """

    paths: list[str]
    labels: list[int]
    classes: list[str]
    groups: list[str] | None = None
    signatures: np.ndarray | None = field(default=None, compare=False, repr=False)
    targets: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")
        for name, values in (("groups", self.groups), ("signatures", self.signatures), ("targets", self.targets)):
            if values is not None and len(values) != len(self.paths):
                raise ValueError(f"{len(self.paths)} paths but {len(values)} {name}")
        if self.targets is not None and (self.targets.ndim != 2 or self.targets.shape[1] != len(self.classes)):
            raise ValueError(f"targets of shape {self.targets.shape} for {len(self.classes)} classes")
        lowest = -1 if self.targets is not None else 0  # a multi-label image may hold no class
        bad = [label for label in self.labels if not lowest <= label < len(self.classes)]
        if bad:
            raise ValueError(f"label {bad[0]} out of range for {len(self.classes)} classes")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def multilabel(self) -> bool:
        """Whether each image holds any number of classes (``targets``) rather than exactly one."""
        return self.targets is not None

    def subset(self, indices: Sequence[int]) -> LabelledSet:
        """The items at ``indices`` (any int sequence or numpy array), same classes."""
        idx = [int(i) for i in indices]
        groups = None if self.groups is None else [self.groups[i] for i in idx]
        rows = np.asarray(idx, dtype=np.int64)
        sigs = None if self.signatures is None else self.signatures[rows]
        targets = None if self.targets is None else self.targets[rows]
        return LabelledSet([self.paths[i] for i in idx], [self.labels[i] for i in idx], list(self.classes), groups,
                           sigs, targets)

    def class_counts(self) -> dict[str, int]:
        """Number of items per class name, in class order, zeros included (multi-label: images holding it)."""
        if self.targets is not None:
            return dict(zip(self.classes, (int(n) for n in self.targets.sum(axis=0))))
        counts = [0] * len(self.classes)
        for label in self.labels:
            counts[label] += 1
        return dict(zip(self.classes, counts))


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
) -> LabelledSet:
    """Read a labels CSV whose ``id_col`` names files in ``image_dir``.

    An id matches, in order: a file name in ``image_dir`` (``a.jpg``), a relative path under it
    (``sub/a.jpg``), or the stem of one image in ``image_dir`` (``a`` -> ``a.png``). Rows keep the
    CSV order. Classes are sorted, numerically when every label is an integer. With ``group_col``,
    each image's group (a patient, a source picture) is read from that column.

    Raises:
        DataError: missing/empty CSV, missing columns, an empty cell, an id listed twice, an id
            matching no file or several; the message names the CSV line.
    """
    csv_file = Path(csv_path)
    folder = check_folder(image_dir)
    header, rows = _read_csv(csv_file)
    for col in (id_col, label_col):
        if col not in header:
            raise DataError(
                f"{csv_file}: no column '{col}' (columns: {', '.join(header)}); "
                "name the id and label columns with --id-col and --label-col"
            )
    if group_col is not None and group_col not in header:
        raise DataError(f"{csv_file}: no group column '{group_col}' (columns: {', '.join(header)}); "
                        "name it with --group-col")
    by_name, by_stem = _index_images(folder)
    paths: list[str] = []
    names: list[str] = []
    groups: list[str] = []
    seen: dict[Path, int] = {}
    missing: list[tuple[int, str]] = []
    for line, row in rows:
        image_id, name = (row.get(id_col) or "").strip(), (row.get(label_col) or "").strip()
        for col, value in ((id_col, image_id), (label_col, name)):
            if not value:
                raise DataError(f"{csv_file}: line {line}: empty '{col}'")
        group = _group_value(row, group_col, f"{csv_file}: line {line}") if group_col is not None else ""
        path = _match_id(image_id, folder, by_name, by_stem, f"{csv_file}: line {line}")
        if path is None:
            missing.append((line, image_id))
            continue
        if path in seen:
            raise DataError(f"{csv_file}: line {line}: '{image_id}' is listed twice (also line {seen[path]})")
        seen[path] = line
        paths.append(str(path))
        names.append(name)
        groups.append(group)
    if missing:
        line, image_id = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"{csv_file}: line {line}: no image '{image_id}' in {folder}{more}")
    classes = _sorted_classes(set(names))
    if len(classes) < 2:
        raise DataError(f"{csv_file}: found {len(classes)} class(es) in '{label_col}', need at least 2")
    index = {c: i for i, c in enumerate(classes)}
    return LabelledSet(paths, [index[n] for n in names], classes, groups if group_col is not None else None)


def _group_value(row: dict[str, str], group_col: str, where: str) -> str:
    value = (row.get(group_col) or "").strip()
    if not value:
        raise DataError(f"{where}: empty group '{group_col}'; give every image its group (--group-col)")
    return value


def _read_csv(csv_file: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and (line number, row) pairs, through the one CSV reader (clf.data.csv_table)."""
    table = read_csv_table(csv_file)
    return table.header, table.records()


def _index_images(folder: Path) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    by_name: dict[str, Path] = {}
    by_stem: dict[str, list[Path]] = {}
    for path in find_images(folder):
        by_name[path.name] = path
        by_stem.setdefault(path.stem, []).append(path)
    return by_name, by_stem


def _match_id(
    image_id: str, folder: Path, by_name: dict[str, Path], by_stem: dict[str, list[Path]], where: str
) -> Path | None:
    if image_id in by_name:
        return by_name[image_id]
    if "/" in image_id or "\\" in image_id:
        candidate = _inside(folder, image_id, where)
        return candidate if candidate.is_file() else None
    matches = by_stem.get(image_id, [])
    if len(matches) > 1:
        names = ", ".join(p.name for p in matches[:3])
        raise DataError(f"{where}: '{image_id}' matches several files ({names}); put the extension in the id")
    return matches[0] if matches else None


def _inside(folder: Path, image_id: str, where: str) -> Path:
    """``folder / image_id``, refused when the id leaves the folder (an absolute path, ``..``).

    Lexical on purpose: a link the user put inside the folder is theirs to follow; an id in a CSV is not.
    """
    relative = image_id.replace("\\", "/")
    if os.path.isabs(relative) or PureWindowsPath(image_id).drive or ".." in Path(relative).parts:
        raise DataError(f"{where}: id '{image_id}' points outside {folder}; "
                        "ids are file names or relative paths inside the image folder")
    return folder / image_id


def _sorted_classes(names: set[str]) -> list[str]:
    """Sorted class names; integer labels sort as numbers (2 before 10)."""
    try:
        return sorted(names, key=int)
    except ValueError:
        return sorted(names)


def load_labelled(
    root: str | os.PathLike,
    labels_csv: str | os.PathLike | None = None,
    id_col: str = "filename",
    label_col: str = "label",
    group_col: str | None = None,
) -> LabelledSet:
    """Class folders under ``root``, or the images in ``root`` labelled by ``labels_csv`` (and grouped by its
    ``group_col``)."""
    if labels_csv is not None:
        return read_labels_csv(labels_csv, root, id_col=id_col, label_col=label_col, group_col=group_col)
    return scan_class_folders(root)


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
