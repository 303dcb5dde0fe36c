"""clf.data.augment: exact flips/rotations, each op's own seeded stream, plain-data round trip."""

from __future__ import annotations

import hashlib
import json
import math

import cv2
import numpy as np
import pytest

from clf.data.augment import (
    OPS,
    Affine,
    ColorJitter,
    GaussianBlur,
    Grayscale,
    HorizontalFlip,
    Op,
    Pipeline,
    RandAugment,
    RandomErasing,
    RandomResizedCrop,
    Rotate,
    Translate,
    TrivialAugment,
    VerticalFlip,
    op_rng,
    register,
)
from clf.data.augment_kernels import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    adjust_sharpness,
    affine_matrix,
    autocontrast,
    blur_kernel_size,
    crop_box,
    equalize,
    erase_box,
    flip_horizontal,
    gaussian_blur,
    posterize,
    resized_crop,
    rotate,
    shift,
    shift_draw,
    solarize,
    to_grayscale,
    warp,
)
from clf.data.augment_policies import (
    apply_policy_op,
    policy_space,
    rand_augment_draws,
    trivial_augment_draw,
)
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
    assert OPS == {"hflip": HorizontalFlip, "rotate": Rotate, "vflip": VerticalFlip,
                   "random_resized_crop": RandomResizedCrop, "affine": Affine, "color_jitter": ColorJitter,
                   "grayscale": Grayscale, "gaussian_blur": GaussianBlur, "trivial_augment": TrivialAugment,
                   "rand_augment": RandAugment, "random_erasing": RandomErasing, "translate": Translate}
    with pytest.raises(ValueError, match="augmentation op 'rotate' is already registered"):
        register(Rotate)


KNOWN = ("affine, color_jitter, gaussian_blur, grayscale, hflip, rand_augment, random_erasing, random_resized_crop, "
         "rotate, translate, trivial_augment, vflip")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([{"op": "blur"}], f"augmentation op #1: unknown op 'blur'; known ops: {KNOWN}"),
        ([{"p": 0.5}], f"augmentation op #1: unknown op None; known ops: {KNOWN}"),
        ([{"op": "hflip"}, {"op": "rotate", "angle": 3}],
         "augmentation op #2 (rotate): Rotate.__init__() got an unexpected keyword argument 'angle'"),
        ([{"op": "hflip", "p": 2}], "augmentation op #1 (hflip): hflip: p is a probability in [0, 1], got 2"),
    ],
)
def test_from_dict_errors_are_one_line(spec, message: str):
    with pytest.raises(ClfError) as err:
        Pipeline.from_dict(spec)
    assert str(err.value) == message


# --- the ops of issue 10 ---


class Scripted:
    """A stand-in generator that returns queued draws, checking that each lies in the range the op asked for."""

    def __init__(self, *, uniform=(), integers=(), random=()) -> None:
        self.queues = {"uniform": list(uniform), "integers": list(integers), "random": list(random)}

    def _next(self, kind: str):
        assert self.queues[kind], f"no {kind} draw left"
        return self.queues[kind].pop(0)

    def uniform(self, low: float, high: float) -> float:
        value = self._next("uniform")
        assert low <= value <= high, (value, low, high)
        return value

    def integers(self, low: int, high: int | None = None) -> int:
        low, high = (0, low) if high is None else (low, high)
        value = self._next("integers")
        assert low <= value < high, (value, low, high)
        return value

    def random(self) -> float:
        return self._next("random")

    def used_up(self) -> bool:
        return not any(self.queues.values())


# Every op, set so that it acts on most draws (for the shape, determinism and stream contracts).
ALL_OPS = [
    RandomResizedCrop(scale=(0.2, 1.0)), HorizontalFlip(0.5), VerticalFlip(0.5), Rotate(20.0),
    Affine(translate=0.2, scale=(0.8, 1.2), shear=15.0), TrivialAugment(), RandAugment(num_ops=2, magnitude=15),
    ColorJitter(0.4, 0.4, 0.4, 0.1), Grayscale(0.5), GaussianBlur(0.8, (0.3, 2.0)), Translate(0.25),
    RandomErasing(0.8),
]


