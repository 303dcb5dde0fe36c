"""`clf tune` wall time against the same trials run one by one in a shell loop of `clf train`, on the sample
competition, and `clf tune --sequential` (one trial at a time on every core) against `--parallel` (one core each).

Every row trains the same trials (the lr grid below, fixed arch / size / epochs / seed). The shell loop trains each
to the end; `clf tune` lets ASHA stop the hopeless ones (its epochs column says how many epochs it trained in all).
Each command is a fresh process, as a user runs it (Ray's start-up is in clf tune's time).

    python benchmarks/tune_overhead.py [--epochs 3] [--img-size 32] [--lrs 3e-3,2e-3,1e-3,1e-7] [--skip-parallel]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clf.data.sample import generate_sample_competition
from clf.run_files import HISTORY_FILE
from clf.train.history import read_history_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--lrs", default="3e-3,2e-3,1e-3,1e-7")
    parser.add_argument("--skip-parallel", action="store_true")
    args = parser.parse_args()
    lrs = args.lrs.split(",")
    fixed = ["--arch", "cnn", "--img-size", str(args.img_size), "--epochs", str(args.epochs), "--quiet"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_sample_competition(root / "data")
        data = str(root / "data" / "train")
        rows = [("shell loop of clf train", *_loop(data, lrs, fixed, root / "loop"))]
        rows.append(("clf tune --sequential", *_tune(data, lrs, fixed, root / "seq", "--sequential")))
        if not args.skip_parallel:
            rows.append(("clf tune --parallel", *_tune(data, lrs, fixed, root / "par", "--parallel")))
    base = rows[0][1]
    print(f"{len(lrs)} trials (lr {args.lrs}), cnn @ {args.img_size} px, {args.epochs} epochs, "
          f"{os.cpu_count()} CPUs (os.cpu_count)")
    print(f"{'how':<26} {'wall s':>8} {'epochs':>7} {'vs loop':>8}")
    for name, seconds, epochs in rows:
        print(f"{name:<26} {seconds:8.1f} {epochs:7d} {seconds / base:8.2f}")


def _clf(*words: str) -> None:
    """A fresh `clf` process with every usable core (as a user's shell gives it; clf tune sets each trial's own)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(len(os.sched_getaffinity(0)))}
    subprocess.run([sys.executable, "-m", "clf", *words], check=True, stdout=subprocess.DEVNULL, env=env)


def _loop(data: str, lrs: list[str], fixed: list[str], out: Path) -> tuple[float, int]:
    started = time.perf_counter()
    for index, lr in enumerate(lrs):
        _clf("train", data, *fixed, "--lr", lr, "--out", str(out), "--name", f"trial-{index}")
    return time.perf_counter() - started, _epochs(out)


def _tune(data: str, lrs: list[str], fixed: list[str], out: Path, mode: str) -> tuple[float, int]:
    started = time.perf_counter()
    _clf("tune", data, *fixed, "--trials", str(len(lrs)), "--space", "lr=grid:" + ",".join(lrs), "--out", str(out),
         "--name", "search", mode)
    return time.perf_counter() - started, _epochs(out / "search")


def _epochs(folder: Path) -> int:
    return sum(len(read_history_csv(history)) for history in folder.glob(f"trial-*/{HISTORY_FILE}"))


if __name__ == "__main__":
    main()
