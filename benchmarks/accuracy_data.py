"""The real-photo data sets of benchmarks/accuracy.py, cut from images bundled in the scikit-image wheel.

Each benchmark is written as a competition-shaped folder (the layout of `clf sample-data`)::

    <root>/<bench>/train/<class>/<class>_0001.png, ...   labelled crops
    <root>/<bench>/test/img_0001.jpg, ...                  unlabelled crops, classes shuffled
    <root>/<bench>/test_labels.csv                         id,label (the answers)
    <root>/<bench>/sample_submission.csv                   id,label with a placeholder label
    <root>/<bench>/params.json                             what it was built from; rebuilt when that differs

- scenes: one class per bundled picture; square crops of 48-128 px at native resolution, training crops from the
  left 65 % of the picture's width only, test crops from the right 35 % only (no pixel shared), in mixed encodings.
- faces: `skimage.data.lfw_subset()` (100 faces, then 100 non-faces, 25x25 grey), a seeded stratified 50/50 split.
- textures: one class per grey texture-like source (a terrain elevation model, an MRI slice, an aerial photo, a
  staircase photo, a cell micrograph, a scanned page); 32 px patches at native resolution, each turned by a random
  multiple of 90 degrees (a texture has no up), test patches from the unseen right part as for the scenes.
- glyphs: printed digits 0-9 in the fonts matplotlib ships, grey 28 px with random size, shift, slant, ink, paper
  and noise; the test digits are set in fonts no training digit uses (OCR of an unseen typeface).
- tiny: 32x32 thumbnails (INTER_AREA) of 40-160 px photo crops, one class per photo (six photos none of the other
  benchmarks use), training crops from the left 65 %, test crops from the rest: small images as CIFAR's.

Kept aside for independent checks and never used here: scikit-learn's digits and scikit-image's astronaut, brick,
camera (also PyWavelets' camera), coffee, grass, gravel, hubble_deep_field, immunohistochemistry, moon and retina.

Same bytes for the same data seed (and the same scikit-image, matplotlib, PyWavelets, scikit-learn and OpenCV).
Nothing is downloaded.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

FORMAT = 1  # bump when the builder changes what it writes: existing folders are then rebuilt
BENCHES = ("scenes", "faces", "textures", "glyphs", "tiny")
PARAMS_FILE = "params.json"

SCENE_TRAIN_PER_CLASS, SCENE_TEST_PER_CLASS = 80, 40
CROP_MIN, CROP_MAX = 48, 128
TRAIN_FRACTION = 0.65  # of each picture's width, from the left; the test crops come from the rest
JPEG_QUALITY = 90
FACES_TRAIN_FRACTION = 0.5
_TEST_ORDER_STREAM = 1_000_000  # the scenes' test shuffle: a stream no class index reaches
TEXTURE_TRAIN_PER_CLASS, TEXTURE_TEST_PER_CLASS, TEXTURE_SIDE = 60, 30, 32
TINY_TRAIN_PER_CLASS, TINY_TEST_PER_CLASS, TINY_SIDE, TINY_CROP = 80, 40, 32, (40, 160)
GLYPH_SIDE, GLYPH_TRAIN_RENDERS, GLYPH_TEST_RENDERS = 28, 6, 4


def _scene_sources() -> dict[str, Callable[[], np.ndarray]]:
    """Class name -> loader of its bundled picture (grey (H, W) or RGB (H, W, 3) uint8)."""
    from skimage import data

    return {
        "chelsea": data.chelsea,
        "coins": data.coins,
        "rocket": data.rocket,
        "motorcycle_left": lambda: data.stereo_motorcycle()[0],
        "page": data.page,
        "text": data.text,
        "cell": data.cell,
        "clock_motion": data.clock,  # the motion-blurred clock
    }


def build(bench: str, root: Path, seed: int) -> Path:
    """The folder of ``bench`` under ``root``, built for ``seed`` unless it is already there with the same parameters.

    Built in a sibling temp folder and renamed into place, so an interrupted build never looks finished.
    """
    if bench not in BENCHES:
        raise ValueError(f"unknown benchmark {bench!r}; choose from {', '.join(BENCHES)}")
    out = root / bench
    params = _params(bench, seed)
    if _recorded_params(out) == params:
        return out
    if out.exists():
        if _recorded_params(out) is None:
            raise RuntimeError(f"{out}: exists without {PARAMS_FILE}, so it is not a folder this script built; "
                               "move it away or choose another --data-root")
        shutil.rmtree(out)
    tmp = root / f"{bench}.building"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _WRITERS[bench](tmp, seed)
    (tmp / PARAMS_FILE).write_text(json.dumps(params, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.rename(out)
    return out


def _params(bench: str, seed: int) -> dict:
    import skimage

    params = {"bench": bench, "data_seed": seed, "format": FORMAT, "skimage": skimage.__version__,
              "opencv": cv2.__version__}
    if bench in ("textures", "glyphs", "tiny"):
        import matplotlib

        params["matplotlib"] = matplotlib.__version__
    if bench in ("textures", "tiny"):
        import pywt
        import sklearn

        params |= {"pywavelets": pywt.__version__, "sklearn": sklearn.__version__}
    return params


def _recorded_params(folder: Path) -> dict | None:
    try:
        return json.loads((folder / PARAMS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# --- scenes -----------------------------------------------------------------------------------------------------

def _write_scenes(out: Path, seed: int) -> None:
    """80 train crops per class from the left part, 40 test crops from the right part, encodings cycled per crop."""
    _write_region_classes(out, seed, _scene_sources(), (SCENE_TRAIN_PER_CLASS, SCENE_TEST_PER_CLASS), _random_crop,
                          _encodings)


def _write_region_classes(out: Path, seed: int, sources: dict[str, Callable[[], np.ndarray]],
                          per_class: tuple[int, int], cut: Callable[..., np.ndarray],
                          encodings_of: Callable[[np.ndarray], list[str]]) -> None:
    """One class per picture: ``cut(picture, x_start, x_stop, rng)`` gives each crop, the training ones from the left
    TRAIN_FRACTION of its width, the test ones from the rest (no pixel shared); encodings cycle per crop."""
    test_items: list[tuple[str, np.ndarray, str]] = []
    for class_index, (name, load) in enumerate(sources.items()):
        picture = load()
        rng = np.random.default_rng([seed, class_index])  # one stream per class: adding a class shifts no other
        split = round(picture.shape[1] * TRAIN_FRACTION)
        encodings = encodings_of(picture)
        class_dir = out / "train" / name
        class_dir.mkdir(parents=True)
        for i in range(per_class[0]):
            _write_crop(class_dir / f"{name}_{i + 1:04d}", cut(picture, 0, split, rng), encodings[i % len(encodings)])
        for i in range(per_class[1]):
            test_items.append((name, cut(picture, split, picture.shape[1], rng), encodings[i % len(encodings)]))
    _write_test(out, test_items, np.random.default_rng([seed, _TEST_ORDER_STREAM]))


def _encodings(picture: np.ndarray) -> list[str]:
    """8-bit grey PNG only where the source is grey; then RGB JPEG, RGBA PNG and 16-bit PNG for every source."""
    return (["grey8"] if picture.ndim == 2 else []) + ["jpeg", "rgba", "png16"]


def _random_crop(picture: np.ndarray, x_start: int, x_stop: int, rng: np.random.Generator,
                 sides: tuple[int, int] = (CROP_MIN, CROP_MAX)) -> np.ndarray:
    """A square crop of ``sides`` px (capped to the region) lying entirely in columns [x_start, x_stop)."""
    height, width = picture.shape[0], x_stop - x_start
    side = min(int(rng.integers(sides[0], sides[1] + 1)), height, width)
    x0 = x_start + int(rng.integers(0, width - side + 1))
    y0 = int(rng.integers(0, height - side + 1))
    return picture[y0:y0 + side, x0:x0 + side]


def _write_crop(stem: Path, crop: np.ndarray, encoding: str) -> Path:
    """Write an RGB or grey uint8 crop as ``encoding``; returns the file written."""
    bgr = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR) if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)
    if encoding == "grey8":
        path, image, params = stem.with_suffix(".png"), crop, []
    elif encoding == "jpeg":
        path, image, params = stem.with_suffix(".jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    elif encoding == "rgba":
        path, image, params = stem.with_suffix(".png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA), []
    elif encoding == "png":
        path, image, params = stem.with_suffix(".png"), bgr, []
    elif encoding == "png16":
        source = crop if crop.ndim == 2 else bgr  # grey stays 1 channel, colour 3
        path, image, params = stem.with_suffix(".png"), source.astype(np.uint16) * 257, []
    else:
        raise ValueError(f"unknown encoding {encoding!r}")
    ok, encoded = cv2.imencode(path.suffix, image, params)
    if not ok:
        raise RuntimeError(f"{path}: OpenCV could not encode the crop")
    path.write_bytes(encoded.tobytes())
    return path


# --- faces ------------------------------------------------------------------------------------------------------

def _write_faces(out: Path, seed: int) -> None:
    """lfw_subset: 100 faces then 100 non-faces; per class a seeded half for training, the other half for test."""
    from skimage import data

    images = np.round(data.lfw_subset() * 255).astype(np.uint8)
    rng = np.random.default_rng(seed)
    test_items: list[tuple[str, np.ndarray, str]] = []
    for name, members in (("face", images[:100]), ("nonface", images[100:])):
        order = rng.permutation(len(members))
        n_train = int(len(members) * FACES_TRAIN_FRACTION)
        class_dir = out / "train" / name
        class_dir.mkdir(parents=True)
        for i, k in enumerate(order[:n_train]):
            _write_crop(class_dir / f"{name}_{i + 1:04d}", members[k], "grey8")
        test_items.extend((name, members[k], "grey8") for k in order[n_train:])
    _write_test(out, test_items, rng)


# --- textures ---------------------------------------------------------------------------------------------------

def _texture_sources() -> dict[str, Callable[[], np.ndarray]]:
    """Class name -> loader of a grey uint8 texture-like picture, from the skimage, matplotlib and PyWavelets wheels."""
    import pywt.data
    from skimage import data

    return {
        "terrain": lambda: _to_uint8(_matplotlib_sample("jacksboro_fault_dem.npz")["elevation"]),
        "mri": _mri_slice,
        "aerial": lambda: _to_uint8(pywt.data.aero()),
        "stairs": lambda: _to_uint8(pywt.data.ascent()),
        "cells": data.cell,
        "print": data.page,
    }


def _write_textures(out: Path, seed: int) -> None:
    """60 train / 30 test grey 32 px patches per source, each turned by k x 90 degrees, test from the unseen part."""
    _write_region_classes(out, seed, _texture_sources(), (TEXTURE_TRAIN_PER_CLASS, TEXTURE_TEST_PER_CLASS),
                          _turned_patch, lambda picture: ["grey8"])


def _turned_patch(picture: np.ndarray, x_start: int, x_stop: int, rng: np.random.Generator) -> np.ndarray:
    patch = _random_crop(picture, x_start, x_stop, rng, (TEXTURE_SIDE, TEXTURE_SIDE))
    return np.ascontiguousarray(np.rot90(patch, int(rng.integers(4))))


def _mri_slice() -> np.ndarray:
    """matplotlib's s1045.ima: one 256x256 big-endian 16-bit MRI slice of a head."""
    import gzip

    raw = gzip.decompress(_matplotlib_sample_path("s1045.ima.gz").read_bytes())
    return _to_uint8(np.frombuffer(raw, dtype=">u2").reshape(256, 256).astype(np.float64))