def test_random_resized_crop_box_is_torchvisions_algorithm():
    # area fraction 0.5 of 10x20 = 100, aspect exp(0) = 1: a 10x10 box, top 0 (the only choice), left 5
    rng = Scripted(uniform=[0.5, 0.0], integers=[0, 5])
    assert crop_box(10, 20, (0.3, 1.0), (3 / 4, 4 / 3), rng) == (0, 5, 10, 10) and rng.used_up()
    # aspect 4/3 at area 0.3 * 200 = 60: w = round(sqrt(80)) = 9, h = round(sqrt(45)) = 7
    rng = Scripted(uniform=[0.3, math.log(4 / 3)], integers=[2, 11])
    assert crop_box(10, 20, (0.3, 1.0), (3 / 4, 4 / 3), rng) == (2, 11, 7, 9)
    # ten boxes too tall (the whole area at aspect 4/3 is 16x12 > 10 rows): the centre crop of the widest aspect
    rng = Scripted(uniform=[1.0, math.log(3 / 4)] * 10)
    assert crop_box(10, 20, (0.3, 1.0), (3 / 4, 4 / 3), rng) == (0, 3, 10, 13) and rng.used_up()
    rng = Scripted(uniform=[1.0, math.log(4 / 3)] * 10)  # a square image's aspect is inside the range: all of it
    assert crop_box(10, 10, (1.0, 1.0), (3 / 4, 4 / 3), rng) == (0, 0, 10, 10) and rng.used_up()


def test_random_resized_crop_boxes_respect_scale_and_ratio():
    for seed in range(300):
        top, left, h, w = crop_box(64, 48, (0.35, 1.0), (3 / 4, 4 / 3), np.random.default_rng(seed))
        assert 0 <= top and top + h <= 64 and 0 <= left and left + w <= 48
        assert 0.35 * 0.9 <= h * w / (64 * 48) <= 1.0
        assert 3 / 4 * 0.85 <= w / h <= 4 / 3 * 1.15  # rounding to whole pixels


def test_resized_crop_upscales_the_box_bilinearly():
    image = np.zeros((4, 4, 3), np.uint8)
    image[1:3, 2] = 0
    image[1:3, 3] = 100
    out = resized_crop(image, (1, 2, 2, 2))  # the 2x2 box [[0, 100], [0, 100]] to 4x4, half-pixel centres
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], np.tile([0, 25, 75, 100], (4, 1)))
    assert resized_crop(image, (0, 0, 4, 4)) is image


def test_random_resized_crop_op_is_the_box_of_its_stream(image: np.ndarray):
    op = RandomResizedCrop(scale=(0.25, 0.5))
    key = Pipeline([op])._stream_keys[0]
    for seed in range(5):
        box = crop_box(16, 16, (0.25, 0.5), (3 / 4, 4 / 3), op_rng(seed, key))
        np.testing.assert_array_equal(Pipeline([op])(image, seed), resized_crop(image, box))


def test_vertical_flip_op(image: np.ndarray):
    np.testing.assert_array_equal(VerticalFlip(0.3).apply(image, Fixed(0.29)), image[::-1])
    assert VerticalFlip(0.3).apply(image, Fixed(0.3)) is image


def test_affine_matrix_by_hand():
    np.testing.assert_allclose(affine_matrix(5, 7), np.eye(2, 3))
    # scale 2 about the centre (3, 2): x' = 2x - 3, y' = 2y - 2
    np.testing.assert_allclose(affine_matrix(5, 7, scale=2.0), [[2, 0, -3], [0, 2, -2]])
    # a 45-degree x-shear about the centre row y = 2: x' = x + y - 2; then 1 px right, 2 px down
    np.testing.assert_allclose(affine_matrix(5, 7, translate=(1, 2), shear=(45, 0)), [[1, 1, -1], [0, 1, 2]],
                               atol=1e-12)
    np.testing.assert_allclose(affine_matrix(5, 7, shear=(0, 45)), [[1, 0, 0], [1, 1, -3]], atol=1e-12)


