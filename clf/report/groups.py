"""The fold-group section: a line per fold, the CV score with its spread, and the out-of-fold confusion; for a
multi-label group, the out-of-fold scores per class at the thresholds group.json records (tuned on those scores)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clf.data.folds import FoldGroup, OutOfFold, read_oof
from clf.errors import ClfError
from clf.run_files import OOF_FILE
from clf.serve import multilabel_metrics as mm
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
    note: str | None  # why there are no OOF scores (group not finished, oof.csv unreadable)
    oof_tags: dict[str, Any] | None = None  # multi-label: `oof_tag_scores` of oof.csv

    @property
    def cv(self) -> dict[str, Any]:
        return self.summary.cv or {}

    @property
    def multilabel(self) -> bool:
        return is_multilabel(self.summary.group)


def is_multilabel(group: FoldGroup) -> bool:
    """A `clf train --task multilabel` group (its config names the task; its record holds the tuned thresholds)."""
    return (group.config or {}).get("task") == "multilabel" or group.thresholds is not None


def group_section(folder: Path) -> GroupSection:
    """The section of the fold group in `folder`.

    Raises:
        ClfError: the group record cannot be read.
    """
    summary = _summary(folder)
    folds = run_rows([folder / name for name in summary.group.members if (folder / name).is_dir()])
    curves = png_uri(curves_png([row.curve for row in folds])) if any(row.rows for row in folds) else None
    oof, note = _read_oof(folder, summary)
    if oof is None:
        return GroupSection(summary, folds, curves, None, None, note)
    if is_multilabel(summary.group):
        return GroupSection(summary, folds, curves, None, None, None, oof_tag_scores(oof, summary.group.thresholds))
    report = classification_report(oof.label_indices(), oof.probs.argmax(axis=1), oof.classes)
    confusion = png_uri(confusion_png(report["confusion_matrix"], report["classes"]))
    return GroupSection(summary, folds, curves, report, confusion, None)


def _summary(folder: Path) -> GroupSummary:
    folder = folder.resolve()
    matches = [group for group in collect_groups(folder.parent) if group.path.resolve() == folder]
    if not matches:
        raise ClfError(f"{folder}: its fold-group record cannot be read; retrain it with `clf train --folds K "
                       "--overwrite`")
    return matches[0]


def _read_oof(folder: Path, summary: GroupSummary) -> tuple[OutOfFold | None, str | None]:
    """oof.csv of a finished group, or why there is none."""
    if not summary.group.finished or not (folder / OOF_FILE).is_file():
        return None, f"no out-of-fold predictions yet ({summary.state})"
    try:
        return read_oof(folder / OOF_FILE), None
    except ClfError as exc:
        logger.warning("%s", exc)
        return None, str(exc)


def oof_tag_scores(oof: OutOfFold, thresholds: list[float] | None) -> dict[str, Any]:
    """A multi-label group's out-of-fold scores at its thresholds (0.5 each when it records none): F1 micro / macro /
    samples, exact match, mAP, and per class the threshold, precision, recall, F1, support, AP and AUC (serve's
    multi-label metrics, as `clf eval --task multilabel` computes them)."""
    truth = oof.targets() > 0
    cut = np.asarray(thresholds if thresholds is not None else [0.5] * len(oof.classes), np.float64)
    decided = oof.probs >= cut
    table = mm.per_class(truth, decided)
    aucs = mm.per_class_auc(truth, oof.probs)
    return {
        "num_samples": len(truth), "tuned": thresholds is not None, **mm.f1s(truth, decided),
        "exact_match": float((truth == decided).all(axis=1).mean()) if len(truth) else None,
        "map": mm.mean_average_precision(truth, oof.probs),
        "per_class": {name: {"threshold": float(cut[c]), "precision": float(table.precision[c]),
                             "recall": float(table.recall[c]), "f1": float(table.f1[c]),
                             "support": int(table.support[c]),
                             "average_precision": mm.average_precision(truth[:, c], oof.probs[:, c]),
                             "auc": None if np.isnan(aucs[c]) else float(aucs[c])}
                      for c, name in enumerate(oof.classes)},
    }
