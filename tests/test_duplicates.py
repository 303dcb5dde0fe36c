"""clf.data.duplicates: exact duplicates by decoded pixels, near-duplicates by pHash and tones, on real photos.

The photos: matplotlib's Grace Hopper (matplotlib is a dependency) and, where scikit-image is installed, a few of its
bundled photos; never the pictures issue 18 keeps aside (astronaut, brick, camera, coffee, grass, gravel,
hubble_deep_field, immunohistochemistry, moon, retina, nor scikit-learn's digits).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pytest

from clf.data import duplicates
from clf.data.duplicates import (
    NEAR_DUPLICATE_DISTANCE,
    SIGNATURE,
    hamming_pairs,
    has_near_duplicate,
    near_pairs,
    scan_images,
    signature,
    signatures,
    split_groups,
)
from clf.data.image_header import header_mode
from clf.data.preprocess import decode_rgb

CROP = 128  # disjoint crops of one photo: distinct pictures of one class (same subject, light and camera)


def hopper() -> np.ndarray:
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def skimage_photo(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        data = pytest.importorskip("skimage.data")
        image = getattr(data, name)()
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image[..., :3]
    return load


PHOTOS = {"hopper": hopper, "chelsea": skimage_photo("chelsea"), "rocket": skimage_photo("rocket"),
          "coins": skimage_photo("coins")}


def grid_crops(photo: np.ndarray) -> list[np.ndarray]:
    height, width = photo.shape[:2]
    return [np.ascontiguousarray(photo[top:top + CROP, left:left + CROP])
            for top in range(0, height - CROP + 1, CROP) for left in range(0, width - CROP + 1, CROP)]


def encode(image: np.ndarray, ext: str = ".png", params: tuple[int, ...] = ()) -> bytes:
    ok, buffer = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), list(params))
    assert ok
    return buffer.tobytes()


def shaved(image: np.ndarray, fraction: float) -> np.ndarray:
    """The image less `fraction` of its width and height, half on each side (a 5 % crop)."""
    dy, dx = round(image.shape[0] * fraction / 2), round(image.shape[1] * fraction / 2)
    return image[dy:image.shape[0] - dy, dx:image.shape[1] - dx]


COPIES: dict[str, Callable[[np.ndarray], bytes]] = {
    "jpeg q60": lambda im: encode(im, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 60)),
    "resized 0.5x": lambda im: encode(cv2.resize(im, (im.shape[1] // 2, im.shape[0] // 2),
                                                 interpolation=cv2.INTER_AREA)),
    "cropped 5 %": lambda im: encode(shaved(im, 0.05)),
    "cropped 5 % one side": lambda im: encode(im[:, round(im.shape[1] * 0.05):]),
}


def sign(data: bytes) -> tuple[int, float, float]:
    return signature(decode_rgb(data))


@pytest.mark.parametrize("photo", list(PHOTOS))
@pytest.mark.parametrize("copy", list(COPIES))
def test_copies_of_real_photos_are_found_and_matched_to_their_original(photo, copy):
    crops = grid_crops(PHOTOS[photo]())
    originals = signatures([sign(encode(crop)) for crop in crops])
    copies = signatures([sign(COPIES[copy](crop)) for crop in crops])
    i, j, distance = near_pairs(copies, originals)
    matched = {a for a, b in zip(i.tolist(), j.tolist()) if a == b}
    assert [(a, b) for a, b in zip(i.tolist(), j.tolist()) if a != b] == []  # never the wrong original
    assert np.all(distance <= NEAR_DUPLICATE_DISTANCE)
    # Every copy of a crop with some contrast is found. A nearly flat crop (a patch of sky: grey std under 10 levels)
    # has AC terms as small as JPEG's rounding, so its bits are partly noise: the documented limit of a pHash.
    textured = {k for k in range(len(crops)) if originals["std"][k] >= 10}
    assert textured <= matched, f"missed {sorted(textured - matched)} of {len(crops)}"
    assert len(textured) >= 5


@pytest.mark.parametrize("photo", list(PHOTOS))
def test_distinct_pictures_of_one_class_are_not_flagged(photo):
    crops = grid_crops(PHOTOS[photo]())
    assert len(crops) >= 6
    sigs = signatures([sign(encode(crop, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 90))) for crop in crops])
    assert near_pairs(sigs)[0].size == 0


def test_whole_photo_copies_are_found_across_sets():
    photo = hopper()
    originals = signatures([sign(encode(photo)), sign(encode(grid_crops(photo)[0]))])
    # (5 % cut off one side of this portrait moves 16 bits: beyond the threshold; benchmarks/near_duplicates.py
    # measures 94 % of such crops found)
    makers = [COPIES[name] for name in ("jpeg q60", "resized 0.5x", "cropped 5 %")]
    copies = signatures([sign(make(photo)) for make in makers])
    assert has_near_duplicate(copies, originals).tolist() == [True] * len(makers)
    assert near_pairs(copies, originals)[1].tolist() == [0] * len(makers)


def test_exact_duplicates_compare_decoded_pixels_not_file_bytes(tmp_path):
    crop = grid_crops(hopper())[5]
    files = {"a.png": encode(crop, ".png", (cv2.IMWRITE_PNG_COMPRESSION, 1)),
             "b.png": encode(crop, ".png", (cv2.IMWRITE_PNG_COMPRESSION, 9)),
             "c.bmp": encode(crop, ".bmp"), "d.jpg": encode(crop, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 95)),
             "broken.jpg": b"\xff\xd8 not really"}
    paths = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    assert len({files["a.png"], files["b.png"], files["c.bmp"]}) == 3  # three different files
    scan = scan_images(paths, exact=True, workers=2)
    digests = [facts.digest if facts else None for facts in scan.facts]
    assert digests[0] == digests[1] == digests[2] and digests[3] != digests[0]
    assert digests[4] is None and scan.readable() == [0, 1, 2, 3]
    assert [path for path, _ in scan.problems] == [str(paths[4])]
    assert scan.problems[0][1].startswith(f"{paths[4]}: ")
    facts = scan.facts[0]
    assert (facts.width, facts.height, facts.mode) == (CROP, CROP, "RGB")
    assert len(near_pairs(scan.signatures())[0]) == 6  # the four copies of one picture are all near each other


def test_header_mode_reads_the_stored_colour_layout():
    rgb = grid_crops(hopper())[0]
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    assert header_mode(cv2.imencode(".png", grey)[1].tobytes()) == "grey"
    assert header_mode(cv2.imencode(".png", rgba)[1].tobytes()) == "RGBA"
    assert header_mode(cv2.imencode(".jpg", grey)[1].tobytes()) == "grey"
    assert header_mode(encode(rgb, ".jpg")) == "RGB"
    assert header_mode(encode(rgb, ".bmp")) == "RGB"
    assert header_mode(b"GIF89a....") is None and header_mode(b"") is None


def test_pair_search_equals_brute_force_and_popcount_fallback():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 700, dtype=np.int64).astype(np.uint64)
    hashes[1::7] = hashes[::7][: len(hashes[1::7])] ^ np.uint64(0b1011)  # planted pairs 3 bits apart
    xor = hashes[:, None] ^ hashes[None, :]
    counts = duplicates._BYTE_BITS[xor.view(np.uint8)].reshape(*xor.shape, 8).sum(axis=-1)
    assert np.array_equal(counts, duplicates.popcount(xor))
    i, j, distance = hamming_pairs(hashes, max_distance=14)
    expected = {(a, b) for a, b in zip(*np.nonzero(np.triu(counts <= 14, 1)))}
    assert set(zip(i.tolist(), j.tolist())) == expected and len(expected) >= 100
    assert np.array_equal(distance, counts[i, j])
    others = hashes[:300]
    i, j, _ = hamming_pairs(hashes[300:], others, max_distance=14)
    assert set(zip(i.tolist(), j.tolist())) == {(a, b) for a, b in zip(*np.nonzero(counts[300:, :300] <= 14))}


def test_tones_separate_pictures_with_the_same_layout():
    """Same bits, but one picture far brighter or flatter than the other: not a copy."""
    sigs = np.zeros(4, dtype=SIGNATURE)
    sigs["phash"] = 12345
    sigs["mean"] = [100.0, 104.0, 160.0, 100.0]
    sigs["std"] = [30.0, 32.0, 30.0, 60.0]
    i, j, _ = near_pairs(sigs)
    assert list(zip(i.tolist(), j.tolist())) == [(0, 1)]


def test_colour_separates_one_drawing_in_two_colours():
    """One shape at one place, drawn red and drawn blue with the same grey level: the grey hash and tones agree, the
    chroma does not (the sample competition's shapes were flagged by the hash alone)."""
    red, blue = np.full((64, 64, 3), 128, np.uint8), np.full((64, 64, 3), 128, np.uint8)
    cv2.circle(red, (30, 34), 14, (200, 60, 60), -1)
    grey_of_red = int(cv2.cvtColor(red[34:35, 30:31], cv2.COLOR_RGB2GRAY)[0, 0])
    cv2.circle(blue, (30, 34), 14, (grey_of_red - 40, grey_of_red - 8, grey_of_red + 160), -1)
    copy = cv2.imdecode(cv2.imencode(".jpg", red[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 60])[1], cv2.IMREAD_COLOR)
    sigs = signatures([signature(red), signature(blue), signature(copy[:, :, ::-1].copy())])
    assert bin(int(sigs["phash"][0]) ^ int(sigs["phash"][1])).count("1") <= 12  # the bits alone would pair them
    i, j, _ = near_pairs(sigs)
    assert list(zip(i.tolist(), j.tolist())) == [(0, 2)]  # the JPEG copy of the red one, not the blue drawing


def test_split_groups_join_the_group_column_and_near_duplicates():
    sigs = np.zeros(5, dtype=SIGNATURE)
    sigs["phash"] = [0, 0xFFFFFFFF00000000, 1, 0x00000000FFFFFFFF, 0xF0F0F0F0F0F0F0F0]  # 0 and 2: 1 bit apart
    sigs["mean"], sigs["std"] = 50.0, 10.0
    assert split_groups(None, None) is None
    assert split_groups(["p", "q", "r", "q", "s"], None).tolist() == [0, 1, 2, 1, 3]
    assert split_groups(None, sigs).tolist() == [0, 1, 0, 2, 3]
    assert split_groups(["p", "q", "r", "q", "r"], sigs).tolist() == [0, 1, 0, 1, 0]


@pytest.mark.parametrize("shape", [(600, 512), (3, 5), (1, 100_000), (100_000, 1), (20, 5000)])
def test_thumbnail_sums_exactly_on_both_paths_and_never_upscales_a_strip(shape, monkeypatch):
    """The integral image (small pictures) and row-then-column sums (large ones) give the same means; a side under
    32 pixels gets one box a pixel (a 1 x 100,000 strip is never stretched to 32 x 100,000)."""
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, shape, dtype=np.uint8)
    small = duplicates.box_thumbnail(grey)
    monkeypatch.setattr(duplicates, "_INTEGRAL_MAX_PIXELS", 0)
    large = duplicates.box_thumbnail(grey)
    assert small.shape == large.shape == (32, 32) and small.dtype == np.float32
    assert np.array_equal(small, large)
    if shape == (600, 512):  # each box: the mean of its pixels
        rows, cols = np.linspace(0, 600, 33).round().astype(int), np.linspace(0, 512, 33).round().astype(int)
        assert small[3, 7] == pytest.approx(grey[rows[3]:rows[4], cols[7]:cols[8]].mean(), rel=1e-6)
