"""The competition endgame, measured: best single fold vs the K-fold ensemble vs + hflip TTA vs + calibration.

On the recipe issue's real-photo benchmarks (scenes, faces: benchmarks/accuracy_data.py), for each seed it runs what a
team would, through the deployed path only:

    python -m clf train TRAIN --arch ARCH --folds K --fold-seed S --seed S      (timed: train s, all folds)
    python -m clf export GROUP/fold-k --onnx -o single.onnx                     (k = the fold with the best val acc)
    python -m clf export GROUP --onnx -o ensemble.onnx                          (the K folds averaged in one graph)
    python -m clf export GROUP --onnx --tta hflip -o ensemble_tta.onnx
    python -m clf export GROUP --onnx --tta hflip --calibrate -o ensemble_tta_cal.onnx
    python -m clf infer TEST --model M --probs probs.csv --csv sub.csv           (each model; img/s from its report)

and scores each submission and probability file against the held-out answers: test accuracy, test log-loss, ECE
(15 bins), `clf infer`'s images/s and the file size. It prints one table per benchmark (medians over the seeds) and
each variant's figures against the best single fold's (accuracy points, log-loss ratio, throughput ratio).

    pip install -e '.[bench]'
    python benchmarks/ensemble.py [--bench scenes,faces] [--seeds 0,1] [--folds 5] [--arch cnn] [--epochs N]
        [--extra "--lr 3e-3"] [--json out.json] [--keep] [--workdir DIR]

Run it from the checkout being measured (`python -m clf` takes the clf of the current folder first).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import accuracy_data
import numpy as np
from accuracy import DATA_ROOT, CommandFailed, progress, read_labels, run_clf_output

from clf.probabilities import expected_calibration_error, log_loss

# Variant name -> extra `clf export` arguments for the fold group (the single fold is exported on its own).
VARIANTS: dict[str, list[str]] = {
    "ensemble": [],
    "ensemble+hflip": ["--tta", "hflip"],
    "ensemble+hflip+calibrated": ["--tta", "hflip", "--calibrate"],
}
SINGLE = "best single fold"
_IPS = re.compile(r"\(([0-9.]+) img/s\)")


@dataclass
class Row:
    """One measured (bench, variant, seed), all through export -> clf infer -> score."""

    bench: str
    variant: str
    seed: int
    train_s: float  # the whole fold group's training (the same for every variant of a seed)
    test_acc: float
    test_log_loss: float
    test_ece: float
    images_per_s: float
    size_mb: float


def best_fold(group: Path) -> Path:
    """The fold run whose history reached the highest validation accuracy (ties: the lower fold)."""
    record = json.loads((group / "group.json").read_text(encoding="utf-8"))
    folds = [group / name for name in record["members"]]
    return max(folds, key=lambda run: (best_val_acc(run), -folds.index(run)))


def best_val_acc(run: Path) -> float:
    with (run / "history.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    scores = [float(r[k]) for r in rows for k in ("val_acc", "ema_val_acc") if r.get(k) not in (None, "")]
    return max(scores)


def score_model(bench: str, variant: str, seed: int, model: Path, data: Path, work: Path, train_s: float) -> Row:
    """`clf infer` the test images with `model`, then accuracy, log-loss and ECE against the answers."""
    submission, probs = work / f"{model.stem}.csv", work / f"{model.stem}.probs.csv"
    _, output = run_clf_output("infer", str(data / "test"), "--model", str(model), "--sample-submission",
                        str(data / "sample_submission.csv"), "--csv", str(submission), "--probs", str(probs), "--quiet")
    speed = _IPS.search(output)
    truth = read_labels(data / "test_labels.csv")
    predicted = read_labels(submission)
    ids, classes, matrix = read_probs(probs)
    labels = [classes.index(truth[i]) for i in ids]
    row = Row(bench, variant, seed, round(train_s, 1),
              sum(predicted.get(i) == label for i, label in truth.items()) / len(truth),
              log_loss(matrix, labels), expected_calibration_error(matrix, labels),
              float(speed.group(1)) if speed else float("nan"), model.stat().st_size / 1e6)
    progress(f"{bench} seed {seed} {variant}: test {row.test_acc:.4f}, log-loss {row.test_log_loss:.4f}, "
             f"ECE {row.test_ece:.4f}, {row.images_per_s:.0f} img/s")
    return row


def read_probs(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """ids, classes and the [N, C] matrix of a `clf infer --probs` file (id column first, one column per class)."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return [r[0] for r in rows[1:]], rows[0][1:], np.array([[float(v) for v in r[1:]] for r in rows[1:]])


