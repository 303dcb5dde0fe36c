"""`clf augment-preview`: the grid of a data folder under the training flags, or of a run folder's own record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import pytest
from cli_helpers import clf, error_line
from train_helpers import make_data, train

from clf.data.preview import MIN_CELL, SEPARATOR
from clf.ownership import read_marker


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("sample"))


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    return train(data, tmp_path_factory.mktemp("runs"), "rotated", epochs=1, augment="light", crop_scale=0.6,
                 rotate=30.0).run_dir


def grid_shape(rows: int, columns: int, cell: int) -> tuple[int, int, int]:
    """The PNG's (height, width, 3): rows x (1 + columns) cells with separators between them."""
    return rows * cell + (rows - 1) * SEPARATOR, (columns + 1) * cell + columns * SEPARATOR, 3


def test_a_data_folder_is_shown_with_the_flags_of_train(data, tmp_path):
    out = tmp_path / "grid.png"
    result = clf("augment-preview", data, "-o", out, "--img-size", "32", "--rows", "3", "--columns", "4",
                 "--augment", "strong", "--vflip", "0.5")
    assert result.exit_code == 0, result.output
    assert result.output.split() == [f"{out}:", "3", "images", "x", "4", "draws", "of", "--augment", "strong", "(5",
                                     "ops:", "random_resized_crop,", "hflip,", "vflip,", "trivial_augment,",
                                     "random_erasing)"]
    image = cv2.imread(str(out))
    assert image.shape == grid_shape(3, 4, cell=MIN_CELL)  # 32 px upscaled x3 to 96
    assert image.std() > 10  # real pictures, not a blank canvas


def test_translate_replaces_the_crop_of_light(data, tmp_path):
    out = tmp_path / "grid.png"
    result = clf("augment-preview", data, "-o", out, "--img-size", "32", "--rows", "2", "--columns", "2",
                 "--crop-scale", "1", "--translate", "0.125")
    assert result.exit_code == 0, result.output
    assert "(2 ops: translate, hflip)" in " ".join(result.output.split())
    assert cv2.imread(str(out)).shape == grid_shape(2, 2, cell=MIN_CELL)


def test_the_same_seed_writes_the_same_png_and_another_seed_another(data, tmp_path):
    outputs = []
    for seed in ("0", "0", "1"):
        out = tmp_path / f"grid-{len(outputs)}.png"
        assert clf("augment-preview", data, "-o", out, "--img-size", "32", "--seed", seed).exit_code == 0
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] != outputs[2]


def test_rows_spread_over_the_classes(data):
    from clf.data.datasets import load_labelled
    from clf.data.preview import spread_over_classes

    labelled = load_labelled(data)
    order = spread_over_classes(labelled, seed=0)
    first = [Path(p).parent.name for p in order[:4]]
    assert sorted(first) == sorted(labelled.classes)  # one of each class before any class twice
    assert sorted(order) == sorted(map(str, labelled.paths))


def test_a_run_folder_shows_its_own_recorded_pipeline(run, tmp_path):
    out = tmp_path / "run.png"
    result = clf("augment-preview", run, "-o", out, "--rows", "2", "--columns", "2")
    assert result.exit_code == 0, result.output
    recorded = json.loads((run / "config.json").read_text())["augment"]
    assert [op["op"] for op in recorded] == ["random_resized_crop", "hflip", "rotate"]
    assert f"of {run} (3 ops: random_resized_crop, hflip, rotate)" in " ".join(result.output.split())
    assert cv2.imread(str(out)).shape == grid_shape(2, 2, cell=MIN_CELL)
    assert "run.png" not in (read_marker(run) or {}).get("files", [])  # a preview elsewhere is not the run's file


def test_flags_with_a_run_folder_are_refused(run, tmp_path):
    result = clf("augment-preview", run, "-o", tmp_path / "x.png", "--hflip", "0", "--augment", "none")
    assert result.exit_code == 2
    assert error_line(result) == (f"error: {run}: a run folder's augmentation is the one it trained with; drop "
                                  "--augment, --hflip or preview its data folder")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--crop-scale", "0"], "--crop-scale must be > 0 and <= 1, got 0"),
    (["--translate", "0.6"], "--translate must be >= 0 and <= 0.5, got 0.6"),
    (["--augment", "heavy"], "--augment must be one of none, light, default, strong, got 'heavy'"),
    (["--rows", "0"], "--rows and --columns must be >= 1, got 0 and 8"),
    # issue 24: 1e6 x 1e6 ran 82 s and died of OpenCV's out-of-memory; refused before any image is read
    (["--rows", "1000000", "--columns", "1000000"],
     "--rows must be <= 64 and --columns <= 64, got 1000000 and 1000000"),
    (["--columns", "65"], "--rows must be <= 64 and --columns <= 64, got 8 and 65"),
    (["--img-size", "4096", "--rows", "2", "--columns", "2"],
     "--rows 2 x --columns 2 of 4096x4096-pixel images make a 12292x8194 grid (100.7 megapixels), above the limit "
     "of 100; use fewer --rows or --columns"),
])
def test_bad_flags_are_one_line(args, message, data, tmp_path):
    result = clf("augment-preview", data, "-o", tmp_path / "x.png", *args)
    assert result.exit_code == 2
    assert error_line(result) == f"error: {message}"
    assert not (tmp_path / "x.png").exists()


