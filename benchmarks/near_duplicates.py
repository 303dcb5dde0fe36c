"""Near-duplicate detection (clf/data/duplicates.py): the Hamming threshold, measured, and the cost of the search.

    python benchmarks/near_duplicates.py [--crops 40] [--seed 0] [--pairs 10000,50000]

1. Threshold: random crops (48-256 px) of real photos bundled in scikit-image, scikit-learn, matplotlib and
   PyWavelets (none of the pictures issue 18 keeps aside), each copied as JPEG quality 60, resized 0.5x and cropped
   by 5 % (centre: 95 % of each side kept; one side: 5 % of the width cut), through clf's decode path. The
   distances of copies to their original must fall within the threshold; the distances between disjoint crops of
   one photo (the closest distinct images of a class) must not. Prints both distributions and, per threshold,
   the share of copies found and of distinct pairs flagged.
2. Cost: hashing 1000 images (the decode training does anyway, then with the hash), and the pair search on N random
   hashes (within one set, and 20 % against 80 %, the training warning's search), median of 3.
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

from clf.data.datasets import verify_images  # noqa: E402
from clf.data.duplicates import hamming_pairs, has_near_duplicate, phash, scan_images  # noqa: E402
from clf.data.preprocess import decode_rgb  # noqa: E402

THRESHOLDS = tuple(range(4, 17, 2))


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


def hash_of(data: bytes) -> int:
    return phash(decode_rgb(data))


COPIES: dict[str, Callable[[np.ndarray], np.ndarray | bytes]] = {
    "jpeg q60": lambda im: encoded(im, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 60)),
    "resize 0.5x": lambda im: cv2.resize(im, (im.shape[1] // 2, im.shape[0] // 2), interpolation=cv2.INTER_AREA),
    "crop 5% centre": lambda im: im[round(im.shape[0] * 0.025): im.shape[0] - round(im.shape[0] * 0.025),
                                    round(im.shape[1] * 0.025): im.shape[1] - round(im.shape[1] * 0.025)],
    "crop 5% side": lambda im: im[:, round(im.shape[1] * 0.05):],
}


def copy_hash(image: np.ndarray, how: str) -> int:
    copy = COPIES[how](image)
    return hash_of(copy if isinstance(copy, bytes) else encoded(copy, ".png"))


def disjoint(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1]


def measure_threshold(crops: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    copies: dict[str, list[int]] = {how: [] for how in COPIES}
    distinct: list[int] = []
    for name, photo in photos().items():
        boxes = random_boxes(photo.shape, crops, rng)
        images = [np.ascontiguousarray(photo[t:t + h, left:left + w]) for t, left, h, w in boxes]
        hashes = [hash_of(encoded(im, ".png")) for im in images]
        for image, original in zip(images, hashes):
            for how in COPIES:
                copies[how].append(int(bin(original ^ copy_hash(image, how)).count("1")))
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                if disjoint(boxes[i], boxes[j]):
                    distinct.append(bin(hashes[i] ^ hashes[j]).count("1"))
    print(f"{sum(len(v) for v in copies.values())} copies of {len(copies['jpeg q60'])} crops, {len(distinct)} "
          "distinct pairs (disjoint crops of one photo)\n")
    print("| distances | min | p50 | p99 | p99.5 | max |")
    print("|---|---|---|---|---|---|")
    for label, values in [*copies.items(), ("distinct same-photo", distinct)]:
        v = np.array(values)
        print(f"| {label} | {v.min()} | {np.percentile(v, 50):.0f} | {np.percentile(v, 99):.0f} | "
              f"{np.percentile(v, 99.5):.0f} | {v.max()} |")
    print("\n| threshold | " + " | ".join(f"{how} found" for how in COPIES) + " | distinct flagged |")
    print("|---|" + "---|" * (len(COPIES) + 1))
    for t in THRESHOLDS:
        found = [f"{np.mean(np.array(copies[how]) <= t):.4f}" for how in COPIES]
        print(f"| {t} | " + " | ".join(found) + f" | {np.mean(np.array(distinct) <= t):.5f} |")
    print(f"\ndistinct pairs at distance <= 12: {int(np.sum(np.array(distinct) <= 12))}; 0.1st percentile: "
          f"{np.percentile(distinct, 0.1):.0f}")


def median_time(run: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_cost(sizes: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    china = __import__("sklearn.datasets", fromlist=["load_sample_image"]).load_sample_image("china.jpg")
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, (t, left, h, w) in enumerate(random_boxes(china.shape, 1000, rng)):
            path = Path(tmp) / f"{i:04d}.jpg"
            path.write_bytes(encoded(np.ascontiguousarray(china[t:t + h, left:left + w]), ".jpg"))
            paths.append(str(path))
        verify = median_time(lambda: verify_images(paths, workers=2))
        hashed = median_time(lambda: scan_images(paths, exact=False, workers=2))
        exact = median_time(lambda: scan_images(paths, exact=True, workers=2))
    print("\n| 1000 images, 48-256 px JPEG, 2 threads | seconds |")
    print("|---|---|")
    print(f"| decode only (training's verify pass) | {verify:.3f} |")
    print(f"| decode + pHash (training's pass now) | {hashed:.3f} |")
    print(f"| decode + pHash + pixel digest (clf check) | {exact:.3f} |")
    print("\n| hashes | within one set (pairs i<j) | 20 % vs 80 % (the training warning) |")
    print("|---|---|---|")
    for n in sizes:
        hashes = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
        within = median_time(lambda: hamming_pairs(hashes))
        cut = n // 5
        across = median_time(lambda: has_near_duplicate(hashes[:cut], hashes[cut:]))
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
