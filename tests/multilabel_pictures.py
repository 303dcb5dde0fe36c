"""A small real multi-label data set for tests: crops of scikit-learn's two sample photos, 1-3 per image.

The builder is benchmarks/multilabel_data.py's (the benchmark's data set, at test size): each image is a 2x2 grid of
slots holding crops of distinct sources, its tags the crops' sources. The sources are horizontal bands of
``china.jpg`` and ``flower.jpg`` (in the dev install: scikit-learn), e.g. ``china_0`` (the top band of china.jpg);
training crops from the left 65 % of each band, test crops from the rest.

    from multilabel_pictures import make_multilabel_set
    data = make_multilabel_set(tmp_path)          # data/train/*.png, data/train.csv (id,tags), data/test/, ...
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from benchmark_helpers import load_benchmark

PHOTOS = ("china", "flower")


def builder():
    """benchmarks/multilabel_data.py (with its sibling accuracy_data)."""
    return load_benchmark("multilabel_data")


def band_sources(bands: int = 2) -> dict[str, np.ndarray]:
    """Tag -> picture: each sample photo cut into ``bands`` horizontal bands, each band one source."""
    from sklearn.datasets import load_sample_image

    sources = {}
    for photo in PHOTOS:
        picture = load_sample_image(f"{photo}.jpg")
        edges = np.linspace(0, picture.shape[0], bands + 1).round().astype(int)
        for k in range(bands):
            sources[f"{photo}_{k}"] = picture[edges[k]:edges[k + 1]]
    return sources


def tiny_layout(train_images: int = 48, test_images: int = 24, slot: int = 24,
                encodings: tuple[str, ...] = ("png",)):
    """A tiny layout: 2x2 slots of ``slot`` px, crops of slot to 64 px at the photos' resolution."""
    return builder().Layout(train_images=train_images, test_images=test_images, slot=slot,
                            crop_sides=(slot, 64), encodings=encodings)


def make_multilabel_set(root: Path, seed: int = 0, bands: int = 2, layout=None):
    """Write the data set into ``root`` (created) and return ``root``; see ``make_multilabel_records``."""
    make_multilabel_records(root, seed, bands, layout)
    return root


def make_multilabel_records(root: Path, seed: int = 0, bands: int = 2, layout=None):
    """Write the data set into ``root`` (created); returns every image's record (its crops' positions and tags)."""
    root.mkdir(parents=True, exist_ok=True)
    return builder().write_multilabel_set(root, band_sources(bands), seed, layout or tiny_layout())
