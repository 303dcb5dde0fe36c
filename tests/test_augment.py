"""clf.data.augment: exact flips/rotations, each op's own seeded stream, plain-data round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clf.data.augment import OPS, HorizontalFlip, Op, Pipeline, Rotate, flip_horizontal, register, rotate
from clf.errors import ClfError


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)


# --- the deterministic transforms ---


def test_flip_mirrors_columns(image: np.ndarray):
    out = flip_horizontal(image)
    assert out.dtype == np.uint8 and out.shape == image.shape
    np.testing.assert_array_equal(out, image[:, ::-1])


def test_rotations_by_quarter_turns_are_exact(image: np.ndarray):
    np.testing.assert_array_equal(rotate(image, 90), np.rot90(image, 1))  # counter-clockwise
    np.testing.assert_array_equal(rotate(image, -90), np.rot90(image, -1))
    np.testing.assert_array_equal(rotate(image, 180), image[::-1, ::-1])
    assert rotate(image, 0) is image


def test_rotation_keeps_shape_and_fills_corners_by_reflection():
    rect = np.full((12, 20, 3), 200, np.uint8)
    out = rotate(rect, 30)
    assert out.shape == (12, 20, 3) and out.dtype == np.uint8
    assert (out == 200).all()  # reflected border: no black corners on a uniform image


def test_non_contiguous_input(image: np.ndarray):
    view = image[2:14, 1:15]  # like a centre crop
    np.testing.assert_array_equal(flip_horizontal(view), view[:, ::-1])
    np.testing.assert_array_equal(rotate(view, 7), rotate(view.copy(), 7))


# --- ops ---


class Fixed:
    """A stand-in generator that returns given numbers, to test what an op does with its draw."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.value


def test_horizontal_flip_op(image: np.ndarray):
    op = HorizontalFlip(p=0.3)
    np.testing.assert_array_equal(op.apply(image, Fixed(0.29)), image[:, ::-1])
    assert op.apply(image, Fixed(0.3)) is image
    assert HorizontalFlip(p=0.0).apply(image, Fixed(0.0)) is image
    np.testing.assert_array_equal(HorizontalFlip(p=1.0).apply(image, Fixed(0.999)), image[:, ::-1])


def test_rotate_op_draws_uniformly_in_the_range(image: np.ndarray):
    op = Rotate(max_degrees=90.0)
    np.testing.assert_array_equal(op.apply(image, Fixed(1.0)), np.rot90(image, 1))  # +90
    np.testing.assert_array_equal(op.apply(image, Fixed(0.0)), np.rot90(image, -1))  # -90
    assert op.apply(image, Fixed(0.5)) is image  # 0 degrees
    angles = [np.random.default_rng(s).uniform(-90, 90) for s in range(200)]
    assert min(angles) < -80 and max(angles) > 80


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: HorizontalFlip(p=1.5), "hflip: p is a probability in [0, 1], got 1.5"),
        (lambda: Rotate(max_degrees=-1), "rotate: max_degrees is an angle >= 0, got -1"),
        (lambda: Rotate(max_degrees=float("nan")), "rotate: max_degrees is an angle >= 0, got nan"),
    ],
)
def test_op_parameters_are_checked(make, message: str):
    with pytest.raises(ValueError) as err:
        make()
    assert str(err.value) == message


# --- the pipeline ---


def test_pipeline_is_deterministic_per_seed_and_leaves_the_input_alone(image: np.ndarray):
    pipeline = Pipeline([HorizontalFlip(0.5), Rotate(20.0)])
    before = image.copy()
    outs = {seed: pipeline(image, seed) for seed in range(8)}
    for seed, out in outs.items():
        np.testing.assert_array_equal(out, pipeline(image, seed))
        assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(image, before)
    assert len({out.tobytes() for out in outs.values()}) == 8  # the seed matters


class Recorder(Op):
    """A new kind of op (not registered: a pipeline runs any Op) that records its draw and changes nothing."""

    name = "test-recorder"

    def __init__(self) -> None:
        self.draws: list[float] = []

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        self.draws.append(float(rng.random()))
        return img


