"""Near-duplicate detection (clf/data/duplicates.py): the Hamming threshold, measured, and the cost of the search.

    python benchmarks/near_duplicates.py [--crops 40] [--seed 0] [--pairs 10000,50000]

1. Threshold: random crops (48-256 px) of real photos bundled in scikit-image, scikit-learn, matplotlib and
   PyWavelets (none of the pictures issue 18 keeps aside), each copied as JPEG quality 60, resized 0.5x and cropped
   by 5 % (centre: 95 % of each side kept; one side: 5 % of the width cut), through clf's decode path. The
   distances of copies to their original must fall within the threshold; the distances between disjoint crops of
   one photo (the closest distinct images of a class) and between crops of different photos must not. Prints the
   distributions and, per threshold, the share of copies found and the distinct pairs flagged, by the whole
   signature (bits and tones) and by the bits alone.
2. Cost: signing 1000 images (the decode training does anyway, then with the signature; clf check adds the pixel
   digest), and the pair search on N random hashes (within one set, and 20 % against 80 %: the training warning's
   search), median of 3.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clf.data.datasets import verify_and_sign, verify_images  # noqa: E402
from clf.data.duplicates import (hamming_pairs, has_near_duplicate, near_pairs, popcount, scan_images,  # noqa: E402
                                 signature, signatures)
from clf.data.preprocess import decode_rgb  # noqa: E402

THRESHOLDS = (8, 10, 12, 14, 16)


def photos() -> dict[str, np.ndarray]:
    """RGB uint8 photos from the wheels: not astronaut, brick, camera, coffee, grass, gravel, hubble_deep_field,
    immunohistochemistry, moon, retina (kept aside by issue 18), nor scikit-learn's digits."""
    import matplotlib
    import pywt.data
    from skimage import data
    from sklearn.datasets import load_sample_image

    def grey(image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.dtype != np.uint8:
            image = cv2.normalize(image.astype(np.float32), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image[..., :3]

    sample = Path(matplotlib.get_data_path()) / "sample_data"
    return {
        "chelsea": data.chelsea(), "rocket": data.rocket(), "coins": grey(data.coins()),
        "motorcycle": data.stereo_motorcycle()[0], "clock": grey(data.clock()), "page": grey(data.page()),
        "text": grey(data.text()), "cell": grey(data.cell()), "china": load_sample_image("china.jpg"),
        "flower": load_sample_image("flower.jpg"), "aerial": grey(pywt.data.aero()), "stairs": grey(pywt.data.ascent()),
        "hopper": cv2.cvtColor(cv2.imread(str(sample / "grace_hopper.jpg")), cv2.COLOR_BGR2RGB),
        "package": cv2.cvtColor(cv2.imread(str(sample / "Minduka_Present_Blue_Pack.png")), cv2.COLOR_BGR2RGB),
    }


def random_boxes(shape: tuple[int, ...], count: int, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    height, width = shape[:2]
    boxes = []
    for _ in range(count):
        side = int(rng.integers(48, min(256, height, width) + 1))
        top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        boxes.append((top, left, side, side))
    return boxes


def encoded(image: np.ndarray, ext: str, params: tuple[int, ...] = ()) -> bytes:
    ok, buffer = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), list(params))
    assert ok
    return buffer.tobytes()


def sign(data: bytes) -> tuple[int, float, float]:
    return signature(decode_rgb(data))


COPIES: dict[str, Callable[[np.ndarray], np.ndarray | bytes]] = {
    "jpeg q60": lambda im: encoded(im, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 60)),
    "resize 0.5x": lambda im: cv2.resize(im, (im.shape[1] // 2, im.shape[0] // 2), interpolation=cv2.INTER_AREA),
    "crop 5% centre": lambda im: im[round(im.shape[0] * 0.025): im.shape[0] - round(im.shape[0] * 0.025),
                                    round(im.shape[1] * 0.025): im.shape[1] - round(im.shape[1] * 0.025)],
    "crop 5% side": lambda im: im[:, round(im.shape[1] * 0.05):],
}


def copy_signature(image: np.ndarray, how: str) -> tuple[int, float, float]:
    copy = COPIES[how](image)
    return sign(copy if isinstance(copy, bytes) else encoded(copy, ".png"))


def disjoint(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1]


def measure_threshold(crops: int, seed: int) -> None:
    """Per threshold: the share of copies found and of distinct pairs flagged, by the bits alone and with the tones."""
    rng = np.random.default_rng(seed)
    originals, copies, photo_of, boxes_of = [], {how: [] for how in COPIES}, [], []
    for k, (name, photo) in enumerate(photos().items()):
        for box in random_boxes(photo.shape, crops, rng):
            top, left, h, w = box
            image = np.ascontiguousarray(photo[top:top + h, left:left + w])
            originals.append(sign(encoded(image, ".png")))
            for how in COPIES:
                copies[how].append(copy_signature(image, how))
            photo_of.append(k)
            boxes_of.append(box)
    sigs, photo_of = signatures(originals), np.array(photo_of)
    i, j = np.triu_indices(len(sigs), 1)
    same = photo_of[i] == photo_of[j]
    apart = np.array([disjoint(boxes_of[a], boxes_of[b]) for a, b in zip(i.tolist(), j.tolist())])
    distinct_same, different = same & apart, ~same
    print(f"{len(sigs)} crops of {len(set(photo_of.tolist()))} photos, {len(COPIES) * len(sigs)} copies; "
          f"{int(distinct_same.sum())} pairs of disjoint crops of one photo, {int(different.sum())} pairs of crops of "
          "different photos\n")
    bits = popcount(sigs["phash"][i] ^ sigs["phash"][j])
    copy_bits = {how: popcount(sigs["phash"] ^ signatures(rows)["phash"]) for how, rows in copies.items()}
    print("| distances (bits) | min | p1 | p50 | p99 | max |")
    print("|---|---|---|---|---|---|")
    rows = [*copy_bits.items(), ("disjoint crops, one photo", bits[distinct_same]),
            ("different photos", bits[different])]
    for label, values in rows:
        print(f"| {label} | {values.min()} | {np.percentile(values, 1):.0f} | {np.percentile(values, 50):.0f} | "
              f"{np.percentile(values, 99):.0f} | {values.max()} |")
    print("\n| threshold | " + " | ".join(f"{how} found" for how in COPIES) +
          " | one-photo pairs flagged | different-photo pairs flagged | (bits alone) |")
    print("|---|" + "---|" * (len(COPIES) + 3))
    for t in THRESHOLDS:
        found = [_found(sigs, signatures(rows), t) for rows in copies.values()]
        pairs = set(zip(*[part.tolist() for part in near_pairs(sigs, max_distance=t)[:2]]))
        flagged = np.array([(a, b) in pairs for a, b in zip(i.tolist(), j.tolist())])
        print(f"| {t} | " + " | ".join(f"{f:.4f}" for f in found) +
              f" | {int(flagged[distinct_same].sum())} | {int(flagged[different].sum())} | "
              f"{int((bits[distinct_same] <= t).sum())} / {int((bits[different] <= t).sum())} |")


def _found(originals: np.ndarray, copies: np.ndarray, max_distance: int) -> float:
    """The share of copies whose near-duplicate search finds their own original."""
    i, j, _ = near_pairs(copies, originals, max_distance)
    return len({a for a, b in zip(i.tolist(), j.tolist()) if a == b}) / len(copies)


def median_time(run: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_cost(sizes: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    from sklearn.datasets import load_sample_image

    china = load_sample_image("china.jpg")
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, (t, left, h, w) in enumerate(random_boxes(china.shape, 1000, rng)):
            path = Path(tmp) / f"{i:04d}.jpg"
            path.write_bytes(encoded(np.ascontiguousarray(china[t:t + h, left:left + w]), ".jpg"))
            paths.append(str(path))
        verify = median_time(lambda: verify_images(paths, workers=2))
        signed = median_time(lambda: verify_and_sign(paths, workers=2))
        exact = median_time(lambda: scan_images(paths, exact=True, workers=2))
        sigs = verify_and_sign(paths, workers=2)[1]
        search = median_time(lambda: has_near_duplicate(sigs[:200], sigs[200:]))
    print("\n| 1000 images, 48-256 px JPEG, 2 threads | seconds |")
    print("|---|---|")
    print(f"| decode only (training's check before signatures) | {verify:.3f} |")
    print(f"| decode + signature (training's check now) | {signed:.3f} |")
    print(f"| decode + signature + pixel digest (clf check) | {exact:.3f} |")
    print(f"| the warning's search, 200 validation vs 800 training | {search:.4f} |")
    print("\n| hashes | within one set (pairs i<j) | 20 % vs 80 % (the training warning) |")
    print("|---|---|---|")
    for n in sizes:
        hashes = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
        within = median_time(lambda: hamming_pairs(hashes))
        cut = n // 5
        across = median_time(lambda: hamming_pairs(hashes[:cut], hashes[cut:]))
        print(f"| {n} | {within:.2f} s | {across:.2f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=int, default=40, help="random crops per photo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pairs", default="10000,50000", help="hash counts for the pair search timing")
    args = parser.parse_args()
    measure_threshold(args.crops, args.seed)
    measure_cost([int(n) for n in args.pairs.split(",")], args.seed)


if __name__ == "__main__":
    main()
