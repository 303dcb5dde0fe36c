"""Multi-label accuracy: clf's multi-label path as deployed, beside the plain script a competitor writes.

On the data set of benchmarks/multilabel_data.py (2x2 grids of 1-3 crops of 8 bundled pictures; tags = the crops'
sources; test crops from a part of each picture no training crop touches), for each recipe and seed it runs:

    python -m clf train TRAIN --task multilabel --labels-csv train.csv --id-col id --label-col tags
        --arch cnn --seed S --quiet RECIPE-ARGS                                        (timed: train s)
    python -m clf export RUN --onnx
    python -m clf infer TEST --model RUN/model.onnx --sample-submission ... --label-col tags --csv sub.csv
        --probs probs.csv

and scores the submission (clf's per-class thresholds, tuned on the validation split and carried by the ONNX) and the
probabilities at a fixed 0.5 against the held-out answers. In the same run, on the same images, the baseline
benchmarks/plain_multilabel.py trains (plain_script.py's CNN and recipe, BCE, every training image, threshold 0.5;
timed as a subprocess, its start included, its test prediction excluded). Scores: macro-F1 (the headline: the mean
of the per-class F1), micro-F1, samples-F1, exact match and mAP (threshold-free; from the probabilities). Medians over
the seeds, a table and each row's ratio to the plain script's.

    pip install -e '.[bench]'   # scikit-image, scikit-learn (mAP): nothing is downloaded
    python benchmarks/multilabel.py [--seeds 0,1,2] [--recipes defaults,asl] [--epochs N] [--extra ARGS]
        [--no-clf] [--json out.json] [--workdir DIR]

--no-clf measures the plain script alone. Data goes to benchmarks/_data/multilabel/ (rebuilt only when its parameters
change); runs to a temporary folder there, deleted at the end unless --workdir.
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
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import multilabel_data
from accuracy import CommandFailed, run_clf, run_command

RECIPES: dict[str, list[str]] = {"defaults": [], "asl": ["--loss", "asl"]}
BASELINE = "plain script @0.5"
TUNED, FIXED = "tuned thresholds", "@0.5"
PLAIN_SCRIPT = Path(__file__).resolve().parent / "plain_multilabel.py"
DATA_ROOT = Path(__file__).resolve().parent / "_data" / "multilabel"
COLUMNS = ("macro_f1", "micro_f1", "samples_f1", "exact", "map")


@dataclass
class Row:
    """One measured (recipe, decision rule, seed)."""

    recipe: str
    seed: int
    train_s: float
    macro_f1: float
    micro_f1: float
    samples_f1: float
    exact: float
    map: float
    per_class_f1: dict[str, float]


def progress(message: str) -> None:
    print(f"[multilabel {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- scores -----------------------------------------------------------------------------------------------------

def multi_hot(tags: dict[str, set[str]], ids: list[str], classes: list[str]) -> np.ndarray:
    """[N, C] bool: row i marks the tags of ids[i] (an id with no row: no tag)."""
    return np.array([[c in tags.get(i, set()) for c in classes] for i in ids], dtype=bool).reshape(len(ids),
                                                                                                    len(classes))


def f1_scores(truth: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(per-class F1, micro-F1, samples-F1) of bool [N, C] arrays; a class or sample with no true and no predicted
    tag scores 0, as scikit-learn's zero_division=0."""
    tp = (truth & predicted).sum(0)
    denominator = truth.sum(0) + predicted.sum(0)
    per_class = np.divide(2 * tp, denominator, out=np.zeros(truth.shape[1]), where=denominator > 0)
    micro = 2 * tp.sum() / max(truth.sum() + predicted.sum(), 1)
    row_tp, row_denominator = (truth & predicted).sum(1), truth.sum(1) + predicted.sum(1)
    samples = np.divide(2 * row_tp, row_denominator, out=np.zeros(len(truth)), where=row_denominator > 0).mean()
    return per_class, float(micro), float(samples)


def mean_average_precision(truth: np.ndarray, probabilities: np.ndarray) -> float:
    """The mean over classes of the average precision (scikit-learn's)."""
    from sklearn.metrics import average_precision_score

    return float(np.mean([average_precision_score(truth[:, k], probabilities[:, k]) for k in range(truth.shape[1])]))


def score(recipe: str, seed: int, train_s: float, answers: dict[str, set[str]], predicted: dict[str, set[str]],
          probabilities: np.ndarray, ids: list[str], classes: list[str]) -> Row:
    truth, guess = multi_hot(answers, ids, classes), multi_hot(predicted, ids, classes)
    per_class, micro, samples = f1_scores(truth, guess)
    exact = float((truth == guess).all(1).mean())
    return Row(recipe, seed, round(train_s, 1), float(per_class.mean()), micro, samples, exact,
               mean_average_precision(truth, probabilities), dict(zip(classes, per_class.round(4).tolist())))


