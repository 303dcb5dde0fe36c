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
