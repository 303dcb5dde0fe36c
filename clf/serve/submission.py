"""Competition-style CSV files: ``id,label`` submissions (optionally in a sample's row order) and probabilities.

Files are written to a temp file in the destination folder and renamed, so a crash never leaves a
half-written CSV where a previous good one was.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Collection, Iterable, Sequence

import numpy as np

from clf.atomic import atomic_output
from clf.choices import ID_FORMATS, TOPK_FORMATS
from clf.data.csv_table import CsvTable, read_csv_table
from clf.errors import DataError

logger = logging.getLogger(__name__)

_SHOWN = 5  # ids named in a message before "..."


def make_ids(paths: Sequence[str | os.PathLike], root: str | os.PathLike, id_format: str = "stem") -> list[str]:
    """Submission ids for image paths.

    Args:
        paths: the image files, in output order.
        root: the folder they were listed from (for "relpath" and messages).
        id_format: "stem" (``img_01``), "name" (``img_01.jpg``) or "relpath" (``sub/img_01.jpg``, "/" separated).

    Raises:
        DataError: two images map to the same id, or a path is outside ``root`` for "relpath".
    """
    if id_format not in ID_FORMATS:
        raise ValueError(f"id_format must be one of {ID_FORMATS}, got {id_format!r}")
    root = Path(root)
    ids = [_make_id(Path(p), root, id_format) for p in paths]
    first_path: dict[str, Path] = {}
    for image_id, path in zip(ids, paths):
        if image_id in first_path:
            raise DataError(
                f"{root}: {first_path[image_id]} and {path} both get the id '{image_id}'; "
                "use --id-format name or relpath"
            )
        first_path[image_id] = Path(path)
    return ids


def _make_id(path: Path, root: Path, id_format: str) -> str:
    if id_format == "stem":
        return path.stem
    if id_format == "name":
        return path.name
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        raise DataError(f"{path}: not inside {root}, so it has no relative path id") from None


def write_submission(
    out_csv: str | os.PathLike,
    ids: Sequence[str],
    labels: Sequence[str] | None,
    id_col: str = "id",
    label_col: str = "label",
    topk: Sequence[Sequence[str]] | None = None,
    sample_submission: str | os.PathLike | None = None,
    unreadable: Collection[str] = (),
    topk_format: str = "columns",
) -> list[str]:
    """Write ``id,label`` rows atomically.

    Args:
        out_csv: destination file (its folder is created).
        ids: one id per prediction.
        labels: the predicted label per id (ignored when ``topk`` is given; may then be None).
        id_col, label_col: column names (they must exist in ``sample_submission`` when it is given).
        topk: the k best labels per id, best first. ``topk_format="columns"`` keeps the best in the label
            column and adds columns ``<label>_2`` .. ``<label>_k``; ``"space"`` writes them space-separated in
            the label column ("cat dog fox"), the format of top-k (MAP@k) competitions.
        sample_submission: a CSV whose columns and row order are kept exactly (top-k columns are appended);
            its label column is replaced by the predictions, any other column keeps the sample's values.
        unreadable: ids of images that exist but could not be read (reported elsewhere); their sample rows
            keep the sample's label, so the file stays complete. Only used with ``sample_submission``.

    Returns:
        The predicted ids that are not in the sample submission (left out; logged as a WARNING).
        Empty without a sample. Rows are in ``ids`` order without a sample.

    Raises:
        DataError: the sample lacks a column, is empty, lists an id twice, or has ids with no prediction (the first
            few are named).
    """
    values, extra_columns = _label_values(ids, labels, topk, label_col, topk_format)
    if sample_submission is None:
        header = [id_col, label_col, *extra_columns]
        rows, extra = [[i, *v] for i, v in zip(ids, values)], []
    else:
        header, rows, extra = _fill_sample(
            Path(sample_submission), dict(zip(ids, values)), id_col, label_col, extra_columns, set(unreadable)
        )
    _write_csv_atomic(Path(out_csv), header, rows)
    return extra


def _label_values(
    ids: Sequence[str], labels: Sequence[str] | None, topk: Sequence[Sequence[str]] | None, label_col: str,
    topk_format: str,
) -> tuple[list[list[str]], list[str]]:
    """Per id the values of [label column, *added columns], and the added columns' names."""
    if topk_format not in TOPK_FORMATS:
        raise ValueError(f"topk_format must be one of {TOPK_FORMATS}, got {topk_format!r}")
    extra_columns: list[str] = []
    if topk is not None and topk_format == "space":
        values = [[" ".join(str(label) for label in row)] for row in topk]
    elif topk is not None:
        values = [[str(label) for label in row] for row in topk]
        extra_columns = [f"{label_col}_{rank}" for rank in range(2, max(map(len, topk), default=1) + 1)]
    elif labels is not None:
        values = [[str(label)] for label in labels]
    else:
        raise ValueError("write_submission needs labels or topk")
    if len(values) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(values)} predictions")
    duplicates = [i for i, n in Counter(ids).items() if n > 1]
    if duplicates:
        raise ValueError(f"duplicate id '{duplicates[0]}' in the predictions")
    return values, extra_columns


