"""Multi-label sets (`clf train --task multilabel --labels-csv CSV`): any number of classes per image.

Two CSV layouts, told apart by the header:

    tags     the label column (--label-col) holds each image's classes separated by spaces (Kaggle's
             "image_name,tags" / "Id,Target"): ``a.jpg,cloudy primary road``. Every image needs at least one tag: an
             empty cell is refused (a label left out by mistake looks the same), so an image with no class is
             written in the 0/1 layout.
    0/1      no label column: one column per class holding 0 or 1 (every column other than the id and group columns,
             or exactly the ones --classes names); a row of zeros is an image with no class.

The classes are the tags or columns found, sorted as class names are (clf.data.labels_csv.sorted_classes), or --classes
in its order (a tag outside it is refused, and so is a class of it no image holds: it could not be learned). The set's
``targets`` are multi-hot uint8 [N, C]; its ``labels`` the rarest class of each image (-1: none), a stratum only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clf.data.files import check_folder
from clf.data.labelled_set import LabelledSet
from clf.data.labels_csv import check_every_class_held, match_rows, read_csv_rows, sorted_classes
from clf.errors import DataError

TAG_SEPARATORS = (",", ";", "|")  # inside a tag they mean the user separated tags with them instead of spaces
ONE = ("1", "1.0")
ZERO = ("0", "0.0")  # pandas writes float columns as 1.0 / 0.0


def declared_classes(value: str) -> list[str]:
    """--classes: ``a,b,c``, or a file with one class name per line (a value without a comma naming a file, or
    looking like one: it holds "/" or ends in .txt/.csv).

    Raises:
        DataError: no name given, a name listed twice, an unreadable file.
    """
    file = classes_file(value)
    if file is not None:
        names = [line.strip() for line in _read_lines(file)]
        names, where = [n for n in names if n], f"{file}"
    else:
        names, where = [n.strip() for n in value.split(",") if n.strip()], f"--classes {value}"
    if not names:
        raise DataError(f"{where}: names no class; give a,b,c or a file with one class name per line")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataError(f"{where}: class '{name}' is listed twice; list each class once")
        seen.add(name)
    return names


def classes_file(value: str) -> Path | None:
    """The file --classes names, or None when it is a list of names."""
    if "," in value:
        return None
    path = Path(value)
    if path.is_file() or "/" in value or os.sep in value or path.suffix.lower() in (".txt", ".csv"):
        return path
    return None


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: --classes file not found (give a,b,c or a file with one class name per line)")
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_multilabel_csv(
    csv_path: str | os.PathLike,
    image_dir: str | os.PathLike,
    id_col: str = "filename",
    label_col: str = "label",
    group_col: str | None = None,
    classes: Sequence[str] | None = None,
) -> LabelledSet:
    """Read a multi-label CSV (tags or 0/1 layout, see the module docstring) whose ``id_col`` names files in
    ``image_dir`` (matched as clf.data.datasets.read_labels_csv matches them).

    Raises:
        DataError: one line naming the CSV (and the line) for each bad input: the columns missing, an empty tag cell,
            a tag holding a comma, a tag outside ``classes``, a value other than 0/1, a class no image holds, and
            everything read_labels_csv refuses about ids and groups.
    """
    csv_file = Path(csv_path)
    folder = check_folder(image_dir)
    header, rows = read_csv_rows(csv_file)
    if id_col not in header:
        raise DataError(f"{csv_file}: no column '{id_col}' (columns: {', '.join(header)}); name the id column with "
                        "--id-col")
    if label_col in header:
        return _read_tags(csv_file, folder, header, rows, id_col, label_col, group_col, classes)
    return _read_columns(csv_file, folder, header, rows, id_col, label_col, group_col, classes)


def read_tagged_images(csv_path: str | os.PathLike, image_dir: str | os.PathLike, id_col: str = "id",
                       label_col: str = "label") -> tuple[list[str], list[list[str]]]:
    """The images a tags CSV lists (ids matched as read_multilabel_csv matches them) and each one's tags, in the
    CSV's order: the answers `clf eval --task multilabel` scores a model against. Unlike a training set, an empty
    cell is an image with no tag, and the classes are the model's (the caller checks the tags against them).

    Raises:
        DataError: one line naming the CSV (and the line): a missing column, a tag holding a comma, and everything
            read_multilabel_csv refuses about ids.
    """
    csv_file = Path(csv_path)
    folder = check_folder(image_dir)
    header, rows = read_csv_rows(csv_file)
    for column, option in ((id_col, "--id-col"), (label_col, "--label-col")):
        if column not in header:
            raise DataError(f"{csv_file}: no column '{column}' (columns: {', '.join(header)}); name it with {option}")
    matched = match_rows(csv_file, header, rows, folder, id_col, None,
                         lambda line, row: _row_tags(csv_file, line, row, label_col, None, untagged=True))
    return matched.paths, matched.values


def _row_tags(csv_file: Path, line: int, row: dict[str, str], label_col: str, declared: set[str] | None,
              untagged: bool = False) -> list[str]:
    """The tags of one row's label cell (an empty cell refused unless `untagged` images are allowed)."""
    tags = (row.get(label_col) or "").split()
    if not tags and not untagged:
        raise DataError(f"{csv_file}: line {line}: empty '{label_col}'; every image needs at least one tag "
                        "(an image with no class: use one 0/1 column per class, a row of zeros)")
    for tag in tags:
        _check_tag(tag, declared, f"{csv_file}: line {line}")
    return tags