def test_affine_translation_by_whole_pixels_is_exact_with_a_mirrored_border(image: np.ndarray):
    out = warp(image, affine_matrix(16, 16, translate=(1, 0)))
    np.testing.assert_array_equal(out[:, 1:], image[:, :-1])
    np.testing.assert_array_equal(out[:, 0], image[:, 1])  # BORDER_REFLECT_101
    assert warp(image, affine_matrix(16, 16)) is image


def test_affine_op_draws(image: np.ndarray):
    op = Affine(translate=0.25, scale=(0.5, 1.5), shear=30.0)
    assert op.apply(image, Fixed(0.5)) is image  # the middle of every range: no move
    # translate draws are fractions of each side: +0.25 * 16 = 4 px right and down; scale 1.5; shear +30 degrees
    expected = warp(image, affine_matrix(16, 16, translate=(4.0, 4.0), scale=1.5, shear=(30.0, 0.0)))
    np.testing.assert_array_equal(op.apply(image, Fixed(1.0)), expected)


def test_shift_is_a_shifted_copy_with_a_mirrored_border(image: np.ndarray):
    down_left = shift(image, 2, -3)  # 2 px down, 3 px left
    assert down_left.shape == image.shape and down_left.dtype == np.uint8
    np.testing.assert_array_equal(down_left[2:, :-3], image[:-2, 3:])
    np.testing.assert_array_equal(down_left[:2, :-3], image[2:0:-1, 3:])  # BORDER_REFLECT_101: rows 2, 1 above row 0
    np.testing.assert_array_equal(down_left[2:, -3:], image[:-2, -2:-5:-1])  # columns 14, 13, 12 after 15
    up_right = shift(image, -1, 4)
    np.testing.assert_array_equal(up_right[:-1, 4:], image[1:, :-4])
    assert shift(image, 0, 0) is image
    grey = image[..., :1]
    np.testing.assert_array_equal(shift(grey, 1, 1)[1:, 1:], grey[:-1, :-1])


def test_shift_draw_is_whole_pixels_up_to_the_fraction_of_each_side():
    rng = Scripted(integers=[-2, 5])  # Scripted checks the ranges: dy in [-2, 2] (0.125 x 16), dx in [-5, 5] (x 40)
    assert shift_draw(16, 40, 0.125, rng) == (-2, 5) and rng.used_up()
    draws = {shift_draw(8, 8, 0.25, np.random.default_rng(seed)) for seed in range(200)}
    assert draws == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}  # every shift, the zero one too
    assert shift_draw(3, 3, 0.5, Scripted(integers=[2, -2])) == (2, -2)  # 1.5 px rounds to 2 = side - 1
    assert shift_draw(1, 1, 0.5, np.random.default_rng(0)) == (0, 0)  # nothing to mirror: no shift


def test_translate_op_is_the_shift_of_its_stream(image: np.ndarray):
    op = Translate(max_fraction=0.25)
    key = Pipeline([op])._stream_keys[0]
    outs = []
    for seed in range(8):
        rng = op_rng(seed, key)
        assert rng.random() < 1.0
        dy, dx = shift_draw(16, 16, 0.25, rng)
        outs.append(Pipeline([op])(image, seed))
        np.testing.assert_array_equal(outs[-1], shift(image, dy, dx))
        np.testing.assert_array_equal(Pipeline([op])(image, seed), outs[-1])  # deterministic per seed
    assert len({out.tobytes() for out in outs}) > 1
    # p: the apply draw comes first, then the shift draws, always (three draws)
    scripted = Scripted(random=[0.5], integers=[1, -1])
    assert Translate(0.25, p=0.5).apply(image, scripted) is image and scripted.used_up()
    np.testing.assert_array_equal(Translate(0.25, p=0.5).apply(image, Scripted(random=[0.49], integers=[1, -1])),
                                  shift(image, 1, -1))
    assert Translate(0.0).apply(image, np.random.default_rng(0)) is image  # 0: always the zero shift
    assert Translate(0.25, p=0.0).apply(image, np.random.default_rng(0)) is image


