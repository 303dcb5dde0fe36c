"""Training throughput: the full `clf train` epoch vs the model's bare training step on pre-loaded tensors.

For each (arch, image size) it prints, measured in one run on this machine:
  (a) images/s of clf's training epochs on the sample competition (data loading, augmentation, forward,
      backward, optimizer and scheduler steps: everything the epoch does; validation excluded),
  (b) images/s of the same model, optimizer and batch size stepping on tensors already in memory (the ceiling),
and the ratio a/b (target >= 0.90: the data pipeline costs under 10 %). Medians over epochs / repeats.

    python benchmarks/train_throughput.py [--epochs 4] [--per-class 150] [--workers 1] [--[no-]cache-images]
"""

from __future__ import annotations

import argparse
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


def clf_epoch_rate(data: Path, out: Path, arch: str, size: int, args: argparse.Namespace, repeat: int) -> float:
    cfg = TrainConfig(
        data=str(data), arch=arch, img_size=size, epochs=args.epochs, batch_size=args.batch_size, workers=args.workers,
        cache_images=args.cache_images, out=str(out), name=f"{arch}-{size}-{repeat}", quiet=True, hflip=0.5,
        rotate=10.0, amp="auto",
    )
    reporter = _EpochRates()
    fit(cfg, reporter=reporter)
    return statistics.median(reporter.rates[1:] or reporter.rates)  # epoch 1 warms up (workers, caches)


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
    parser.add_argument("--cases", default=",".join(f"{a}@{s}" for a, s in CASES), help="e.g. cnn@64,resnet18@128")
    args = parser.parse_args()
    cases = [(c.split("@")[0], int(c.split("@")[1])) for c in args.cases.split(",")]

    cache = "auto" if args.cache_images is None else args.cache_images
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{'cuda' if torch.cuda.is_available() else 'cpu'}, workers {args.workers}, cache {cache}")
    print(f"{'arch':<10} {'size':>5} {'batch':>6} {'(a) clf img/s':>14} {'(b) bare img/s':>15} {'a/b':>6}   (medians)")
    with tempfile.TemporaryDirectory(prefix="clf-bench-") as tmp:
        for arch, size in cases:
            data = Path(tmp) / f"data{size}"
            if not data.exists():
                generate_sample_competition(data, seed=0, n_train_per_class=args.per_class, n_test=1, image_size=size)
            train_images = int(args.per_class * 4 * 0.8)
            steps = max(1, train_images // args.batch_size)
            # Alternate (a) and (b): this machine's speed drifts, and a ratio of neighbours is what is comparable.
            pairs = [(clf_epoch_rate(data / "train", Path(tmp) / "runs", arch, size, args, r),
                      bare_step_rate(arch, size, args, steps)) for r in range(args.repeats)]
            a = statistics.median(p[0] for p in pairs)
            b = statistics.median(p[1] for p in pairs)
            ratio = statistics.median(p[0] / p[1] for p in pairs)
            spread = ", ".join(f"{p[0] / p[1]:.2f}" for p in pairs)
            print(f"{arch:<10} {size:>5} {args.batch_size:>6} {a:>14.1f} {b:>15.1f} {ratio:>6.2f}"
                  f"   (a/b per pair: {spread})", flush=True)


if __name__ == "__main__":
    main()
