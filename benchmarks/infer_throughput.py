"""Inference throughput: `clf infer` end to end vs its two ceilings and a plain PyTorch loop.

For each model (resnet18 at 224 px: compute-bound; cnn at 64 px: decode-bound), on the same JPEGs of
256-512 px, in one run on this machine, it prints the images/s of:
  (a) `clf infer` end to end, as a subprocess (process start-up, model load and CSV writing included),
  (b) bare `session.run` on pre-decoded, pre-normalised tensors at the same batch size (the model's ceiling),
  (d) bare decode + preprocess of the same files with the same number of threads (the input ceiling),
  (c) a straightforward PyTorch eager loop (DataLoader with as many workers, same preprocessing function);
then a / ceiling and a / c, where on a CPU both stages share the cores, so ceiling = 1 / (1/b + 1/d), and on
a GPU they overlap, so ceiling = min(b, d). Targets: a >= 0.90 x ceiling for both models, a/c >= 2 for resnet18.
Medians over --repeats.

The JPEGs and the models (random-init weights through clf.models, exported through clf.export with clf
metadata) are made once under benchmarks/_data/ (git-ignored) and reused.

    python benchmarks/infer_throughput.py                        # the issue's sizes: 1500 / 20000 images
    python benchmarks/infer_throughput.py --images resnet18=500,cnn=8000 --repeats 3   # a shorter run
    python benchmarks/infer_throughput.py --device cuda [--fp16]  # on a GPU machine
    python benchmarks/infer_throughput.py --int8 --skip-torch     # int8 vs fp32 (+ agreement on real data)

With --int8 each model is also quantised exactly as `clf export --int8` does it (clf.export.int8.quantize, 64
calibration images) and (a), (b) are measured for the int8 model too, interleaved with fp32's: the int8 table gives
int8 (a) / fp32 (a) (target >= 3 for resnet18 on a VNNI CPU) and int8 (a) / its ceiling 1/(1/b8+1/d) (target >= 0.90).
Its agreement section trains the own cnn briefly on the sample competition (and on benchmarks/_data/accuracy/scenes
when benchmarks/accuracy.py has made it), exports fp32 and --int8 with `clf export`, runs `clf infer` with both on
the test images and prints top-1 agreement (and accuracies where the answers are known).
"""

from __future__ import annotations

import argparse
import math
import os
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

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from clf.config import Preprocess  # noqa: E402
from clf.data.preprocess import load_resized, normalize_batch, preprocess  # noqa: E402
from clf.system import usable_cpus  # noqa: E402

# name -> (input size, images for one run of (a) that lasts >= 20 s on a 2-core CPU)
MODELS = {"resnet18": (224, 1500), "cnn": (64, 20000)}
NUM_CLASSES = 10


# ---- data and models, made once ----