def test_each_op_has_its_own_stream_so_inserting_an_op_shifts_nothing(image: np.ndarray):
    for seed in range(20):
        # the rotation angle drawn for a seed is the same with or without a flip before it
        rotate_only = Pipeline([Rotate(30.0)])(image, seed)
        with_flip_first = Pipeline([HorizontalFlip(1.0), Rotate(30.0)])(image[:, ::-1].copy(), seed)
        np.testing.assert_array_equal(rotate_only, with_flip_first)
        # a new op anywhere leaves the flip's and the rotation's draws unchanged, and draws the same wherever it sits
        flip_rotate = Pipeline([HorizontalFlip(0.5), Rotate(30.0)])(image, seed)
        first, last = Recorder(), Recorder()
        np.testing.assert_array_equal(Pipeline([first, HorizontalFlip(0.5), Rotate(30.0)])(image, seed), flip_rotate)
        np.testing.assert_array_equal(Pipeline([HorizontalFlip(0.5), Rotate(30.0), last])(image, seed), flip_rotate)
        assert first.draws == last.draws


def test_repeated_ops_get_distinct_streams(image: np.ndarray):
    twice = Pipeline([Rotate(45.0), Rotate(45.0)])
    single = Pipeline([Rotate(45.0)])
    # the first rotation is the single pipeline's; the second draws a different angle
    first = single(image, 7)
    assert not np.array_equal(twice(image, 7), single(first, 7))


def test_shapes_other_than_hwc3_are_kept():
    gray = np.full((12, 20), 50, np.uint8)
    single = np.full((12, 20, 1), 50, np.uint8)
    pipeline = Pipeline([HorizontalFlip(1.0), Rotate(15.0)])
    assert pipeline(gray, 0).shape == (12, 20)
    assert pipeline(single, 0).shape == (12, 20, 1)


def test_empty_pipeline_returns_the_input(image: np.ndarray):
    assert not Pipeline() and len(Pipeline()) == 0
    assert Pipeline()(image, 3) is image


def test_rejects_non_uint8():
    with pytest.raises(ValueError) as err:
        Pipeline([HorizontalFlip(1.0)])(np.zeros((4, 4, 3), np.float32), 0)
    assert str(err.value) == "augmentation expects a uint8 (H, W, C) image, got float32 (4, 4, 3)"


def test_from_flags():
    assert Pipeline.from_flags(0.5, 15) == Pipeline([HorizontalFlip(0.5), Rotate(15.0)])
    assert Pipeline.from_flags(0.0, 15) == Pipeline([Rotate(15.0)])
    assert Pipeline.from_flags(0.5, 0) == Pipeline([HorizontalFlip(0.5)])
    assert not Pipeline.from_flags()


# --- plain data ---


def test_to_dict_from_dict_round_trip(image: np.ndarray):
    pipeline = Pipeline([HorizontalFlip(0.25), Rotate(12.5), Rotate(3.0)])
    spec = pipeline.to_dict()
    assert spec == [{"op": "hflip", "p": 0.25}, {"op": "rotate", "max_degrees": 12.5},
                    {"op": "rotate", "max_degrees": 3.0}]
    again = Pipeline.from_dict(json.loads(json.dumps(spec)))
    assert again == pipeline
    for seed in range(5):
        np.testing.assert_array_equal(again(image, seed), pipeline(image, seed))


def test_registry_names_every_op():
    assert OPS == {"hflip": HorizontalFlip, "rotate": Rotate}
    with pytest.raises(ValueError, match="augmentation op 'rotate' is already registered"):
        register(Rotate)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([{"op": "blur"}], "augmentation op #1: unknown op 'blur'; known ops: hflip, rotate"),
        ([{"p": 0.5}], "augmentation op #1: unknown op None; known ops: hflip, rotate"),
        ([{"op": "hflip"}, {"op": "rotate", "angle": 3}],
         "augmentation op #2 (rotate): Rotate.__init__() got an unexpected keyword argument 'angle'"),
        ([{"op": "hflip", "p": 2}], "augmentation op #1 (hflip): hflip: p is a probability in [0, 1], got 2"),
    ],
)
def test_from_dict_errors_are_one_line(spec, message: str):
    with pytest.raises(ClfError) as err:
        Pipeline.from_dict(spec)
    assert str(err.value) == message
