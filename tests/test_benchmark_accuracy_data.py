"""benchmarks/accuracy_data.py: the real-photo benchmark data is the same bytes for the same seed (skips without
scikit-image, a benchmark-only dependency)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("skimage")

_MODULE = Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy_data.py"


def _load_builder():
    spec = importlib.util.spec_from_file_location("accuracy_data", _MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_faces_are_byte_identical_for_a_seed_and_differ_for_another(tmp_path):
    builder = _load_builder()
    first = _digest(builder.build("faces", tmp_path / "a", seed=3))
    assert first == _digest(builder.build("faces", tmp_path / "b", seed=3))
    assert first != _digest(builder.build("faces", tmp_path / "c", seed=4))
    assert sum(name.startswith("train/face/") for name in first) == 50
    assert sum(name.startswith("test/") for name in first) == 100


def test_a_folder_is_rebuilt_only_when_its_parameters_change(tmp_path):
    builder = _load_builder()
    out = builder.build("faces", tmp_path, seed=0)
    marker = out / "train" / "face" / "kept.txt"
    marker.write_text("kept")
    builder.build("faces", tmp_path, seed=0)
    assert marker.exists()  # same parameters: reused as it is
    builder.build("faces", tmp_path, seed=1)
    assert not marker.exists()
    assert json.loads((out / "params.json").read_text())["data_seed"] == 1


def test_train_and_test_crops_never_share_a_column():
    builder = _load_builder()
    import numpy as np

    width = 451
    columns = np.tile(np.arange(width), (300, 1))  # each pixel holds its column: a crop tells where it was cut
    split = round(width * builder.TRAIN_FRACTION)
    rng = np.random.default_rng(0)
    train = [builder._random_crop(columns, 0, split, rng) for _ in range(200)]
    test = [builder._random_crop(columns, split, width, rng) for _ in range(200)]
    assert max(int(c.max()) for c in train) < split <= min(int(c.min()) for c in test)
    assert all(c.shape[0] == c.shape[1] and builder.CROP_MIN <= c.shape[0] <= builder.CROP_MAX for c in train + test)
    narrow = builder._random_crop(columns, split, split + 40, rng)  # a region narrower than the smallest crop
    assert narrow.shape == (40, 40)


@pytest.mark.parametrize("bench, classes, train, test", [
    ("textures", 6, 60, 180), ("glyphs", 10, 72, 240), ("tiny", 6, 80, 240),
])
def test_each_new_benchmark_is_byte_identical_for_a_seed(tmp_path, bench, classes, train, test):
    pytest.importorskip("pywt")
    pytest.importorskip("sklearn")
    builder = _load_builder()
    first = _digest(builder.build(bench, tmp_path / "a", seed=2))
    assert first == _digest(builder.build(bench, tmp_path / "b", seed=2))
    assert first != _digest(builder.build(bench, tmp_path / "c", seed=3))
    class_names = {name.split("/")[1] for name in first if name.startswith("train/")}
    assert len(class_names) == classes
    assert all(sum(name.startswith(f"train/{c}/") for name in first) == train for c in class_names)
    assert sum(name.startswith("test/") for name in first) == test


def test_glyph_test_fonts_are_never_trained_on():
    builder = _load_builder()
    assert not set(builder.GLYPH_TRAIN_FONTS) & set(builder.GLYPH_TEST_FONTS)


def test_the_pictures_kept_for_independent_checks_are_not_used():
    builder = _load_builder()
    text = _MODULE.read_text()
    sources = text[:text.index("# --- shared")]  # the builders, not the docstring's list of what is kept aside
    code = sources[sources.index('"""', sources.index('"""') + 3):]
    for kept in ("astronaut", "brick", "camera", "coffee", "grass", "gravel", "hubble", "immunohistochemistry",
                 "moon", "retina", "load_digits"):
        assert kept not in code, kept
    assert builder.BENCHES == ("scenes", "faces", "textures", "glyphs", "tiny")
