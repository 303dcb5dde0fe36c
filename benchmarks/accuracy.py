"""Real-data accuracy: clf's training recipes through the deployed path, beside the plain script a competitor writes.

For each benchmark (scenes, faces, textures, glyphs, tiny: see benchmarks/accuracy_data.py), recipe and seed it
runs, as a user would:

    python -m clf train TRAIN --arch ARCH --seed S --quiet RECIPE-ARGS EXTRA   (timed: train s)
    python -m clf export RUN --onnx
    python -m clf infer TEST --model RUN/model.onnx --sample-submission ... --csv sub.csv

and scores the submission against the held-out answers (test acc); best val acc is the best of the run's history.csv.
In the same run, on the same images, the baselines train and predict the test set:
- "plain script" (the baseline): benchmarks/plain_script.py as a subprocess, timed the same way (its start included,
  its test prediction excluded): a 4-block CNN, AdamW + OneCycle, label smoothing 0.1, batch 64, h+v flips, every
  training image;
- "plain, no flips": the same script without the flips (--baselines);
- "bare torch": the weak loop of earlier tables (Adam 1e-3, batch 32, no augmentation, clf's split; --baselines).
It prints one table per benchmark (medians over the seeds), each recipe's test accuracy against the baseline's, and
a summary over the benchmarks (mean test accuracy, the worst benchmark's margin, the worst time ratio).

    pip install -e '.[bench]'   # scikit-image, scikit-learn, PyWavelets: the pictures (nothing is downloaded)
    python benchmarks/accuracy.py [--bench scenes,faces,...] [--seeds 0,1,2] [--recipes defaults,none,...]
        [--baselines plain,plain-noflip,bare] [--arch cnn] [--epochs N] [--extra "--img-size 64"] [--json out.json]
        [--keep] [--workdir DIR]

--recipes takes names from RECIPES below, or ad-hoc recipes as NAME=ARGS (e.g. 'lr3e-3=--lr 3e-3'); args after
'::' go to `clf export` (e.g. 'tta=--vflip 0.5 :: --tta hvflip': the flips baked into the deployed graph). --epochs is
passed to `clf train` only when given: the defaults are part of what is measured. Data goes to
benchmarks/_data/accuracy/ (rebuilt only when its parameters change); runs go to a temporary folder there, deleted at
the end unless --keep (or --workdir, which is never deleted). Progress goes to stderr, the tables to stdout. A failing
clf command stops the script with its exit code and the tail of its output.
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
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import accuracy_data

# Recipe name -> extra `clf train` arguments. `defaults` passes nothing: what a user who types nothing gets.
RECIPES: dict[str, list[str]] = {
    "defaults": [],
    "none": ["--augment", "none"],
    "light": ["--augment", "light"],
    "default": ["--augment", "default"],
    "strong": ["--augment", "strong"],
    "default+mixup": ["--augment", "default", "--mixup", "0.2"],
    "default+ema": ["--augment", "default", "--ema", "0.999"],
    "default+mixup+ema": ["--augment", "default", "--mixup", "0.2", "--ema", "0.999"],
}
BASELINE = "plain script"  # what every recipe is compared with
PLAIN_NO_FLIPS, WEAK = "plain, no flips", "bare torch"
BASELINES = {"plain": BASELINE, "plain-noflip": PLAIN_NO_FLIPS, "bare": WEAK}
PLAIN_SCRIPT = Path(__file__).resolve().parent / "plain_script.py"
DATA_ROOT = Path(__file__).resolve().parent / "_data" / "accuracy"
BASELINE_LR, BASELINE_BATCH = 1e-3, 32
TAIL_LINES = 25  # of a failing command's output


class CommandFailed(Exception):
    """A clf command exited non-zero: its exit code and the tail of its output."""

    def __init__(self, argv: list[str], returncode: int, output: str) -> None:
        tail = "\n".join(output.strip().splitlines()[-TAIL_LINES:])
        super().__init__(f"command failed (exit {returncode}): {shlex.join(argv)}\n{tail}")
        self.returncode = returncode


@dataclass
class Row:
    """One measured (bench, recipe, seed)."""

    bench: str
    recipe: str
    seed: int
    args: list[str]
    epochs: int
    train_s: float
    best_val_acc: float
    test_acc: float
    run: str

    @property
    def gap(self) -> float:
        return self.best_val_acc - self.test_acc


# --- running clf ------------------------------------------------------------------------------------------------

def progress(message: str) -> None:
    print(f"[accuracy {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_clf(*args: str) -> float:
    """`python -m clf ARGS` with this interpreter; returns its wall seconds; raises CommandFailed on a non-zero exit."""
    return run_clf_output(*args)[0]


def run_clf_output(*args: str) -> tuple[float, str]:
    """`python -m clf ARGS`: (wall seconds, output); raises CommandFailed on a non-zero exit."""
    return run_command([sys.executable, "-m", "clf", *args])


def run_command(argv: list[str]) -> tuple[float, str]:
    """(wall seconds, output) of ``argv``; raises CommandFailed on a non-zero exit."""
    start = time.perf_counter()
    with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace") as child:
        try:
            output, _ = child.communicate()
        except BaseException:  # Ctrl-C or SIGTERM of this script: the command goes too
            child.terminate()
            raise
    seconds = time.perf_counter() - start
    if child.returncode != 0:
        raise CommandFailed(argv, child.returncode, output)
    return seconds, output


def train_args(data: Path, runs: Path, name: str, seed: int, recipe_args: list[str], options: argparse.Namespace
               ) -> list[str]:
    """The `clf train` command line of one run: common args, then the recipe's, then --extra."""
    args = ["train", str(data / "train"), "--arch", options.arch, "--seed", str(seed), "--quiet",
            "--out", str(runs), "--name", name, "--overwrite"]
    if options.epochs is not None:
        args += ["--epochs", str(options.epochs)]
    return args + recipe_args + shlex.split(options.extra)