def _read_tags(csv_file: Path, folder: Path, header: list[str], rows: list[tuple[int, dict[str, str]]], id_col: str,
               label_col: str, group_col: str | None, classes: Sequence[str] | None) -> LabelledSet:
    declared = None if classes is None else set(classes)
    matched = match_rows(csv_file, header, rows, folder, id_col, group_col,
                         lambda line, row: _row_tags(csv_file, line, row, label_col, declared))
    held = {tag for tags in matched.values for tag in tags}
    names = _class_list(csv_file, classes, held)
    index = {name: i for i, name in enumerate(names)}
    targets = np.zeros((len(matched.paths), len(names)), dtype=np.uint8)
    for row, tags in enumerate(matched.values):
        targets[row, [index[tag] for tag in tags]] = 1
    return multilabel_set(matched.paths, targets, names, matched.groups)


def _check_tag(tag: str, declared: set[str] | None, where: str) -> None:
    for separator in TAG_SEPARATORS:
        if separator in tag:
            raise DataError(f"{where}: tag '{tag}' holds '{separator}'; separate tags with spaces "
                            f"(\"{' '.join(t for t in tag.split(separator) if t)}\")")
    if declared is not None and tag not in declared:
        raise DataError(f"{where}: tag '{tag}' is not one of --classes; add it to --classes or fix the tag")


def _read_columns(csv_file: Path, folder: Path, header: list[str], rows: list[tuple[int, dict[str, str]]],
                  id_col: str, label_col: str, group_col: str | None,
                  classes: Sequence[str] | None) -> LabelledSet:
    columns = _class_columns(csv_file, header, id_col, label_col, group_col, classes)

    def flags_of(line: int, row: dict[str, str]) -> list[int]:
        return [_flag(row.get(col) or "", col, f"{csv_file}: line {line}", classes is None) for col in columns]

    matched = match_rows(csv_file, header, rows, folder, id_col, group_col, flags_of)
    targets = np.array(matched.values, dtype=np.uint8).reshape(len(matched.paths), len(columns))
    held = {col for col, n in zip(columns, targets.sum(axis=0)) if n}
    names = _class_list(csv_file, columns if classes is None else classes, held, declared=classes is not None)
    return multilabel_set(matched.paths, targets[:, [columns.index(n) for n in names]], names, matched.groups)


def _class_columns(csv_file: Path, header: list[str], id_col: str, label_col: str, group_col: str | None,
                   classes: Sequence[str] | None) -> list[str]:
    if classes is not None:
        for name in classes:
            if name not in header:
                raise DataError(f"{csv_file}: no column '{name}' of --classes and no label column '{label_col}' "
                                f"(columns: {', '.join(header)}); give one 0/1 column per class, or the tags "
                                "column with --label-col")
        return list(classes)
    columns = [col for col in header if col not in (id_col, group_col)]
    if not columns:
        raise DataError(f"{csv_file}: no label column '{label_col}' and no class columns (columns: "
                        f"{', '.join(header)}); give the tags column with --label-col, or one 0/1 column per class")
    return columns


def _flag(cell: str, column: str, where: str, guessed: bool) -> int:
    value = cell.strip()
    if value in ONE:
        return 1
    if value in ZERO:
        return 0
    hint = "; name the class columns with --classes when the CSV has other columns" if guessed else ""
    what = f"'{value}' in" if value else "empty"
    raise DataError(f"{where}: {what} class column '{column}'; class columns hold 0 or 1{hint}")


def _class_list(csv_file: Path, classes: Sequence[str] | None, held: set[str], declared: bool = True) -> list[str]:
    """--classes in its order (each held by some image), else the classes held, sorted."""
    if classes is None:
        names = sorted_classes(held)
    elif declared:
        check_every_class_held(csv_file, classes, held)
        names = list(classes)
    else:  # the 0/1 columns found: a column of zeros is a class no image holds
        for name in classes:
            if name not in held:
                raise DataError(f"{csv_file}: class column '{name}' holds no 1, so the class cannot be learned; "
                                "remove the column or add images of it")
        names = sorted_classes(set(classes))
    if not names:
        raise DataError(f"{csv_file}: no image holds any class")
    return names


def multilabel_set(paths: list[str], targets: np.ndarray, classes: list[str],
                   groups: list[str] | None = None) -> LabelledSet:
    """A multi-label LabelledSet: ``targets`` multi-hot [N, C] in ``classes`` order; ``labels`` each image's rarest
    class (fewest images in this set; ties: the lower index), -1 for an image with no class."""
    return LabelledSet(paths, rarest_classes(targets).tolist(), classes, groups, targets=targets.astype(np.uint8))


def rarest_classes(targets: np.ndarray) -> np.ndarray:
    """int64 [N]: the index of each row's rarest class (by column sums of ``targets``), -1 for an empty row."""
    if targets.size == 0:
        return np.full(len(targets), -1, dtype=np.int64)
    counts = targets.sum(axis=0).astype(np.float64)
    # each held class scored by its count; absent classes by +inf, so argmin finds the rarest held one
    scored = np.where(targets > 0, counts[None, :], np.inf)
    rarest = np.argmin(scored, axis=1).astype(np.int64)
    rarest[~targets.any(axis=1)] = -1
    return rarest
