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

Same bytes for the same data seed (and the same scikit-image and OpenCV). Nothing is downloaded.
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
BENCHES = ("scenes", "faces")
PARAMS_FILE = "params.json"

SCENE_TRAIN_PER_CLASS, SCENE_TEST_PER_CLASS = 80, 40
CROP_MIN, CROP_MAX = 48, 128
TRAIN_FRACTION = 0.65  # of each picture's width, from the left; the test crops come from the rest
JPEG_QUALITY = 90
FACES_TRAIN_FRACTION = 0.5
_TEST_ORDER_STREAM = 1_000_000  # the scenes' test shuffle: a stream no class index reaches


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
    if bench == "scenes":
        _write_scenes(tmp, seed)
    else:
        _write_faces(tmp, seed)
    (tmp / PARAMS_FILE).write_text(json.dumps(params, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.rename(out)
    return out


def _params(bench: str, seed: int) -> dict:
    import skimage

    return {"bench": bench, "data_seed": seed, "format": FORMAT, "skimage": skimage.__version__,
            "opencv": cv2.__version__}


def _recorded_params(folder: Path) -> dict | None:
    try:
        return json.loads((folder / PARAMS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# --- scenes -----------------------------------------------------------------------------------------------------

def _write_scenes(out: Path, seed: int) -> None:
    """80 train crops per class from the left part, 40 test crops from the right part, encodings cycled per crop."""
    test_items: list[tuple[str, np.ndarray, str]] = []
    for class_index, (name, load) in enumerate(_scene_sources().items()):
        picture = load()
        rng = np.random.default_rng([seed, class_index])  # one stream per class: adding a class shifts no other
        split = round(picture.shape[1] * TRAIN_FRACTION)
        encodings = _encodings(picture)
        class_dir = out / "train" / name
        class_dir.mkdir(parents=True)
        for i in range(SCENE_TRAIN_PER_CLASS):
            crop = _random_crop(picture, 0, split, rng)
            _write_crop(class_dir / f"{name}_{i + 1:04d}", crop, encodings[i % len(encodings)])
        for i in range(SCENE_TEST_PER_CLASS):
            crop = _random_crop(picture, split, picture.shape[1], rng)
            test_items.append((name, crop, encodings[i % len(encodings)]))
    _write_test(out, test_items, np.random.default_rng([seed, _TEST_ORDER_STREAM]))


def _encodings(picture: np.ndarray) -> list[str]:
    """8-bit grey PNG only where the source is grey; then RGB JPEG, RGBA PNG and 16-bit PNG for every source."""
    return (["grey8"] if picture.ndim == 2 else []) + ["jpeg", "rgba", "png16"]


def _random_crop(picture: np.ndarray, x_start: int, x_stop: int, rng: np.random.Generator) -> np.ndarray:
    """A square crop of 48-128 px (capped to the region) lying entirely in columns [x_start, x_stop)."""
    height, width = picture.shape[0], x_stop - x_start
    side = min(int(rng.integers(CROP_MIN, CROP_MAX + 1)), height, width)
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
