"""Training throughput of `clf train`: fp32 (--amp off) against --amp auto, and against the bare training step.

For each (arch, image size) it prints, measured in one run on this machine:
  fp32: images/s of clf's training epochs on the sample competition with --amp off (data loading, augmentation,
      forward, backward, optimizer and scheduler steps: everything the epoch does; validation excluded),
  auto: the same with --amp auto (on the CPU: bf16 autocast / channels_last where the CPU has bf16 and the
      start-up probe shows a gain; the run's decision is printed), and the ratio auto/fp32 (target on AMX: >= 1.7;
      without bf16: >= 1, i.e. no slower),
  with --bare, (b) images/s of the same model in fp32 stepping on tensors already in memory (the ceiling), and
      fp32/b (target >= 0.90: the data pipeline costs under 10 %).
Medians over epochs / repeats; fp32 and auto runs alternate (this machine's speed drifts).

    python benchmarks/train_throughput.py [--epochs 4] [--per-class 150] [--workers 1] [--[no-]cache-images] [--bare]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from clf.config import TrainConfig
from clf.data.sample import generate_sample_competition
from clf.models.registry import create_model, model_kwargs_for
from clf.train.fit import TrainReporter, fit
from clf.train.schedule import build_optimizer, build_scheduler

CASES = (("cnn", 64), ("resnet18", 128))


class _EpochRates(TrainReporter):
    """Keeps the training images/s of each epoch (the last on_batch value is the whole epoch's rate)."""

    def __init__(self) -> None:
        self.rates: list[float] = []
        self.last = 0.0

    def batch(self, index: int, loss: float, images_per_second: float) -> None:
        self.last = images_per_second

    def epoch_end(self, row, is_best) -> None:
        self.rates.append(self.last)


def clf_epoch_rate(data: Path, out: Path, arch: str, size: int, args: argparse.Namespace, repeat: int,
                   amp: str) -> tuple[float, str]:
    """The median training images/s of a `clf train` run, and the precision it decided."""
    cfg = TrainConfig(
        data=str(data), arch=arch, img_size=size, epochs=args.epochs, batch_size=args.batch_size, workers=args.workers,
        cache_images=args.cache_images, out=str(out), name=f"{arch}-{size}-{amp}-{repeat}", quiet=True, hflip=0.5,
        rotate=10.0, amp=amp,
    )
    reporter = _EpochRates()
    result = fit(cfg, reporter=reporter)
    precision = json.loads((result.run_dir / "config.json").read_text())["train"]["precision"]
    return statistics.median(reporter.rates[1:] or reporter.rates), precision  # epoch 1 warms up


def bare_step_rate(arch: str, size: int, args: argparse.Namespace, steps_per_epoch: int) -> float:
    """Same model/optimizer/schedule/batch, tensors already in memory: the training step's ceiling."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = TrainConfig(arch=arch, img_size=size, epochs=args.epochs, batch_size=args.batch_size)
    model = create_model(arch, **model_kwargs_for(arch, 4, size)).to(device).train()
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    criterion = nn.CrossEntropyLoss()
    images = torch.randn(args.batch_size, 3, size, size, device=device)
    labels = torch.randint(0, 4, (args.batch_size,), device=device)
    rates = []
    for _ in range(args.epochs):
        start = time.perf_counter()
        for _ in range(steps_per_epoch):
            loss = criterion(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        float(loss.detach())  # wait for the device
        rates.append(steps_per_epoch * args.batch_size / (time.perf_counter() - start))
    return statistics.median(rates[1:] or rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--per-class", type=int, default=150, help="training images per class (4 classes, 80%% train)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=-1, help="DataLoader workers; -1 = clf's auto (0 on CPU)")
    parser.add_argument("--cache-images", action=argparse.BooleanOptionalAction, default=None,
                        help="default: clf's auto rule (cached when the resized images fit 2 GiB)")
    parser.add_argument("--repeats", type=int, default=3, help="(a, b) pairs measured alternately; medians printed")
    parser.add_argument("--bare", action="store_true", help="also the bare fp32 training step (the ceiling)")
    parser.add_argument("--cases", default=",".join(f"{a}@{s}" for a, s in CASES), help="e.g. cnn@64,resnet18@128")
    args = parser.parse_args()
    cases = [(c.split("@")[0], int(c.split("@")[1])) for c in args.cases.split(",")]

    cache = "auto" if args.cache_images is None else args.cache_images
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{'cuda' if torch.cuda.is_available() else 'cpu'}, workers {args.workers}, cache {cache}")
    print(f"{'arch':<10} {'size':>5} {'batch':>6} {'fp32 img/s':>11} {'auto img/s':>11} {'auto/fp32':>10} "
          f"{'decision':<20}" + (f" {'(b) bare':>9} {'fp32/b':>7}" if args.bare else "") + "   (medians)")
    with tempfile.TemporaryDirectory(prefix="clf-bench-") as tmp:
        for arch, size in cases:
            data = Path(tmp) / f"data{size}"
            if not data.exists():
                generate_sample_competition(data, seed=0, n_train_per_class=args.per_class, n_test=1, image_size=size)
            train_images = int(args.per_class * 4 * 0.8)
            steps = max(1, train_images // args.batch_size)
            # Alternate fp32 and auto: this machine's speed drifts, and a ratio of neighbours is what is comparable.
            rows = [(clf_epoch_rate(data / "train", Path(tmp) / "runs", arch, size, args, r, "off")[0],
                     *clf_epoch_rate(data / "train", Path(tmp) / "runs", arch, size, args, r, "auto"))
                    for r in range(args.repeats)]
            fp32 = statistics.median(row[0] for row in rows)
            auto = statistics.median(row[1] for row in rows)
            ratio = statistics.median(row[1] / row[0] for row in rows)
            decisions = ",".join(sorted({row[2] for row in rows}))
            spread = ", ".join(f"{row[1] / row[0]:.2f}" for row in rows)
            line = (f"{arch:<10} {size:>5} {args.batch_size:>6} {fp32:>11.1f} {auto:>11.1f} {ratio:>10.2f} "
                    f"{decisions:<20}")
            if args.bare:
                bare = statistics.median(bare_step_rate(arch, size, args, steps) for _ in range(args.repeats))
                line += f" {bare:>9.1f} {fp32 / bare:>7.2f}"
            print(line + f"   (auto/fp32 per repeat: {spread})", flush=True)

if __name__ == "__main__":
    main()
