"""Per-epoch history: history.csv (one row per epoch) and curves.png against the true epoch number.

Blank values: val_* without a validation split, ema_val_* without --ema, train_acc with --mixup/--cutmix (the
labels of mixed images are blends, so an accuracy on them means nothing), val_metric and ema_val_metric unless the run
chose a --metric other than accuracy (then that metric ranks the epochs: see selection_key).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from clf.atomic import atomic_write_bytes
from clf.metrics import METRICS

HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "ema_val_loss", "ema_val_acc", "lr",
                   "seconds")
METRIC_COLUMNS = ("val_metric", "ema_val_metric")  # --metric's values: written after the others by a run that has them
# Which sitting trained the epoch (1, then +1 per `clf train --resume`): written last, once a run has been resumed, so
# the history of a run trained in one go keeps its columns. A row without it (older runs) is of sitting 1.
SITTING_COLUMN = "sitting"
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
    """history.csv: HISTORY_COLUMNS (and METRIC_COLUMNS when the run has them), one row per epoch (blanks: see the
    module docstring)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = HISTORY_COLUMNS + (METRIC_COLUMNS if any(row.get(c) is not None for row in rows for c in METRIC_COLUMNS)
                                 else ())
    if any(sitting_of(row) > 1 for row in rows):
        columns += (SITTING_COLUMN,)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_format(row.get(column)) for column in columns])
    atomic_write_bytes(path, buffer.getvalue().encode())


def read_history_csv(path: Path) -> list[dict[str, Any]]:
    """Rows back as numbers (None for blanks)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    integers = ("epoch", SITTING_COLUMN)
    return [{k: (None if v == "" else (int(v) if k in integers else float(v))) for k, v in row.items()} for row in rows]


def sitting_of(row: dict[str, Any]) -> int:
    """The sitting that trained the epoch of `row` (1 when not recorded: a run before sittings were, or one row of
    a run never resumed)."""
    value = row.get(SITTING_COLUMN)
    return int(value) if value else 1


def next_sitting(rows: list[dict[str, Any]]) -> int:
    """The sitting a resumed run trains its next epochs in: one after its last epoch's."""
    return (sitting_of(rows[-1]) if rows else 0) + 1


def sitting_starts(rows: list[dict[str, Any]]) -> list[int]:
    """The first epoch of each sitting after the first (where a resumed run picked up)."""
    return [row["epoch"] for previous, row in zip(rows, rows[1:]) if sitting_of(row) != sitting_of(previous)]


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


def epoch_candidates(row: dict[str, Any], metric: str = "accuracy") -> list[tuple[str, Key]]:
    """The validated weights of an epoch as (RAW | EMA, key), raw first; empty without a validation split."""
    pairs = ((RAW, "val_"), (EMA, "ema_val_"))
    return [(weights, selection_key(_primary(row, prefix, metric), row.get(f"{prefix}loss")))
            for weights, prefix in pairs if row.get(f"{prefix}acc") is not None]


def _primary(row: dict[str, Any], prefix: str, metric: str) -> float:
    """What the key ranks first: the accuracy, or with --metric its value turned so that higher is better (log-loss
    negated); an undefined value (NaN: roc_auc without every class in the split) ranks last."""
    if metric == "accuracy":
        return row[f"{prefix}acc"]
    value = row.get(f"{prefix}metric")
    if value is None or math.isnan(value):
        return -math.inf
    return value if METRICS[metric].higher_is_better else -value


def epoch_winner(row: dict[str, Any], ema_on: bool, metric: str = "accuracy") -> str:
    """Which weights an epoch's best.pt holds: EMA when their key beats the raw weights' (a full tie keeps the raw
    ones), or when there is no validation to decide (--val-split 0: the averaged weights are what --ema asks for)."""
    if not ema_on:
        return RAW
    candidates = dict(epoch_candidates(row, metric))
    if RAW not in candidates or EMA not in candidates:
        return EMA
    return EMA if candidates[EMA] > candidates[RAW] else RAW


def epoch_score(row: dict[str, Any], metric: str = "accuracy") -> Key | None:
    """An epoch's key: the better of its raw and EMA weights' (None without a validation split)."""
    keys = [key for _, key in epoch_candidates(row, metric)]
    return max(keys) if keys else None


def epoch_acc(row: dict[str, Any], metric: str = "accuracy") -> float | None:
    """The val accuracy of the weights that won the epoch (None without a validation split)."""
    prefix = _winning_prefix(row, metric)
    return None if prefix is None else row[f"{prefix}acc"]


def epoch_metric(row: dict[str, Any], metric: str) -> float | None:
    """The --metric value (as computed, log-loss not negated) of the weights that won the epoch; None without a
    validation split or a recorded value."""
    if metric == "accuracy":
        return epoch_acc(row)
    prefix = _winning_prefix(row, metric)
    return None if prefix is None else row.get(f"{prefix}metric")


def _winning_prefix(row: dict[str, Any], metric: str) -> str | None:
    """The history columns' prefix of the weights that won the epoch ("val_" or "ema_val_"); None without one."""
    candidates = epoch_candidates(row, metric)
    if not candidates:
        return None
    winner = max(candidates, key=lambda candidate: candidate[1])[0]  # a tie: the raw weights, listed first
    return "val_" if winner == RAW else "ema_val_"


def best_row(rows: list[dict[str, Any]], metric: str = "accuracy") -> dict[str, Any] | None:
    """The epoch whose key is best; a full tie keeps the earlier epoch. None when no epoch was validated."""
    best: tuple[Key, dict[str, Any]] | None = None
    for row in rows:
        score = epoch_score(row, metric)
        if score is not None and (best is None or score > best[0]):
            best = (score, row)
    return None if best is None else best[1]


def best_epoch(rows: list[dict[str, Any]], metric: str = "accuracy") -> int | None:
    """best_row's epoch number."""
    row = best_row(rows, metric)
    return None if row is None else row["epoch"]


def patience_exhausted(rows: list[dict[str, Any]], patience: int, metric: str = "accuracy") -> bool:
    """Early stopping: `patience` epochs (> 0) have passed since the best epoch by the key."""
    best = best_epoch(rows, metric)
    return bool(patience) and best is not None and rows[-1]["epoch"] - best >= patience


def saturation_note(rows: list[dict[str, Any]], ema_on: bool, metric: str = "accuracy") -> str | None:
    """The one line saying that validation accuracy saturated and val loss chose best.pt, or None.

    Only at accuracy 1.0, reached by two or more epochs. Below 1.0 a tie on accuracy broken by the loss is the key
    doing its ordinary work (with 48 validation images ties are common), and accuracy can still rise to rank later
    epochs: saying so after every such run would be noise. At 1.0 accuracy has no room left: every later epoch can
    only tie, so the choice among them was the loss's alone, and the user should know that validation stopped
    telling the checkpoints apart (a bigger split, or `--refit`, is the answer).
    """
    if metric != "accuracy":  # the run's own metric ranks the checkpoints; accuracy's saturation says nothing of it
        return None
    saturated = [row["epoch"] for row in rows if any(key[0] >= 1.0 for _, key in epoch_candidates(row))]
    best = best_row(rows)
    if len(saturated) < 2 or best is None:
        return None
    weights = "EMA" if epoch_winner(best, ema_on) == EMA else "raw"
    return (f"val accuracy 1.00 since epoch {saturated[0]}: validation can no longer rank checkpoints; "
            f"best.pt chosen by val loss (epoch {best['epoch']}, {weights} weights)")
