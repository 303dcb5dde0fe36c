"""Per-epoch history: history.csv (one row per epoch) and curves.png against the true epoch number.

Blank values: val_* without a validation split, ema_val_* without --ema, train_acc with --mixup/--cutmix (the
labels of mixed images are blends, so an accuracy on them means nothing).
"""

from __future__ import annotations

import csv
import io
import math
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


# ---------------------------------------------------------------- choosing the best checkpoint
#
# A candidate is one epoch's raw weights or its EMA weights. Its key is (val accuracy, then the lower val loss):
# accuracy alone ties as soon as validation saturates (1.00 on a small split), and a strictly-greater rule then kept
# the earliest, least-trained checkpoint although later ones validated equally well at a lower loss. The same key
# decides raw vs EMA within an epoch, best.pt across epochs, early stopping, resume and the runs table.

Key = tuple[float, float]
RAW, EMA = "raw", "ema"


def selection_key(acc: float, loss: float | None) -> Key:
    """The key of one candidate: higher is better; accuracy first, ties go to the lower loss (a missing loss last)."""
    return (acc, -math.inf if loss is None else -loss)


def epoch_candidates(row: dict[str, Any]) -> list[tuple[str, Key]]:
    """The validated weights of an epoch as (RAW | EMA, key), raw first; empty without a validation split."""
    pairs = ((RAW, "val_"), (EMA, "ema_val_"))
    return [(weights, selection_key(row[f"{prefix}acc"], row.get(f"{prefix}loss")))
            for weights, prefix in pairs if row.get(f"{prefix}acc") is not None]


def epoch_winner(row: dict[str, Any], ema_on: bool) -> str:
    """Which weights an epoch's best.pt holds: EMA when their key beats the raw weights' (a full tie keeps the raw
    ones), or when there is no validation to decide (--val-split 0: the averaged weights are what --ema asks for)."""
    if not ema_on:
        return RAW
    candidates = dict(epoch_candidates(row))
    if RAW not in candidates or EMA not in candidates:
        return EMA
    return EMA if candidates[EMA] > candidates[RAW] else RAW


def epoch_score(row: dict[str, Any]) -> Key | None:
    """An epoch's key: the better of its raw and EMA weights' (None without a validation split)."""
    keys = [key for _, key in epoch_candidates(row)]
    return max(keys) if keys else None


def epoch_acc(row: dict[str, Any]) -> float | None:
    """The val accuracy of the weights that won the epoch (None without a validation split)."""
    score = epoch_score(row)
    return None if score is None else score[0]


def best_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The epoch whose key is best; a full tie keeps the earlier epoch. None when no epoch was validated."""
    best: tuple[Key, dict[str, Any]] | None = None
    for row in rows:
        score = epoch_score(row)
        if score is not None and (best is None or score > best[0]):
            best = (score, row)
    return None if best is None else best[1]


def best_epoch(rows: list[dict[str, Any]]) -> int | None:
    """best_row's epoch number."""
    row = best_row(rows)
    return None if row is None else row["epoch"]


def patience_exhausted(rows: list[dict[str, Any]], patience: int) -> bool:
    """Early stopping: `patience` epochs (> 0) have passed since the best epoch by the key."""
    best = best_epoch(rows)
    return bool(patience) and best is not None and rows[-1]["epoch"] - best >= patience


def saturation_note(rows: list[dict[str, Any]], ema_on: bool) -> str | None:
    """The one line saying that validation accuracy saturated and val loss chose best.pt, or None.

    Only at accuracy 1.0, reached by two or more epochs. Below 1.0 a tie on accuracy broken by the loss is the key
    doing its ordinary work (with 48 validation images ties are common), and accuracy can still rise to rank later
    epochs: saying so after every such run would be noise. At 1.0 accuracy has no room left: every later epoch can
    only tie, so the choice among them was the loss's alone, and the user should know that validation stopped
    telling the checkpoints apart (a bigger split, or `--refit`, is the answer).
    """
    saturated = [row["epoch"] for row in rows if any(key[0] >= 1.0 for _, key in epoch_candidates(row))]
    best = best_row(rows)
    if len(saturated) < 2 or best is None:
        return None
    weights = "EMA" if epoch_winner(best, ema_on) == EMA else "raw"
    return (f"val accuracy 1.00 since epoch {saturated[0]}: validation can no longer rank checkpoints; "
            f"best.pt chosen by val loss (epoch {best['epoch']}, {weights} weights)")
