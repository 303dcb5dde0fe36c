"""The plain multi-label script a competent competitor writes: the baseline of benchmarks/multilabel.py.

    python benchmarks/plain_multilabel.py TRAIN_DIR TRAIN_CSV TEST_DIR OUT.csv PROBS.csv [--seed S] [--epochs 30]

TRAIN_CSV holds id,tags (space-separated; id = the image's file stem in TRAIN_DIR). Writes id,tags for every image
in TEST_DIR (the tags whose sigmoid probability is >= 0.5) and PROBS.csv (id, one probability column per tag, tags
sorted). benchmarks/plain_script.py's recipe, unchanged but for the loss: its 4-block CNN, INTER_AREA to 64x64,
AdamW lr 3e-3 with weight decay 0.05, OneCycleLR, batch 64, 30 epochs on every training image (no hold-out, last
epoch), random horizontal and vertical flips; binary cross-entropy on the multi-hot targets (BCEWithLogitsLoss),
fixed threshold 0.5.
"""

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from plain_script import BATCH, LR, flip, model_for, tensor

THRESHOLD = 0.5


def read_tags(path: Path) -> list[tuple[str, list[str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        return [(row["id"], row["tags"].split()) for row in csv.DictReader(f)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("train", type=Path)
    parser.add_argument("train_csv", type=Path)
    parser.add_argument("test", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("probs", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rows = read_tags(args.train_csv)
    classes = sorted({tag for _, tags in rows for tag in tags})
    files = {p.stem: p for p in args.train.iterdir() if p.is_file()}
    x = tensor([files[image_id] for image_id, _ in rows])
    y = torch.tensor([[float(c in tags) for c in classes] for _, tags in rows])
    model = model_for(len(classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.05)
    steps = args.epochs * ((len(y) + BATCH - 1) // BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR, total_steps=steps)
    loss_fn = nn.BCEWithLogitsLoss()
    for _ in range(args.epochs):
        model.train()
        for batch in torch.randperm(len(y)).split(BATCH):
            loss = loss_fn(model(flip(x[batch])), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    predicting = time.perf_counter()
    test = sorted(p for p in args.test.iterdir() if p.is_file())
    with torch.no_grad():
        chunks = np.array_split(test, max(1, len(test) // 256))
        probs = torch.cat([torch.sigmoid(model(tensor(chunk))) for chunk in chunks]).numpy()
    with args.out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "tags"])
        writer.writerows((p.stem, " ".join(c for c, q in zip(classes, row) if q >= THRESHOLD))
                         for p, row in zip(test, probs))
    with args.probs.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", *classes])
        writer.writerows([p.stem, *(f"{q:.6g}" for q in row)] for p, row in zip(test, probs))
    print(f"predict_seconds={time.perf_counter() - predicting:.3f}")  # the benchmark times training alone
    return 0


if __name__ == "__main__":
    sys.exit(main())
