"""Imbalance: clf's imbalance options on a real benchmark with one class cut to a few training images.

For each benchmark (default: scenes, textures; see benchmarks/accuracy_data.py) one class keeps only --keep (5 %) of
its training images (a seeded choice; the test set stays as it is: balanced), and each recipe runs the deployed path:

    python -m clf train TRAIN --arch cnn --seed S --quiet RECIPE-ARGS
    python -m clf export RUN --onnx
    python -m clf infer TEST --model RUN/model.onnx --csv sub.csv --probs probs.csv

Rows: the defaults, --class-weights auto, --class-weights effective, --sampler balanced, --loss focal (or --recipes).
Columns: the cut class's test recall, overall test accuracy, balanced accuracy (the mean per-class recall; on these
balanced test sets it equals the accuracy up to rounding), medians over the seeds; then the same three after post-hoc
logit adjustment of the exported model's probabilities by the training prior (Menon et al. 2020: argmax over
log p_c - tau log pi_c, pi_c the class's share of the training images, tau 1 or --tau): a correction any user can
apply to `clf infer --probs` with no retraining (not to the weighted or resampled runs: it would correct twice).
A table of per-class test recall (medians) shows where the cut class's images go. The issue's target: the cut
class's recall up by >= 10 points with weights or the sampler at a cost of <= 1 point of overall accuracy, against
the defaults.

    python benchmarks/imbalance.py [--bench scenes,textures] [--seeds 0,1,2] [--cut CLASS] [--keep 0.05]
        [--recipes defaults,auto,...] [--epochs N] [--json out.json] [--workdir DIR]

Data goes to benchmarks/_data/accuracy/ (the benchmark) and benchmarks/_data/imbalance/ (its cut copy); both are
rebuilt only when their parameters change. The pictures benchmarks/accuracy_data.py keeps aside are never used.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import accuracy_data
from accuracy import CommandFailed, read_labels, run_clf

FORMAT = 1  # bump when the cut changes: existing cut folders are then rebuilt
RECIPES: dict[str, list[str]] = {
    "defaults": [],
    "weights auto": ["--class-weights", "auto"],
    "weights effective": ["--class-weights", "effective"],
    "sampler balanced": ["--sampler", "balanced"],
    "focal": ["--loss", "focal"],
}
RECIPE_NAMES = {"defaults": "defaults", "auto": "weights auto", "effective": "weights effective",
                "balanced": "sampler balanced", "focal": "focal"}
REFERENCE = "defaults"
DATA_ROOT = Path(__file__).resolve().parent / "_data"
TARGET_RECALL_GAIN, TARGET_ACCURACY_COST = 0.10, 0.01
PROB_FLOOR = 1e-12  # probabilities are written with 6 significant digits: a 0 would make log p -inf


@dataclass
class Row:
    """One measured (bench, recipe, seed): test scores of the exported model, raw and logit-adjusted."""

    bench: str
    recipe: str
    seed: int
    cut: str
    recall: dict[str, float] = field(default_factory=dict)  # per class, argmax of the exported model
    adjusted_recall: dict[str, float] = field(default_factory=dict)  # per class, after logit adjustment
    accuracy: float = float("nan")
    adjusted_accuracy: float = float("nan")
    args: list[str] = field(default_factory=list)  # the recipe's clf train args
    cut_predicted: dict[str, int] = field(default_factory=dict)  # what the cut class's test images were called

    @property
    def rebalanced(self) -> bool:
        """Trained against a reweighted or resampled prior: its probabilities no longer carry the training prior,
        so dividing that out again (logit adjustment) would correct twice."""
        return "--class-weights" in self.args or "balanced" in self.args

    @property
    def balanced_accuracy(self) -> float:
        return statistics.mean(self.recall.values())

    @property
    def adjusted_balanced_accuracy(self) -> float:
        return statistics.mean(self.adjusted_recall.values())


def progress(message: str) -> None:
    print(f"[imbalance {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the cut data set -------------------------------------------------------------------------------------------

def first_class(bench_dir: Path) -> str:
    return sorted(d.name for d in (bench_dir / "train").iterdir() if d.is_dir())[0]


def cut_dataset(bench_dir: Path, root: Path, cut: str, keep: float, data_seed: int) -> Path:
    """A copy of the benchmark folder whose class ``cut`` keeps ceil(keep x its count) training images (at least 1),
    a seeded choice; rebuilt only when its parameters (or the benchmark's) change."""
    if not (bench_dir / "train" / cut).is_dir():
        classes = ", ".join(sorted(d.name for d in (bench_dir / "train").iterdir()))
        raise SystemExit(f"--cut: {bench_dir.name} has no class {cut!r}; choose from {classes}")
    out = root / f"{bench_dir.name}-cut"
    params = {"format": FORMAT, "cut": cut, "keep": keep, "data_seed": data_seed,
              "bench": accuracy_data._recorded_params(bench_dir)}
    if accuracy_data._recorded_params(out) == params:
        return out
    shutil.rmtree(out, ignore_errors=True)
    tmp = root / f"{bench_dir.name}-cut.building"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(bench_dir, tmp)
    images = sorted((tmp / "train" / cut).iterdir())
    kept = max(1, math.ceil(keep * len(images)))
    for k in np.random.default_rng([data_seed, len(images)]).permutation(len(images))[kept:]:
        images[k].unlink()
    (tmp / accuracy_data.PARAMS_FILE).write_text(json.dumps(params, indent=1, sort_keys=True) + "\n",
                                                 encoding="utf-8")
    tmp.rename(out)
    return out


def training_prior(data: Path) -> dict[str, float]:
    """Each class's share of the training images (the prior the logit adjustment divides out)."""
    counts = {d.name: sum(1 for p in d.iterdir() if p.is_file()) for d in sorted((data / "train").iterdir())
              if d.is_dir()}
    total = sum(counts.values())
    return {name: count / total for name, count in counts.items()}


# --- one run ----------------------------------------------------------------------------------------------------

def measure(bench: str, data: Path, runs: Path, recipe: str, recipe_args: list[str], seed: int, cut: str,
            options: argparse.Namespace) -> Row:
    """Train, export, infer (labels and probabilities) and score one (recipe, seed)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{bench}-{recipe}-s{seed}")
    run = runs / name
    progress(f"{bench} {recipe} seed {seed}: training")
    args = ["train", str(data / "train"), "--arch", options.arch, "--seed", str(seed), "--quiet", "--out", str(runs),
            "--name", name, "--overwrite"]
    if options.epochs is not None:
        args += ["--epochs", str(options.epochs)]
    run_clf(*args, *recipe_args, *shlex.split(options.extra))
    run_clf("export", str(run), "--onnx")
    submission, probs = runs / f"{name}.submission.csv", runs / f"{name}.probs.csv"
    run_clf("infer", str(data / "test"), "--model", str(run / "model.onnx"), "--sample-submission",
            str(data / "sample_submission.csv"), "--csv", str(submission), "--probs", str(probs), "--quiet")
    truth = read_labels(data / "test_labels.csv")
    predicted = read_labels(submission)
    adjusted = logit_adjusted(read_probabilities(probs), training_prior(data), options.tau)
    row = Row(bench, recipe, seed, cut, per_class_recall(truth, predicted), per_class_recall(truth, adjusted),
              accuracy(truth, predicted), accuracy(truth, adjusted), recipe_args, predictions_of(cut, truth, predicted))
    progress(f"{bench} {recipe} seed {seed}: {cut} recall {row.recall[cut]:.3f}, accuracy {row.accuracy:.4f}; "
             f"logit-adjusted {row.adjusted_recall[cut]:.3f}, {row.adjusted_accuracy:.4f}")
    return row


def read_probabilities(path: Path) -> dict[str, dict[str, float]]:
    """id -> class -> probability of a `clf infer --probs` CSV."""
    with path.open(newline="", encoding="utf-8") as f:
        return {row.pop("id"): {c: float(v) for c, v in row.items()} for row in csv.DictReader(f)}


def logit_adjusted(probabilities: dict[str, dict[str, float]], prior: dict[str, float], tau: float = 1.0
                   ) -> dict[str, str]:
    """id -> argmax_c (log p_c - tau log pi_c): the prediction that is Bayes-optimal for balanced error when the
    model's probabilities are calibrated to the training prior (Menon et al. 2020, post-hoc logit adjustment)."""
    return {image_id: max(p, key=lambda c: math.log(max(p[c], PROB_FLOOR)) - tau * math.log(prior[c]))
            for image_id, p in probabilities.items()}


def per_class_recall(truth: dict[str, str], predicted: dict[str, str]) -> dict[str, float]:
    """class -> the share of its test images predicted as it (a missing id counts as wrong)."""
    classes = sorted(set(truth.values()))
    return {c: statistics.mean(predicted.get(i) == c for i, label in truth.items() if label == c) for c in classes}


def predictions_of(cut: str, truth: dict[str, str], predicted: dict[str, str]) -> dict[str, int]:
    """predicted class -> how many of the cut class's test images got it (most first)."""
    counts = Counter(predicted.get(i, "(missing)") for i, label in truth.items() if label == cut)
    return dict(counts.most_common())


def accuracy(truth: dict[str, str], predicted: dict[str, str]) -> float:
    return statistics.mean(predicted.get(i) == label for i, label in truth.items())


# --- the report -------------------------------------------------------------------------------------------------

def grouped(rows: list[Row]) -> dict[str, list[Row]]:
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.recipe, []).append(row)
    return groups