def test_translate_round_trips_through_json(image: np.ndarray):
    spec = json.loads(json.dumps(Pipeline([Translate(0.125, p=0.75)]).to_dict()))
    assert spec == [{"op": "translate", "max_fraction": 0.125, "p": 0.75}]
    again = Pipeline.from_dict(spec)
    assert again == Pipeline([Translate(0.125, p=0.75)])
    for seed in range(4):
        np.testing.assert_array_equal(again(image, seed), Pipeline([Translate(0.125, p=0.75)])(image, seed))
    with pytest.raises(ClfError, match=r"^augmentation op #1 \(translate\): translate: max_fraction is a number"):
        Pipeline.from_dict([{"op": "translate", "max_fraction": 0.75}])


def test_color_adjustments_by_hand():
    row = np.array([[[10, 100, 200]]], np.uint8)
    np.testing.assert_array_equal(adjust_brightness(row, 2.0), [[[20, 200, 255]]])  # saturates
    np.testing.assert_array_equal(adjust_brightness(row, 0.5), [[[5, 50, 100]]])
    two = np.array([[[0, 0, 0], [200, 200, 200]]], np.uint8)  # mean grey 100
    np.testing.assert_array_equal(adjust_contrast(two, 0.5), [[[50] * 3, [150] * 3]])
    np.testing.assert_array_equal(adjust_contrast(two, 0.0), np.full((1, 2, 3), 100))
    red = np.array([[[255, 0, 0]]], np.uint8)
    np.testing.assert_array_equal(adjust_saturation(red, 0.0), [[[76, 76, 76]]])  # its luma
    np.testing.assert_array_equal(adjust_saturation(red, 0.5), [[[166, 38, 38]]])  # half way: (255+76)/2, 76/2
    for factor in (1.0,):
        assert adjust_brightness(row, factor) is row and adjust_contrast(row, factor) is row


def test_hue_shift_of_pure_colours():
    red = np.array([[[255, 0, 0]]], np.uint8)
    np.testing.assert_array_equal(adjust_hue(red, 1 / 3), [[[0, 255, 0]]])  # red + a third of a turn: green
    np.testing.assert_array_equal(adjust_hue(red, -1 / 3), [[[0, 0, 255]]])  # the other way: blue
    np.testing.assert_array_equal(adjust_hue(red, 0.5), [[[0, 255, 255]]])  # half a turn: cyan
    np.testing.assert_array_equal(adjust_hue(np.array([[[0, 255, 0]]], np.uint8), 1 / 3), [[[0, 0, 255]]])
    grey = np.full((3, 3, 3), 90, np.uint8)
    np.testing.assert_array_equal(adjust_hue(grey, 0.2), grey)  # no hue to turn
    assert adjust_hue(red, 0.001) is red  # under one 2-degree step


def test_color_jitter_op_draws_four_factors_in_a_fixed_order():
    image = np.random.default_rng(1).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    op = ColorJitter(brightness=0.5, contrast=0.4, saturation=0.3, hue=0.1)
    assert op.apply(image, Fixed(0.5)) is image  # every factor 1, no hue shift
    rng = Scripted(uniform=[1.5, 0.6, 1.3, -0.1])
    expected = adjust_hue(adjust_saturation(adjust_contrast(adjust_brightness(image, 1.5), 0.6), 1.3), -0.1)
    np.testing.assert_array_equal(op.apply(image, rng), expected)
    assert rng.used_up()
    # a strength above 1 floors the factor at 0 (torchvision's max(0, 1 - x))
    assert ColorJitter(brightness=1.5).apply(image, Scripted(uniform=[0.0, 1.0, 1.0, 0.0])).max() == 0