def test_the_output_never_replaces_an_image(data, tmp_path):
    image = sorted((data / "circle").iterdir())[0]
    before = image.read_bytes()
    result = clf("augment-preview", data, "-o", image)
    assert result.exit_code == 2
    assert "would overwrite" in error_line(result) or "input" in error_line(result)
    assert image.read_bytes() == before


def test_unreadable_images_are_skipped_and_reported(tmp_path):
    data = make_data(tmp_path / "sample")
    broken = data / "circle" / "broken.png"
    broken.write_bytes(b"not a png")
    out = tmp_path / "grid.png"
    readable = sum(1 for p in data.rglob("*") if p.is_file()) - 1
    result = clf("augment-preview", data, "-o", out, "--img-size", "32", "--rows", "64", "--columns", "1")
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(out)).shape == grid_shape(readable, 1, cell=MIN_CELL)  # every image but the broken one
    assert f"WARNING skipped: {broken}: not a readable image" in result.output


def test_the_grid_bound_is_checked_before_any_image_is_read(data, tmp_path, monkeypatch):
    from clf.data import preview

    def no_reading(*args, **kwargs):
        raise AssertionError("an image was read")

    monkeypatch.setattr(preview, "load_resized", no_reading)
    result = clf("augment-preview", data, "-o", tmp_path / "x.png", "--img-size", "2048", "--rows", "64",
                 "--columns", "64")
    assert result.exit_code == 2
    assert "above the limit of 100; use fewer --rows or --columns" in error_line(result)


def test_the_largest_grid_within_the_bounds_is_drawn(data, tmp_path):
    out = tmp_path / "big.png"
    result = clf("augment-preview", data, "-o", out, "--img-size", "32", "--rows", "64", "--columns", "64",
                 "--augment", "none")
    assert result.exit_code == 0, result.output
    shown = sum(1 for p in data.rglob("*") if p.is_file())  # fewer images than 64 rows: every one of them
    assert cv2.imread(str(out)).shape == grid_shape(min(64, shown), 64, cell=MIN_CELL)


@pytest.fixture(scope="module")
def group(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("group")
    result = clf("train", data, "--arch", "cnn", "--img-size", "32", "--batch-size", "8", "--workers", "0", "--device",
                 "cpu", "--quiet", "--epochs", "1", "--folds", "2", "--augment", "light", "--crop-scale", "0.6",
                 "--rotate", "20", "--out", out, "--name", "g")
    assert result.exit_code == 0, result.output
    return out / "g"


def test_a_fold_group_shows_its_recorded_pipeline_not_its_folds_as_classes(group, data, tmp_path):
    """Issue 24: the group folder was read as labelled data, fold-0/fold-1 as classes, curves.png "augmented"."""
    out = tmp_path / "group.png"
    result = clf("augment-preview", group, "-o", out, "--rows", "4", "--columns", "2")
    assert result.exit_code == 0, result.output
    recorded = json.loads((group / "fold-0" / "config.json").read_text())["augment"]
    assert [op["op"] for op in recorded] == ["random_resized_crop", "hflip", "rotate"]
    assert f"of {group} (3 ops: random_resized_crop, hflip, rotate)" in " ".join(result.output.split())
    assert cv2.imread(str(out)).shape == grid_shape(4, 2, cell=MIN_CELL)
    # the same grid as the data folder's under the group's flags: the group's images, not its files
    same = tmp_path / "data.png"
    assert clf("augment-preview", data, "-o", same, "--img-size", "32", "--augment", "light", "--crop-scale", "0.6",
               "--rotate", "20", "--rows", "4", "--columns", "2").exit_code == 0
    assert out.read_bytes() == same.read_bytes()


def test_a_fold_group_before_its_first_fold_uses_the_group_record(group, tmp_path):
    early = tmp_path / "early"
    early.mkdir()
    shutil.copy(group / "group.json", early / "group.json")  # no fold run has started: only the record
    out = tmp_path / "early.png"
    result = clf("augment-preview", early, "-o", out, "--rows", "2", "--columns", "2")
    assert result.exit_code == 0, result.output
    assert f"of {early} (3 ops: random_resized_crop, hflip, rotate)" in " ".join(result.output.split())


def test_flags_with_a_fold_group_are_refused(group, tmp_path):
    result = clf("augment-preview", group, "-o", tmp_path / "x.png", "--hflip", "0")
    assert result.exit_code == 2
    assert error_line(result) == (f"error: {group}: a fold group's augmentation is the one it trained with; drop "
                                  "--hflip or preview its data folder")
    assert not (tmp_path / "x.png").exists()
