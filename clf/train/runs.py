"""The runs table (the seed's hand-kept "Tabla de entrenamientos"), derived from each run folder."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from clf.data.folds import FoldGroup, read_group
from clf.errors import ClfError, one_line
from clf.run_files import BEST_CKPT, CONFIG_FILE, GROUP_FILE, HISTORY_FILE, REFIT_DIR, read_config, train_settings
from clf.train.history import best_row, epoch_acc, epoch_metric, read_history_csv

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
    metric: str = "accuracy"  # what chose best.pt (--metric)
    best_metric: float | None = None  # its value for best.pt's epoch and weights


def summarize_run(run_dir: Path) -> RunSummary:
    """Read config.json + history.csv of one run folder.

    Raises:
        OSError, ValueError, KeyError: an unreadable file or one that is not a run's (the caller skips the run).
    """
    config = read_config(run_dir)
    train = train_settings(config)
    history_path = run_dir / HISTORY_FILE
    rows = read_history_csv(history_path) if history_path.exists() else []
    metric = train.get("metric") or "accuracy"  # runs before --metric: accuracy
    best = best_row(rows, metric)  # chosen as best.pt is: by the key (the metric, then loss) of the raw or EMA weights
    return RunSummary(
        name=run_dir.name,
        arch=train["arch"],
        epochs=rows[-1]["epoch"] if rows else 0,
        batch_size=train["batch_size"],
        img_size=train["img_size"],
        best_val_acc=None if best is None else epoch_acc(best, metric),
        params=int(config.get("params", 0)),
        seconds=sum(row.get("seconds") or 0.0 for row in rows),
        path=run_dir,
        metric=metric,
        best_metric=None if best is None else epoch_metric(best, metric),
    )


def collect_runs(root: Path) -> list[RunSummary]:
    """Every run folder under `root` (a folder holding config.json), sorted by name; unreadable ones skipped.

    A run's refit (OUT/NAME/refit, `clf train --refit`) follows its run, named NAME/refit. A fold group's runs sit
    one level deeper too (OUT/NAME/fold-k): they are listed by `collect_groups`, not here."""
    root = Path(root)
    summaries = []
    for config in sorted(root.glob(f"*/{CONFIG_FILE}")):
        run_dir = config.parent
        _add_run(summaries, run_dir, run_dir.name)
        if _is_refit(run_dir / REFIT_DIR):
            _add_run(summaries, run_dir / REFIT_DIR, f"{run_dir.name}/{REFIT_DIR}")
    return summaries


def _add_run(summaries: list[RunSummary], run_dir: Path, name: str) -> None:
    try:
        summaries.append(replace(summarize_run(run_dir), name=name))
    except (OSError, ValueError, KeyError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
        logger.warning("%s: unreadable run folder (%s); skipped", run_dir, one_line(exc))


def _is_refit(folder: Path) -> bool:
    """A refit's run folder: a real sub-folder (not a link: nothing outside is followed) holding config.json."""
    return folder.is_dir() and not folder.is_symlink() and (folder / CONFIG_FILE).is_file()


@dataclass(frozen=True)
class GroupSummary:
    """One fold group: its record and its member runs (those that have started)."""

    name: str
    group: FoldGroup
    members: list[RunSummary]
    path: Path

    @property
    def missing(self) -> list[str]:
        """Finished folds whose best.pt is gone (a deleted fold folder): `clf train --resume` trains them again."""
        return [name for name in self.group.members
                if name in self.group.done and not (self.path / name / BEST_CKPT).is_file()]

    @property
    def cv(self) -> dict[str, float] | None:
        """The recorded CV score while every fold it was computed over is still there."""
        return None if self.missing else self.group.cv

    @property
    def state(self) -> str:
        """"done" once the CV score is in, else how many folds have finished (and which of them are gone)."""
        missing = self.missing
        if self.group.cv is not None and self.group.finished and not missing:
            return "done"
        finished = len((set(self.group.done) & set(self.group.members)) - set(missing))
        gone = f" ({', '.join(missing)} missing)" if missing else ""
        return f"{finished}/{self.group.folds} folds{gone}"

    @property
    def seconds(self) -> float:
        return sum(run.seconds for run in self.members)


def collect_groups(root: Path) -> list[GroupSummary]:
    """Every fold group under `root` (a folder holding group.json), sorted by name; unreadable ones skipped."""
    groups = []
    for record in sorted(Path(root).glob(f"*/{GROUP_FILE}")):
        folder = record.parent
        try:
            group = read_group(folder)
        except ClfError as exc:
            logger.warning("%s; skipped", one_line(exc))
            continue
        members = []
        for name in group.members:  # plain sub-folder names (read_group checked): nothing outside is followed
            if (folder / name / CONFIG_FILE).is_file():
                try:
                    members.append(summarize_run(folder / name))
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    logger.warning("%s: unreadable run folder (%s); skipped", folder / name, one_line(exc))
        groups.append(GroupSummary(folder.name, group, members, folder))
    return groups
