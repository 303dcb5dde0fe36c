"""clf.data.sample: layout, byte-identical determinism, CSVs, refusal to clobber, speed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from clf.data.datasets import read_labels_csv, scan_class_folders
from clf.data.files import list_images
from clf.data.preprocess import load_rgb
from clf.data.sample import MAX_SIZE, SHAPES, generate_sample_competition
from clf.errors import ClfError, DataError
from clf.ownership import MARKER_NAME, foreign_entries, owned_kind, read_marker

PNG_MAGIC, JPEG_MAGIC = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"
SMALL = dict(n_train_per_class=3, n_test=6, image_size=32)


def tree_digest(root: Path) -> dict[str, str]:
    files = (p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def default_sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sample") / "comp"
    return out, generate_sample_competition(out)


def test_default_sample_layout_and_summary(default_sample):
    out, summary = default_sample  # its speed is a benchmark's business, not a test's
    classes = ["circle", "square", "triangle", "star"]
    assert summary == {
        "out_dir": str(out),
        "train_dir": str(out / "train"),
        "test_dir": str(out / "test"),
        "test_labels_csv": str(out / "test_labels.csv"),
        "sample_submission_csv": str(out / "sample_submission.csv"),
        "classes": classes,
        "n_train": 240,
        "n_test": 80,
        "image_size": 64,
        "seed": 0,
    }
    assert sorted(p.name for p in out.iterdir()) == [
        MARKER_NAME, "sample_submission.csv", "test", "test_labels.csv", "train"
    ]
    train = scan_class_folders(out / "train")
    assert train.classes == sorted(classes)
    assert train.class_counts() == {c: 60 for c in sorted(classes)}
    assert [Path(p).name for p in train.paths[:3]] == ["circle_0001.png", "circle_0002.jpg", "circle_0003.png"]
    test_files = list_images(out / "test")
    assert [p.name for p in test_files[:2]] == ["img_0001.png", "img_0002.jpg"]
    assert len(test_files) == 80 and test_files[-1].name == "img_0080.jpg"


def test_files_are_what_their_names_say(default_sample):
    out, _ = default_sample
    for path in sorted(out.rglob("*.png"))[:10] + sorted(out.rglob("*.jpg"))[:10]:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC if path.suffix == ".png" else JPEG_MAGIC)
        image = load_rgb(path)
        assert image.shape == (64, 64, 3) and image.std() > 10  # not blank


def test_csvs(default_sample):
    out, _ = default_sample
    ids = [f"img_{i:04d}" for i in range(1, 81)]
    labels_lines = (out / "test_labels.csv").read_text().splitlines()
    assert labels_lines[0] == "id,label"
    assert [line.split(",")[0] for line in labels_lines[1:]] == ids
    labels = [line.split(",")[1] for line in labels_lines[1:]]
    assert {c: labels.count(c) for c in set(labels)} == {c: 20 for c in ("circle", "square", "triangle", "star")}
    assert labels[:8] != sorted(labels[:8])  # shuffled, not grouped
    assert (out / "sample_submission.csv").read_text() == "id,label\n" + "".join(f"{i},circle\n" for i in ids)
    # The answers read back through the labels-CSV loader, ids matched by stem:
    test = read_labels_csv(out / "test_labels.csv", out / "test", id_col="id")
    assert [Path(p).stem for p in test.paths] == ids
    assert [test.classes[k] for k in test.labels] == labels


def test_byte_identical_for_a_seed(tmp_path: Path):
    generate_sample_competition(tmp_path / "a", seed=5, **SMALL)
    generate_sample_competition(tmp_path / "b", seed=5, **SMALL)
    generate_sample_competition(tmp_path / "c", seed=6, **SMALL)
    a, b, c = (tree_digest(tmp_path / n) for n in "abc")
    assert len(a) == 4 * 3 + 6 + 2 + 1  # + the marker
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_shapes_differ_per_class(tmp_path: Path):
    """Foreground area (pixels far from the median colour) separates circles from stars on average."""
    out = tmp_path / "s"
    generate_sample_competition(out, classes=("circle", "star"), n_train_per_class=12, n_test=0, image_size=48)
    area = {}
    for cls in ("circle", "star"):
        fractions = []
        for path in list_images(out / "train" / cls):
            image = load_rgb(path).astype(np.float32)
            border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).mean(axis=0)
            fractions.append((np.abs(image - border).sum(axis=-1) > 120).mean())
        area[cls] = np.mean(fractions)
    assert area["circle"] > 1.5 * area["star"]  # pi r^2 vs ~1.3 r^2 for the same size range


def test_custom_classes_and_size(tmp_path: Path):
    summary = generate_sample_competition(tmp_path / "x", classes=("cross", "triangle"), **SMALL)
    assert summary["classes"] == ["cross", "triangle"] and summary["n_train"] == 6
    assert sorted(p.name for p in (tmp_path / "x" / "train").iterdir()) == ["cross", "triangle"]
    assert load_rgb(tmp_path / "x" / "train" / "cross" / "cross_0002.jpg").shape == (32, 32, 3)
    assert "img_0001,cross" in (tmp_path / "x" / "sample_submission.csv").read_text()


def test_refuses_a_non_empty_folder(tmp_path: Path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(DataError) as err:
        generate_sample_competition(tmp_path, **SMALL)
    assert str(err.value) == f"{tmp_path}: folder is not empty; choose a new folder or pass --overwrite"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_marker_lists_every_file_written(default_sample):
    out, _ = default_sample
    assert owned_kind(out) == "sample-data"
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != MARKER_NAME)
    assert sorted(read_marker(out)["files"]) == files and len(files) == 240 + 80 + 2
    assert foreign_entries(out) == []


def test_overwrite_replaces_its_own_earlier_output(tmp_path: Path):
    out = tmp_path / "comp"
    generate_sample_competition(out, n_train_per_class=5, n_test=9, image_size=32)
    generate_sample_competition(out, overwrite=True, **SMALL)
    assert len(list((out / "train" / "star").iterdir())) == 3  # no stale star_0004/5 left behind
    assert len(list((out / "test").iterdir())) == 6
    assert not list(out.rglob(".*.tmp"))
    assert len(read_marker(out)["files"]) == 4 * 3 + 6 + 2  # the old plan's names are gone from the marker
    fresh = tmp_path / "fresh"
    generate_sample_competition(fresh, **SMALL)
    assert tree_digest(fresh) == tree_digest(out)


def test_overwrite_refuses_a_users_competition(tmp_path: Path):
    """A real competition (no marker) in the folder: --overwrite refuses and deletes nothing."""
    comp = tmp_path / "comp"
    (comp / "train" / "cats").mkdir(parents=True)
    (comp / "train" / "cats" / "a.jpg").write_bytes(b"mine")
    (comp / "test").mkdir()
    (comp / "test" / "b.jpg").write_bytes(b"mine too")
    before = tree_digest(comp)
    with pytest.raises(ClfError) as err:
        generate_sample_competition(comp, overwrite=True, **SMALL)
    assert str(err.value) == (
        f"{comp}: not a sample-data folder written by clf (no {MARKER_NAME}; holds test, train); "
        "--overwrite only replaces clf's own folders: remove it yourself or choose another name"
    )
    assert tree_digest(comp) == before and not (comp / MARKER_NAME).exists()


def test_overwrite_refuses_a_marked_folder_holding_a_foreign_file(tmp_path: Path):
    out = tmp_path / "comp"
    generate_sample_competition(out, **SMALL)
    (out / "notes.txt").write_text("mine")
    before = tree_digest(out)
    with pytest.raises(ClfError) as err:
        generate_sample_competition(out, overwrite=True, **SMALL)
    assert str(err.value) == (
        f"{out}: holds 1 file(s) clf did not write (notes.txt); "
        "--overwrite only removes clf's own files: move them out or choose another name"
    )
    assert tree_digest(out) == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(classes=("circle", "hexagon")), "unknown shape 'hexagon'; choose from " + ", ".join(SHAPES)),
        (dict(classes=("circle",)), "need at least 2 different classes, got circle"),
        (dict(classes=("star", "star")), "need at least 2 different classes, got star, star"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, message: str):
    with pytest.raises(DataError) as err:
        generate_sample_competition(tmp_path / "out", **kwargs)
    assert str(err.value) == f"{tmp_path / 'out'}: {message}"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 8}, ("--size 8: the image side must be 16..1024 pixels (the shapes are learnable from 32); "
                             "choose a size in that range")),
        ({"image_size": 100000}, "--size 100000: the image side must be 16..1024 pixels"),
        ({"n_train_per_class": 0}, "--per-class 0: need at least 1 training image per class"),
        ({"n_test": -1}, "--test -1: need 0 or more test images"),
        ({"seed": -1}, "--seed -1: the seed must be 0 or more"),
    ],
)
def test_bad_counts_and_sizes_name_the_flag(tmp_path: Path, kwargs: dict, message: str):
    with pytest.raises(DataError) as err:
        generate_sample_competition(tmp_path / "out", **kwargs)
    assert str(err.value).startswith(message)
    assert not (tmp_path / "out").exists()


def test_largest_size_is_accepted(tmp_path: Path):
    summary = generate_sample_competition(tmp_path / "big", n_train_per_class=1, n_test=0, image_size=MAX_SIZE)
    assert load_rgb(tmp_path / "big" / "train" / "circle" / "circle_0001.png").shape == (MAX_SIZE, MAX_SIZE, 3)
    assert summary["n_train"] == 4


def test_out_dir_under_a_file(tmp_path: Path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError) as err:
        generate_sample_competition(tmp_path / "f" / "comp", **SMALL)
    assert (str(err.value)
            == f"{tmp_path / 'f' / 'comp'}: {tmp_path / 'f'} is a file, not a folder; choose another place")


def test_out_dir_is_a_file(tmp_path: Path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError) as err:
        generate_sample_competition(tmp_path / "f", **SMALL)
    assert str(err.value) == f"{tmp_path / 'f'}: exists and is not a folder"
