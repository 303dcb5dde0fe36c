"""clf.data.augment_presets: presets, knob overrides, the fixed op order, flag-named errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clf.data.augment import (
    ColorJitter,
    GaussianBlur,
    Grayscale,
    HorizontalFlip,
    Pipeline,
    RandAugment,
    RandomErasing,
    RandomResizedCrop,
    Rotate,
    Translate,
    TrivialAugment,
    VerticalFlip,
)
from clf.data.augment_presets import (
    AUTO_AUGMENTS,
    KNOBS,
    PRESET_KNOBS,
    PRESETS,
    build_pipeline,
    check_knobs,
    flag,
    preset_knobs,
    resolve_knobs,
)
from clf.errors import ClfError

ORDER = ["random_resized_crop", "translate", "hflip", "vflip", "rotate", "trivial_augment", "color_jitter",
         "grayscale", "gaussian_blur", "random_erasing"]
ALL_ON = {"hflip": 0.5, "vflip": 0.2, "rotate": 10.0, "crop_scale": 0.3, "translate": 0.125, "color_jitter": 0.4,
          "grayscale": 0.1, "blur": 0.2, "erase": 0.25, "auto_augment": "trivial"}
OFF = {"hflip": 0, "vflip": 0, "rotate": 0, "crop_scale": 1.0, "translate": 0, "color_jitter": 0, "grayscale": 0,
       "blur": 0, "erase": 0, "auto_augment": "none"}


def names(pipeline: Pipeline) -> list[str]:
    return [op.name for op in pipeline.ops]


def test_names_are_the_promised_ones():
    assert PRESETS == ("none", "light", "default", "strong")
    assert KNOBS == ("hflip", "vflip", "rotate", "crop_scale", "translate", "color_jitter", "grayscale", "blur",
                     "erase", "auto_augment")
    assert AUTO_AUGMENTS == ("none", "trivial", "rand")
    assert set(PRESET_KNOBS) == set(PRESETS)
    assert [flag(knob) for knob in KNOBS] == ["--hflip", "--vflip", "--rotate", "--crop-scale", "--translate",
                                              "--color-jitter", "--grayscale", "--blur", "--erase", "--auto-augment"]


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_sets_every_knob_and_builds(preset: str):
    knobs = preset_knobs(preset)
    assert list(knobs) == list(KNOBS)
    check_knobs(knobs)
    pipeline = build_pipeline(knobs)
    assert Pipeline.from_dict(json.loads(json.dumps(pipeline.to_dict()))) == pipeline
    image = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    out = pipeline(image, 5)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, pipeline(image, 5))
    knobs["hflip"] = 0.0
    assert preset_knobs(preset)["hflip"] == PRESET_KNOBS[preset].get("hflip", 0.0)  # a fresh dict each time


def test_presets_contain_the_intended_ops():
    assert not build_pipeline(preset_knobs("none"))
    assert names(build_pipeline(preset_knobs("light"))) == ["hflip"]
    assert names(build_pipeline(preset_knobs("default"))) == ["random_resized_crop", "hflip", "color_jitter"]
    assert names(build_pipeline(preset_knobs("strong"))) == ["random_resized_crop", "hflip", "trivial_augment",
                                                             "random_erasing"]
    # stronger presets crop harder (none and light not at all)
    crops = [preset_knobs(p)["crop_scale"] for p in PRESETS]
    assert crops[:2] == [1.0, 1.0] and crops == sorted(crops, reverse=True) and 1.0 > crops[2] > crops[3]


def test_op_order_is_fixed():
    assert names(build_pipeline(ALL_ON)) == ORDER
    assert names(build_pipeline({**ALL_ON, "auto_augment": "rand"})) == [
        "rand_augment" if name == "trivial_augment" else name for name in ORDER]
    # the order does not depend on the order of the mapping
    assert build_pipeline(dict(reversed(list(ALL_ON.items())))) == build_pipeline(ALL_ON)


@pytest.mark.parametrize(("knob", "op"), [("crop_scale", "random_resized_crop"), ("translate", "translate"),
                                          ("hflip", "hflip"),
                                          ("vflip", "vflip"), ("rotate", "rotate"), ("auto_augment", "trivial_augment"),
                                          ("color_jitter", "color_jitter"), ("grayscale", "grayscale"),
                                          ("blur", "gaussian_blur"), ("erase", "random_erasing")])
def test_a_knob_that_is_off_leaves_its_op_out(knob: str, op: str):
    assert names(build_pipeline({**ALL_ON, knob: OFF[knob]})) == [name for name in ORDER if name != op]


def test_knobs_map_to_op_parameters():
    pipeline = build_pipeline(ALL_ON)
    assert pipeline.ops == (
        RandomResizedCrop(scale=(0.3, 1.0)), Translate(max_fraction=0.125, p=1.0), HorizontalFlip(0.5),
        VerticalFlip(0.2), Rotate(10.0), TrivialAugment(),
        ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1), Grayscale(0.1),
        GaussianBlur(p=0.2, sigma=(0.1, 2.0)), RandomErasing(p=0.25),
    )
    assert build_pipeline({**OFF, "auto_augment": "rand"}).ops == (RandAugment(num_ops=2, magnitude=9),)
    assert build_pipeline({**OFF, "color_jitter": 1.0}).ops == (ColorJitter(1.0, 1.0, 1.0, 0.25),)
    assert build_pipeline({**OFF, "translate": 0.5}).to_dict() == [{"op": "translate", "max_fraction": 0.5, "p": 1.0}]


def test_hflip_and_rotate_build_exactly_the_old_pipeline():
    for hflip, rotate in ((0.5, 0), (0.5, 15), (0, 15), (1, 30), (0, 0)):
        pipeline = build_pipeline({**OFF, "hflip": hflip, "rotate": rotate})
        assert pipeline == Pipeline.from_flags(hflip, rotate)
        assert pipeline.to_dict() == Pipeline.from_flags(hflip, rotate).to_dict()  # floats, as before
    assert build_pipeline({**OFF, "hflip": 1, "rotate": 15}).to_dict() == [
        {"op": "hflip", "p": 1.0}, {"op": "rotate", "max_degrees": 15.0}]


def test_overrides_win_and_none_means_the_presets_value():
    knobs = resolve_knobs("default", {"hflip": 0.0, "rotate": 12, "crop_scale": None, "auto_augment": "rand"})
    assert knobs == {**preset_knobs("default"), "hflip": 0.0, "rotate": 12, "auto_augment": "rand"}
    assert names(build_pipeline(knobs)) == ["random_resized_crop", "rotate", "rand_augment", "color_jitter"]
    assert resolve_knobs("strong", {knob: None for knob in KNOBS}) == preset_knobs("strong")
    assert resolve_knobs("none", {"crop_scale": 0.5}) == {**OFF, "crop_scale": 0.5}


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"crop_scale": 0}, "--crop-scale must be > 0 and <= 1, got 0"),
        ({"crop_scale": 1.5}, "--crop-scale must be > 0 and <= 1, got 1.5"),
        ({"hflip": 1.5}, "--hflip must be >= 0 and <= 1, got 1.5"),
        ({"vflip": -0.1}, "--vflip must be >= 0 and <= 1, got -0.1"),
        ({"grayscale": 2}, "--grayscale must be >= 0 and <= 1, got 2"),
        ({"blur": -1}, "--blur must be >= 0 and <= 1, got -1"),
        ({"erase": 1.01}, "--erase must be >= 0 and <= 1, got 1.01"),
        ({"translate": 0.6}, "--translate must be >= 0 and <= 0.5, got 0.6"),
        ({"translate": -0.125}, "--translate must be >= 0 and <= 0.5, got -0.125"),
        ({"translate": "4px"}, "--translate must be a number, got '4px'"),
        ({"rotate": -5}, "--rotate must be >= 0 and <= 360, got -5"),
        ({"rotate": 361}, "--rotate must be >= 0 and <= 360, got 361"),
        ({"color_jitter": 1.2}, "--color-jitter must be >= 0 and <= 1, got 1.2"),
        ({"auto_augment": "auto"}, "--auto-augment must be one of none, trivial, rand, got 'auto'"),
        ({"hflip": "half"}, "--hflip must be a number, got 'half'"),
        ({"hflip": True}, "--hflip must be a number, got True"),
        ({"rotate": float("nan")}, "--rotate must be a finite number, got nan"),
    ],
)
def test_bad_knobs_name_their_flag(knobs: dict, message: str):
    with pytest.raises(ClfError) as err:
        resolve_knobs("light", knobs)
    assert str(err.value) == message
    with pytest.raises(ClfError) as err:
        build_pipeline({**OFF, **knobs})
    assert str(err.value) == message


def test_bad_preset_and_unknown_knob():
    with pytest.raises(ClfError) as err:
        preset_knobs("heavy")
    assert str(err.value) == "--augment must be one of none, light, default, strong, got 'heavy'"
    with pytest.raises(ClfError) as err:
        resolve_knobs("light", {"mixup": 0.2})
    assert str(err.value) == ("unknown augmentation knob 'mixup'; known: hflip, vflip, rotate, crop_scale, "
                              "translate, color_jitter, grayscale, blur, erase, auto_augment")
    with pytest.raises(ClfError) as err:
        check_knobs({"hflip": 0.5})
    assert str(err.value) == ("augmentation knobs missing: vflip, rotate, crop_scale, translate, color_jitter, "
                              "grayscale, blur, erase, auto_augment")


def test_the_edges_of_each_range_are_accepted():
    check_knobs({**OFF, "crop_scale": 1.0, "hflip": 1, "rotate": 360, "color_jitter": 1.0, "erase": 1.0,
                 "translate": 0.5})
    assert names(build_pipeline({**OFF, "crop_scale": 1e-3})) == ["random_resized_crop"]


@pytest.mark.parametrize("preset", ["default", "strong"])
def test_preset_pipelines_resume_exactly_in_the_dataset(tmp_path, preset: str):
    """The dataset's one per-sample seed from torch drives every op: a saved RNG state replays the same batch."""
    import cv2
    import torch

    from clf.config import Preprocess
    from clf.data.torch_dataset import ImageDataset

    paths = []
    for i in range(4):
        path = tmp_path / f"im{i}.png"
        cv2.imwrite(str(path), np.random.default_rng(i).integers(0, 256, (20, 24, 3), dtype=np.uint8))
        paths.append(path)
    pipeline = build_pipeline(preset_knobs(preset))
    ds = ImageDataset(paths, [0] * 4, Preprocess(size=(16, 16)), train=True, augment=pipeline)
    torch.manual_seed(7)
    saved = torch.get_rng_state()
    first = [ds[i][0] for i in range(4)]
    after_first = torch.get_rng_state()
    torch.set_rng_state(saved)
    assert all(torch.equal(a, ds[i][0]) for i, a in enumerate(first))
    assert torch.equal(torch.get_rng_state(), after_first)  # one draw per item, whatever the number of ops
