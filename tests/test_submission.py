"""clf.serve.submission: ids, exact CSV content, sample-submission order and errors, top-k, probabilities."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

import clf.serve.submission as submission
from clf.errors import DataError, StorageError
from clf.serve.submission import make_ids, write_probs, write_submission


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


# ---- make_ids ----

def test_make_ids_formats(tmp_path):
    paths = [tmp_path / "img_01.jpg", tmp_path / "sub" / "img_02.PNG", tmp_path / "a.b.png"]
    assert make_ids(paths, tmp_path) == ["img_01", "img_02", "a.b"]
    assert make_ids(paths, tmp_path, "name") == ["img_01.jpg", "img_02.PNG", "a.b.png"]
    assert make_ids(paths, tmp_path, "relpath") == ["img_01.jpg", "sub/img_02.PNG", "a.b.png"]
    assert make_ids([str(p) for p in paths], str(tmp_path)) == ["img_01", "img_02", "a.b"]


def test_make_ids_duplicate_stem(tmp_path):
    paths = [tmp_path / "x.jpg", tmp_path / "y.jpg", tmp_path / "x.png"]
    with pytest.raises(DataError) as err:
        make_ids(paths, tmp_path)
    assert str(err.value) == (
        f"{tmp_path}: {tmp_path / 'x.jpg'} and {tmp_path / 'x.png'} both get the id 'x'; "
        "use --id-format name or relpath"
    )
    assert make_ids(paths, tmp_path, "name") == ["x.jpg", "y.jpg", "x.png"]


def test_make_ids_relpath_outside_root(tmp_path):
    with pytest.raises(DataError) as err:
        make_ids([Path("/elsewhere/a.jpg")], tmp_path, "relpath")
    assert str(err.value) == f"/elsewhere/a.jpg: not inside {tmp_path}, so it has no relative path id"


def test_make_ids_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="id_format must be one of"):
        make_ids([], tmp_path, "path")


# ---- write_submission ----

def test_plain_submission(tmp_path):
    out = tmp_path / "new" / "sub.csv"  # the folder is created
    extra = write_submission(out, ["img_2", "img_1", "img_3"], ["cat", "dog", "cat"])
    assert extra == []
    assert out.read_text(encoding="utf-8") == "id,label\nimg_2,cat\nimg_1,dog\nimg_3,cat\n"
    assert _no_temp_files(out.parent)


def test_custom_columns_and_quoting(tmp_path):
    out = tmp_path / "sub.csv"
    write_submission(out, ["a", "b"], ["x, y", 'say "hi"'], id_col="ImageId", label_col="Class")
    assert out.read_text(encoding="utf-8") == 'ImageId,Class\na,"x, y"\nb,"say ""hi"""\n'


def test_topk_is_space_separated_in_the_label_column(tmp_path):
    out = tmp_path / "sub.csv"
    write_submission(out, ["a", "b"], None, topk=[["cat", "dog", "fox"], ["fox", "cat", "dog"]], topk_format="space")
    assert out.read_text(encoding="utf-8") == "id,label\na,cat dog fox\nb,fox cat dog\n"


def test_topk_adds_columns_by_default(tmp_path):
    out = tmp_path / "sub.csv"
    write_submission(out, ["a", "b"], None, topk=[["cat", "dog", "fox"], ["fox", "cat", "dog"]])
    assert out.read_text(encoding="utf-8") == "id,label,label_2,label_3\na,cat,dog,fox\nb,fox,cat,dog\n"


def test_length_mismatch_and_duplicates(tmp_path):
    with pytest.raises(ValueError, match="2 ids but 1 predictions"):
        write_submission(tmp_path / "s.csv", ["a", "b"], ["x"])
    with pytest.raises(ValueError, match="duplicate id 'a' in the predictions"):
        write_submission(tmp_path / "s.csv", ["a", "b", "a"], ["x", "y", "z"])
    with pytest.raises(ValueError, match="needs labels or topk"):
        write_submission(tmp_path / "s.csv", ["a"], None)
    assert not (tmp_path / "s.csv").exists()


def test_sample_submission_order_and_columns(tmp_path):
    sample = tmp_path / "sample_submission.csv"
    sample.write_text("\ufeffid,label,usage\nimg_3,circle,Public\nimg_1,circle,Private\nimg_2,circle,Public\n",
                      encoding="utf-8")
    out = tmp_path / "sub.csv"
    extra = write_submission(out, ["img_1", "img_2", "img_3"], ["star", "square", "star"], sample_submission=sample)
    assert extra == []
    assert out.read_text(encoding="utf-8") == (
        "id,label,usage\nimg_3,star,Public\nimg_1,star,Private\nimg_2,square,Public\n"
    )


def test_sample_submission_with_label_column_first(tmp_path):
    sample = tmp_path / "sample.csv"
    sample.write_text("Category,Id\nx,b\nx,a\n", encoding="utf-8")
    out = tmp_path / "sub.csv"
    write_submission(out, ["a", "b"], ["cat", "dog"], id_col="Id", label_col="Category", sample_submission=sample)
    assert out.read_text(encoding="utf-8") == "Category,Id\ndog,b\ncat,a\n"


def test_sample_ids_without_prediction(tmp_path):
    sample = tmp_path / "sample.csv"
    rows = "".join(f"img_{i},x\n" for i in range(1, 10))
    sample.write_text("id,label\n" + rows, encoding="utf-8")
    with pytest.raises(DataError) as err:
        write_submission(tmp_path / "sub.csv", ["img_1", "img_5"], ["a", "b"], sample_submission=sample)
    assert str(err.value) == (
        f"{sample}: 7 of 9 ids have no prediction (img_2, img_3, img_4, img_6, img_7, ...); "
        "check the image folder and --id-format"
    )
    assert not (tmp_path / "sub.csv").exists()


