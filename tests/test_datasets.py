"""clf.data.files and clf.data.datasets: finding images, class folders, label CSVs, verification."""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from clf.data.datasets import LabelledSet, load_labelled, read_labels_csv, scan_class_folders, verify_images
from clf.data.files import IMAGE_EXTENSIONS, is_image_file, list_images
from clf.errors import DataError

NOT_READABLE = "not a readable image (corrupt, truncated or unsupported format)"
OUTSIDE = "points outside {dir}; ids are file names or relative paths inside the image folder"


def write_image(path: Path, value: int = 128, size: int = 8) -> Path:
    """A tiny valid image file in the format its extension names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, np.full((size, size, 3), value, np.uint8))
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def make_class_tree(root: Path, spec: dict[str, list[str]]) -> None:
    for cls, names in spec.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for name in names:
            write_image(root / cls / name)


# --- files ---


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.jpg", True),
        ("a.JPEG", True),
        ("dir/b.Png", True),
        ("c.bmp", True),
        ("d.webp", True),
        ("e.tif", True),
        ("f.TIFF", True),
        ("g.gif", False),
        ("h.txt", False),
        ("jpg", False),
        ("i.jpg.txt", False),
        ("._mac_fork.jpg", False),
        (".hidden.png", False),
    ],
)
def test_is_image_file(name: str, expected: bool):
    assert is_image_file(name) is expected
    assert is_image_file(Path(name)) is expected


def test_image_extensions_are_lowercase_with_dot():
    assert IMAGE_EXTENSIONS == {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def test_list_images_sorted_flat_and_recursive(tmp_path: Path):
    for name in ("b.png", "a.JPG", "a10.png", "a2.png", "sub/c.png", "sub/deeper/d.bmp", ".cache/x.png", "._a.png"):
        write_image(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "folder.png").mkdir()  # a folder with an image-like name is not an image
    assert list_images(tmp_path) == [tmp_path / n for n in ("a.JPG", "a10.png", "a2.png", "b.png")]
    assert list_images(str(tmp_path), recursive=True) == [
        tmp_path / n for n in ("a.JPG", "a10.png", "a2.png", "b.png", "sub/c.png", "sub/deeper/d.bmp")
    ]


def test_list_images_errors(tmp_path: Path):
    with pytest.raises(DataError) as err:
        list_images(tmp_path / "missing")
    assert str(err.value) == f"{tmp_path / 'missing'}: folder not found"
    (tmp_path / "only.txt").write_text("x")
    write_image(tmp_path / "sub" / "nested.png")
    with pytest.raises(DataError) as err:
        list_images(tmp_path)
    assert str(err.value) == f"{tmp_path}: no images (.jpg, .png, ...) found"
    with pytest.raises(DataError) as err:
        list_images(tmp_path / "only.txt")
    assert str(err.value) == f"{tmp_path / 'only.txt'}: not a folder"


# --- LabelledSet ---


def test_labelled_set_helpers():
    ds = LabelledSet(["a", "b", "c", "d"], [0, 2, 0, 2], ["x", "y", "z"])
    assert len(ds) == 4
    assert ds.class_counts() == {"x": 2, "y": 0, "z": 2}
    assert list(ds.class_counts()) == ["x", "y", "z"]
    sub = ds.subset(np.array([3, 0]))
    assert sub == LabelledSet(["d", "a"], [2, 0], ["x", "y", "z"])
    assert isinstance(sub.labels[0], int)
    assert len(ds.subset([])) == 0


def test_labelled_set_validates():
    with pytest.raises(ValueError, match="2 paths but 1 labels"):
        LabelledSet(["a", "b"], [0], ["x", "y"])
    with pytest.raises(ValueError, match="label 2 out of range for 2 classes"):
        LabelledSet(["a"], [2], ["x", "y"])


# --- class folders ---


def test_scan_class_folders(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    make_class_tree(tmp_path, {"dog": ["d2.jpg", "d1.png"], "cat": ["c1.png"], "Bird": ["b.bmp"]})
    (tmp_path / "cat" / "readme.txt").write_text("ignored")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    write_image(tmp_path / "stray.png")  # files in the root are not a class
    with caplog.at_level(logging.DEBUG, logger="clf.data.files"):
        ds = scan_class_folders(tmp_path)
    assert ds.classes == ["Bird", "cat", "dog"]  # sorted by name, hidden folder skipped
    assert ds.paths == [str(tmp_path / p) for p in ("Bird/b.bmp", "cat/c1.png", "dog/d1.png", "dog/d2.jpg")]
    assert ds.labels == [0, 1, 2, 2]
    assert f"{tmp_path / 'cat'}: ignored 1 non-image file(s)" in caplog.messages


def test_scan_class_folders_errors(tmp_path: Path):
    with pytest.raises(DataError) as err:
        scan_class_folders(tmp_path / "nope")
    assert str(err.value) == f"{tmp_path / 'nope'}: folder not found"

    make_class_tree(tmp_path, {"only": ["a.png"]})
    with pytest.raises(DataError) as err:
        scan_class_folders(tmp_path)
    assert str(err.value) == (
        f"{tmp_path}: found 1 class folder(s), need at least 2 (layout: {tmp_path}/<class>/<image>)"
    )

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "labels.txt").write_text("x")
    with pytest.raises(DataError) as err:
        scan_class_folders(tmp_path)
    assert str(err.value) == f"{tmp_path / 'empty'}: class folder has no images"


def test_scan_parent_of_train_folder_points_at_the_right_level(tmp_path: Path):
    make_class_tree(tmp_path / "train", {"a": ["1.png"], "b": ["2.png"]})
    write_image(tmp_path / "test" / "x.png")
    with pytest.raises(DataError) as err:
        scan_class_folders(tmp_path)
    train = tmp_path / "train"
    assert str(err.value) == (
        f"{train}: class folder has no images; it holds sub-folders, so the data folder is probably {train}"
    )


# --- labels CSV ---


def test_read_labels_csv_matches_names_stems_and_relative_paths(tmp_path: Path):
    for name in ("img1.png", "img2.jpg", "img3.png", "extra.png"):
        write_image(tmp_path / "images" / name)
    write_image(tmp_path / "images" / "sub" / "img4.png")
    csv_path = tmp_path / "labels.csv"
    text = "\ufeffid,kind,other\nimg2,10,x\nimg1.png,2,y\n\nsub/img4.png,2,z\nimg3,10,w\n"  # BOM, blank line
    csv_path.write_text(text, encoding="utf-8")
    ds = read_labels_csv(csv_path, tmp_path / "images", id_col="id", label_col="kind")
    images = tmp_path / "images"
    assert ds.paths == [str(images / n) for n in ("img2.jpg", "img1.png", "sub/img4.png", "img3.png")]  # CSV order
    assert ds.classes == ["2", "10"]  # integer labels sort numerically
    assert ds.labels == [1, 0, 0, 1]


def test_read_labels_csv_text_labels_sorted(tmp_path: Path):
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png")
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("filename,label\r\na, zebra \r\nb,ant\r\n")
    ds = read_labels_csv(csv_path, tmp_path)
    assert ds.classes == ["ant", "zebra"] and ds.labels == [1, 0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "{csv}: empty CSV file"),
        ("filename,label\n", "{csv}: no rows under the header"),
        (
            "name,label\na,x\n",
            "{csv}: no column 'filename' (columns: name, label); "
            "name the id and label columns with --id-col and --label-col",
        ),
        ("filename,label\na,x\nb,\n", "{csv}: line 3: empty 'label'"),
        ("filename,label\n,x\n", "{csv}: line 2: empty 'filename'"),
        ("filename,label\na,x\nb,y\na.png,y\n", "{csv}: line 4: 'a.png' is listed twice (also line 2)"),
        ("filename,label\na,x\nzz,y\nb,y\nqq,x\nrr,x\n", "{csv}: line 3: no image 'zz' in {dir} (and 2 more)"),
        ("filename,label\na,x\nnope.png,y\n", "{csv}: line 3: no image 'nope.png' in {dir}"),
        ("filename,label\na,x\nb,x\n", "{csv}: found 1 class(es) in 'label', need at least 2"),
        (
            "filename,label\nsame,x\n",
            "{csv}: line 2: 'same' matches several files (same.jpg, same.png); put the extension in the id",
        ),
        ("filename,label\na,x\n../secret.png,y\n", "{csv}: line 3: id '../secret.png' " + OUTSIDE),
        ("filename,label\na,x\n{secret},y\n", "{csv}: line 3: id '{secret}' " + OUTSIDE),
        ("filename,label\na,x\nsub/../../secret.png,y\n", "{csv}: line 3: id 'sub/../../secret.png' " + OUTSIDE),
        ("filename,label\na,x\n..\\secret.png,y\n", "{csv}: line 3: id '..\\secret.png' " + OUTSIDE),
    ],
)
def test_read_labels_csv_errors(tmp_path: Path, text: str, message: str):
    images = tmp_path / "images"
    for name in ("a.png", "b.png", "same.png", "same.jpg"):
        write_image(images / name)
    write_image(tmp_path / "secret.png")  # beside the image folder: real, but not the data
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text(text.replace("{secret}", str(tmp_path / "secret.png")))
    with pytest.raises(DataError) as err:
        read_labels_csv(csv_path, images)
    assert str(err.value) == message.format(csv=csv_path, dir=images, secret=tmp_path / "secret.png")


def test_read_labels_csv_follows_links_the_user_put_inside_the_folder(tmp_path: Path):
    """Confinement is about the ids, not the files: a link inside the image folder to a real image still works."""
    elsewhere = write_image(tmp_path / "store" / "x.png")
    write_image(tmp_path / "images" / "sub" / "y.png")
    (tmp_path / "images" / "sub" / "x.png").symlink_to(elsewhere)
    (tmp_path / "l.csv").write_text("filename,label\nsub/x.png,a\nsub/y.png,b\n")
    ds = read_labels_csv(tmp_path / "l.csv", tmp_path / "images")
    assert ds.paths == [str(tmp_path / "images" / "sub" / "x.png"), str(tmp_path / "images" / "sub" / "y.png")]


def test_read_labels_csv_missing_files(tmp_path: Path):
    with pytest.raises(DataError) as err:
        read_labels_csv(tmp_path / "labels.csv", tmp_path)
    assert str(err.value) == f"{tmp_path / 'labels.csv'}: file not found"
    (tmp_path / "labels.csv").write_text("filename,label\n")
    with pytest.raises(DataError) as err:
        read_labels_csv(tmp_path / "labels.csv", tmp_path / "images")
    assert str(err.value) == f"{tmp_path / 'images'}: folder not found"
    with pytest.raises(DataError) as err:
        read_labels_csv(tmp_path, tmp_path)
    assert str(err.value) == f"{tmp_path}: is a folder, not a CSV file"
    (tmp_path / "latin1.csv").write_bytes("filename,label\ncaf\xe9,x\n".encode("latin-1"))
    with pytest.raises(DataError) as err:
        read_labels_csv(tmp_path / "latin1.csv", tmp_path)
    assert str(err.value) == f"{tmp_path / 'latin1.csv'}: not a UTF-8 text file"


def test_load_labelled_dispatches(tmp_path: Path):
    make_class_tree(tmp_path / "folders", {"a": ["1.png"], "b": ["2.png"]})
    assert load_labelled(tmp_path / "folders") == scan_class_folders(tmp_path / "folders")
    write_image(tmp_path / "flat" / "p.png")
    write_image(tmp_path / "flat" / "q.png")
    (tmp_path / "l.csv").write_text("file,y\np,no\nq,yes\n")
    ds = load_labelled(tmp_path / "flat", tmp_path / "l.csv", id_col="file", label_col="y")
    assert ds.classes == ["no", "yes"] and ds.labels == [0, 1]


# --- verification ---


@pytest.fixture
def mixed_files(tmp_path: Path) -> list[Path]:
    good = [write_image(tmp_path / f"good{i}.png", value=i * 40) for i in range(4)]
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good[0].read_bytes()[:30])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.png"
    text.write_text("hello")
    return [good[0], truncated, good[1], empty, good[2], text, good[3], tmp_path / "gone.png"]


@pytest.mark.parametrize("workers", [1, 3])
def test_verify_images_skips_and_reports_bad_files(mixed_files: list[Path], workers: int, caplog):
    with caplog.at_level(logging.WARNING, logger="clf.data.datasets"):
        ok = verify_images(mixed_files, workers=workers)
    assert ok == [0, 2, 4, 6]
    truncated, empty, text, gone = mixed_files[1], mixed_files[3], mixed_files[5], mixed_files[7]
    assert caplog.messages == [
        f"{truncated}: {NOT_READABLE}; skipped",
        f"{empty}: empty file, not an image; skipped",
        f"{text}: {NOT_READABLE}; skipped",
        f"{gone}: file not found; skipped",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_verify_images_never_opens_special_files_and_refuses_huge_images(tmp_path: Path, caplog):
    good = write_image(tmp_path / "good.png")
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.jpg"
    zero.symlink_to("/dev/zero")
    link = tmp_path / "link.png"
    link.symlink_to(good)
    huge = tmp_path / "huge.png"
    huge.write_bytes(good.read_bytes()[:16] + struct.pack(">II", 20000, 20000) + good.read_bytes()[24:])
    with caplog.at_level(logging.WARNING, logger="clf.data.datasets"):
        ok = verify_images([good, fifo, zero, link, huge], workers=2)
    assert ok == [0, 3]
    assert caplog.messages == [
        f"{fifo}: not a regular file (FIFO); skipped",
        f"{zero}: not a regular file (character device); skipped",
        (f"{huge}: image is 20000x20000 (400 megapixels), above the budget of 100 megapixels; "
         "if it is genuine, raise it with CLF_MAX_IMAGE_PIXELS=<pixels> (0 = no limit); skipped"),
    ]


def test_verify_images_strict_stops_at_the_first_bad_file(mixed_files: list[Path]):
    with pytest.raises(DataError) as err:
        verify_images(mixed_files, strict=True, workers=2)
    assert str(err.value) == f"{mixed_files[1]}: {NOT_READABLE}; stopped (--strict)"
    assert verify_images([mixed_files[0], str(mixed_files[2])], strict=True) == [0, 1]
    assert verify_images([]) == []