def _matplotlib_sample_path(name: str) -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / name


def _matplotlib_sample(name: str):
    return np.load(_matplotlib_sample_path(name))


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Min-max scaled to 0-255 (elevations, 16-bit scans, floats)."""
    values = np.asarray(values, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    return np.round((values - low) / max(high - low, 1e-12) * 255).astype(np.uint8)


# --- glyphs -----------------------------------------------------------------------------------------------------

# Fonts with plain digits (the symbol-only STIX and cm fonts are left out); the test fonts are never trained on.
GLYPH_TRAIN_FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSansMono.ttf",
                     "DejaVuSansMono-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Italic.ttf", "STIXGeneral.ttf",
                     "STIXGeneralBolIta.ttf", "cmr10.ttf", "cmss10.ttf", "cmtt10.ttf")
GLYPH_TEST_FONTS = ("DejaVuSans-BoldOblique.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSerif-Bold.ttf",
                    "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "cmb10.ttf")


def _write_glyphs(out: Path, seed: int) -> None:
    """Digits 0-9: 6 renders per training font, 4 per test font."""
    test_items: list[tuple[str, np.ndarray, str]] = []
    for digit in range(10):
        rng = np.random.default_rng([seed, digit])
        class_dir = out / "train" / str(digit)
        class_dir.mkdir(parents=True)
        number = 0
        for font in GLYPH_TRAIN_FONTS:
            for _ in range(GLYPH_TRAIN_RENDERS):
                number += 1
                _write_crop(class_dir / f"{digit}_{number:04d}", _render_glyph(str(digit), font, rng), "grey8")
        for font in GLYPH_TEST_FONTS:
            test_items += [(str(digit), _render_glyph(str(digit), font, rng), "grey8")
                           for _ in range(GLYPH_TEST_RENDERS)]
    _write_test(out, test_items, np.random.default_rng([seed, _TEST_ORDER_STREAM]))


def _render_glyph(text: str, font_file: str, rng: np.random.Generator) -> np.ndarray:
    """One grey GLYPH_SIDE px render: random size, shift, slant, ink and paper levels, blur and sensor noise."""
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont

    big = GLYPH_SIDE * 4
    font = ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / font_file),
                              size=int(big * rng.uniform(0.55, 0.8)))
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = (big - (right - left)) / 2 - left + rng.uniform(-0.08, 0.08) * big
    y = (big - (bottom - top)) / 2 - top + rng.uniform(-0.08, 0.08) * big
    draw.text((x, y), text, fill=255, font=font)
    shear = rng.uniform(-0.15, 0.15)
    matrix = np.float32([[1, shear, -shear * big / 2], [0, 1, 0]])
    mask = cv2.warpAffine(np.asarray(canvas, dtype=np.float32) / 255, matrix, (big, big))
    mask = cv2.resize(mask, (GLYPH_SIDE, GLYPH_SIDE), interpolation=cv2.INTER_AREA)
    mask = cv2.GaussianBlur(mask, (0, 0), rng.uniform(0.3, 0.9))
    paper, ink = rng.uniform(170, 250), rng.uniform(0, 90)
    image = paper + (ink - paper) * mask + rng.normal(0, rng.uniform(2, 10), mask.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


# --- tiny -------------------------------------------------------------------------------------------------------

def _tiny_sources() -> dict[str, Callable[[], np.ndarray]]:
    """Class name -> loader of an RGB uint8 photo from the matplotlib, skimage and scikit-learn wheels."""
    import pywt.data
    from skimage import data
    from sklearn.datasets import load_sample_image

    def matplotlib_photo(name: str) -> np.ndarray:
        bgr = cv2.imread(str(_matplotlib_sample_path(name)), cv2.IMREAD_COLOR)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    return {
        "hopper": lambda: matplotlib_photo("grace_hopper.jpg"),
        "motorcycle": lambda: data.stereo_motorcycle()[1],
        "palace": lambda: load_sample_image("china.jpg"),
        "flower": lambda: load_sample_image("flower.jpg"),
        "aerial": lambda: cv2.cvtColor(_to_uint8(pywt.data.aero()), cv2.COLOR_GRAY2RGB),
        "package": lambda: matplotlib_photo("Minduka_Present_Blue_Pack.png"),
    }


def _write_tiny(out: Path, seed: int) -> None:
    """80 train / 40 test 32x32 thumbnails per photo; train from the left 65 %, test from the rest."""
    _write_region_classes(out, seed, _tiny_sources(), (TINY_TRAIN_PER_CLASS, TINY_TEST_PER_CLASS), _thumbnail_crop,
                          lambda picture: ["png", "jpeg"])


def _thumbnail_crop(picture: np.ndarray, x_start: int, x_stop: int, rng: np.random.Generator) -> np.ndarray:
    crop = np.ascontiguousarray(_random_crop(picture, x_start, x_stop, rng, TINY_CROP))
    return cv2.resize(crop, (TINY_SIDE, TINY_SIDE), interpolation=cv2.INTER_AREA)


# --- shared -----------------------------------------------------------------------------------------------------

def _write_test(out: Path, items: list[tuple[str, np.ndarray, str]], rng: np.random.Generator) -> None:
    """Shuffle the test crops, name them img_0001..., and write the answers and a sample submission."""
    test_dir = out / "test"
    test_dir.mkdir()
    rows = []
    for number, k in enumerate(rng.permutation(len(items))):
        label, crop, encoding = items[k]
        image_id = f"img_{number + 1:04d}"
        _write_crop(test_dir / image_id, crop, encoding)
        rows.append((image_id, label))
    placeholder = min(label for _, label in rows)
    _write_csv(out / "test_labels.csv", rows)
    _write_csv(out / "sample_submission.csv", [(image_id, placeholder) for image_id, _ in rows])


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    """id,label with "\\n" line ends, as `clf sample-data` writes it."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "label"])
    writer.writerows(rows)
    path.write_bytes(buffer.getvalue().encode("utf-8"))


_WRITERS: dict[str, Callable[[Path, int], None]] = {
    "scenes": _write_scenes, "faces": _write_faces, "textures": _write_textures, "glyphs": _write_glyphs,
    "tiny": _write_tiny,
}