def test_grayscale_is_the_luma_on_three_channels():
    image = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], np.uint8)
    expected = [76, 150, 29, 18]  # 0.299 R + 0.587 G + 0.114 B, rounded
    np.testing.assert_array_equal(to_grayscale(image), np.repeat(np.array(expected, np.uint8)[None, :, None], 3, 2))
    np.testing.assert_array_equal(Grayscale(0.4).apply(image, Fixed(0.39)), to_grayscale(image))
    assert Grayscale(0.4).apply(image, Fixed(0.4)) is image


def test_gaussian_blur_kernel_and_impulse_response():
    assert [blur_kernel_size(s) for s in (0.1, 0.5, 1.0, 2.0)] == [3, 5, 7, 13]
    impulse = np.zeros((15, 15, 3), np.uint8)
    impulse[7, 7] = 255
    out = gaussian_blur(impulse, 1.0)
    kernel = cv2.getGaussianKernel(7, 1.0)
    expected = np.zeros((15, 15))
    expected[4:11, 4:11] = 255 * kernel @ kernel.T
    np.testing.assert_allclose(out[..., 0], expected, atol=1.0)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    flat = np.full((9, 11, 3), 77, np.uint8)
    np.testing.assert_array_equal(gaussian_blur(flat, 2.0), flat)
    op = GaussianBlur(p=0.5, sigma=(1.0, 1.0))
    np.testing.assert_array_equal(op.apply(impulse, Fixed(0.2)), out)
    assert op.apply(impulse, Fixed(0.5)) is impulse


def test_policy_pixel_ops_by_hand():
    levels = np.array([[[0b10110111, 100, 200]]], np.uint8)
    np.testing.assert_array_equal(posterize(levels, 2), [[[0b10000000, 64, 192]]])
    assert posterize(levels, 8) is levels
    np.testing.assert_array_equal(solarize(levels, 128), [[[255 - 0b10110111, 100, 55]]])
    ramp = np.array([[[50, 7, 0], [100, 7, 10], [150, 7, 20]]], np.uint8)  # per channel: stretched, constant, ...
    np.testing.assert_array_equal(autocontrast(ramp), [[[0, 7, 0], [128, 7, 128], [255, 7, 255]]])
    two = np.array([[[10, 10, 10], [20, 20, 20]]], np.uint8)
    np.testing.assert_array_equal(equalize(two)[..., 0], [[0, 255]])
    dot = np.zeros((3, 3, 3), np.uint8)
    dot[1, 1] = 130
    smooth = adjust_sharpness(dot, 0.0)  # the PIL smoothing kernel: centre (5 * 130) / 13 = 50, borders kept
    np.testing.assert_array_equal(smooth[..., 0], [[0, 0, 0], [0, 50, 0], [0, 0, 0]])
    np.testing.assert_array_equal(adjust_sharpness(dot, 2.0)[..., 0], [[0, 0, 0], [0, 210, 0], [0, 0, 0]])


def test_policy_spaces_are_torchvisions():
    from torchvision.transforms import RandAugment as TvRandAugment
    from torchvision.transforms import TrivialAugmentWide

    names = {"Identity": "identity", "ShearX": "shear_x", "ShearY": "shear_y", "TranslateX": "translate_x",
             "TranslateY": "translate_y", "Rotate": "rotate", "Brightness": "brightness", "Color": "color",
             "Contrast": "contrast", "Sharpness": "sharpness", "Posterize": "posterize", "Solarize": "solarize",
             "AutoContrast": "autocontrast", "Equalize": "equalize"}
    for wide, theirs in ((True, TrivialAugmentWide()._augmentation_space(31)),
                         (False, TvRandAugment()._augmentation_space(31, (40, 60)))):
        ours = policy_space(wide, 40, 60)
        assert list(ours) == [names[n] for n in theirs]  # same ops, same order: same op for the same draw
        for name, (magnitudes, signed) in theirs.items():
            mine, my_signed = ours[names[name]]
            assert my_signed == signed
            if magnitudes.ndim == 0:
                assert mine.size == 0
            elif wide and name.startswith("Translate"):  # 32 px at 224 px, as a fraction of the side
                side = 60 if name == "TranslateX" else 40
                np.testing.assert_allclose(mine, magnitudes.numpy() / 32.0 * (32.0 / 224.0) * side, rtol=1e-6)
            else:
                np.testing.assert_allclose(mine, magnitudes.numpy(), rtol=1e-6)


