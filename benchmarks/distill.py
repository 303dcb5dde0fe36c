"""Distillation and pseudo-labels against the fold ensemble they stand in for, through the deployed path.

Per benchmark (accuracy_data's real-photo sets; never the kept-aside pictures) and seed:

    best single fold           the fold of `clf train --folds K` with the best validation accuracy, exported
    ensemble + hflip TTA       `clf export GROUP --tta hflip`: every fold in one graph
    student, labelled only     `clf distill ENSEMBLE DATA --arch ARCH`: one model of a fold's arch
    student + unlabelled       ... --unlabelled TEST (check your competition's rules before doing this)
    single + pseudo-labels     `clf train DATA --pseudo-labels PROBS --pseudo-images TEST`, PROBS the ensemble's

each exported to ONNX and run with `clf infer TEST --probs`: test accuracy, log-loss, ONNX MB, and `clf infer` img/s:
the median of --speed-rounds rounds that run the seed's models in turn (a busy machine slows them alike).
It prints the targets of issue 21 and whether they are met:
  - the student (+ unlabelled) recovers >= 70 % of the ensemble's accuracy gain over the best single fold (mean over
    the benchmarks), and runs at >= 0.9x the single fold's img/s and >= 4x the ensemble's;
  - pseudo-labels do not lower the single model's accuracy by more than the seed noise (shown, not judged).
It also prints the cost of the teacher's views: K views x training images at the ensemble's img/s (what `clf
distill` spends once before the first epoch) beside the student's training time.

Usage: python benchmarks/distill.py [--bench scenes,textures,glyphs] [--seeds 0] [--epochs 30] [--folds 5]
       [--kd-views K] [--json rows.json]. Not run by CI; smallest: --bench glyphs --epochs 2 --folds 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import accuracy_data
from accuracy import DATA_ROOT, accuracy, progress, read_history, read_labels, run_clf, run_clf_output

MODELS = ("best single fold", "ensemble + hflip TTA", "student, labelled only", "student + unlabelled",
          "single + pseudo-labels")
RECOVERY_TARGET, SINGLE_SPEED_TARGET, ENSEMBLE_SPEED_TARGET = 0.70, 0.9, 4.0
RATE = re.compile(r"\((\d+) img/s\)")


@dataclass
class Row:
    bench: str
    seed: int
    model: str
    accuracy: float
    log_loss: float
    images_per_second: float
    megabytes: float
    train_seconds: float = math.nan


def log_loss(probs_csv: Path, answers: Path) -> float:
    """Mean -log p(true class) over the answers (probabilities clipped at 1e-15, as Kaggle does)."""
    truth = read_labels(answers)
    with probs_csv.open(newline="", encoding="utf-8") as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    return statistics.fmean(-math.log(min(1.0, max(1e-15, float(rows[i][label])))) for i, label in truth.items())


def measure(bench: str, seed: int, model: str, onnx: Path, data: Path, work: Path, train_seconds: float) -> Row:
    """`clf infer` of `onnx` on the test images: accuracy, log-loss, img/s (as it prints them), file size."""
    sub, probs = work / f"{onnx.stem}.csv", work / f"{onnx.stem}.probs.csv"
    _, output = run_clf_output("infer", str(data / "test"), "--model", str(onnx), "--csv", str(sub), "--probs",
                               str(probs), "--quiet")
    rate = RATE.search(output)
    answers = data / "test_labels.csv"
    return Row(bench, seed, model, accuracy(sub, answers), log_loss(probs, answers),
               float(rate.group(1)) if rate else math.nan, onnx.stat().st_size / 1e6, train_seconds)


def interleaved_rates(files: list[Path], data: Path, work: Path, rounds: int) -> list[float]:
    """Each model's median `clf infer` img/s over `rounds` rounds that run every model in turn: a busy machine slows
    all of them alike, where one run per model at different times measures the load as much as the model."""
    rates: list[list[float]] = [[] for _ in files]
    for _ in range(rounds):
        for index, onnx in enumerate(files):
            _, output = run_clf_output("infer", str(data / "test"), "--model", str(onnx), "--csv",
                                       str(work / "speed.csv"), "--quiet")
            rate = RATE.search(output)
            rates[index].append(float(rate.group(1)) if rate else math.nan)
    return [statistics.median(values) for values in rates]


def best_fold(group: Path) -> Path:
    """The fold with the best validation accuracy (its best epoch's)."""
    return max(sorted(group.glob("fold-*")), key=lambda run: max(read_history(run / "history.csv"), default=0.0))


def measure_seed(bench: str, seed: int, data: Path, work: Path, options: argparse.Namespace) -> list[Row]:
    runs, train, test = work / "runs", str(data / "train"), str(data / "test")
    common = ["--arch", options.arch, "--epochs", str(options.epochs), "--seed", str(seed), "--out", str(runs),
              "--quiet", *options.extra.split()]
    rows = []
    progress(f"{bench} seed {seed}: {options.folds} folds")
    seconds = run_clf("train", train, *common, "--folds", str(options.folds), "--name", "folds")
    fold = best_fold(runs / "folds")
    run_clf("export", str(fold), "--onnx", "-o", str(work / "single.onnx"))
    run_clf("export", str(runs / "folds"), "--onnx", "--tta", "hflip", "-o", str(work / "ensemble.onnx"))
    rows.append(measure(bench, seed, MODELS[0], work / "single.onnx", data, work, seconds / options.folds))
    rows.append(measure(bench, seed, MODELS[1], work / "ensemble.onnx", data, work, seconds))
    views = ["--kd-views", str(options.kd_views)] if options.kd_views else []
    for model, name, extra in ((MODELS[2], "student", []), (MODELS[3], "student-unlabelled", ["--unlabelled", test])):
        progress(f"{bench} seed {seed}: {name}")
        seconds = run_clf("distill", str(work / "ensemble.onnx"), train, *common, "--name", name, *views, *extra)
        run_clf("export", str(runs / name), "--onnx", "-o", str(work / f"{name}.onnx"))
        rows.append(measure(bench, seed, model, work / f"{name}.onnx", data, work, seconds))
    progress(f"{bench} seed {seed}: pseudo-labels")
    seconds = run_clf("train", train, *common, "--name", "pseudo", "--pseudo-labels",
                      str(work / "ensemble.probs.csv"), "--pseudo-images", test)
    run_clf("export", str(runs / "pseudo"), "--onnx", "-o", str(work / "pseudo.onnx"))
    rows.append(measure(bench, seed, MODELS[4], work / "pseudo.onnx", data, work, seconds))
    files = [work / f"{name}.onnx" for name in ("single", "ensemble", "student", "student-unlabelled", "pseudo")]
    for row, rate in zip(rows, interleaved_rates(files, data, work, options.speed_rounds)):
        row.images_per_second = rate
    record = json.loads((runs / "student" / "config.json").read_text(encoding="utf-8"))["distillation"]
    cached = record["views"] * record["labelled_images"] / rows[1].images_per_second
    progress(f"{bench} seed {seed}: teacher views K={record['views']} x {record['labelled_images']} images at "
             f"{rows[1].images_per_second:.0f} img/s = {cached:.1f} s once, beside {rows[2].train_seconds:.0f} s of "
             "distillation in all")
    return rows


def median(rows: list[Row], field: str) -> float:
    values = [getattr(r, field) for r in rows if not math.isnan(getattr(r, field))]
    return statistics.median(values) if values else math.nan


def print_bench(bench: str, rows: list[Row]) -> None:
    print(f"\n{bench} (medians over seeds)")
    print(f"{'model':<26}{'test acc':>9}{'log-loss':>10}{'img/s':>9}{'MB':>8}{'acc sd':>8}")
    for model in MODELS:
        mine = [r for r in rows if r.model == model]
        spread = statistics.stdev([r.accuracy for r in mine]) if len(mine) > 1 else math.nan
        print(f"{model:<26}{median(mine, 'accuracy'):>9.4f}{median(mine, 'log_loss'):>10.4f}"
              f"{median(mine, 'images_per_second'):>9.0f}{median(mine, 'megabytes'):>8.2f}{spread:>8.4f}")


def print_targets(rows: list[Row], benches: list[str]) -> bool:
    """The issue's targets over the benchmarks; True when every one is met."""
    def value(bench: str, model: str, field: str) -> float:
        return median([r for r in rows if r.bench == bench and r.model == model], field)

    recoveries, single_speed, ensemble_speed = [], [], []
    for bench in benches:
        single, ensemble = value(bench, MODELS[0], "accuracy"), value(bench, MODELS[1], "accuracy")
        student = value(bench, MODELS[3], "accuracy")
        gain = ensemble - single
        recoveries.append((student - single) / gain if gain > 0 else math.nan)
        speed = value(bench, MODELS[3], "images_per_second")
        single_speed.append(speed / value(bench, MODELS[0], "images_per_second"))
        ensemble_speed.append(speed / value(bench, MODELS[1], "images_per_second"))
    finite = [r for r in recoveries if not math.isnan(r)]
    recovery = statistics.fmean(finite) if finite else math.nan
    checks = [
        (f"student + unlabelled recovers >= {RECOVERY_TARGET:.0%} of the ensemble's gain (mean)", recovery,
         recovery >= RECOVERY_TARGET),
        (f"student speed >= {SINGLE_SPEED_TARGET}x the single fold's (min)", min(single_speed),
         min(single_speed) >= SINGLE_SPEED_TARGET),
        (f"student speed >= {ENSEMBLE_SPEED_TARGET}x the ensemble's (min)", min(ensemble_speed),
         min(ensemble_speed) >= ENSEMBLE_SPEED_TARGET),
    ]
    print("\ntargets")
    for text, number, met in checks:
        print(f"  {text}: {number:.2f} {'MET' if met else 'NOT MET'}")
    if not finite:
        print("  (no benchmark where the ensemble beat the single fold: recovery undefined)")
    for bench in benches:
        drop = value(bench, MODELS[0], "accuracy") - value(bench, MODELS[4], "accuracy")
        print(f"  {bench}: pseudo-labels change the single model's accuracy by {-drop:+.4f}")
    return all(met for _, _, met in checks)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", default="scenes,textures,glyphs", help="benchmarks of accuracy_data")
    parser.add_argument("--seeds", default="0", help="training seeds; tables show medians over them")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--arch", default="cnn")
    parser.add_argument("--kd-views", type=int, default=None, help="clf distill --kd-views (default: its own)")
    parser.add_argument("--extra", default="", help="args appended to every clf train and clf distill")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--speed-rounds", type=int, default=5,
                        help="img/s: the median of this many rounds of `clf infer` over the seed's models in turn")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--json", type=Path, default=None, help="write every measured row here")
    parser.add_argument("--include", type=Path, action="append", default=[],
                        help="a --json file of an earlier run (other seeds, same data) whose rows join the tables")
    options = parser.parse_args(argv)
    options.benches = [b.strip() for b in options.bench.split(",") if b.strip()]
    unknown = [b for b in options.benches if b not in accuracy_data.BENCHES]
    if unknown or not options.benches:
        parser.error(f"--bench: choose from {', '.join(accuracy_data.BENCHES)}")
    options.seed_list = [int(s) for s in options.seeds.split(",") if s.strip()]
    return options


def earlier_rows(paths: list[Path], benches: list[str]) -> list[Row]:
    """Rows of earlier runs' --json files, so seeds measured in several sittings share one table."""
    rows = [Row(**item) for path in paths for item in json.loads(path.read_text(encoding="utf-8"))]
    return [row for row in rows if row.bench in benches]


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    rows: list[Row] = earlier_rows(options.include, options.benches)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="clf-distill-bench-") as tmp:
        for bench in options.benches:
            data = accuracy_data.build(bench, options.data_root, options.data_seed)
            for seed in options.seed_list:
                work = Path(tmp) / bench / f"seed-{seed}"
                work.mkdir(parents=True)
                rows += measure_seed(bench, seed, data, work, options)
            print_bench(bench, [r for r in rows if r.bench == bench])
    met = print_targets(rows, options.benches)
    print(f"\n{time.perf_counter() - start:.0f} s in all")
    if options.json is not None:
        options.json.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n", encoding="utf-8")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
