"""The runs section: the `clf runs` columns plus each run's recipe and sittings, and their curves overlaid."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from clf.errors import one_line
from clf.run_files import HISTORY_FILE, read_config, train_settings
from clf.train.history import read_history_csv, sitting_of
from clf.train.runs import RunSummary, summarize_run

from clf.report.plots import Curve

logger = logging.getLogger(__name__)

# The training settings a recipe line shows, as "flag value" (the rest are in the run's config.json).
RECIPE_FIELDS = ("optimizer", "lr", "scheduler", "weight_decay", "augment", "mixup", "cutmix", "label_smoothing",
                 "ema", "loss", "pretrained")


@dataclass(frozen=True)
class RunRow:
    """One line of the runs table."""

    summary: RunSummary
    recipe: str
    sittings: int
    rows: list[dict[str, Any]]  # history.csv

    @property
    def curve(self) -> Curve:
        return Curve(self.summary.name, self.rows)


def run_row(run_dir: Path, name: str | None = None) -> RunRow | None:
    """The table line of one run folder; None (logged) when its config or history cannot be read."""
    try:
        summary = summarize_run(run_dir)
        train = train_settings(read_config(run_dir))
        history = run_dir / HISTORY_FILE
        rows = read_history_csv(history) if history.is_file() else []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("%s: unreadable run folder (%s); left out of the report", run_dir, one_line(exc))
        return None
    if name is not None:
        summary = replace(summary, name=name)
    return RunRow(summary, recipe(train), max((sitting_of(row) for row in rows), default=1), rows)


def run_rows(run_dirs: list[Path]) -> list[RunRow]:
    """The table lines of `run_dirs`, in order; unreadable runs left out. Runs named alike get their parent's name
    too (fold-0 of two groups)."""
    names = [run.name for run in run_dirs]
    rows = []
    for run in run_dirs:
        name = run.name if names.count(run.name) == 1 else f"{run.parent.name}/{run.name}"
        row = run_row(run, name)
        if row is not None:
            rows.append(row)
    return rows


def recipe(train: dict[str, Any]) -> str:
    """The settings that tell runs of one arch apart: "optimizer adamw, lr 0.003, scheduler cosine, ..."."""
    parts = []
    for field_name in RECIPE_FIELDS:
        value = train.get(field_name)
        if value in (None, False, 0, 0.0, "", "none") and field_name not in ("lr",):
            continue
        parts.append(f"{field_name.replace('_', ' ')} {_short(value)}")
    return ", ".join(parts)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
