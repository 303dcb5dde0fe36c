"""The one CSV reader: label files, sample submissions, submissions and answers all go through `read_csv_table`.

One set of rules everywhere: a BOM is tolerated (spreadsheet exports start with one), header names are stripped
(`id , label` is `id,label`), blank rows are skipped, every row has the header's number of fields (empty trailing
cells of a spreadsheet export excepted), and every problem is one DataError line naming the file (and the line).
Torch-free: inference hosts read CSV files too.
"""

from __future__ import annotations

import csv
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from clf.errors import DataError, one_line


@dataclass(frozen=True)
class CsvTable:
    """A CSV file's header and rows.

    Attributes:
        path: the file, for messages.
        header: column names, stripped.
        rows: the non-blank rows, each with exactly ``len(header)`` cells (values as written, not stripped).
        lines: the file line of each row (where the row ends), for messages.
    """

    path: Path
    header: list[str]
    rows: list[list[str]]
    lines: list[int]

    def column(self, name: str, hint: str = "set the column names") -> int:
        """The index of column `name`.

        Raises:
            DataError: "<path>: no column '<name>' (columns: a, b); <hint>".
        """
        if name not in self.header:
            raise DataError(f"{self.path}: no column '{name}' (columns: {', '.join(self.header)}); {hint}")
        return self.header.index(name)

    def unique_ids(self, id_at: int) -> list[str]:
        """Each row's id (column `id_at`, stripped), in row order.

        Raises:
            DataError: an id listed twice, naming both lines (it would silently change a score or a submission).
        """
        first_line: dict[str, int] = {}
        for line, row in zip(self.lines, self.rows):
            image_id = row[id_at].strip()
            if image_id in first_line:
                raise DataError(f"{self.path}: line {line}: id '{image_id}' is listed twice (also line "
                                f"{first_line[image_id]}); keep one row per id")
            first_line[image_id] = line
        return list(first_line)

    def records(self) -> list[tuple[int, dict[str, str]]]:
        """(line, {column: value}) per row."""
        return [(line, dict(zip(self.header, row))) for line, row in zip(self.lines, self.rows)]


def read_csv_table(path: str | os.PathLike) -> CsvTable:
    """Read a CSV file with a header row.

    Raises:
        DataError: the file is missing, a folder, a FIFO or device (never opened), unreadable, not UTF-8, empty,
            has no rows under its header, repeats a column name, is malformed, or a row has the wrong number of
            fields (the message names the line).
    """
    path = Path(path)
    text = _read_text(path)
    try:
        table = _parse(path, text)
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV file ({one_line(exc)})") from None
    return table


def _read_text(path: Path) -> str:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or one_line(exc)})") from None
    if stat.S_ISDIR(mode):
        raise DataError(f"{path}: is a folder, not a CSV file")
    if not stat.S_ISREG(mode):  # a FIFO would block forever, /dev/zero would fill the memory
        raise DataError(f"{path}: not a regular file (a FIFO, device or socket); give a CSV file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or one_line(exc)})") from None
    try:
        return data.decode("utf-8-sig")  # utf-8-sig: spreadsheet exports start with a BOM
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None


def _parse(path: Path, text: str) -> CsvTable:
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue  # a blank line, or a row of empty cells (",,")
        if header is None:
            header = [name.strip() for name in row]
            while header and not header[-1]:
                header.pop()  # a spreadsheet's empty trailing columns
            _check_header(path, header)
            continue
        rows.append(_fit(path, reader.line_num, row, len(header)))
        lines.append(reader.line_num)
    if header is None:
        raise DataError(f"{path}: empty CSV file")
    if not rows:
        raise DataError(f"{path}: no rows under the header")
    return CsvTable(path, header, rows, lines)


def _check_header(path: Path, header: list[str]) -> None:
    seen = set()
    for name in header:
        if name in seen:
            raise DataError(f"{path}: column '{name}' appears twice in the header; give each column its own name")
        seen.add(name)


def _fit(path: Path, line: int, row: list[str], width: int) -> list[str]:
    """The row with exactly `width` cells: empty trailing cells beyond the header are dropped, anything else is
    an error."""
    if len(row) > width and not any(cell.strip() for cell in row[width:]):
        row = row[:width]
    if len(row) != width:
        raise DataError(f"{path}: line {line}: {len(row)} fields, the header has {width}; "
                        "quote values that contain commas")
    return row
