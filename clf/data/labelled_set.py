"""LabelledSet: image paths with their classes, the one type every labelled-data reader returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class LabelledSet:
    """Image paths with integer labels indexing ``classes`` (and, for a multi-label set, their multi-hot targets).

    Args:
        paths: image file paths.
        labels: class index of each path. In a multi-label set (``targets`` given), the index of the image's rarest
            class, or -1 for an image with no class: a stratum for the places that need one integer per image
            (the balanced sampler, a group's class profile), never a training target.
        classes: class names; label ``i`` means ``classes[i]``.
        groups: the group of each path (--group-col: a patient, a source picture), or None; a split never puts
            one group on both sides.
        signatures: the near-duplicate signature of each path (a clf.data.duplicates.SIGNATURE array), or None
            when not computed.
        targets: a multi-label set's classes per image, multi-hot uint8 [N, C] (row i, column c: image i holds
            class c), or None for a single-label set. Training targets, splits and metrics read these.
    """

    paths: list[str]
    labels: list[int]
    classes: list[str]
    groups: list[str] | None = None
    signatures: np.ndarray | None = field(default=None, compare=False, repr=False)
    targets: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")
        for name, values in (("groups", self.groups), ("signatures", self.signatures), ("targets", self.targets)):
            if values is not None and len(values) != len(self.paths):
                raise ValueError(f"{len(self.paths)} paths but {len(values)} {name}")
        if self.targets is not None and (self.targets.ndim != 2 or self.targets.shape[1] != len(self.classes)):
            raise ValueError(f"targets of shape {self.targets.shape} for {len(self.classes)} classes")
        lowest = -1 if self.targets is not None else 0  # a multi-label image may hold no class
        bad = [label for label in self.labels if not lowest <= label < len(self.classes)]
        if bad:
            raise ValueError(f"label {bad[0]} out of range for {len(self.classes)} classes")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def multilabel(self) -> bool:
        """Whether each image holds any number of classes (``targets``) rather than exactly one."""
        return self.targets is not None

    def subset(self, indices: Sequence[int]) -> LabelledSet:
        """The items at ``indices`` (any int sequence or numpy array), same classes."""
        idx = [int(i) for i in indices]
        groups = None if self.groups is None else [self.groups[i] for i in idx]
        rows = np.asarray(idx, dtype=np.int64)
        sigs = None if self.signatures is None else self.signatures[rows]
        targets = None if self.targets is None else self.targets[rows]
        return LabelledSet([self.paths[i] for i in idx], [self.labels[i] for i in idx], list(self.classes), groups,
                           sigs, targets)

    def class_counts(self) -> dict[str, int]:
        """Number of items per class name, in class order, zeros included (multi-label: images holding it)."""
        if self.targets is not None:
            return dict(zip(self.classes, (int(n) for n in self.targets.sum(axis=0))))
        counts = [0] * len(self.classes)
        for label in self.labels:
            counts[label] += 1
        return dict(zip(self.classes, counts))