def test_trivial_augment_draw_and_apply():
    # op #5 (rotate), bin 30 (135 degrees), negative sign
    rng = Scripted(integers=[5, 30], random=[0.2])
    assert trivial_augment_draw(8, 8, rng) == ("rotate", -135.0) and rng.used_up()
    assert trivial_augment_draw(8, 8, Scripted(integers=[10, 30], random=[0.2])) == ("posterize", 2.0)  # unsigned
    assert trivial_augment_draw(8, 8, Scripted(integers=[0, 17], random=[0.9])) == ("identity", 0.0)
    image = np.random.default_rng(2).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    for seed in range(10):
        key = Pipeline([TrivialAugment()])._stream_keys[0]
        op, magnitude = trivial_augment_draw(9, 11, op_rng(seed, key))
        np.testing.assert_array_equal(Pipeline([TrivialAugment()])(image, seed), apply_policy_op(image, op, magnitude))
    ops = {trivial_augment_draw(9, 11, np.random.default_rng(s))[0] for s in range(400)}
    assert len(ops) == 14  # uniform over all of them


def test_rand_augment_draws_use_the_fixed_magnitude():
    rng = Scripted(integers=[6, 3, 11, 29], random=[0.7, 0.1])  # brightness at bin 9, then solarize at bin 9
    # solarize's threshold 178.5 = 255 * (1 - 9/30)
    assert rand_augment_draws(8, 8, 2, 9, rng) == [("brightness", pytest.approx(0.27)), ("solarize", 178.5)]
    assert rng.used_up()
    image = np.random.default_rng(3).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    draws = rand_augment_draws(9, 11, 3, 20, np.random.default_rng(4))
    expected = image
    for op, magnitude in draws:
        expected = apply_policy_op(expected, op, magnitude)
    np.testing.assert_array_equal(RandAugment(3, 20).apply(image, np.random.default_rng(4)), expected)
    assert RandAugment(num_ops=0).apply(image, np.random.default_rng(0)) is image


def test_policy_geometry_ops():
    image = np.random.default_rng(5).integers(0, 256, (8, 10, 3), dtype=np.uint8)
    np.testing.assert_array_equal(apply_policy_op(image, "translate_x", 2.7)[:, 2:], image[:, :-2])  # whole pixels
    np.testing.assert_array_equal(apply_policy_op(image, "translate_y", -1.0)[:-1], image[1:])
    np.testing.assert_array_equal(apply_policy_op(image, "rotate", 180.0), image[::-1, ::-1])
    sheared = apply_policy_op(image, "shear_x", 1.0)  # 45 degrees about the centre
    np.testing.assert_array_equal(sheared, warp(image, affine_matrix(8, 10, shear=(45.0, 0.0))))
    with pytest.raises(ValueError, match="unknown policy op 'invert'"):
        apply_policy_op(image, "invert", 0.0)


