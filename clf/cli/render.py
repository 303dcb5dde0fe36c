"""Where the command line prints: the rich consoles, and the progress displays that library callbacks drive.

Commands print through `render.console` (stdout: results) and `render.err_console` (stderr: errors, progress,
warnings), looked up at call time so that a test can swap them.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console

console = Console(soft_wrap=True)
err_console = Console(stderr=True)


def duration(seconds: float) -> str:
    """1h02m or 3m07s."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


class TrainProgress:
    """Draws a rich progress bar per epoch and one summary line per epoch (quiet: summary lines only)."""

    def __init__(self, show_progress: bool) -> None:
        self.show_progress = show_progress
        self.progress = None
        self.task = None
        self.epochs = 0

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        self.epochs = epochs
        if not self.show_progress:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn(f"epoch {epoch}/{epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  {task.fields[ips]:.0f} img/s"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=batches, loss=0.0, ips=0.0)

    def batch(self, index: int, loss: float, images_per_second: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=index + 1, loss=loss, ips=images_per_second)

    def epoch_end(self, row: dict[str, Any], is_best: bool) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        # train acc is None with mixup/cutmix (blended labels): "-", never a misleading number
        train_acc = "-" if row.get("train_acc") is None else f"{row['train_acc']:.4f}"
        val = ""
        if row.get("val_acc") is not None:
            val = f"  val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}"
        metric = row.get("metric")  # the run's --metric, when it is not accuracy
        if metric and row.get("val_metric") is not None:
            val += f" {metric} {row['val_metric']:.4f}"
        if row.get("ema_val_acc") is not None:
            val += f"  ema loss {row['ema_val_loss']:.4f} acc {row['ema_val_acc']:.4f}"
            if metric and row.get("ema_val_metric") is not None:
                val += f" {metric} {row['ema_val_metric']:.4f}"
        if val and is_best:
            val += "  [green]best[/]"
        console.print(
            f"epoch {row['epoch']:>3}/{self.epochs}  train loss {row['train_loss']:.4f} acc {train_acc}"
            f"{val}  lr {row['lr']:.2e}  {row['seconds']:.1f}s",
            highlight=False,
        )


class ImageProgress:
    """A rich progress bar over images, with images/s; silent when disabled (not a TTY, --quiet)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.progress = None
        self.task = None

    def __enter__(self) -> "ImageProgress":
        return self

    def start(self, total: int, provider: str) -> None:
        err_console.print(f"{total} images, onnxruntime provider: [bold]{provider}[/]", highlight=False)
        if not self.enabled:
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                                   TimeRemainingColumn)

        self.progress = Progress(TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                                 TextColumn("{task.fields[ips]:.0f} img/s"), TimeRemainingColumn(),
                                 console=console, transient=True)
        self.progress.start()
        self.task = self.progress.add_task("predict", total=total, ips=0.0)
        self.started = time.perf_counter()

    def update(self, done: int) -> None:
        if self.progress is not None:
            rate = done / max(time.perf_counter() - self.started, 1e-9)
            self.progress.update(self.task, completed=done, ips=rate)

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()


class CountProgress:
    """A rich progress bar over a count the library reports as (done, total); silent when disabled."""

    def __init__(self, what: str, enabled: bool) -> None:
        self.what = what
        self.enabled = enabled
        self.progress = None
        self.task = None

    def __enter__(self) -> "CountProgress":
        return self

    def update(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn(self.what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                     console=err_console, transient=True)
            self.progress.start()
            self.task = self.progress.add_task(self.what, total=total)
        self.progress.update(self.task, completed=done)

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()