def check_sample_ids(
    sample_submission: str | os.PathLike, ids: Collection[str], id_col: str = "id", label_col: str = "label"
) -> None:
    """Fail before any work when the sample has an id with no image (wrong folder, wrong --id-format).

    Raises:
        DataError: naming the sample, the first few such ids, and how many there are.
    """
    sample = Path(sample_submission)
    table = read_csv_table(sample)
    id_at, _ = _columns(table, id_col, label_col)
    table.unique_ids(id_at)  # a sample listing an id twice would make a submission the grader rejects
    known = set(ids)
    missing = [row[id_at].strip() for row in table.rows if row[id_at].strip() not in known]
    if missing:
        raise DataError(
            f"{sample}: {len(missing)} of {len(table.rows)} ids have no image ({_first(missing)}); "
            "check the image folder and --id-format"
        )


def _columns(table: CsvTable, id_col: str, label_col: str) -> tuple[int, int]:
    return table.column(id_col), table.column(label_col)


def _fill_sample(
    sample: Path, predictions: dict[str, list[str]], id_col: str, label_col: str, extra_columns: list[str],
    unreadable: set[str] = frozenset(),
) -> tuple[list[str], list[list[str]], list[str]]:
    """The sample's header and rows with the label (and top-k) columns filled in, and the predictions it has no
    row for."""
    table = read_csv_table(sample)
    id_at, label_at = _columns(table, id_col, label_col)
    table.unique_ids(id_at)  # a sample listing an id twice would make a submission the grader rejects
    header = table.header + [c for c in extra_columns if c not in table.header]
    value_at = [label_at, *(header.index(c) for c in extra_columns)]
    rows = [row + [""] * (len(header) - len(row)) for row in table.rows]
    for row in rows:
        row[id_at] = row[id_at].strip()  # "a_10 , x": the id is a_10, as the header's "id , label" is id,label
    missing = [row[id_at] for row in rows if row[id_at] not in predictions and row[id_at] not in unreadable]
    if missing:
        raise DataError(
            f"{sample}: {len(missing)} of {len(rows)} ids have no prediction ({_first(missing)}); "
            "check the image folder and --id-format"
        )
    kept = []
    for row in rows:
        if row[id_at] in predictions:
            for at, value in zip(value_at, predictions[row[id_at]]):
                row[at] = value
        else:
            kept.append(row[id_at])
    if kept:
        logger.warning("%s: %d ids of unreadable images keep the sample's label (%s)", sample, len(kept), _first(kept))
    in_sample = {row[id_at] for row in rows}
    extra = [i for i in predictions if i not in in_sample]
    if extra:
        logger.warning("%s: %d predicted ids are not in it (%s); left out", sample, len(extra), _first(extra))
    return header, rows, extra


def write_probs(
    out_csv: str | os.PathLike,
    ids: Sequence[str],
    classes: Sequence[str],
    probs: np.ndarray,
    id_col: str = "id",
) -> None:
    """Write ``id,<class 1>,<class 2>,...`` with one probability per class, atomically.

    Values are written with 6 significant digits (``%.6g``).
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(ids), len(classes)):
        raise ValueError(f"probs has shape {probs.shape}, expected ({len(ids)}, {len(classes)})")
    rows = [[image_id, *(f"{p:.6g}" for p in row)] for image_id, row in zip(ids, probs)]
    _write_csv_atomic(Path(out_csv), [id_col, *classes], rows)


def _write_csv_atomic(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Readers see the old file or the complete new one (clf.atomic: temp file, fsync, rename)."""
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _first(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (", ..." if len(items) > _SHOWN else "")
