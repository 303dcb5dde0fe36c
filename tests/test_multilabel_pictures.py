"""The multi-label data set builder (benchmarks/multilabel_data.py, at test size in tests/multilabel_pictures.py):
each image's tags are exactly the sources of the crops it shows, training and test crops never share a column, and
the same seed writes the same bytes."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("sklearn")

from multilabel_pictures import band_sources, builder, make_multilabel_records, tiny_layout  # noqa: E402


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_the_csvs_hold_each_image_once_with_the_sources_it_shows(tmp_path):
    records = make_multilabel_records(tmp_path, seed=1)
    sources = set(band_sources())
    train, answers = _rows(tmp_path / "train.csv"), _rows(tmp_path / "test_labels.csv")
    assert [r["id"] for r in train] == sorted(p.stem for p in (tmp_path / "train").iterdir())
    assert [r["id"] for r in answers] == sorted(p.stem for p in (tmp_path / "test").iterdir())
    assert len(train) == 48 and len(answers) == 24
    tags_of = {r.image_id: r.tags for r in records}
    for row in train + answers:
        tags = row["tags"].split()
        assert tags == tags_of[row["id"]] and 1 <= len(tags) <= 3 and len(set(tags)) == len(tags)
        assert set(tags) <= sources
    assert {t for r in train for t in r["tags"].split()} == sources  # every source is learnable
    assert {t for r in answers for t in r["tags"].split()} == sources
    sample = _rows(tmp_path / "sample_submission.csv")
    assert [r["id"] for r in sample] == [r["id"] for r in answers] and len({r["tags"] for r in sample}) == 1


def test_each_slot_shows_its_crop_and_the_others_are_background(tmp_path):
    records = make_multilabel_records(tmp_path, seed=2)
    module, pictures, slot = builder(), band_sources(), 24
    for record in records:
        image = cv2.cvtColor(cv2.imread(str(tmp_path / record.split / f"{record.image_id}.png")), cv2.COLOR_BGR2RGB)
        assert image.shape == (2 * slot, 2 * slot, 3)
        shown = {crop.slot: crop for crop in record.crops}
        for index in range(4):
            row, column = divmod(index, 2)
            pixels = image[row * slot:(row + 1) * slot, column * slot:(column + 1) * slot]
            if index in shown:
                assert np.array_equal(pixels, module.slot_pixels(shown[index], pictures, slot))
            else:
                assert (pixels == module.BACKGROUND).all()


def test_training_and_test_crops_come_from_disjoint_columns(tmp_path):
    records = make_multilabel_records(tmp_path, seed=3, layout=tiny_layout(train_images=200, test_images=100))
    pictures = band_sources()
    for record in records:
        for crop in record.crops:
            cut = builder().split_column(pictures[crop.source])
            if record.split == "train":
                assert crop.x0 + crop.side <= cut
            else:
                assert crop.x0 >= cut and crop.x0 + crop.side <= pictures[crop.source].shape[1]
            assert 24 <= crop.side <= 64 and crop.y0 + crop.side <= pictures[crop.source].shape[0]


def test_the_same_seed_writes_the_same_bytes_and_another_seed_differs(tmp_path):
    layout = tiny_layout(encodings=("png", "jpeg"))
    first = _digest(_written(tmp_path / "a", 4, layout))
    assert first == _digest(_written(tmp_path / "b", 4, layout))
    assert first != _digest(_written(tmp_path / "c", 5, layout))
    assert any(name.endswith(".jpg") for name in first) and any(name.endswith(".png") for name in first)


def _written(root: Path, seed: int, layout) -> Path:
    make_multilabel_records(root, seed=seed, layout=layout)
    return root


def test_the_benchmark_uses_no_picture_kept_aside_for_independent_checks():
    module = builder()
    code = Path(module.__file__).read_text()
    code = code[code.index('"""', code.index('"""') + 3):]  # the code, not the docstring
    for kept in ("astronaut", "brick", "camera", "coffee", "grass", "gravel", "hubble", "immunohistochemistry",
                 "moon", "retina", "load_digits"):
        assert kept not in code, kept
    pytest.importorskip("skimage")  # the sources' loaders (the bench extra)
    assert set(module.accuracy_data._scene_sources()) == {"chelsea", "coins", "rocket", "motorcycle_left", "page",
                                                         "text", "cell", "clock_motion"}


def test_the_benchmark_folder_is_rebuilt_only_when_its_parameters_change(tmp_path):
    pytest.importorskip("skimage")
    module = builder()
    out = module.build(tmp_path, seed=0)
    assert len(list((out / "train").iterdir())) == 640 and len(list((out / "test").iterdir())) == 320
    marker = out / "kept.txt"
    marker.write_text("kept")
    module.build(tmp_path, seed=0)
    assert marker.exists()  # same parameters: reused as it is
    module.build(tmp_path, seed=1)
    assert not marker.exists() and not (tmp_path / "multilabel.building").exists()