def print_table(bench: str, rows: list[Row], seeds: list[int]) -> None:
    """Per recipe (medians over the seeds): the cut class's recall, accuracy and balanced accuracy, raw and after
    logit adjustment, and the raw scores' change against the defaults in points."""
    cut = rows[0].cut
    print(f"\n{bench}: {cut} cut to its few training images (medians over seeds {','.join(map(str, seeds))}; "
          "test = exported model via clf infer; LA = logit-adjusted by the training prior)")
    print(f"{'recipe':<18} {'cut recall':>10} {'accuracy':>8} {'bal acc':>8} {'d recall':>8} {'d acc':>7} "
          f"{'LA recall':>9} {'LA acc':>7} {'LA bal':>7}  seeds' cut recall")
    groups = grouped(rows)
    reference = groups.get(REFERENCE)
    for recipe, group in groups.items():
        recall, acc = median(r.recall[cut] for r in group), median(r.accuracy for r in group)
        d_recall = d_acc = float("nan")
        if reference:
            d_recall = 100 * (recall - median(r.recall[cut] for r in reference))
            d_acc = 100 * (acc - median(r.accuracy for r in reference))
        each = "/".join(f"{r.recall[cut]:.2f}" for r in group)
        adjusted = (f"{'n/a':>9} {'n/a':>7} {'n/a':>7}" if group[0].rebalanced else
                    f"{median(r.adjusted_recall[cut] for r in group):>9.3f} "
                    f"{median(r.adjusted_accuracy for r in group):>7.4f} "
                    f"{median(r.adjusted_balanced_accuracy for r in group):>7.4f}")
        print(f"{recipe:<18} {recall:>10.3f} {acc:>8.4f} {median(r.balanced_accuracy for r in group):>8.4f} "
              f"{d_recall:>+7.1f}p {d_acc:>+6.1f}p {adjusted}  {each}")