def read_probabilities(path: Path, classes: list[str]) -> tuple[list[str], np.ndarray]:
    """(ids, [N, C] probabilities in ``classes`` order) of an id,<class>... CSV."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    missing = set(classes) - set(rows[0]) if rows else set(classes)
    if missing:
        raise SystemExit(f"{path}: no probability column for {', '.join(sorted(missing))}")
    return [r["id"] for r in rows], np.array([[float(r[c]) for c in classes] for r in rows])


def at_threshold(ids: list[str], probabilities: np.ndarray, classes: list[str], threshold: float
                 ) -> dict[str, set[str]]:
    return {i: {c for c, p in zip(classes, row) if p >= threshold} for i, row in zip(ids, probabilities)}


# --- the runs ---------------------------------------------------------------------------------------------------

def measure_clf(data: Path, runs: Path, recipe: str, recipe_args: list[str], seed: int, classes: list[str],
                options: argparse.Namespace) -> list[Row]:
    """Train, export, infer; two rows: the submission (clf's tuned thresholds) and the probabilities at 0.5."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", f"multilabel-{recipe}-s{seed}")
    run = runs / name
    progress(f"clf {recipe} seed {seed}: training")
    args = ["train", str(data / "train"), "--task", "multilabel", "--labels-csv", str(data / "train.csv"),
            "--id-col", multilabel_data.ID_COL, "--label-col", multilabel_data.TAGS_COL, "--arch", options.arch,
            "--seed", str(seed), "--quiet", "--out", str(runs), "--name", name, "--overwrite"]
    if options.epochs is not None:
        args += ["--epochs", str(options.epochs)]
    train_s = run_clf(*args, *recipe_args, *shlex.split(options.extra))
    check_multilabel_run(run, classes)
    run_clf("export", str(run), "--onnx")
    submission, probs = runs / f"{name}.submission.csv", runs / f"{name}.probs.csv"
    run_clf("infer", str(data / "test"), "--model", str(run / "model.onnx"), "--sample-submission",
            str(data / "sample_submission.csv"), "--label-col", multilabel_data.TAGS_COL, "--csv", str(submission),
            "--probs", str(probs), "--quiet")
    answers = multilabel_data.read_tags(data / "test_labels.csv")
    ids, probabilities = read_probabilities(probs, classes)
    tuned = score(f"clf {recipe}, {TUNED}", seed, train_s, answers, multilabel_data.read_tags(submission),
                  probabilities, ids, classes)
    fixed = score(f"clf {recipe}, {FIXED}", seed, train_s, answers, at_threshold(ids, probabilities, classes, 0.5),
                  probabilities, ids, classes)
    progress(f"clf {recipe} seed {seed}: {train_s:.0f} s, macro-F1 {tuned.macro_f1:.4f} tuned, "
             f"{fixed.macro_f1:.4f} at 0.5, mAP {tuned.map:.4f}")
    return [tuned, fixed]


def check_multilabel_run(run: Path, classes: list[str]) -> None:
    """Stop when clf trained something other than a multi-label model of the tags (e.g. one class per combination
    of tags: a clf that reads the tags column as single labels), instead of scoring it as if it were one."""
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    trained = config.get("classes", [])
    if trained != classes or config.get("train", {}).get("task") != "multilabel":
        raise SystemExit(f"{run}: clf trained {len(trained)} classes ({', '.join(trained[:3])}, ...) with task "
                         f"{config.get('train', {}).get('task')!r}, not a multi-label model of the {len(classes)} "
                         "tags; this clf does not read a tags CSV as multi-label yet")


def measure_plain(data: Path, runs: Path, seed: int, classes: list[str], options: argparse.Namespace) -> Row:
    """benchmarks/plain_multilabel.py on every training image; its tags at 0.5 scored like clf's submission."""
    predictions, probs = runs / f"plain-s{seed}.csv", runs / f"plain-s{seed}.probs.csv"
    argv = [sys.executable, str(PLAIN_SCRIPT), str(data / "train"), str(data / "train.csv"), str(data / "test"),
            str(predictions), str(probs), "--seed", str(seed)]
    if options.epochs is not None:
        argv += ["--epochs", str(options.epochs)]
    progress(f"{BASELINE} seed {seed}: training")
    seconds, output = run_command(argv)
    predict_s = float(re.search(r"predict_seconds=([0-9.]+)", output).group(1))
    ids, probabilities = read_probabilities(probs, classes)
    row = score(BASELINE, seed, seconds - predict_s, multilabel_data.read_tags(data / "test_labels.csv"),
                multilabel_data.read_tags(predictions), probabilities, ids, classes)
    progress(f"{BASELINE} seed {seed}: {row.train_s:.0f} s, macro-F1 {row.macro_f1:.4f}, mAP {row.map:.4f}")
    return row


def classes_of(data: Path) -> list[str]:
    return sorted({t for tags in multilabel_data.read_tags(data / "train.csv").values() for t in tags})


# --- the report -------------------------------------------------------------------------------------------------

def grouped(rows: list[Row]) -> dict[str, list[Row]]:
    """Rows by recipe in the order first seen, the baseline last."""
    groups: dict[str, list[Row]] = {}
    for row in sorted(rows, key=lambda r: r.recipe == BASELINE):
        groups.setdefault(row.recipe, []).append(row)
    return groups


def print_table(rows: list[Row], seeds: list[int]) -> None:
    print(f"\nmultilabel  (medians over seeds {','.join(map(str, seeds))}; clf = exported model via clf infer)")
    print(f"{'recipe':<34} {'train s':>8} {'macro-F1':>9} {'micro-F1':>9} {'samp-F1':>8} {'exact':>6} {'mAP':>6}"
          "  seeds' macro-F1")
    for recipe, group in grouped(rows).items():
        cells = " ".join(f"{median(getattr(r, c) for r in group):>{w}.4f}"
                         for c, w in zip(COLUMNS, (9, 9, 8, 6, 6)))
        each = "/".join(f"{r.macro_f1:.3f}" for r in group)
        print(f"{recipe:<34} {median(r.train_s for r in group):>8.1f} {cells}  {each}")


def print_per_class(rows: list[Row]) -> None:
    classes = list(rows[0].per_class_f1)
    width = max(7, *(len(c) for c in classes))
    print("\nper-class test F1 (medians)")
    print(f"{'recipe':<34} " + " ".join(f"{c:>{width}}" for c in classes))
    for recipe, group in grouped(rows).items():
        print(f"{recipe:<34} " + " ".join(f"{median(r.per_class_f1[c] for r in group):>{width}.3f}"
                                          for c in classes))


def print_ratios(rows: list[Row]) -> None:
    """Each row's median macro-F1 and mAP against the plain script's, and its train seconds."""
    groups = grouped(rows)
    baseline = groups.get(BASELINE)
    if not baseline:
        return
    base_f1, base_map = median(r.macro_f1 for r in baseline), median(r.map for r in baseline)
    base_s = median(r.train_s for r in baseline)
    print()
    for recipe, group in groups.items():
        if recipe == BASELINE:
            continue
        f1, mean_ap, seconds = (median(r.macro_f1 for r in group), median(r.map for r in group),
                                median(r.train_s for r in group))
        print(f"{recipe}: macro-F1 {f1:.4f} = {ratio(f1, base_f1):.3f} x the plain script's {base_f1:.4f} "
              f"({100 * (f1 - base_f1):+.2f} points); mAP {ratio(mean_ap, base_map):.3f} x; "
              f"train s {ratio(seconds, base_s):.2f} x the script's")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def median(values) -> float:
    return statistics.median(list(values))


# --- main -------------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2", help="training seeds; tables show medians over them")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="recipe names, or NAME=ARGS for an ad-hoc one")
    parser.add_argument("--arch", default="cnn")
    parser.add_argument("--epochs", type=int, default=None, help="passed to both sides only when given")
    parser.add_argument("--extra", default="", help="args appended to every clf train")
    parser.add_argument("--no-clf", action="store_true", help="measure the plain script alone")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the data set")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT, help="where the data set is built")
    parser.add_argument("--workdir", type=Path, default=None, help="run folders go here (kept)")
    parser.add_argument("--json", type=Path, default=None, help="write every measured row here")
    options = parser.parse_args(argv)
    options.seed_list = [int(s) for s in options.seeds.split(",") if s.strip()]
    options.recipe_table = {}
    for item in filter(None, (part.strip() for part in options.recipes.split(","))):
        name, sep, args = item.partition("=")
        if not sep and name not in RECIPES:
            parser.error(f"--recipes: unknown {name!r}; choose from {', '.join(RECIPES)} or give NAME=ARGS")
        options.recipe_table[name] = shlex.split(args) if sep else RECIPES[name]
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # unwinds: the run folders go
    options.data_root.mkdir(parents=True, exist_ok=True)
    data = multilabel_data.build(options.data_root, options.data_seed)
    classes = classes_of(data)
    runs = options.workdir or Path(tempfile.mkdtemp(prefix="runs-", dir=options.data_root))
    runs.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    try:
        for seed in options.seed_list:
            if not options.no_clf:
                for recipe, args in options.recipe_table.items():
                    rows += measure_clf(data, runs, recipe, args, seed, classes, options)
            rows.append(measure_plain(data, runs, seed, classes, options))
            if options.json:  # after every seed: an interrupted measurement keeps what it measured
                options.json.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    except CommandFailed as failure:
        print(f"error: {failure}", file=sys.stderr)
        return failure.returncode
    finally:
        if options.workdir is None:
            shutil.rmtree(runs, ignore_errors=True)
    print_table(rows, options.seed_list)
    print_per_class(rows)
    print_ratios(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