def test_random_erasing_box_and_fill():
    # area 0.2 * 200 = 40 at aspect 1: a 6x6 box at (2, 7)
    rng = Scripted(uniform=[0.2, 0.0], integers=[2, 7])
    assert erase_box(10, 20, (0.02, 1 / 3), (0.3, 3.3), rng) == (2, 7, 6, 6) and rng.used_up()
    # a box as tall as the image is never taken (timm: h < height); ten misses give no box
    assert erase_box(10, 20, (0.5, 0.5), (3.0, 3.3), Scripted(uniform=[0.5, math.log(3.0)] * 10)) is None
    image = np.full((10, 20, 3), 128, np.uint8)
    op = RandomErasing(p=1.0)
    key = Pipeline([op])._stream_keys[0]
    for seed in range(10):
        rng = op_rng(seed, key)
        assert rng.random() < 1.0
        box = erase_box(10, 20, op.scale, op.ratio, rng)
        out = Pipeline([op])(image, seed)
        mask = np.zeros((10, 20), bool)
        if box is not None:
            top, left, h, w = box
            mask[top:top + h, left:left + w] = True
        assert (out[~mask] == 128).all()
        if box is not None:
            np.testing.assert_array_equal(out[mask].reshape(h, w, 3), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    assert RandomErasing(p=0.0).apply(image, np.random.default_rng(0)) is image


@pytest.mark.parametrize("op", ALL_OPS, ids=lambda op: op.name)
@pytest.mark.parametrize("shape", [(17, 23, 3), (16, 16, 3), (17, 23), (17, 23, 1)], ids=str)
def test_every_op_keeps_shape_and_dtype_and_is_deterministic(op: Op, shape: tuple[int, ...]):
    image = np.random.default_rng(6).integers(0, 256, shape, dtype=np.uint8)
    before = image.copy()
    pipeline = Pipeline([op])
    outs = [pipeline(image, seed) for seed in range(12)]
    for seed, out in enumerate(outs):
        assert out.shape == shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out, pipeline(image, seed))
    np.testing.assert_array_equal(image, before)  # never in place
    if len(shape) == 3 and shape[2] == 3 or not isinstance(op, Grayscale):  # grey stays grey
        assert len({out.tobytes() for out in outs}) > 1  # the seed matters


def test_each_op_draws_from_its_own_stream_in_a_real_pipeline(image: np.ndarray):
    """Every op's output depends on its input and the seed only: a pipeline equals its ops run one by one."""
    for seed in range(6):
        expected = image
        for op in ALL_OPS:
            expected = Pipeline([op])(expected, seed)
        np.testing.assert_array_equal(Pipeline(ALL_OPS)(image, seed), expected)
    # adding any op before the others leaves their draws alone
    crop_flip_erase = [ALL_OPS[0], ALL_OPS[1], ALL_OPS[-1]]
    for extra in ALL_OPS[2:-1]:
        for seed in range(3):
            with_extra = Pipeline([extra, *crop_flip_erase])(image, seed)
            np.testing.assert_array_equal(with_extra, Pipeline(crop_flip_erase)(Pipeline([extra])(image, seed), seed))


def test_flip_and_rotate_pixels_are_unchanged():
    """Golden digest of hflip + rotate over 32 seeds (the v0.2 pipeline): old configs and resumes reproduce."""
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    pipeline = Pipeline([HorizontalFlip(0.5), Rotate(15.0)])
    digest = hashlib.sha256(b"".join(pipeline(image, seed).tobytes() for seed in range(32))).hexdigest()
    assert digest == "e85d8f4bcda8e814fd2d5f096035b9e9860321b433b14801f9cb1edbe3d989d7"


