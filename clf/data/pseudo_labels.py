"""Pseudo-labels: the probabilities `clf infer --probs` wrote for unlabelled images, read and checked for training.

PROBS.csv has an id column first and one probability column per class (clf.serve.submission.write_probs). Its ids
resolve in the --pseudo-images folder by the rules of --labels-csv (clf.data.labels_csv.match_rows: a file name, a
relative path inside the folder, or a stem; never an absolute path or ``..``), and a link may not lead out of that
folder. The folder must be disjoint from DATA and no row may be a file of DATA: pseudo rows join the training split
only, so a validation image can never be one (nor, in a fold group, any fold's validation image):
`check_folder_apart`, `check_not_data_files`.

Torch-free: numpy only, like the rest of the readers in clf.data.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clf.data.files import check_folder
from clf.data.labels_csv import match_rows, read_csv_rows
from clf.errors import DataError, one_line

SUM_TOLERANCE = 1e-3  # write_probs rounds each value to 6 significant digits: a row sums to 1 within 1e-5
REDO = "write it with `clf infer IMAGES --model MODEL --probs PROBS.csv`"


@dataclass(frozen=True)
class PseudoLabels:
    """Every row of a PROBS.csv, matched to its image.

    Attributes:
        file: the CSV. sha256: its content's hash (a resumed run refuses a changed file).
        paths: each row's image, in CSV order.
        lines: each row's CSV line, for messages.
        probs: float64 [N, C], columns in the run's class order, each row rescaled to sum to exactly 1.
        classes: the run's classes (the columns of `probs`).
    """

    file: Path
    sha256: str
    paths: list[str]
    lines: list[int]
    probs: np.ndarray
    classes: list[str]

    def confident(self, threshold: float) -> np.ndarray:
        """The indices of the rows whose top probability reaches `threshold`, in CSV order."""
        return np.flatnonzero(self.probs.max(axis=1) >= threshold) if len(self.paths) else np.zeros(0, np.int64)


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes (hex).

    Raises:
        DataError: the file cannot be read.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or one_line(exc)})") from None
    return digest.hexdigest()


def read_pseudo_labels(csv_path: str | os.PathLike, image_dir: str | os.PathLike, classes: Sequence[str]
                       ) -> PseudoLabels:
    """Read PROBS.csv (first column: the ids, resolved in `image_dir`; then one column per class of `classes`, in
    any order).

    Raises:
        DataError: one line naming the file (and line): a class column missing or a column that is no class, a
            probability that is not a finite number >= 0, a row not summing to 1 within SUM_TOLERANCE, an id
            listed twice, an id with no image (or several) in `image_dir`, an id leaving the folder (absolute,
            ``..``, a link to a file outside it).
    """
    csv_file = Path(csv_path)
    folder = check_folder(image_dir)
    header, rows = read_csv_rows(csv_file)
    id_col, columns = header[0], _class_columns(csv_file, header, classes)

    def probabilities(line: int, row: dict[str, str]) -> np.ndarray:
        return _probability_row(csv_file, line, [row.get(column) or "" for column in columns], columns)

    matched = match_rows(csv_file, header, rows, folder, id_col, None, probabilities,
                         missing_hint="; --pseudo-images must be the folder `clf infer --probs` predicted")
    _check_inside(csv_file, folder, matched.paths, matched.lines)
    probs = np.stack(matched.values) if matched.values else np.zeros((0, len(classes)))
    return PseudoLabels(csv_file, file_sha256(csv_file), matched.paths, matched.lines, probs, list(classes))


def _class_columns(csv_file: Path, header: Sequence[str], classes: Sequence[str]) -> list[str]:
    """The probability columns in the run's class order; every class has one and every other column is one."""
    for name in classes:
        if name not in header[1:]:
            raise DataError(f"{csv_file}: no probability column for class '{name}' (columns: {', '.join(header)}); "
                            f"pseudo-labels need the probabilities of a model of DATA's classes: {REDO}")
    extra = [name for name in header[1:] if name not in classes]
    if extra:
        raise DataError(f"{csv_file}: column '{extra[0]}' is not a class of DATA ({', '.join(classes)}); "
                        f"pseudo-labels need the probabilities of a model of DATA's classes: {REDO}")
    return list(classes)


