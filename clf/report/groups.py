"""The fold-group section: a line per fold, the CV score with its spread, and the out-of-fold confusion."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clf.data.folds import read_oof
from clf.errors import ClfError
from clf.run_files import OOF_FILE
from clf.serve.metrics import classification_report, confusion_png
from clf.train.runs import GroupSummary, collect_groups

from clf.report.images import png_uri
from clf.report.plots import curves_png
from clf.report.runs import RunRow, run_rows

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupSection:
    """What the report shows of one fold group."""

    summary: GroupSummary
    folds: list[RunRow]
    curves_uri: str | None
    oof: dict[str, Any] | None  # classification_report of oof.csv (per_class, confusion_matrix, accuracy, ...)
    oof_confusion_uri: str | None
    note: str | None  # why there is no OOF confusion (group not finished, oof.csv unreadable, multi-label)

    @property
    def cv(self) -> dict[str, Any]:
        return self.summary.cv or {}


def group_section(folder: Path) -> GroupSection:
    """The section of the fold group in `folder`.

    Raises:
        ClfError: the group record cannot be read.
    """
    summary = _summary(folder)
    folds = run_rows([folder / name for name in summary.group.members if (folder / name).is_dir()])
    curves = png_uri(curves_png([row.curve for row in folds])) if any(row.rows for row in folds) else None
    oof, note = _oof_report(folder, summary)
    confusion = png_uri(confusion_png(oof["confusion_matrix"], oof["classes"])) if oof else None
    return GroupSection(summary, folds, curves, oof, confusion, note)


def _summary(folder: Path) -> GroupSummary:
    folder = folder.resolve()
    matches = [group for group in collect_groups(folder.parent) if group.path.resolve() == folder]
    if not matches:
        raise ClfError(f"{folder}: its fold-group record cannot be read; retrain it with `clf train --folds K "
                       "--overwrite`")
    return matches[0]


def _oof_report(folder: Path, summary: GroupSummary) -> tuple[dict[str, Any] | None, str | None]:
    if not summary.group.finished or not (folder / OOF_FILE).is_file():
        return None, f"no out-of-fold predictions yet ({summary.state})"
    try:
        oof = read_oof(folder / OOF_FILE)
        if any(label not in oof.classes for label in oof.labels):
            return None, "a multi-label group: its per-class scores are in `clf runs` and group.json"
        report = classification_report(oof.label_indices(), oof.probs.argmax(axis=1), oof.classes)
    except ClfError as exc:
        logger.warning("%s", exc)
        return None, str(exc)
    return report, None