def _draw(index: int) -> np.ndarray:
    """A photo-like BGR image of 256-512 px: smooth gradients, a few shapes, sensor noise (deterministic)."""
    rng = np.random.default_rng(index)
    height, width = (int(v) for v in rng.integers(256, 513, size=2))
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.empty((height, width, 3), np.float32)
    for c in range(3):
        a, b, phase = rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), rng.uniform(0, 6.28)
        image[..., c] = 128 + 60 * np.sin((a * x + b * y) / 40 + phase)
    for _ in range(int(rng.integers(3, 8))):
        colour = [int(v) for v in rng.integers(0, 256, 3)]
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        if rng.random() < 0.5:
            cv2.circle(image, centre, int(rng.integers(10, 80)), colour, -1, cv2.LINE_AA)
        else:
            size = (int(rng.integers(20, 120)), int(rng.integers(20, 120)))
            cv2.rectangle(image, centre, (centre[0] + size[0], centre[1] + size[1]), colour, -1)
    image += rng.normal(0, 6, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def ensure_images(data: Path, count: int) -> Path:
    """data/jpeg/img_000000.jpg ... at least `count` of them; existing ones are kept."""
    folder = data / "jpeg"
    folder.mkdir(parents=True, exist_ok=True)
    missing = [i for i in range(count) if not (folder / f"img_{i:06d}.jpg").exists()]
    if missing:
        print(f"generating {len(missing)} JPEGs in {folder} (once) ...", flush=True)

        def write(i: int) -> None:
            path = folder / f"img_{i:06d}.jpg"
            tmp = path.with_name(f".{path.name}.tmp.jpg")
            cv2.imwrite(str(tmp), _draw(i), [cv2.IMWRITE_JPEG_QUALITY, 90])
            os.replace(tmp, path)

        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            list(pool.map(write, missing))
    return folder


def image_set(data: Path, count: int) -> tuple[Path, list[str]]:
    """A folder holding exactly the first `count` JPEGs (symlinks), and their paths in clf's sorted order."""
    source = ensure_images(data, count).resolve()
    folder = data / "sets" / f"n{count}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        link = folder / f"img_{i:06d}.jpg"
        if link.is_symlink() and not link.exists():  # dangling: made from another working directory
            link.unlink()
        if not link.exists():
            link.symlink_to(source / link.name)
    paths = sorted(str(p) for p in folder.iterdir() if p.suffix == ".jpg")
    assert len(paths) == count, f"{folder} has {len(paths)} images, expected {count}: delete it"
    return folder, paths


def ensure_model(data: Path, arch: str, size: int, fp16: bool):
    """The torch module (random init, seed 0) and its .onnx with clf metadata, exported once."""
    import onnx
    import torch

    from clf import __version__
    from clf.export.graph import convert_to_fp16, export_graph, set_metadata
    from clf.models.registry import create_model
    from clf.serve.metadata import ModelInfo, info_to_props

    torch.manual_seed(0)
    model = create_model(arch, num_classes=NUM_CLASSES, img_size=size).eval()
    pre = Preprocess(size=(size, size))
    path = data / "models" / f"{arch}_{size}{'_fp16' if fp16 else ''}.onnx"
    if not path.exists():
        print(f"exporting {arch} @{size} to {path} (once) ...", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp.onnx")
        export_graph(model, size, tmp)
        graph = onnx.load(str(tmp))
        if fp16:
            graph = convert_to_fp16(graph)
        info = ModelInfo([f"class_{i}" for i in range(NUM_CLASSES)], pre, arch=arch, img_size=size,
                         clf_version=__version__, run_name="benchmark")
        set_metadata(graph, info_to_props(info))
        onnx.save(graph, str(tmp))
        os.replace(tmp, path)
    return model, path, pre


# ---- the four measurements (images/s) ----


def rate_clf_infer(folder: Path, model_path: Path, count: int, args: argparse.Namespace) -> float:
    """(a) `clf infer` as a user runs it: a fresh process, start-up and CSV included."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "clf", "infer", str(folder), "--model", str(model_path),
                   "--csv", f"{tmp}/submission.csv", "--batch-size", str(args.batch_size), "--device", args.device,
                   "--quiet"]
        if args.threads:
            command += ["--threads", str(args.threads)]
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"clf infer failed ({proc.returncode}):\n{proc.stderr}")
        rows = sum(1 for _ in open(f"{tmp}/submission.csv")) - 1
        assert rows == count, f"clf infer wrote {rows} rows for {count} images"
    return count / seconds


def rate_session(model_path: Path, paths: list[str], pre: Preprocess, args: argparse.Namespace) -> float:
    """(b) bare session.run at the same batch size on tensors decoded beforehand (distinct real batches, cycled)."""
    from clf.serve.session import create_session

    session, _ = create_session(model_path, device=args.device)
    name = session.get_inputs()[0].name
    distinct = min(len(paths), 8 * args.batch_size)
    tensors = np.stack([preprocess(p, pre) for p in paths[:distinct]])
    batches = [tensors[i : i + args.batch_size] for i in range(0, distinct, args.batch_size)]
    session.run(None, {name: batches[0]})  # warm-up: allocations, kernel choice
    done, k = 0, 0
    start = time.perf_counter()
    while done < len(paths):
        batch = batches[k % len(batches)][: len(paths) - done]
        session.run(None, {name: batch})
        done += len(batch)
        k += 1
    return done / (time.perf_counter() - start)


def rate_decode(paths: list[str], pre: Preprocess, workers: int, args: argparse.Namespace) -> float:
    """(d) decode + resize + normalise the same files, `workers` threads, in batches: the input ceiling."""
    height, width = pre.size

    def chunk(part: list[str]) -> int:
        images = np.empty((len(part), height, width, 3), np.uint8)
        for row, path in enumerate(part):
            images[row] = load_resized(path, pre)
        return normalize_batch(images, pre).shape[0]

    step = max(1, args.batch_size // workers)
    parts = [paths[i : i + step] for i in range(0, len(paths), step)]
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        done = sum(pool.map(chunk, parts))
    return done / (time.perf_counter() - start)


class _Files:
    """A map-style dataset: path -> float32 (3, H, W) tensor through clf's preprocessing function."""

    def __init__(self, paths: list[str], pre: Preprocess) -> None:
        self.paths, self.pre = paths, pre

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        import torch

        return torch.from_numpy(preprocess(self.paths[index], self.pre))


def rate_torch(model, paths: list[str], pre: Preprocess, workers: int, args: argparse.Namespace) -> float:
    """(c) what a PyTorch user writes: DataLoader(workers) + model(x) in inference mode."""
    import torch

    device = torch.device("cuda" if args.device in ("cuda", "tensorrt") else "cpu")
    model = model.to(device)
    if args.fp16 and device.type == "cuda":
        model = model.half()
    loader = torch.utils.data.DataLoader(_Files(paths, pre), batch_size=args.batch_size, num_workers=workers,
                                         pin_memory=device.type == "cuda")
    done = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in loader:
            batch = batch.to(device, non_blocking=True)
            logits = model(batch.half() if args.fp16 and device.type == "cuda" else batch)
            done += int(logits.argmax(dim=1).cpu().shape[0])
    return done / (time.perf_counter() - start)


# ---- driver ----


def ensure_int8_model(data: Path, arch: str, size: int, fp32_path: Path, paths: list[str], pre: Preprocess) -> Path:
    """The fp32 model quantised once, through the code `clf export --int8` runs (64 calibration images)."""
    import onnx

    from clf.config import ExportConfig
    from clf.export.int8 import GateImages, calibration_settings, finish_model, quantize

    path = data / "models" / f"{arch}_{size}_int8.onnx"
    if not path.exists():
        print(f"quantising {arch} @{size} to {path} (once) ...", flush=True)
        images = np.stack([preprocess(p, pre) for p in paths[:64]])
        tmp = path.with_name(f".{path.stem}.tmp.onnx")
        quantize(fp32_path, tmp, images, "minmax")
        cfg = ExportConfig(checkpoint="benchmark", int8=True, calibration_images=len(images))
        settings = calibration_settings(cfg, GateImages([], "benchmark JPEGs", [], "", None), len(images))
        finish_model(tmp, onnx.load(str(fp32_path)), settings, path)
        os.replace(tmp, path)
    return path


def bench_model(arch: str, args: argparse.Namespace) -> dict[str, float]:
    size, default_count = MODELS[arch]
    count = args.images.get(arch) or args.images.get("*") or default_count
    data = Path(args.data)
    folder, paths = image_set(data, count)
    model, model_path, pre = ensure_model(data, arch, size, args.fp16)
    int8_path = ensure_int8_model(data, arch, size, model_path, paths, pre) if args.int8 else None
    workers = args.threads or min(8, usable_cpus())  # what clf infer uses when --threads is not given
    runs: dict[str, list[float]] = {"a": [], "b": [], "d": [], "c": [], "a8": [], "b8": []}
    for repeat in range(args.repeats):  # interleaved, so a slow spell on a shared machine hits every column
        runs["a"].append(rate_clf_infer(folder, model_path, count, args))
        runs["b"].append(rate_session(model_path, paths, pre, args))
        runs["d"].append(rate_decode(paths, pre, workers, args))
        if int8_path is not None:
            runs["a8"].append(rate_clf_infer(folder, int8_path, count, args))
            runs["b8"].append(rate_session(int8_path, paths, pre, args))
        if not args.skip_torch:
            runs["c"].append(rate_torch(model, paths, pre, workers, args))
        print(f"  {arch} repeat {repeat + 1}/{args.repeats}: "
              + "  ".join(f"{k}={v[-1]:.1f}" for k, v in runs.items() if v), flush=True)
    medians = {k: statistics.median(v) if v else float("nan") for k, v in runs.items()}
    a, b, d, c = medians["a"], medians["b"], medians["d"], medians["c"]
    ceiling = min(b, d) if args.device in ("cuda", "tensorrt") else 1 / (1 / b + 1 / d)
    b8 = medians["b8"]
    ceiling8 = b8 if math.isnan(b8) else min(b8, d) if args.device in ("cuda", "tensorrt") else 1 / (1 / b8 + 1 / d)
    return {"images": count, "workers": workers, **medians, "ceiling": ceiling, "a/ceiling": a / ceiling,
            "a/c": a / c if c == c else float("nan"), "ceiling8": ceiling8}


def print_int8_table(rows: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    """int8 vs fp32, `clf infer` end to end, and int8 against its own session ceiling."""
    overlap = "min(b8, d)" if args.device in ("cuda", "tensorrt") else "1/(1/b8+1/d)"
    print()
    print(f"int8 vs fp32, images/s (median of {args.repeats}); "
          "int8 = QDQ, per-channel 7-bit int8 weights, uint8 activations")
    header = ("model", "fp32 (a)", "int8 (a)", "int8/fp32 (a)", "fp32 (b)", "int8 (b)", "int8/fp32 (b)", "(d) decode",
              f"int8 ceiling {overlap}", "int8 a/ceiling")
    lines = [header]
    for arch, r in rows.items():
        lines.append((f"{arch}@{MODELS[arch][0]}", f"{r['a']:.1f}", f"{r['a8']:.1f}", f"{r['a8'] / r['a']:.2f}",
                      f"{r['b']:.1f}", f"{r['b8']:.1f}", f"{r['b8'] / r['b']:.2f}", f"{r['d']:.1f}",
                      f"{r['ceiling8']:.1f}", f"{r['a8'] / r['ceiling8']:.2f}"))
    _print_lines(lines)
    print("targets: int8/fp32 (a) >= 3.0 for resnet18 (VNNI CPU), int8 a/ceiling >= 0.90")


def _print_lines(lines: list[tuple[str, ...]]) -> None:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for n, line in enumerate(lines):
        print("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


# ---- int8 agreement on real data: trained models, `clf export --int8`, `clf infer` both ----


def _clf(*args: str, allowed: tuple[int, ...] = (0,)) -> str:
    proc = subprocess.run([sys.executable, "-m", "clf", *args], capture_output=True, text=True, cwd=REPO)
    if proc.returncode not in allowed:
        raise SystemExit(f"clf {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def _read_labels(path: Path) -> dict[str, str]:
    import csv

    with open(path, newline="") as handle:
        return {row["id"]: row["label"] for row in csv.DictReader(handle)}


def agreement_on(name: str, competition: Path, work: Path, epochs: int) -> tuple[str, ...]:
    """Train the own cnn on `competition`/train, export fp32 and int8, infer both on `competition`/test."""
    runs = work / "runs"
    run = runs / name
    if not (run / "best.pt").exists():
        print(f"training cnn on {name} ({epochs} epochs) ...", flush=True)
        _clf("train", str(competition / "train"), "--arch", "cnn", "--epochs", str(epochs), "--out", str(runs),
             "--name", name, "--device", "cpu", "--quiet")
    _clf("export", str(run), "--onnx")
    out = _clf("export", str(run), "--onnx", "--int8", allowed=(0, 3))  # 3: the gate refused it (kept aside)
    gate = " ".join(line.split("│")[2].strip() for line in out.splitlines() if "top-1 agreement" in line)
    if "verdict" in out and "FAIL" in out.split("verdict", 1)[1]:  # the gate refused it: no int8 model to run
        return name, "-", "-", "-", f"FAILED, kept aside: {gate}"
    csvs = {}
    for model in ("model.onnx", "model_int8.onnx"):
        csvs[model] = work / f"{name}-{model}.csv"
        _clf("infer", str(competition / "test"), "--model", str(run / model), "--csv", str(csvs[model]), "--quiet")
    fp32, int8 = _read_labels(csvs["model.onnx"]), _read_labels(csvs["model_int8.onnx"])
    agree = sum(fp32[k] == int8[k] for k in fp32) / len(fp32)
    answers = competition / "test_labels.csv"
    accuracy = "n/a"
    if answers.exists():
        truth = _read_labels(answers)
        acc = [sum(p[k] == truth[k] for k in truth) / len(truth) for p in (fp32, int8)]
        accuracy = f"fp32 {acc[0]:.3f}, int8 {acc[1]:.3f}"
    return name, str(len(fp32)), f"{agree:.2%}", accuracy, gate


def print_agreement(args: argparse.Namespace) -> None:
    data = Path(args.data)
    work = data / "int8-agreement"
    sample = work / "sample"
    if not (sample / "test").exists():
        _clf("sample-data", str(sample), "--test", "400")
    benches = [("sample competition", sample)]
    scenes = data / "accuracy" / "scenes"
    if (scenes / "train").is_dir():
        benches.append(("scenes", scenes))
    lines = [("data", "test images", "top-1 agreement (clf infer)", "accuracy", "export gate (validation)")]
    for name, folder in benches:
        lines.append(agreement_on(name.split()[0], folder, work, args.agreement_epochs))
        print("  " + "  |  ".join(lines[-1]), flush=True)  # each row as soon as it is known
    print()
    print("int8 vs fp32 top-1 agreement, own cnn trained here, `clf infer` on the test images")
    _print_lines(lines)
    print("target: agreement >= 99%")


def print_table(rows: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    import onnxruntime
    import torch

    overlap = "min(b, d)" if args.device in ("cuda", "tensorrt") else "1/(1/b+1/d)"
    print()
    print(f"clf infer throughput, images/s (median of {args.repeats}); {os.cpu_count()} CPU cores, device "
          f"{args.device}{' fp16' if args.fp16 else ''}, batch {args.batch_size}; onnxruntime "
          f"{onnxruntime.__version__}, torch {torch.__version__}, OpenCV {cv2.__version__}")
    header = ("model", "images", "threads", "(a) clf infer", "(b) session", "(d) decode", f"ceiling {overlap}",
              "(c) torch", "a/ceiling", "a/c")
    lines = [header]
    for arch, r in rows.items():
        size = MODELS[arch][0]
        lines.append((f"{arch}@{size}", str(r["images"]), str(r["workers"]), f"{r['a']:.1f}", f"{r['b']:.1f}",
                      f"{r['d']:.1f}", f"{r['ceiling']:.1f}", f"{r['c']:.1f}", f"{r['a/ceiling']:.2f}",
                      f"{r['a/c']:.2f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for n, line in enumerate(lines):
        print("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print("targets: a/ceiling >= 0.90 (both models), a/c >= 2.0 (resnet18)")


def _counts(text: str) -> dict[str, int]:
    """"300" -> {"*": 300}; "resnet18=300,cnn=4000" -> {"resnet18": 300, "cnn": 4000}."""
    if "=" not in text:
        return {"*": int(text)}
    pairs = (part.split("=", 1) for part in text.split(",") if part.strip())
    return {name.strip(): int(value) for name, value in pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,cnn", help="comma-separated: resnet18, cnn")
    parser.add_argument("--images", type=_counts, default={},
                        help="images per model: N for every model, or resnet18=N,cnn=M (default: 1500 and 20000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="decode threads (default: clf infer's default)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "tensorrt"))
    parser.add_argument("--fp16", action="store_true", help="fp16 ONNX (and half torch model) on a GPU")
    parser.add_argument("--skip-torch", action="store_true", help="leave out (c)")
    parser.add_argument("--data", default=str(HERE / "_data"), help="cache folder for images and models")
    parser.add_argument("--int8", action="store_true", help="also int8 (a) and (b), and the int8 agreement section")
    parser.add_argument("--agreement-epochs", type=int, default=15, help="--int8: epochs of the cnn trained for it")
    parser.add_argument("--no-agreement", action="store_true", help="--int8: leave out the agreement section")
    args = parser.parse_args()
    if args.int8 and (args.fp16 or args.device != "cpu"):
        parser.error("--int8 measures CPU inference: leave out --fp16 and --device")
    if args.int8 and not args.models.strip():  # --models "": the agreement section alone
        print_agreement(args)
        return
    rows = {}
    for arch in [m.strip() for m in args.models.split(",") if m.strip()]:
        if arch not in MODELS:
            parser.error(f"unknown model {arch!r}; choose from {', '.join(MODELS)}")
        rows[arch] = bench_model(arch, args)
    print_table(rows, args)
    if args.int8:
        print_int8_table(rows, args)
        if not args.no_agreement:
            print_agreement(args)


if __name__ == "__main__":
    main()