def print_per_class(bench: str, rows: list[Row]) -> None:
    """Median test recall of every class per recipe: where the cut class's images go, and what the others pay."""
    classes = list(rows[0].recall)
    width = max(8, *(len(c) for c in classes))
    print(f"\n{bench}: per-class test recall (medians; * = the cut class)")
    print(f"{'recipe':<18} " + " ".join(f"{c + ('*' if c == rows[0].cut else ''):>{width}}" for c in classes))
    for recipe, group in grouped(rows).items():
        print(f"{recipe:<18} " + " ".join(f"{median(r.recall[c] for r in group):>{width}.3f}" for c in classes))
    if not any(r.cut_predicted for r in rows):
        return
    print(f"{bench}: where the {rows[0].cut} test images go (each seed)")
    for recipe, group in grouped(rows).items():
        print(f"{recipe:<18} " + " | ".join(", ".join(f"{c} {n}" for c, n in r.cut_predicted.items())
                                            for r in group))


def print_target(bench: str, rows: list[Row]) -> None:
    """Which recipes meet the issue's target against the defaults (raw, and with logit adjustment)."""
    groups, cut = grouped(rows), rows[0].cut
    reference = groups.get(REFERENCE)
    if not reference:
        return
    base_recall, base_acc = median(r.recall[cut] for r in reference), median(r.accuracy for r in reference)
    for recipe, group in groups.items():
        for label, recall_of, acc_of in (("", lambda r: r.recall[cut], lambda r: r.accuracy),
                                         (" + LA", lambda r: r.adjusted_recall[cut], lambda r: r.adjusted_accuracy)):
            if (recipe == REFERENCE and not label) or (label and group[0].rebalanced):
                continue
            gain = median(recall_of(r) for r in group) - base_recall
            cost = base_acc - median(acc_of(r) for r in group)
            met = gain >= TARGET_RECALL_GAIN - 1e-9 and cost <= TARGET_ACCURACY_COST + 1e-9
            print(f"{bench}: {recipe + label}: cut recall {100 * gain:+.1f} points, accuracy {-100 * cost:+.1f} "
                  f"points against the defaults: target {'met' if met else 'missed'}")


def median(values) -> float:
    return statistics.median(list(values))


