"""`clf infer --ray` (Ray Data, 2 actors) against plain `clf infer`, on the same 4,000 images and model.

Both are fresh processes, as a user runs them, interleaved over --repeats; medians. The images are 64 px PNGs of
varying content (gradients, shapes, noise; deterministic), the model clf's own cnn @ 64 px (random weights, exported
with clf metadata: what it predicts does not matter here, only that both paths predict the same rows). Besides the
wall times it prints where the --ray run spends its time (from its -v timing lines): Ray's start-up, the pipeline
(actors starting, then predicting), Ray's shut-down, and the pipeline's images/s against plain infer's.

    python benchmarks/infer_ray.py [--images 4000] [--repeats 3] [--actors 2] [--batch-size 32]

Target (issue 23): the --ray overhead <= 25 % on 2 cores.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing
sys.path.insert(0, str(HERE))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from infer_throughput import ensure_model  # noqa: E402

from clf.serve.ray_infer import ROWS_PER_CALL  # noqa: E402

SIZE = 64
TIMING = re.compile(r"Ray Data timing: (?P<what>.*)")
RATE = re.compile(r"\((\d+) img/s\)")


def draw(index: int) -> np.ndarray:
    """A 64 px BGR picture: a gradient, two to four shapes, noise (deterministic per index)."""
    rng = np.random.default_rng(index)
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    image = np.stack([128 + 60 * np.sin((rng.uniform(-1, 1) * x + rng.uniform(-1, 1) * y) / 9 + rng.uniform(0, 6))
                      for _ in range(3)], axis=-1)
    for _ in range(int(rng.integers(2, 5))):
        colour = [int(v) for v in rng.integers(0, 256, 3)]
        centre = (int(rng.integers(0, SIZE)), int(rng.integers(0, SIZE)))
        cv2.circle(image, centre, int(rng.integers(4, 20)), colour, -1, cv2.LINE_AA)
    image += rng.normal(0, 5, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_images(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(lambda i: cv2.imwrite(str(folder / f"img_{i:05d}.png"), draw(i)), range(count)))


def run_infer(images: Path, model: Path, csv: Path, extra: list[str], verbose: bool = False) -> tuple[float, str, str]:
    """Wall seconds of one `clf infer` process (every usable core, as a user's shell gives it), its stdout and
    stderr."""
    command = [sys.executable, "-m", "clf", *(["-v"] if verbose else []), "infer", str(images), "--model", str(model),
               "--csv", str(csv), "--device", "cpu", "--quiet", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(len(os.sched_getaffinity(0)))}
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr}")
    return seconds, proc.stdout, proc.stderr


def predicting_rate(stdout: str) -> float:
    """The images/s plain `clf infer` reports for its predicting alone (start-up and CSV writing left out)."""
    match = RATE.search(stdout)
    assert match, stdout
    return float(match[1])


def timings(stderr: str) -> dict[str, float]:
    """{'start': s, 'first rows after': s, 'pipeline': s, 'stop': s} from the -v lines of a --ray run."""
    found: dict[str, float] = {}
    for match in TIMING.finditer(stderr):
        for part in match["what"].split(","):
            name, value = part.strip().rsplit(" ", 2)[0], part.strip().rsplit(" ", 2)[1]
            found[name] = float(value)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_images(root / "images", args.images)
        _, model, _ = ensure_model(root, "cnn", SIZE, fp16=False)
        batch = ["--batch-size", str(args.batch_size)]
        plain, plain_rates, ray, parts = [], [], [], []
        for _ in range(args.repeats):
            seconds, stdout, _ = run_infer(root / "images", model, root / "plain.csv", batch)
            plain.append(seconds)
            plain_rates.append(predicting_rate(stdout))
            seconds, _, stderr = run_infer(root / "images", model, root / "ray.csv",
                                           [*batch, "--ray", "--actors", str(args.actors)], verbose=True)
            ray.append(seconds)
            parts.append(timings(stderr))
            same = (root / "plain.csv").read_text() == (root / "ray.csv").read_text()
            assert same, "--ray wrote another CSV than plain clf infer"
    report(args, plain, statistics.median(plain_rates), ray, parts)


def report(args: argparse.Namespace, plain: list[float], plain_rate: float, ray: list[float],
           parts: list[dict[str, float]]) -> None:
    n = args.images
    p, r = statistics.median(plain), statistics.median(ray)
    print(f"{n} images of {SIZE} px, cnn @ {SIZE}, batch {args.batch_size}, {os.cpu_count()} CPUs (os.cpu_count), "
          f"medians of {args.repeats}; identical CSVs")
    print(f"{'how':<34} {'wall s':>8} {'img/s':>8} {'vs plain':>9}")
    print(f"{'clf infer':<34} {p:8.2f} {n / p:8.0f} {1.0:9.2f}")
    print(f"{f'clf infer --ray ({args.actors} actors)':<34} {r:8.2f} {n / r:8.0f} {r / p:9.2f}")
    print(f"--ray overhead, end to end: {100 * (r / p - 1):+.0f} %")
    med = {key: statistics.median(part.get(key, float('nan')) for part in parts) for key in parts[0]}
    predicting = med["pipeline"] - med["first rows after"]
    print(f"--ray breakdown (medians, s): Ray start {med['start']:.2f}, pipeline {med['pipeline']:.2f} (first rows "
          f"after {med['first rows after']:.2f}), Ray stop {med['stop']:.2f}")
    first_call = n / math.ceil(n / ROWS_PER_CALL)  # the rows that came with the first answer
    steady = (n - first_call) / max(predicting, 1e-9)
    print(f"--ray pipeline alone: {n / med['pipeline']:.0f} img/s; once its actors answer: {steady:.0f} img/s; "
          f"plain clf infer while predicting: {plain_rate:.0f} img/s (steady-state ratio {plain_rate / steady:.2f})")
    fixed_ray, fixed_plain = r - n / steady, p - n / plain_rate
    if steady * 1.25 > plain_rate:
        print(f"fixed costs: --ray {fixed_ray:.1f} s, plain {fixed_plain:.1f} s; --ray is within 25 % of plain from "
              f"about {max(0.0, (fixed_ray - 1.25 * fixed_plain) / (1.25 / plain_rate - 1 / steady)):.0f} images on")
    else:
        print(f"fixed costs: --ray {fixed_ray:.1f} s, plain {fixed_plain:.1f} s")


if __name__ == "__main__":
    main()
