"""clf.data.augment: exact flips/rotations, shape kept, reflected borders, no randomness inside."""

from __future__ import annotations

import numpy as np
import pytest

from clf.data.augment import augment


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)


def test_identity_returns_the_input(image: np.ndarray):
    assert augment(image, flip=False, angle_deg=0.0) is image


def test_flip_mirrors_columns(image: np.ndarray):
    out = augment(image, flip=True, angle_deg=0)
    assert out.dtype == np.uint8 and out.shape == image.shape
    np.testing.assert_array_equal(out, image[:, ::-1])


def test_rotations_by_quarter_turns_are_exact(image: np.ndarray):
    np.testing.assert_array_equal(augment(image, False, 90), np.rot90(image, 1))  # counter-clockwise
    np.testing.assert_array_equal(augment(image, False, -90), np.rot90(image, -1))
    np.testing.assert_array_equal(augment(image, False, 180), image[::-1, ::-1])


def test_flip_then_rotate(image: np.ndarray):
    np.testing.assert_array_equal(augment(image, True, 90), np.rot90(image[:, ::-1], 1))


def test_rotation_keeps_shape_and_fills_corners_by_reflection():
    rect = np.full((12, 20, 3), 200, np.uint8)
    out = augment(rect, flip=False, angle_deg=30)
    assert out.shape == (12, 20, 3) and out.dtype == np.uint8
    assert (out == 200).all()  # reflected border: no black corners on a uniform image
    gray = np.full((12, 20), 50, np.uint8)
    assert augment(gray, True, 15).shape == (12, 20)
    single = np.full((12, 20, 1), 50, np.uint8)
    assert augment(single, True, 15).shape == (12, 20, 1)


def test_deterministic_and_does_not_modify_input(image: np.ndarray):
    before = image.copy()
    a = augment(image, True, 17.5)
    b = augment(image, True, 17.5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(image, before)
    assert not np.array_equal(augment(image, False, 17.5), augment(image, False, -17.5))


def test_non_contiguous_input(image: np.ndarray):
    view = image[2:14, 1:15]  # like a centre crop
    np.testing.assert_array_equal(augment(view, True, 0), view[:, ::-1])
    np.testing.assert_array_equal(augment(view, False, 7), augment(view.copy(), False, 7))


def test_rejects_non_uint8():
    with pytest.raises(ValueError) as err:
        augment(np.zeros((4, 4, 3), np.float32), True, 0)
    assert str(err.value) == "augment expects a uint8 (H, W, C) image, got float32 (4, 4, 3)"