# --- main -------------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", default="scenes,textures", help="benchmarks: " + ",".join(accuracy_data.BENCHES))
    parser.add_argument("--seeds", default="0,1,2", help="training seeds; tables show medians over them")
    parser.add_argument("--recipes", default=",".join(RECIPE_NAMES),
                        help=f"from {', '.join(RECIPE_NAMES)}, or NAME=ARGS for an ad-hoc one")
    parser.add_argument("--cut", default=None, help="the class to cut [default: each benchmark's first class]")
    parser.add_argument("--keep", type=float, default=0.05, help="share of the cut class's training images kept")
    parser.add_argument("--tau", type=float, default=1.0, help="the logit adjustment's strength (1: Menon et al.)")
    parser.add_argument("--arch", default="cnn")
    parser.add_argument("--epochs", type=int, default=None, help="passed to clf train only when given")
    parser.add_argument("--extra", default="", help="args appended to every clf train")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the data sets and of the cut")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT, help="where the data sets are built")
    parser.add_argument("--workdir", type=Path, default=None, help="run folders go here (kept)")
    parser.add_argument("--json", type=Path, default=None, help="write every measured row here")
    parser.add_argument("--from-json", type=Path, nargs="+", default=None,
                        help="print the tables of rows --json wrote (several files: concatenated); runs nothing")
    options = parser.parse_args(argv)
    options.benches = [b.strip() for b in options.bench.split(",") if b.strip()]
    if not options.benches or any(b not in accuracy_data.BENCHES for b in options.benches):
        parser.error(f"--bench: choose from {', '.join(accuracy_data.BENCHES)}")
    if not 0 < options.keep < 1:
        parser.error(f"--keep must be between 0 and 1, got {options.keep}")
    options.seed_list = [int(s) for s in options.seeds.split(",") if s.strip()]
    options.recipe_table = {}
    for item in filter(None, (part.strip() for part in options.recipes.split(","))):
        name, sep, args = item.partition("=")
        if sep:
            options.recipe_table[name] = shlex.split(args)
        elif name in RECIPE_NAMES:
            options.recipe_table[RECIPE_NAMES[name]] = RECIPES[RECIPE_NAMES[name]]
        else:
            parser.error(f"--recipes: unknown {name!r}; choose from {', '.join(RECIPE_NAMES)} or give NAME=ARGS")
    return options


def measure_bench(bench: str, runs: Path, options: argparse.Namespace) -> Iterator[Row]:
    bench_dir = accuracy_data.build(bench, options.data_root / "accuracy", options.data_seed)
    cut = options.cut or first_class(bench_dir)
    (options.data_root / "imbalance").mkdir(parents=True, exist_ok=True)
    data = cut_dataset(bench_dir, options.data_root / "imbalance", cut, options.keep, options.data_seed)
    progress(f"{bench}: {cut} keeps {len(list((data / 'train' / cut).iterdir()))} training images")
    for seed in options.seed_list:
        for recipe, args in options.recipe_table.items():
            yield measure(bench, data, runs, recipe, args, seed, cut, options)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    if options.from_json:
        rows = [Row(**({"args": RECIPES.get(r["recipe"], [])} | r))  # rows written before Row.args: the recipe's
                for path in options.from_json for r in json.loads(path.read_text(encoding="utf-8"))]
        report(rows, sorted({r.bench for r in rows}, key=[r.bench for r in rows].index),
               sorted({r.seed for r in rows}))
        return 0
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # unwinds: the run folders go
    options.data_root.mkdir(parents=True, exist_ok=True)
    runs = options.workdir or Path(tempfile.mkdtemp(prefix="runs-", dir=options.data_root))
    rows: list[Row] = []
    try:
        for bench in options.benches:
            for row in measure_bench(bench, runs, options):
                rows.append(row)
                if options.json:  # after every run: a long measurement interrupted keeps what it measured
                    options.json.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    except CommandFailed as failure:
        print(f"error: {failure}", file=sys.stderr)
        return failure.returncode
    finally:
        if options.workdir is None:
            shutil.rmtree(runs, ignore_errors=True)
    report(rows, options.benches, options.seed_list)
    return 0


def report(rows: list[Row], benches: list[str], seeds: list[int]) -> None:
    for bench in benches:
        bench_rows = [r for r in rows if r.bench == bench]
        print_table(bench, bench_rows, seeds)
        print_per_class(bench, bench_rows)
    print()
    for bench in benches:
        print_target(bench, [r for r in rows if r.bench == bench])


if __name__ == "__main__":
    sys.exit(main())
