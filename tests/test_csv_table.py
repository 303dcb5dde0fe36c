"""clf.data.csv_table: the one CSV reader (labels, sample submissions, submissions, answers)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clf.data.csv_table import read_csv_table
from clf.errors import DataError


def write(tmp_path: Path, data: str | bytes, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def test_header_rows_and_lines(tmp_path):
    path = write(tmp_path, '\ufeffid , label \r\n\r\na,"x, y"\r\n,,\r\nb,"two\nlines"\r\nc,z\r\n')
    table = read_csv_table(path)
    assert table.header == ["id", "label"]  # BOM gone, names stripped
    assert table.rows == [["a", "x, y"], ["b", "two\nlines"], ["c", "z"]]  # blank rows skipped, values as written
    assert table.lines == [3, 6, 7]  # where each row ends
    assert table.column("label") == 1
    assert table.records() == [(3, {"id": "a", "label": "x, y"}), (6, {"id": "b", "label": "two\nlines"}),
                               (7, {"id": "c", "label": "z"})]


def test_empty_trailing_cells_of_a_spreadsheet_export(tmp_path):
    table = read_csv_table(write(tmp_path, "id,label,,\na,x,,\nb,y\n"))
    assert table.header == ["id", "label"] and table.rows == [["a", "x"], ["b", "y"]]


@pytest.mark.parametrize(
    "data, message",
    [
        ("", "empty CSV file"),
        ("\n ,\n", "empty CSV file"),
        ("id,label\n", "no rows under the header"),
        ("id,label\na,x\nb\n", "line 3: 1 fields, the header has 2; quote values that contain commas"),
        ("id,label\na,x,extra\n", "line 2: 3 fields, the header has 2; quote values that contain commas"),
        ("id,id\na,x\n", "column 'id' appears twice in the header; give each column its own name"),
        (b"id,label\ncaf\xe9,x\n", "not a UTF-8 text file"),
        ("id,label\na,\"" + "x" * 200_000 + "\"\n", "not a readable CSV file (field larger than field limit (131072))"),
    ],
    ids=["empty", "blank", "header-only", "short-row", "long-row", "repeated-column", "latin1", "huge-field"],
)
def test_errors(tmp_path, data, message):
    path = write(tmp_path, data)
    with pytest.raises(DataError) as err:
        read_csv_table(path)
    assert str(err.value) == f"{path}: {message}"


def test_missing_column_names_the_columns_and_the_hint(tmp_path):
    table = read_csv_table(write(tmp_path, "image,label\na,x\n"))
    with pytest.raises(DataError) as err:
        table.column("id", "pass --id-col")
    assert str(err.value) == f"{table.path}: no column 'id' (columns: image, label); pass --id-col"


def test_not_a_file(tmp_path):
    with pytest.raises(DataError) as err:
        read_csv_table(tmp_path / "nope.csv")
    assert str(err.value) == f"{tmp_path / 'nope.csv'}: file not found"
    with pytest.raises(DataError) as err:
        read_csv_table(tmp_path)
    assert str(err.value) == f"{tmp_path}: is a folder, not a CSV file"


def test_a_fifo_is_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "labels.csv"
    os.mkfifo(fifo)  # opening it would block forever: the test would hang, not fail
    with pytest.raises(DataError) as err:
        read_csv_table(fifo)
    assert str(err.value) == f"{fifo}: not a regular file (a FIFO, device or socket); give a CSV file"
    link = tmp_path / "zero.csv"
    link.symlink_to("/dev/zero")
    with pytest.raises(DataError) as err:
        read_csv_table(link)
    assert str(err.value) == f"{link}: not a regular file (a FIFO, device or socket); give a CSV file"


def test_unique_ids_are_stripped_in_row_order_and_a_repeat_names_both_lines(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("id,label\n a ,x\nb,y\n\nc,z\n", encoding="utf-8")
    assert read_csv_table(path).unique_ids(0) == ["a", "b", "c"]
    path.write_text("id,label\na,x\nb,y\na ,z\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_csv_table(path).unique_ids(0)
    assert str(info.value) == f"{path}: line 4: id 'a' is listed twice (also line 2); keep one row per id"