def measure_recipe(bench: str, data: Path, runs: Path, recipe: str, recipe_args: list[str], seed: int,
                   options: argparse.Namespace) -> Row:
    """Train, export, infer and score one (recipe, seed)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{bench}-{recipe}-s{seed}")
    run = runs / name
    progress(f"{bench} {recipe} seed {seed}: training")
    train_part, export_part = split_recipe(recipe_args)
    train_s = run_clf(*train_args(data, runs, name, seed, train_part, options))
    deployed = submitted_run(run)
    run_clf("export", str(deployed), "--onnx", *export_part)
    submission = runs / f"{name}.submission.csv"  # beside the run: clf's run folder holds only clf's files
    run_clf("infer", str(data / "test"), "--model", str(deployed / "model.onnx"), "--sample-submission",
            str(data / "sample_submission.csv"), "--csv", str(submission), "--quiet")
    history, epochs = run_history(run)
    row = Row(bench, recipe, seed, recipe_args + shlex.split(options.extra), epochs, round(train_s, 1),
              max(history, default=float("nan")), accuracy(submission, data / "test_labels.csv"), str(run))
    progress(f"{bench} {recipe} seed {seed}: {row.epochs} epochs, {row.train_s:.0f} s, "
             f"val {row.best_val_acc:.4f}, test {row.test_acc:.4f}")
    return row


def submitted_run(run: Path) -> Path:
    """What a user submits: a --refit run's refit (trained on every image), else the run (or fold group) itself."""
    refit = run / "refit"
    return refit if (refit / "best.pt").is_file() else run


def run_history(run: Path) -> tuple[list[float], int]:
    """Every epoch's validation accuracy and the epoch count of a run; of a fold group (--folds K, exported as the
    ensemble of its folds), the CV mean as its one validation number and the epochs of its first fold."""
    group_record = run / "group.json"
    if group_record.is_file():
        cv = json.loads(group_record.read_text(encoding="utf-8")).get("cv") or {}
        first_fold = sorted(run.glob("fold-*/history.csv"))[0]
        return [float(cv["mean_val_acc"])] if "mean_val_acc" in cv else [], len(read_epochs(first_fold))
    return read_history(run / "history.csv"), len(read_epochs(run / "history.csv"))


def read_history(path: Path) -> list[float]:
    """The validation accuracy of every epoch in a run's history.csv."""
    with path.open(newline="", encoding="utf-8") as f:
        return [float(r["val_acc"]) for r in csv.DictReader(f) if r.get("val_acc") not in (None, "")]


def split_recipe(args: list[str]) -> tuple[list[str], list[str]]:
    """A recipe's `clf train` args, and after a "::" its `clf export` args (e.g. a baked --tta)."""
    if "::" not in args:
        return args, []
    cut = args.index("::")
    return args[:cut], args[cut + 1:]


def read_epochs(path: Path) -> list[int]:
    with path.open(newline="", encoding="utf-8") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def read_labels(path: Path) -> dict[str, str]:
    with path.open(newline="", encoding="utf-8") as f:
        return {r["id"]: r["label"] for r in csv.DictReader(f)}