def test_every_op_round_trips_through_json(image: np.ndarray):
    spec = json.loads(json.dumps(Pipeline(ALL_OPS).to_dict()))
    assert spec[0] == {"op": "random_resized_crop", "scale": [0.2, 1.0], "ratio": [0.75, 4 / 3]}
    assert spec[5] == {"op": "trivial_augment"}
    again = Pipeline.from_dict(spec)
    assert again == Pipeline(ALL_OPS) and again.to_dict() == spec
    for seed in range(3):
        np.testing.assert_array_equal(again(image, seed), Pipeline(ALL_OPS)(image, seed))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: VerticalFlip(p=-0.1), "vflip: p is a probability in [0, 1], got -0.1"),
        (lambda: RandomResizedCrop(scale=(0.0, 1.0)),
         "random_resized_crop: scale is a (low, high) pair with low <= high in (0, 1], got (0.0, 1.0)"),
        (lambda: RandomResizedCrop(scale=(0.8, 0.5)),
         "random_resized_crop: scale is a (low, high) pair with low <= high in (0, 1], got (0.8, 0.5)"),
        (lambda: RandomResizedCrop(ratio=3), "random_resized_crop: ratio is a (low, high) pair of numbers, got 3"),
        (lambda: RandomResizedCrop(scale="12"),
         "random_resized_crop: scale is a (low, high) pair of numbers, got '12'"),
        (lambda: Affine(translate=1.5), "affine: translate is a number in [0, 1], got 1.5"),
        (lambda: Translate(max_fraction=0.6), "translate: max_fraction is a number in [0, 0.5], got 0.6"),
        (lambda: Translate(max_fraction=-0.1), "translate: max_fraction is a number in [0, 0.5], got -0.1"),
        (lambda: Translate(p=1.5), "translate: p is a probability in [0, 1], got 1.5"),
        (lambda: Affine(shear=90), "affine: shear is a number in [0, 89], got 90"),
        (lambda: ColorJitter(hue=0.6), "color_jitter: hue is a number in [0, 0.5], got 0.6"),
        (lambda: ColorJitter(brightness=float("nan")), "color_jitter: brightness is a number in [0, 10], got nan"),
        (lambda: Grayscale(p=2), "grayscale: p is a probability in [0, 1], got 2"),
        (lambda: GaussianBlur(sigma=(0, 1)),
         "gaussian_blur: sigma is a (low, high) pair with low <= high in (0, 50], got (0, 1)"),
        (lambda: RandAugment(magnitude=31), "rand_augment: magnitude is an integer in [0, 30], got 31"),
        (lambda: RandAugment(num_ops=1.5), "rand_augment: num_ops is an integer in [0, 10], got 1.5"),
        (lambda: RandomErasing(ratio=(0.3, float("inf"))),
         "random_erasing: ratio is a (low, high) pair with low <= high in (0, inf], got (0.3, inf)"),
    ],
)
def test_new_op_parameters_are_checked(make, message: str):
    with pytest.raises(ValueError) as err:
        make()
    assert str(err.value) == message


def test_colour_ops_agree_with_torchvision_within_rounding():
    """torchvision truncates where we round: every pixel within one level (posterize and solarize exact); saturation
    also blends with OpenCV's rounded luma where torchvision keeps it in float: within 1 + 0.5 levels, so 2."""
    import torch
    import torchvision.transforms.functional as tvf

    image = np.random.default_rng(8).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    tensor = torch.from_numpy(image).permute(2, 0, 1).contiguous()

    def theirs(fn, *args) -> np.ndarray:
        return fn(tensor, *args).permute(1, 2, 0).numpy().astype(int)

    for factor in (0.3, 0.9, 1.6):
        for ours, fn, levels in ((adjust_brightness, tvf.adjust_brightness, 1),
                                 (adjust_contrast, tvf.adjust_contrast, 1),
                                 (adjust_saturation, tvf.adjust_saturation, 2),
                                 (adjust_sharpness, tvf.adjust_sharpness, 1)):
            difference = np.abs(ours(image, factor).astype(int) - theirs(fn, factor)).max()
            assert difference <= levels, (ours.__name__, factor, difference)
    for bits in (1, 4, 7):
        np.testing.assert_array_equal(posterize(image, bits), theirs(tvf.posterize, bits))
    for threshold in (0.0, 100.0, 255.0):
        np.testing.assert_array_equal(solarize(image, threshold), theirs(tvf.solarize, threshold))
    assert np.abs(autocontrast(image).astype(int) - theirs(tvf.autocontrast)).max() <= 1
    assert np.abs(to_grayscale(image)[..., 0].astype(int) - theirs(tvf.rgb_to_grayscale)[..., 0]).max() <= 1
