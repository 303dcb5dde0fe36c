"""The real-photo multi-label data set of benchmarks/multilabel.py, cut from pictures bundled in the scikit-image wheel.

Each image is a 2x2 grid of square slots holding 1-3 crops of distinct source pictures (the other slots a flat
neutral grey); its tags are the crops' sources, so a model must say which pictures appear, wherever they sit. As in
benchmarks/accuracy_data.py the training crops come from the left 65 % of each picture's width only and the test
crops from the rest (no pixel shared). The folder is competition-shaped (Kaggle's Planet layout)::

    <root>/multilabel/train/train_0001.png, ...    training images
    <root>/multilabel/train.csv                     id,tags  (tags space-separated, sorted)
    <root>/multilabel/test/img_0001.jpg, ...       test images, in shuffled order
    <root>/multilabel/test_labels.csv               id,tags  (the answers)
    <root>/multilabel/sample_submission.csv         id,tags  with a placeholder tag
    <root>/multilabel/params.json                   what it was built from; rebuilt when that differs

Sources: the eight pictures of the scenes benchmark (chelsea, coins, rocket, the left motorcycle, page, text, cell,
the motion-blurred clock); 640 training and 320 test images of 64x64 (32 px slots, each a 32-96 px crop shrunk with
INTER_AREA), PNG and JPEG cycled per image. The pictures benchmarks/accuracy_data.py keeps aside for independent
checks are never used.

`write_multilabel_set` is the builder itself: the tests call it with scikit-learn's two sample photos
(tests/multilabel_pictures.py). Same bytes for the same data seed (and the same scikit-image and OpenCV).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

import accuracy_data

FORMAT = 1  # bump when the builder changes what it writes: existing folders are then rebuilt
NAME = "multilabel"
GRID = (2, 2)  # rows, columns of slots
MAX_TAGS = 3  # crops per image: 1 to this, each from another source
BACKGROUND = 128  # the grey of an empty slot
ID_COL, TAGS_COL = "id", "tags"
_TRAIN_STREAM, _TEST_STREAM, _ORDER_STREAM = 0, 1, 2


@dataclass(frozen=True)
class Layout:
    """How many images, how big, and how each crop is cut."""

    train_images: int
    test_images: int
    slot: int  # px of a slot's side; an image is GRID slots
    crop_sides: tuple[int, int]  # a crop's side at the source's resolution, before shrinking to the slot
    encodings: tuple[str, ...] = ("png", "jpeg")  # cycled per image (accuracy_data._write_crop's names)


BENCH_LAYOUT = Layout(train_images=640, test_images=320, slot=32, crop_sides=(32, 96))


@dataclass(frozen=True)
class Placement:
    """One crop in one image: where it was cut from its source picture and which slot holds it."""

    source: str
    slot: int
    y0: int
    x0: int
    side: int


@dataclass(frozen=True)
class Record:
    """One written image: its split, id and crops (the tags are the crops' sources)."""

    split: str
    image_id: str
    crops: tuple[Placement, ...]

    @property
    def tags(self) -> list[str]:
        return sorted(p.source for p in self.crops)


def bench_sources() -> dict[str, Callable[[], np.ndarray]]:
    """Tag -> loader of its bundled picture: the scenes benchmark's eight (none kept aside)."""
    return accuracy_data._scene_sources()


def build(root: Path, seed: int) -> Path:
    """The data set's folder under ``root``, built for ``seed`` unless it is already there with the same parameters.

    Built in a sibling temp folder and renamed into place, so an interrupted build never looks finished.
    """
    out = root / NAME
    params = _params(seed)
    recorded = accuracy_data._recorded_params(out)
    if recorded == params:
        return out
    if out.exists():
        if recorded is None:
            raise RuntimeError(f"{out}: exists without {accuracy_data.PARAMS_FILE}, so it is not a folder this script "
                               "built; move it away or choose another --data-root")
        shutil.rmtree(out)
    tmp = root / f"{NAME}.building"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pictures = {name: load() for name, load in bench_sources().items()}
    write_multilabel_set(tmp, pictures, seed, BENCH_LAYOUT)
    (tmp / accuracy_data.PARAMS_FILE).write_text(json.dumps(params, indent=1, sort_keys=True) + "\n",
                                                 encoding="utf-8")
    tmp.rename(out)
    return out


def _params(seed: int) -> dict:
    import skimage

    params = {"bench": NAME, "data_seed": seed, "format": FORMAT, "layout": asdict(BENCH_LAYOUT),
              "sources": list(bench_sources()), "skimage": skimage.__version__, "opencv": cv2.__version__}
    return json.loads(json.dumps(params))  # as params.json reads back (tuples become lists)


# --- the builder ------------------------------------------------------------------------------------------------

def write_multilabel_set(out: Path, pictures: Mapping[str, np.ndarray], seed: int, layout: Layout) -> list[Record]:
    """Write train/, train.csv, test/, test_labels.csv and sample_submission.csv into ``out``; returns every image's
    record (the crops' positions: what the tests check the files against).

    ``pictures``: tag -> grey (H, W) or RGB (H, W, 3) uint8 picture; each image holds 1-MAX_TAGS crops of distinct
    pictures, training crops from the left TRAIN_FRACTION of a picture's width, test crops from the rest.
    """
    if len(pictures) < MAX_TAGS:
        raise ValueError(f"need at least {MAX_TAGS} source pictures, got {len(pictures)}")
    rgb = {name: _as_rgb(picture) for name, picture in pictures.items()}
    train = _records("train", rgb, layout.train_images, layout, np.random.default_rng([seed, _TRAIN_STREAM]))
    test = _records("test", rgb, layout.test_images, layout, np.random.default_rng([seed, _TEST_STREAM]))
    test = _renamed_in_shuffled_order(test, np.random.default_rng([seed, _ORDER_STREAM]))
    for split, records in (("train", train), ("test", test)):
        (out / split).mkdir(parents=True)
        for number, record in enumerate(records):
            image = compose(record, rgb, layout.slot)
            accuracy_data._write_crop(out / split / record.image_id, image,
                                      layout.encodings[number % len(layout.encodings)])
    _write_tags_csv(out / "train.csv", [(r.image_id, " ".join(r.tags)) for r in train])
    _write_tags_csv(out / "test_labels.csv", [(r.image_id, " ".join(r.tags)) for r in sorted_by_id(test)])
    placeholder = min(rgb)
    _write_tags_csv(out / "sample_submission.csv", [(r.image_id, placeholder) for r in sorted_by_id(test)])
    return train + test


def split_column(picture: np.ndarray) -> int:
    """The first column of a picture's test region (training crops lie left of it)."""
    return round(picture.shape[1] * accuracy_data.TRAIN_FRACTION)


def _records(split: str, pictures: Mapping[str, np.ndarray], count: int, layout: Layout,
             rng: np.random.Generator) -> list[Record]:
    """``count`` images: image i always shows source i mod C (every source appears about equally often), plus up to
    MAX_TAGS - 1 other sources drawn at random, in random slots."""
    names = list(pictures)
    slots = GRID[0] * GRID[1]
    prefix = "train" if split == "train" else "img"
    records = []
    for i in range(count):
        first = names[i % len(names)]
        others = [n for n in names if n != first]
        extra = int(rng.integers(0, MAX_TAGS))
        chosen = [first] + [others[k] for k in rng.choice(len(others), size=extra, replace=False)]
        where = rng.choice(slots, size=len(chosen), replace=False)
        crops = tuple(_placement(name, int(slot), pictures[name], split, layout.crop_sides, rng)
                      for name, slot in zip(chosen, where))
        records.append(Record(split, f"{prefix}_{i + 1:04d}", crops))
    return records


def _placement(source: str, slot: int, picture: np.ndarray, split: str, sides: tuple[int, int],
               rng: np.random.Generator) -> Placement:
    """A square crop of ``sides`` px (capped to the region) inside the split's columns of ``picture``."""
    cut = split_column(picture)
    x_start, x_stop = (0, cut) if split == "train" else (cut, picture.shape[1])
    height, width = picture.shape[0], x_stop - x_start
    side = min(int(rng.integers(sides[0], sides[1] + 1)), height, width)
    x0 = x_start + int(rng.integers(0, width - side + 1))
    y0 = int(rng.integers(0, height - side + 1))
    return Placement(source, slot, y0, x0, side)


def compose(record: Record, pictures: Mapping[str, np.ndarray], slot: int) -> np.ndarray:
    """The RGB image of ``record``: its crops shrunk to ``slot`` px in their slots, the other slots BACKGROUND."""
    image = np.full((GRID[0] * slot, GRID[1] * slot, 3), BACKGROUND, dtype=np.uint8)
    for crop in record.crops:
        row, column = divmod(crop.slot, GRID[1])
        image[row * slot:(row + 1) * slot, column * slot:(column + 1) * slot] = slot_pixels(crop, pictures, slot)
    return image


def slot_pixels(crop: Placement, pictures: Mapping[str, np.ndarray], slot: int) -> np.ndarray:
    """The crop's pixels at ``slot`` px (INTER_AREA when shrunk, INTER_LINEAR when a small region forces growth)."""
    pixels = pictures[crop.source][crop.y0:crop.y0 + crop.side, crop.x0:crop.x0 + crop.side]
    if crop.side == slot:
        return pixels
    interpolation = cv2.INTER_AREA if crop.side > slot else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(pixels), (slot, slot), interpolation=interpolation)


def _as_rgb(picture: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(picture, cv2.COLOR_GRAY2RGB) if picture.ndim == 2 else np.ascontiguousarray(picture[..., :3])


def _renamed_in_shuffled_order(records: list[Record], rng: np.random.Generator) -> list[Record]:
    """The test images renumbered in a random order: an id tells nothing about which source it was built around."""
    order = rng.permutation(len(records))
    return [Record(records[k].split, f"img_{number + 1:04d}", records[k].crops) for number, k in enumerate(order)]


def sorted_by_id(records: list[Record]) -> list[Record]:
    return sorted(records, key=lambda r: r.image_id)


def _write_tags_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    """id,tags with "\\n" line ends."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([ID_COL, TAGS_COL])
    writer.writerows(rows)
    path.write_bytes(buffer.getvalue().encode("utf-8"))


def read_tags(path: Path, id_col: str = ID_COL, tags_col: str = TAGS_COL) -> dict[str, set[str]]:
    """id -> set of tags of an id,tags CSV (answers or a submission)."""
    with path.open(newline="", encoding="utf-8") as f:
        return {row[id_col]: set(row[tags_col].split()) for row in csv.DictReader(f)}
