"""The runs table (the seed's hand-kept "Tabla de entrenamientos"), derived from each run folder."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from clf.errors import one_line
from clf.train.history import epoch_score, read_history_csv

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSummary:
    name: str
    arch: str
    epochs: int
    batch_size: int
    img_size: int
    best_val_acc: float | None
    params: int
    seconds: float
    path: Path


class _NotARunConfig(ValueError):
    """config.json holds JSON but not a run's config (a list, null, a dict without "train")."""


def summarize_run(run_dir: Path) -> RunSummary:
    """Read config.json + history.csv of one run folder.

    Raises:
        OSError, ValueError, KeyError: an unreadable file or one that is not a run's (the caller skips the run).
    """
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    if not isinstance(config, dict) or not isinstance(config.get("train"), dict):
        raise _NotARunConfig("config.json is not a clf run config")
    train = config["train"]
    history_path = run_dir / "history.csv"
    rows = read_history_csv(history_path) if history_path.exists() else []
    val = [score for score in map(epoch_score, rows) if score is not None]  # the EMA weights count where they won
    return RunSummary(
        name=run_dir.name,
        arch=train["arch"],
        epochs=rows[-1]["epoch"] if rows else 0,
        batch_size=train["batch_size"],
        img_size=train["img_size"],
        best_val_acc=max(val) if val else None,
        params=int(config.get("params", 0)),
        seconds=sum(row.get("seconds") or 0.0 for row in rows),
        path=run_dir,
    )


def collect_runs(root: Path) -> list[RunSummary]:
    """Every run folder under `root` (a folder holding config.json), sorted by name; unreadable ones skipped."""
    root = Path(root)
    summaries = []
    for config in sorted(root.glob("*/config.json")):
        try:
            summaries.append(summarize_run(config.parent))
        except (OSError, ValueError, KeyError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
            logger.warning("%s: unreadable run folder (%s); skipped", config.parent, one_line(exc))
    return summaries
