"""Per-epoch history: history.csv (one row per epoch) and curves.png against the true epoch number.

Blank values: val_* without a validation split, ema_val_* without --ema, train_acc with --mixup/--cutmix (the
labels of mixed images are blends, so an accuracy on them means nothing).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from clf.atomic import atomic_write_bytes

HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "ema_val_loss", "ema_val_acc", "lr",
                   "seconds")
# Which of them curves.png draws, with their legend labels.
_CURVES = (("train", "train_"), ("val", "val_"), ("EMA val", "ema_val_"))
TRAIN_ACC_NA = "train acc n/a with mixup/cutmix"


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_history_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """history.csv: HISTORY_COLUMNS, one row per epoch (blanks: see the module docstring)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HISTORY_COLUMNS)
    for row in rows:
        writer.writerow([_format(row.get(column)) for column in HISTORY_COLUMNS])
    atomic_write_bytes(path, buffer.getvalue().encode())


def read_history_csv(path: Path) -> list[dict[str, Any]]:
    """Rows back as numbers (None for blanks)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [{k: (None if v == "" else (int(v) if k == "epoch" else float(v))) for k, v in row.items()} for row in rows]


def plot_curves(rows: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Loss and accuracy, train, val and EMA val, against the real epoch number (resumed runs continue it).

    A series with no value at all is left out; a train accuracy left blank (mixed images) says so in the legend.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in rows]
    figure = Figure(figsize=(10, 4), dpi=100)
    for axis, metric, label in zip(figure.subplots(1, 2), ("loss", "acc"), ("loss", "accuracy")):
        for label_text, prefix in _CURVES:
            values = [row.get(f"{prefix}{metric}") for row in rows]
            if any(v is not None for v in values):
                axis.plot(epochs, [float("nan") if v is None else v for v in values], marker="o", markersize=3,
                          label=label_text)
            elif prefix == "train_" and metric == "acc":
                axis.plot([], [], " ", label=TRAIN_ACC_NA)  # a legend entry only: why there is no train curve
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend()
        axis.xaxis.get_major_locator().set_params(integer=True)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())


def epoch_score(row: dict[str, Any]) -> float | None:
    """An epoch's val accuracy: the better of the raw and the EMA weights (None without a validation split)."""
    accuracies = [row.get(key) for key in ("val_acc", "ema_val_acc") if row.get(key) is not None]
    return max(accuracies) if accuracies else None
