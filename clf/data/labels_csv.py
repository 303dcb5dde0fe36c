"""The rows of a labels CSV matched to the image files they name (`match_rows`), for the single-label reader
(clf.data.datasets.read_labels_csv) and the multi-label one (clf.data.multilabel)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Any

from clf.data.csv_table import read_csv_table
from clf.data.files import find_images
from clf.errors import DataError


def check_every_class_held(csv_file: Path, classes: Sequence[str], held: set[str]) -> None:
    """A class of --classes that no image holds cannot be learned: one line naming it."""
    for name in classes:
        if name not in held:
            raise DataError(f"{csv_file}: class '{name}' of --classes is held by no image, so it cannot be "
                            "learned; remove it from --classes or add images of it")


@dataclass(frozen=True)
class MatchedRows:
    """The rows of a labels CSV matched to their images, in CSV order.

    Attributes:
        paths: each row's image file.
        lines: each row's CSV line.
        values: what the row reader returned for each row (its label, its tags, ...).
        groups: each row's group (--group-col), or None without one.
    """

    paths: list[str]
    lines: list[int]
    values: list[Any]
    groups: list[str] | None


def match_rows(
    csv_file: Path,
    header: Sequence[str],
    rows: Sequence[tuple[int, dict[str, str]]],
    folder: Path,
    id_col: str,
    group_col: str | None,
    read_row: Callable[[int, dict[str, str]], Any],
    missing_hint: str = "",
) -> MatchedRows:
    """Match each row's id to an image in ``folder`` (as `read_labels_csv` says) and read the row with ``read_row``
    (line, row) -> value, which raises DataError on a bad cell. Rows are read in CSV order, each before its id is
    matched, so the first bad line is the one reported.

    Raises:
        DataError: the group column missing, an empty id or group, an id listed twice, an id matching no file
            (reported after every row was read, counting the others) or several.
    """
    if group_col is not None and group_col not in header:
        raise DataError(f"{csv_file}: no group column '{group_col}' (columns: {', '.join(header)}); "
                        "name it with --group-col")
    by_name, by_stem = _index_images(folder)
    matched = MatchedRows([], [], [], [] if group_col is not None else None)
    seen: dict[Path, int] = {}
    missing: list[tuple[int, str]] = []
    for line, row in rows:
        image_id = (row.get(id_col) or "").strip()
        if not image_id:
            raise DataError(f"{csv_file}: line {line}: empty '{id_col}'")
        value = read_row(line, row)
        group = _group_value(row, group_col, f"{csv_file}: line {line}") if group_col is not None else ""
        path = _match_id(image_id, folder, by_name, by_stem, f"{csv_file}: line {line}")
        if path is None:
            missing.append((line, image_id))
            continue
        if path in seen:
            raise DataError(f"{csv_file}: line {line}: '{image_id}' is listed twice (also line {seen[path]})")
        seen[path] = line
        matched.paths.append(str(path))
        matched.lines.append(line)
        matched.values.append(value)
        if matched.groups is not None:
            matched.groups.append(group)
    if missing:
        line, image_id = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"{csv_file}: line {line}: no image '{image_id}' in {folder}{more}{missing_hint}")
    return matched


def _group_value(row: dict[str, str], group_col: str, where: str) -> str:
    value = (row.get(group_col) or "").strip()
    if not value:
        raise DataError(f"{where}: empty group '{group_col}'; give every image its group (--group-col)")
    return value


def read_csv_rows(csv_file: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
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


def sorted_classes(names: set[str]) -> list[str]:
    """Sorted class names; integer labels sort as numbers (2 before 10)."""
    try:
        return sorted(names, key=int)
    except ValueError:
        return sorted(names)