def _probability_row(csv_file: Path, line: int, cells: list[str], columns: list[str]) -> np.ndarray:
    values = []
    for column, cell in zip(columns, cells):
        try:
            value = float(cell)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise DataError(f"{csv_file}: line {line}: probability of '{column}' is '{cell.strip()}'; probabilities "
                            f"are finite numbers >= 0: {REDO}")
        values.append(value)
    total = math.fsum(values)
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise DataError(f"{csv_file}: line {line}: probabilities sum to {total:.6g}, not 1 (tolerance "
                        f"{SUM_TOLERANCE:g}); {REDO}")
    return np.asarray(values, dtype=np.float64) / total


def _check_inside(csv_file: Path, folder: Path, paths: Sequence[str], lines: Sequence[int]) -> None:
    """A file of the folder that is a link to a file elsewhere is refused: an id may name only the folder's
    images, and a link out of it could reach DATA or anything else on the machine."""
    root = folder.resolve()
    for path, line in zip(paths, lines):
        real = Path(path).resolve()
        if not real.is_relative_to(root):
            raise DataError(f"{csv_file}: line {line}: {path} is a link to {real}, outside {folder}; pseudo-labels "
                            "name the images inside --pseudo-images (copy the image there)")


def check_folder_apart(image_dir: str | os.PathLike, data_root: str | os.PathLike, flag: str = "--pseudo-images",
                       advice: str = "pseudo-labels are for unlabelled images: give the test folder `clf infer "
                                     "--probs` predicted") -> None:
    """The pseudo folder (or `clf distill --unlabelled`'s) is not DATA, nor inside it, nor holding it, nor the
    same folder under another name.

    Raises:
        DataError: one line saying the folder must be the unlabelled test images.
    """
    images, data = Path(image_dir).resolve(), Path(data_root).resolve()
    same = images == data or _identity(str(images)) == _identity(str(data))
    if same or images.is_relative_to(data) or data.is_relative_to(images):
        how = "is" if same else ("is inside" if images.is_relative_to(data) else "holds")
        raise DataError(f"{image_dir}: {flag} {how} the training folder {data_root}; {advice}")


def check_not_data_files(pseudo: PseudoLabels, data_paths: Sequence[str]) -> None:
    """No pseudo row is a file of DATA (a hard link to a training image, under another name).

    Raises:
        DataError: naming the line and the training image.
    """
    training = {_identity(path): path for path in data_paths}
    for path, line in zip(pseudo.paths, pseudo.lines):
        twin = training.get(_identity(path))
        if twin is not None:
            raise DataError(f"{pseudo.file}: line {line}: {path} is the same file as the training image {twin}; "
                            "--pseudo-images must be the unlabelled test images, not the training folder")


def check_not_data_paths(paths: Sequence[str], data_paths: Sequence[str], folder: str) -> None:
    """No image of `paths` (`clf distill --unlabelled`) is a file of DATA under another name (a hard link).

    Raises:
        DataError: naming the image and the training image it is.
    """
    training = {_identity(path): path for path in data_paths}
    for path in paths:
        twin = training.get(_identity(path))
        if twin is not None:
            raise DataError(f"{path}: the same file as the training image {twin}; --unlabelled {folder} must hold "
                            "images that are not in DATA (the test images)")


def _identity(path: str) -> tuple[int, int] | str:
    """(device, inode): the same file under any name; the resolved path where stat fails."""
    try:
        info = os.stat(path)
    except OSError:
        return str(Path(path).resolve())
    return info.st_dev, info.st_ino


def added_per_class(pseudo: PseudoLabels, rows: Sequence[int]) -> dict[str, int]:
    """How many of `rows` go to each class by their top probability (every class listed, zeros included)."""
    counts = np.bincount(pseudo.probs[np.asarray(rows, dtype=np.int64)].argmax(axis=1),
                         minlength=len(pseudo.classes)) if len(rows) else np.zeros(len(pseudo.classes), np.int64)
    return {name: int(n) for name, n in zip(pseudo.classes, counts)}