def accuracy(submission: Path, answers: Path) -> float:
    """Fraction of the answers' ids whose label the submission predicts (a missing id counts as wrong)."""
    predicted, truth = read_labels(submission), read_labels(answers)
    return sum(predicted.get(i) == label for i, label in truth.items()) / len(truth)


# --- the plain script (the baseline) -----------------------------------------------------------------------------

def plain_script(bench: str, data: Path, runs: Path, seed: int, flips: bool, options: argparse.Namespace) -> Row:
    """benchmarks/plain_script.py on every training image, its test predictions scored like clf's submission."""
    recipe = BASELINE if flips else PLAIN_NO_FLIPS
    name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{bench}-{recipe}-s{seed}")
    predictions = runs / f"{name}.csv"
    argv = [sys.executable, str(PLAIN_SCRIPT), str(data / "train"), str(data / "test"), str(predictions),
            "--seed", str(seed)] + ([] if flips else ["--no-flips"])
    if options.epochs is not None:
        argv += ["--epochs", str(options.epochs)]
    progress(f"{bench} {recipe} seed {seed}: training")
    seconds, output = run_command(argv)
    predict_s = float(re.search(r"predict_seconds=([0-9.]+)", output).group(1))
    row = Row(bench, recipe, seed, [], options.epochs or 30, round(seconds - predict_s, 1), float("nan"),
              accuracy(predictions, data / "test_labels.csv"), "")
    progress(f"{bench} {recipe} seed {seed}: {row.train_s:.0f} s, test {row.test_acc:.4f}")
    return row


# --- the weak baseline of earlier tables -------------------------------------------------------------------------

def bare_baseline(bench: str, data: Path, reference_run: Path, seed: int, options: argparse.Namespace) -> Row:
    """A plain torch loop on the reference run's split, epochs and preprocessing; tested in torch on the test set.

    Keeps the weights of the best validation epoch (as clf's best.pt) and reports their test accuracy.
    """
    import torch

    from clf.config import Preprocess
    from clf.models import create_model

    config = json.loads((reference_run / "config.json").read_text(encoding="utf-8"))
    split = json.loads((reference_run / "split.json").read_text(encoding="utf-8"))
    pre = Preprocess.from_dict(config["preprocess"])
    classes: list[str] = config["classes"]
    epochs = int(config["train"]["epochs"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    progress(f"{bench} {WEAK} seed {seed}: training ({epochs} epochs at {pre.size[0]} px, {device})")

    torch.manual_seed(seed)
    start = time.perf_counter()
    root = Path(split["root"])
    train_x, train_y = load_images([root / p for p in split["train"]], classes, pre)
    val_x, val_y = load_images([root / p for p in split["val"]], classes, pre)
    model = create_model(options.arch, num_classes=len(classes), img_size=pre.size[0]).to(device)
    best_val = fit_bare(model, (train_x, train_y), (val_x, val_y), epochs, seed, device)
    train_s = time.perf_counter() - start

    answers = read_labels(data / "test_labels.csv")
    test_files = {p.stem: p for p in (data / "test").iterdir()}
    test_x, test_y = load_images([test_files[i] for i in answers], classes, pre, list(answers.values()))
    row = Row(bench, WEAK, seed, [], epochs, round(train_s, 1), best_val,
              torch_accuracy(model, test_x, test_y, device), "")
    progress(f"{bench} {WEAK} seed {seed}: {epochs} epochs, {row.train_s:.0f} s, "
             f"val {row.best_val_acc:.4f}, test {row.test_acc:.4f}")
    return row


def fit_bare(model, train: tuple, val: tuple, epochs: int, seed: int, device) -> float:
    """Adam, constant lr, shuffled batches, no augmentation; leaves the best validation epoch's weights in ``model``
    and returns that accuracy."""
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=BASELINE_LR)
    generator = torch.Generator().manual_seed(seed)
    (train_x, train_y), (val_x, val_y) = train, val
    best_val, best_state = -1.0, None
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(train_y), generator=generator).split(BASELINE_BATCH):
            loss = torch.nn.functional.cross_entropy(model(train_x[batch].to(device)), train_y[batch].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        val_acc = torch_accuracy(model, val_x, val_y, device)
        if val_acc > best_val:
            best_val, best_state = val_acc, {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return best_val


def load_images(paths: list[Path], classes: list[str], pre, labels: list[str] | None = None):
    """(N, 3, H, W) float tensor by clf's preprocess, and the labels (the parent folder's name unless given)."""
    import numpy as np
    import torch

    from clf.data.preprocess import preprocess

    names = labels if labels is not None else [p.parent.name for p in paths]
    images = torch.from_numpy(np.stack([preprocess(p, pre) for p in paths]))
    return images, torch.tensor([classes.index(n) for n in names])


def torch_accuracy(model, images, labels, device) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(x.to(device)).argmax(1).cpu() for x in images.split(256)])
    return float((predicted == labels).float().mean())


