"""`clf augment-preview`: the grid of a data folder under the training flags, or of a run folder's own record."""

from __future__ import annotations

import json
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
    return train(data, tmp_path_factory.mktemp("runs"), "rotated", epochs=1, augment="light", rotate=30.0).run_dir


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
    (["--augment", "heavy"], "--augment must be one of none, light, default, strong, got 'heavy'"),
    (["--rows", "0"], "--rows and --columns must be >= 1, got 0 and 8"),
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
    result = clf("augment-preview", data, "-o", out, "--img-size", "32", "--rows", "100", "--columns", "1")
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(out)).shape == grid_shape(readable, 1, cell=MIN_CELL)  # every image but the broken one
    assert f"WARNING skipped: {broken}: not a readable image" in result.output
