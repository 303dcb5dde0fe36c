"""What the Predictor hands out: `PredictionResult` for a whole call, `Batch` for one streamed batch.

The result asks its task (clf.tasks) what the logits mean: its activation gives the probabilities, its decision rule
the labels. numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from clf.tasks import SINGLE_LABEL, Task


@dataclass
class PredictionResult:
    """Predictions for the sources that decoded, plus the ones that did not.

    Attributes:
        sources: every input, in the order given.
        logits: float32 [N_ok, C], row r belongs to ``sources[ok_indices[r]]``.
        ok_indices: int64 [N_ok], ascending indices into ``sources``.
        failures: (source, reason) for each input that could not be read, in input order.
        classes: class names; column c of ``logits`` is ``classes[c]``.
        plain_logits: with TTA, the logits of the unflipped view alone (the model without TTA, from the same
            session runs), rows as ``logits``; None without TTA.
        task: what the logits mean (clf.tasks): its activation gives ``probs``, its decision rule the labels.
    """

    sources: list[Any]
    logits: np.ndarray
    ok_indices: np.ndarray
    failures: list[tuple[Any, str]] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    plain_logits: np.ndarray | None = None
    task: Task = SINGLE_LABEL

    def __len__(self) -> int:
        return len(self.ok_indices)

    @property
    def ok_sources(self) -> list[Any]:
        """The sources that were predicted, aligned with the rows of ``logits``."""
        return [self.sources[i] for i in self.ok_indices]

    def probs(self) -> np.ndarray:
        """The task's scores of the logits (softmax; multi-label: sigmoid per class), float32 [N_ok, C]."""
        return self.task.scores(self.logits)

    def top1(self) -> np.ndarray:
        """Index of the best class per row, int64 [N_ok] (ties -> lowest index), also for a multi-label model."""
        return self.logits.argmax(-1) if len(self.logits) else np.zeros(0, np.int64)

    def tags(self) -> list[list[str]]:
        """Per row, the names of the classes the task decides (multi-label: each one reaching its threshold, in
        class order; single-label: the best class alone)."""
        if not self.task.multilabel:
            return [[label] for label in self.labels()]
        return [[self.classes[c] for c in np.flatnonzero(row)] for row in self.task.decide(self.logits)]

    def labels(self) -> list[str]:
        """What the submission's label cell holds per row: the best class; for a multi-label model its tags,
        space-separated in class order ("" when no class reaches its threshold), as Kaggle's multi-label
        competitions take them."""
        if self.task.multilabel:
            return [" ".join(row) for row in self.tags()]
        return [self.classes[i] for i in self.top1()]

    def topk(self, k: int) -> np.ndarray:
        """Indices of the k best classes per row, best first, int64 [N_ok, min(k, C)]."""
        return self.task.ranked(self.logits, k)

    def topk_labels(self, k: int) -> list[list[str]]:
        """Names of the k best classes per row, best first."""
        return [[self.classes[i] for i in row] for row in self.topk(k)]


class Batch(NamedTuple):
    """One batch out of ``Predictor.iter_predict``."""

    ok_indices: np.ndarray  # int64 [n_ok], indices into the sources
    logits: np.ndarray  # float32 [n_ok, C]
    failures: list[tuple[Any, str]]  # (source, reason)
