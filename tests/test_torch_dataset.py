"""clf.data.torch_dataset: eval items equal preprocess(); augmentation reproducible from torch's RNG."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from clf.config import Preprocess
from clf.data.augment import HorizontalFlip, Pipeline, Rotate
from clf.data.preprocess import load_resized, normalize, preprocess
from clf.data.torch_dataset import ImageDataset, draw_seed
from clf.errors import DataError

PRE = Preprocess(size=(12, 16))


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    """Five small random images of different sizes, PNG and JPEG."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        path = tmp_path / f"im{i}.{'png' if i % 2 == 0 else 'jpg'}"
        image = rng.integers(0, 256, (20 + 3 * i, 30 - 2 * i, 3), dtype=np.uint8)
        path.write_bytes(cv2.imencode(path.suffix, image)[1].tobytes())
        paths.append(path)
    return paths


@pytest.mark.parametrize("resize", ["stretch", "shorter_crop"])
def test_eval_items_equal_preprocess_exactly(files: list[Path], resize: str):
    pre = Preprocess(size=(12, 16), resize=resize)
    ds = ImageDataset(files, [0, 1, 2, 1, 0], pre, hflip=1.0, rotate=45)  # train=False: no augmentation
    assert len(ds) == 5
    for i, path in enumerate(files):
        x, y = ds[i]
        assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.shape == (3, 12, 16)
        assert type(y) is int and y == [0, 1, 2, 1, 0][i]
        assert torch.equal(x, torch.from_numpy(preprocess(path, pre)))


def test_train_without_augmentation_draws_nothing(files: list[Path]):
    ds = ImageDataset(files, [0] * 5, PRE, train=True)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    x, _ = ds[1]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(x, torch.from_numpy(preprocess(files[1], PRE)))


def test_augmentation_follows_the_drawn_seed(files: list[Path]):
    ds = ImageDataset(files, [0] * 5, PRE, train=True, hflip=0.5, rotate=30)
    assert ds.augment == Pipeline([HorizontalFlip(0.5), Rotate(30.0)])
    for seed in range(6):
        torch.manual_seed(seed)
        sample_seed = draw_seed()
        after = torch.get_rng_state()
        expected = ds.augment(load_resized(files[2], PRE), sample_seed)
        torch.manual_seed(seed)
        x, _ = ds[2]
        assert torch.equal(x, torch.from_numpy(normalize(expected, PRE)))
        assert torch.equal(torch.get_rng_state(), after)  # one draw per item, whatever the number of ops


def test_a_given_pipeline_replaces_the_flags(files: list[Path]):
    pipeline = Pipeline([Rotate(10.0)])
    ds = ImageDataset(files, [0] * 5, PRE, train=True, hflip=1.0, augment=pipeline)
    assert ds.augment is pipeline
    torch.manual_seed(3)
    expected = pipeline(load_resized(files[0], PRE), draw_seed())
    torch.manual_seed(3)
    assert torch.equal(ds[0][0], torch.from_numpy(normalize(expected, PRE)))


def test_always_flip(files: list[Path]):
    ds = ImageDataset(files, [0] * 5, PRE, train=True, hflip=1.0)
    x, _ = ds[0]
    assert torch.equal(x, torch.from_numpy(preprocess(files[0], PRE)).flip(-1))


def test_augmentation_is_reproducible_from_seed_and_rng_state(files: list[Path]):
    ds = ImageDataset(files, [0] * 5, PRE, train=True, hflip=0.5, rotate=20)
    torch.manual_seed(123)
    first = [ds[i][0] for i in range(5)]
    saved = torch.get_rng_state()
    after = [ds[i][0] for i in range(5)]
    torch.manual_seed(123)
    assert all(torch.equal(a, b) for a, b in zip(first, (ds[i][0] for i in range(5))))
    torch.set_rng_state(saved)
    assert all(torch.equal(a, b) for a, b in zip(after, (ds[i][0] for i in range(5))))
    assert not all(torch.equal(a, b) for a, b in zip(first, after))


def test_cache_keeps_resized_images(files: list[Path]):
    ds = ImageDataset(files, [0] * 5, PRE, cache=True)
    assert ds.cached == 0
    ds[3]
    assert ds.cached == 1
    ds.fill_cache(workers=2)
    assert ds.cached == 5
    expected = [preprocess(p, PRE) for p in files]
    for path in files:
        path.unlink()  # everything must now come from RAM
    for i in range(5):
        assert torch.equal(ds[i][0], torch.from_numpy(expected[i]))


def test_cached_centre_crop_is_a_compact_copy(files: list[Path]):
    ds = ImageDataset(files, [0] * 5, Preprocess(size=(8, 8), resize="shorter_crop"), cache=True)
    ds.fill_cache(workers=1)
    image = ds._cache[0]
    assert image.shape == (8, 8, 3) and image.flags.c_contiguous and image.base is None


def test_fill_cache_needs_cache(files: list[Path]):
    ds = ImageDataset(files, [0] * 5, PRE)
    with pytest.raises(RuntimeError, match=r"fill_cache\(\) needs ImageDataset\(..., cache=True\)"):
        ds.fill_cache()
    assert ds.cached == 0


def test_dataloader_batches(files: list[Path]):
    ds = ImageDataset([str(p) for p in files], np.array([0, 1, 0, 1, 1]), PRE, train=True, hflip=0.5, rotate=10)
    x, y = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert x.shape == (4, 3, 12, 16) and x.dtype == torch.float32
    assert y.tolist() == [0, 1, 0, 1]


def test_bad_image_raises_data_error(tmp_path: Path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError) as err:
        ImageDataset([bad], [0], PRE)[0]
    assert str(err.value) == f"{bad}: not a readable image (corrupt, truncated or unsupported format)"


def test_argument_checks(files: list[Path]):
    with pytest.raises(ValueError, match="5 paths but 2 labels"):
        ImageDataset(files, [0, 1], PRE)
    with pytest.raises(ValueError, match=r"hflip is a probability in \[0, 1\], got 1.5"):
        ImageDataset(files, [0] * 5, PRE, hflip=1.5)
    with pytest.raises(ValueError, match="rotate is a maximum angle >= 0, got -1"):
        ImageDataset(files, [0] * 5, PRE, rotate=-1)