def measure_seed(bench: str, data: Path, runs: Path, seed: int, options: argparse.Namespace) -> list[Row]:
    """Train one fold group, then export and score the best single fold and every ensemble variant."""
    group = runs / f"{bench}-s{seed}"
    progress(f"{bench} seed {seed}: training {options.folds} folds")
    train = ["train", str(data / "train"), "--arch", options.arch, "--folds", str(options.folds),
             "--fold-seed", str(seed), "--seed", str(seed), "--quiet", "--out", str(runs), "--name", group.name,
             "--overwrite"]
    if options.epochs is not None:
        train += ["--epochs", str(options.epochs)]
    train_s, _ = run_clf_output(*train, *shlex.split(options.extra))
    work = runs / f"{group.name}.models"  # beside the group: clf's folders hold only clf's files
    work.mkdir(exist_ok=True)
    single = work / "single.onnx"
    run_clf_output("export", str(best_fold(group)), "--onnx", "-o", str(single))
    rows = [score_model(bench, SINGLE, seed, single, data, work, train_s)]
    for variant, args in VARIANTS.items():
        model = work / (re.sub(r"[^a-z0-9]+", "_", variant) + ".onnx")
        run_clf_output("export", str(group), "--onnx", "-o", str(model), *args)
        rows.append(score_model(bench, variant, seed, model, data, work, train_s))
    return rows


def print_table(bench: str, rows: list[Row], seeds: list[int], folds: int) -> None:
    print(f"\n{bench}  ({folds} folds; medians over seeds {','.join(map(str, seeds))}; all via export -> clf infer)")
    print(f"{'model':<27} {'test acc':>8} {'log-loss':>9} {'ECE':>7} {'img/s':>7} {'MB':>6} {'train s':>8}")
    for variant, group in grouped(rows).items():
        print(f"{variant:<27} {_median(group, 'test_acc'):>8.4f} {_median(group, 'test_log_loss'):>9.4f} "
              f"{_median(group, 'test_ece'):>7.4f} {_median(group, 'images_per_s'):>7.0f} "
              f"{_median(group, 'size_mb'):>6.2f} {_median(group, 'train_s'):>8.1f}")


def print_ratios(bench: str, rows: list[Row]) -> None:
    """Each variant against the best single fold: accuracy points, log-loss and throughput ratios."""
    groups = grouped(rows)
    base = groups[SINGLE]
    acc, loss, speed = (_median(base, k) for k in ("test_acc", "test_log_loss", "images_per_s"))
    for variant, group in groups.items():
        if variant != SINGLE:
            print(f"{bench}: {variant}: test acc {100 * (_median(group, 'test_acc') - acc):+.1f} points, "
                  f"log-loss {_median(group, 'test_log_loss') / loss:.2f} x, "
                  f"clf infer img/s {_median(group, 'images_per_s') / speed:.2f} x the best single fold's")


def grouped(rows: list[Row]) -> dict[str, list[Row]]:
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.variant, []).append(row)
    return groups


def _median(rows: list[Row], field: str) -> float:
    return statistics.median(getattr(r, field) for r in rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", default=",".join(accuracy_data.BENCHES), help="benchmarks: scenes,faces")
    parser.add_argument("--seeds", default="0,1", help="seeds (training and fold assignment); tables show medians")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--arch", default="cnn")
    parser.add_argument("--epochs", type=int, default=None, help="passed to clf train only when given")
    parser.add_argument("--extra", default="", help="args appended to clf train")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the data sets (crops, faces split)")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT, help="where the data sets are built")
    parser.add_argument("--workdir", type=Path, default=None, help="run folders go here (kept)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary run folders")
    parser.add_argument("--json", type=Path, default=None, help="write every measured row here")
    options = parser.parse_args(argv)
    options.benches = [b.strip() for b in options.bench.split(",") if b.strip()]
    if not options.benches or any(b not in accuracy_data.BENCHES for b in options.benches):
        parser.error(f"--bench: choose from {', '.join(accuracy_data.BENCHES)}")
    options.seed_list = [int(s) for s in options.seeds.split(",") if s.strip()]
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # unwinds: the run folders go
    options.data_root.mkdir(parents=True, exist_ok=True)
    runs = options.workdir or Path(tempfile.mkdtemp(prefix="ensemble-", dir=options.data_root))
    rows: list[Row] = []
    try:
        for bench in options.benches:
            data = accuracy_data.build(bench, options.data_root, options.data_seed)
            for seed in options.seed_list:
                rows += measure_seed(bench, data, runs, seed, options)
    except CommandFailed as failure:
        print(f"error: {failure}", file=sys.stderr)
        return failure.returncode
    finally:
        if options.json and rows:
            options.json.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
        if options.workdir is not None or options.keep:
            progress(f"run folders kept in {runs}")
        else:
            shutil.rmtree(runs, ignore_errors=True)
    for bench in options.benches:
        print_table(bench, [r for r in rows if r.bench == bench], options.seed_list, options.folds)
    print()
    for bench in options.benches:
        print_ratios(bench, [r for r in rows if r.bench == bench])
    return 0


if __name__ == "__main__":
    sys.exit(main())