# --- the report -------------------------------------------------------------------------------------------------

def median(values: list[float]) -> float:
    return statistics.median(values)


def print_table(bench: str, rows: list[Row], seeds: list[int]) -> None:
    """recipe, epochs, train s, best val, test, gap: medians over the seeds; the baselines last (no val: n/a)."""
    print(f"\n{bench}  (medians over seeds {','.join(map(str, seeds))}; test = exported model via clf infer)")
    print(f"{'recipe':<26} {'epochs':>6} {'train s':>8} {'best val':>9} {'test':>7} {'val-test':>9}")
    for recipe, group in grouped(rows).items():
        val, gap = _median_or_nan([r.best_val_acc for r in group]), _median_or_nan([r.gap for r in group])
        print(f"{recipe:<26} {median([r.epochs for r in group]):>6g} {median([r.train_s for r in group]):>8.1f} "
              f"{_cell(val, '9.4f')} {median([r.test_acc for r in group]):>7.4f} {_cell(gap, '+9.4f')}")


def _median_or_nan(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return median(values) if values else float("nan")


def _cell(value: float, spec: str) -> str:
    width = int(spec.lstrip("+").split(".")[0])
    return f"{'n/a':>{width}}" if math.isnan(value) else format(value, spec)


def print_ratios(bench: str, rows: list[Row]) -> None:
    """Each recipe's median test accuracy against the plain script's (ratio and points), and train seconds (both
    timed as subprocesses, their start included)."""
    groups = grouped(rows)
    baseline = groups.get(BASELINE)
    if not baseline:
        return
    base, base_s = median([r.test_acc for r in baseline]), median([r.train_s for r in baseline])
    for recipe, group in groups.items():
        if recipe == BASELINE:
            continue
        test, seconds = median([r.test_acc for r in group]), median([r.train_s for r in group])
        print(f"{bench}: {recipe} test {test:.4f} = {_ratio(test, base):.3f} x plain script {base:.4f} "
              f"({100 * (test - base):+.2f} points); train s {_ratio(seconds, base_s):.2f} x the script's")


def print_summary(rows: list[Row], benches: list[str]) -> None:
    """Per recipe over the benchmarks: mean median test accuracy, its margin over the plain script's mean, the worst
    benchmark's margin, and the worst train-time ratio (the issue's targets: > 0 everywhere, >= 1 point on the
    mean, <= 1.3x)."""
    per_bench = {b: grouped([r for r in rows if r.bench == b]) for b in benches}
    if not all(BASELINE in groups for groups in per_bench.values()):
        return
    recipes = [r for r in next(iter(per_bench.values())) if all(r in g for g in per_bench.values())]
    print(f"\nsummary over {', '.join(benches)} (median test per benchmark)")
    print(f"{'recipe':<26} {'mean test':>9} {'vs plain':>9} {'worst bench':>18} {'worst time x':>12}")
    base_mean = statistics.mean(median([r.test_acc for r in g[BASELINE]]) for g in per_bench.values())
    for recipe in recipes:
        tests = {b: median([r.test_acc for r in g[recipe]]) for b, g in per_bench.items()}
        margins = {b: tests[b] - median([r.test_acc for r in g[BASELINE]]) for b, g in per_bench.items()}
        times = [_ratio(median([r.train_s for r in g[recipe]]), median([r.train_s for r in g[BASELINE]]))
                 for g in per_bench.values()]
        worst = min(margins, key=margins.get)
        mean = statistics.mean(tests.values())
        print(f"{recipe:<26} {mean:>9.4f} {100 * (mean - base_mean):>+8.2f}p "
              f"{worst + f' {100 * margins[worst]:+.2f}p':>18} {max(times):>12.2f}")


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def grouped(rows: list[Row]) -> dict[str, list[Row]]:
    """Rows by recipe, in the order first seen, the baseline last."""
    groups: dict[str, list[Row]] = {}
    for row in sorted(rows, key=lambda r: r.recipe == BASELINE):
        groups.setdefault(row.recipe, []).append(row)
    return groups


# --- main -------------------------------------------------------------------------------------------------------

def parse_recipes(text: str) -> dict[str, list[str]]:
    """'a,b,name=--flag value' -> {name: args}: names from RECIPES, or ad-hoc NAME=ARGS."""
    recipes: dict[str, list[str]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, args = item.partition("=")
        if sep:
            recipes[name] = shlex.split(args)
        elif name in RECIPES:
            recipes[name] = RECIPES[name]
        else:
            raise SystemExit(f"--recipes: unknown recipe {name!r}; choose from {', '.join(RECIPES)} or give NAME=ARGS")
    if not recipes:
        raise SystemExit("--recipes: no recipe given")
    return recipes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    benches = ",".join(accuracy_data.BENCHES)
    parser.add_argument("--bench", default=benches, help="benchmarks: " + benches)
    parser.add_argument("--seeds", default="0,1,2", help="training seeds; tables show medians over them")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="recipe names, or NAME=ARGS for an ad-hoc one")
    parser.add_argument("--arch", default="cnn")
    parser.add_argument("--epochs", type=int, default=None, help="passed to clf train only when given")
    parser.add_argument("--extra", default="", help='args appended to every clf train, e.g. "--img-size 64"')
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the data sets (crops, faces split)")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT, help="where the data sets are built")
    parser.add_argument("--workdir", type=Path, default=None, help="run folders go here (kept)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary run folders")
    parser.add_argument("--baselines", default="plain", help="baselines trained beside the recipes: "
                        "plain (the plain script: the reference), plain-noflip, bare (the weak loop); '' for none")
    parser.add_argument("--json", type=Path, default=None, help="write every measured row here")
    options = parser.parse_args(argv)
    options.benches = [b.strip() for b in options.bench.split(",") if b.strip()]
    unknown = [b for b in options.benches if b not in accuracy_data.BENCHES]
    if unknown or not options.benches:
        parser.error(f"--bench: unknown {unknown[0] if unknown else 'empty'}; "
                     f"choose from {', '.join(accuracy_data.BENCHES)}")
    options.seed_list = [int(s) for s in options.seeds.split(",") if s.strip()]
    options.recipe_table = parse_recipes(options.recipes)
    options.baseline_list = [b.strip() for b in options.baselines.split(",") if b.strip()]
    if any(b not in BASELINES for b in options.baseline_list):
        parser.error(f"--baselines: choose from {', '.join(BASELINES)}")
    return options


def measure_bench(bench: str, runs: Path, options: argparse.Namespace) -> list[Row]:
    """Every recipe and the baseline, seed by seed, on one benchmark."""
    data = accuracy_data.build(bench, options.data_root, options.data_seed)
    rows: list[Row] = []
    for seed in options.seed_list:
        seed_rows = [measure_recipe(bench, data, runs, recipe, args, seed, options)
                     for recipe, args in options.recipe_table.items()]
        rows += seed_rows
        if "plain" in options.baseline_list:
            rows.append(plain_script(bench, data, runs, seed, True, options))
        if "plain-noflip" in options.baseline_list:
            rows.append(plain_script(bench, data, runs, seed, False, options))
        if "bare" in options.baseline_list:
            rows.append(bare_baseline(bench, data, Path(seed_rows[0].run), seed, options))
    return rows


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # unwinds: the run folders go
    options.data_root.mkdir(parents=True, exist_ok=True)
    runs = options.workdir or Path(tempfile.mkdtemp(prefix="runs-", dir=options.data_root))
    rows: list[Row] = []
    try:
        for bench in options.benches:
            rows += measure_bench(bench, runs, options)
    except CommandFailed as failure:
        print(f"error: {failure}", file=sys.stderr)
        return failure.returncode
    finally:
        kept = options.workdir is not None or options.keep
        if options.json and rows:
            options.json.write_text(json.dumps([asdict(r) | {"gap": r.gap, "run": r.run if kept else ""}
                                                for r in rows], indent=1) + "\n")
        if kept:
            progress(f"run folders kept in {runs}")
        else:
            shutil.rmtree(runs, ignore_errors=True)
    for bench in options.benches:
        print_table(bench, [r for r in rows if r.bench == bench], options.seed_list)
    print()
    for bench in options.benches:
        print_ratios(bench, [r for r in rows if r.bench == bench])
    print_summary(rows, options.benches)
    return 0


if __name__ == "__main__":
    sys.exit(main())
