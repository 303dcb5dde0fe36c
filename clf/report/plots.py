"""The report's plots as PNG bytes: overlaid loss and accuracy curves, reliability diagrams (matplotlib, Agg)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clf.train.history import sitting_starts

LOSS_AND_ACC = (("loss", "loss"), ("acc", "accuracy"))


@dataclass(frozen=True)
class Curve:
    """One run's history, as the curves plot draws it."""

    name: str
    rows: list[dict[str, Any]]


def plain_text(text: str) -> str:
    """A user string as matplotlib text: '$' would start mathtext (a run named "a$b$" is a name, not a formula)."""
    return text.replace("$", r"\$")


def figure_png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def curves_png(curves: Sequence[Curve]) -> bytes:
    """Loss and accuracy against the true epoch number, one colour per run: validation solid, training dashed.

    A resumed run's later sittings start at a dotted vertical line of its colour.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), dpi=90, layout="constrained")
    FigureCanvasAgg(figure)
    colours = [f"C{i % 10}" for i in range(len(curves))]
    for axis, (metric, label) in zip(figure.subplots(1, 2), LOSS_AND_ACC):
        for curve, colour in zip(curves, colours):
            _plot_run(axis, curve, colour, metric)
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.xaxis.get_major_locator().set_params(integer=True)
        epochs = {row["epoch"] for curve in curves for row in curve.rows}
        if len(epochs) == 1:  # one epoch: matplotlib would spread 0.96..1.04 ticks around it
            (epoch,) = epochs
            axis.set_xlim(epoch - 0.5, epoch + 0.5)
            axis.set_xticks([epoch])
    handles, labels = figure.axes[0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="outside right upper", fontsize=8)
    return figure_png(figure)


def _plot_run(axis: Any, curve: Curve, colour: str, metric: str) -> None:
    epochs = [row["epoch"] for row in curve.rows]
    for prefix, style, label in (("val_", "-", "val"), ("train_", "--", "train")):
        values = [row.get(f"{prefix}{metric}") for row in curve.rows]
        if any(value is not None for value in values):
            axis.plot(epochs, [float("nan") if v is None else v for v in values], style, color=colour, marker="o",
                      markersize=3, label=plain_text(f"{curve.name} ({label})"))
    for start in sitting_starts(curve.rows):
        axis.axvline(start - 0.5, color=colour, linestyle=":", linewidth=1)
        axis.annotate("resumed", (start - 0.5, 1), xycoords=("data", "axes fraction"), rotation=90, fontsize=7,
                      color=colour, va="top", ha="right")


@dataclass(frozen=True)
class Reliability:
    """One set of probabilities' calibration: (mean confidence, accuracy, count) per bin, and the ECE."""

    label: str
    bins: list[tuple[float, float, int]]
    ece: float


def reliability_png(curves: Sequence[Reliability]) -> bytes:
    """The reliability diagram: accuracy against confidence per bin (the diagonal is perfect calibration)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.5, 4.5), dpi=90, layout="constrained")
    FigureCanvasAgg(figure)
    axis = figure.add_subplot()
    axis.plot([0, 1], [0, 1], color="grey", linewidth=1, linestyle="--", label="perfectly calibrated")
    for index, curve in enumerate(curves):
        confidence = [point[0] for point in curve.bins]
        accuracy = [point[1] for point in curve.bins]
        axis.plot(confidence, accuracy, marker="o", color=f"C{index}",
                  label=plain_text(f"{curve.label} (ECE {curve.ece:.3f})"))
    axis.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top-1 probability)", ylabel="accuracy",
             title="reliability")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="upper left")
    return figure_png(figure)