def test_predictions_not_in_sample_are_returned_and_logged(tmp_path, caplog):
    sample = tmp_path / "sample.csv"
    sample.write_text("id,label\nb,x\n", encoding="utf-8")
    out = tmp_path / "sub.csv"
    with caplog.at_level(logging.WARNING, logger="clf.serve.submission"):
        extra = write_submission(out, ["a", "b", "c"], ["1", "2", "3"], sample_submission=sample)
    assert extra == ["a", "c"]
    assert caplog.messages == [f"{sample}: 2 predicted ids are not in it (a, c); left out"]
    assert out.read_text(encoding="utf-8") == "id,label\nb,2\n"


@pytest.mark.parametrize(
    "content, message",
    [
        ("image,label\na,x\n", "no column 'id' (columns: image, label); set the column names"),
        ("id,target\na,x\n", "no column 'label' (columns: id, target); set the column names"),
        ("", "empty CSV file"),
        ("id,label\n", "no rows under the header"),
        ("id,label\na,x\nb\n", "line 3: 1 fields, the header has 2; quote values that contain commas"),
        ("id,label\na,x,y\n", "line 2: 3 fields, the header has 2; quote values that contain commas"),
        ("id,label,id\na,x,y\n", "column 'id' appears twice in the header; give each column its own name"),
        ("\ufeffid , label\na,x\n", None),  # a BOM and spaces around the names: accepted
    ],
)
def test_sample_submission_errors(tmp_path, content, message):
    sample = tmp_path / "sample.csv"
    sample.write_text(content, encoding="utf-8")
    if message is None:
        write_submission(tmp_path / "sub.csv", ["a"], ["x"], sample_submission=sample)
        assert (tmp_path / "sub.csv").read_text(encoding="utf-8") == "id,label\na,x\n"
        return
    with pytest.raises(DataError) as err:
        write_submission(tmp_path / "sub.csv", ["a"], ["x"], sample_submission=sample)
    assert str(err.value) == f"{sample}: {message}"


def test_missing_sample_submission(tmp_path):
    with pytest.raises(DataError) as err:
        write_submission(tmp_path / "sub.csv", ["a"], ["x"], sample_submission=tmp_path / "nope.csv")
    assert str(err.value) == f"{tmp_path / 'nope.csv'}: file not found"


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    out = tmp_path / "sub.csv"
    write_submission(out, ["a"], ["old"])

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(submission.os, "fsync", broken_fsync)
    with pytest.raises(StorageError, match=r"sub.csv: disk full \(.* free\)"):
        write_submission(out, ["a"], ["new"])
    assert out.read_text(encoding="utf-8") == "id,label\na,old\n"
    assert _no_temp_files(tmp_path)


def test_written_file_has_normal_permissions(tmp_path):
    out = tmp_path / "sub.csv"
    write_submission(out, ["a"], ["x"])
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


# ---- write_probs ----

def test_write_probs(tmp_path):
    out = tmp_path / "probs.csv"
    probs = np.array([[0.5, 0.25, 0.25], [1 / 3, 2 / 3, 1e-9]], np.float32)
    write_probs(out, ["a", "b"], ["cat", "dog", "fox"], probs)
    assert out.read_text(encoding="utf-8") == "id,cat,dog,fox\na,0.5,0.25,0.25\nb,0.333333,0.666667,1e-09\n"
    write_probs(out, ["a"], ["x"], np.ones((1, 1)), id_col="ImageId")
    assert out.read_text(encoding="utf-8") == "ImageId,x\na,1\n"
    assert _no_temp_files(tmp_path)


def test_write_probs_shape_mismatch(tmp_path):
    with pytest.raises(ValueError, match=r"probs has shape \(2, 2\), expected \(2, 3\)"):
        write_probs(tmp_path / "p.csv", ["a", "b"], ["x", "y", "z"], np.zeros((2, 2)))


# ---- check_sample_ids and unreadable images ----

def test_check_sample_ids(tmp_path):
    sample = tmp_path / "sample.csv"
    sample.write_text("id,label\na,x\nb,x\nc,x\n")
    submission.check_sample_ids(sample, ["c", "b", "a", "extra"])  # every sample id has an image: fine
    with pytest.raises(DataError) as err:
        submission.check_sample_ids(sample, ["a"])
    assert str(err.value) == f"{sample}: 2 of 3 ids have no image (b, c); check the image folder and --id-format"
    with pytest.raises(DataError, match="no column 'Id'"):
        submission.check_sample_ids(sample, ["a"], id_col="Id")


def test_unreadable_images_keep_the_sample_label(tmp_path, caplog):
    sample = tmp_path / "sample.csv"
    sample.write_text("id,label\na,cat\nb,cat\nc,cat\n")
    out = tmp_path / "sub.csv"
    with caplog.at_level(logging.WARNING, logger="clf.serve.submission"):
        write_submission(out, ["a", "c"], ["dog", "fox"], sample_submission=sample, unreadable=["b"])
    assert out.read_text() == "id,label\na,dog\nb,cat\nc,fox\n"
    assert caplog.messages == [f"{sample}: 1 ids of unreadable images keep the sample's label (b)"]
    with pytest.raises(DataError, match=r"1 of 3 ids have no prediction \(b\)"):  # not known to be unreadable
        write_submission(out, ["a", "c"], ["dog", "fox"], sample_submission=sample)
