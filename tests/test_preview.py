"""clf.data.preview: the augmentation preview grid and its PNG."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from clf.config import Preprocess
from clf.data.augment import HorizontalFlip, Pipeline
from clf.data.augment_presets import build_pipeline, preset_knobs
from clf.data.preprocess import load_resized
from clf.data.preview import (
    SEPARATOR,
    SEPARATOR_VALUE,
    cell_seeds,
    preview_cell_scale,
    preview_grid,
    write_preview,
)
from clf.errors import DataError

STRONG = build_pipeline(preset_knobs("strong"))


@pytest.fixture
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (10, 14, 3), dtype=np.uint8) for _ in range(3)]


def test_grid_layout(images: list[np.ndarray]):
    grid = preview_grid(images, STRONG, columns=4, seed=1)
    assert grid.dtype == np.uint8
    assert grid.shape == (3 * 10 + 2 * SEPARATOR, 5 * 14 + 4 * SEPARATOR, 3)
    seeds = cell_seeds(3, 4, 1)
    for r, image in enumerate(images):
        top = r * (10 + SEPARATOR)
        np.testing.assert_array_equal(grid[top:top + 10, :14], image)  # the un-augmented image first
        for c in range(4):
            left = (c + 1) * (14 + SEPARATOR)
            np.testing.assert_array_equal(grid[top:top + 10, left:left + 14], STRONG(image, int(seeds[r, c])))
        assert (grid[top:top + 10, 14:14 + SEPARATOR] == SEPARATOR_VALUE).all()
    assert (grid[10:10 + SEPARATOR] == SEPARATOR_VALUE).all()


def test_grid_is_deterministic_under_its_seed(images: list[np.ndarray]):
    np.testing.assert_array_equal(preview_grid(images, STRONG, 3, 7), preview_grid(images, STRONG, 3, 7))
    assert not np.array_equal(preview_grid(images, STRONG, 3, 7), preview_grid(images, STRONG, 3, 8))


def test_cells_are_upscaled_with_nearest_neighbours(images: list[np.ndarray]):
    grid = preview_grid(images[:1], Pipeline([HorizontalFlip(1.0)]), columns=1, seed=0, cell_scale=3)
    assert grid.shape == (30, 2 * 42 + SEPARATOR, 3)
    np.testing.assert_array_equal(grid[:30, :42], np.repeat(np.repeat(images[0], 3, 0), 3, 1))
    np.testing.assert_array_equal(grid[:30, 42 + SEPARATOR:], np.repeat(np.repeat(images[0][:, ::-1], 3, 0), 3, 1))
    sizes = ((32, 32), (28, 40), (96, 96), (224, 200), (20, 500))
    assert [preview_cell_scale(h, w) for h, w in sizes] == [3, 4, 1, 1, 5]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("none", 2), "preview_grid needs at least one image"),
        (("one", 0), "preview_grid needs columns >= 1 and cell_scale >= 1, got 0 and 1"),
        (("mixed", 2), "preview_grid needs uint8 (H, W, 3) images of one shape, got [(10, 14, 3), (5, 5, 3)]"),
    ],
)
def test_grid_argument_errors(images: list[np.ndarray], args, message: str):
    which, columns = args
    chosen = {"none": [], "one": images[:1], "mixed": [images[0], images[0][:5, :5]]}[which]
    with pytest.raises(ValueError) as err:
        preview_grid(chosen, STRONG, columns, 0)
    assert str(err.value) == message


def write_images(folder: Path) -> list[Path]:
    """Two real-looking 40x50 PNG/JPEG images (gradients with a bar) in ``folder``."""
    paths = []
    y, x = np.mgrid[0:40, 0:50]
    for i, suffix in enumerate((".png", ".jpg")):
        image = np.dstack([x * 5, y * 6, np.full_like(x, 60 + 100 * i)]).astype(np.uint8)
        image[10:20, 5 + 20 * i:15 + 20 * i] = 255
        path = folder / f"im{i}{suffix}"
        path.write_bytes(cv2.imencode(suffix, image)[1].tobytes())
        paths.append(path)
    return paths


def test_write_preview_writes_a_decodable_png(tmp_path: Path):
    paths = write_images(tmp_path)
    pre = Preprocess(size=(32, 32))
    out = write_preview(paths, pre, STRONG, tmp_path / "sub" / "grid.png", columns=5, seed=3)
    assert out == tmp_path / "sub" / "grid.png"
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG")
    decoded = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    cell = 96  # 32 px upscaled x3 so that a user can see it
    assert decoded.shape == (2 * cell + SEPARATOR, 6 * cell + 5 * SEPARATOR, 3)
    assert decoded.std() > 10  # not a constant image
    # RGB on disk as the user expects: the first cell is the resized source, upscaled
    first = cv2.cvtColor(decoded[:cell, :cell], cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(first, np.repeat(np.repeat(load_resized(paths[0], pre), 3, 0), 3, 1))
    again = write_preview(paths, pre, STRONG, tmp_path / "again.png", columns=5, seed=3)
    assert again.read_bytes() == data  # deterministic
    assert write_preview(paths, pre, STRONG, tmp_path / "other.png", columns=5, seed=4).read_bytes() != data
    assert sorted(p.name for p in tmp_path.rglob(".clf-*")) == []  # no temp file left behind


def test_write_preview_at_network_size_is_not_upscaled(tmp_path: Path):
    paths = write_images(tmp_path)
    out = write_preview(paths[:1], Preprocess(size=(100, 120)), STRONG, tmp_path / "grid.png", columns=2)
    assert cv2.imread(str(out)).shape == (100, 3 * 120 + 2 * SEPARATOR, 3)


def test_write_preview_bad_image_is_one_line(tmp_path: Path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError) as err:
        write_preview([bad], Preprocess(size=(32, 32)), STRONG, tmp_path / "grid.png")
    assert str(err.value).startswith(f"{bad}: ")
    assert not (tmp_path / "grid.png").exists()


def test_augmentation_modules_never_import_torch():
    """augment, augment_presets and preview run where only numpy and OpenCV are (the preview on a laptop)."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import clf.data.augment, clf.data.augment_presets, clf.data.preview\n"
        "print('ok')"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
