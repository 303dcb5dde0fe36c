"""`clf check DATA [--test TEST]`: the data report — duplicates and leakage, classes, unreadable files, image sizes.

Every image is read once through clf's decode path (clf.data.duplicates.scan_images): an unreadable file is one row
of the report, never an error. The validation side is the split `clf train` makes with the same options
(clf.data.split.labelled_split over the readable images, as training splits them). The report is plain JSON data:

    data, test, max_distance
    split       {val_split, seed, group_col, dedup, train, val, val_paths}
    classes     [{name, images}], imbalance_ratio (largest class / smallest, over the readable images)
    unreadable  [{path, reason}]
    images      {"data": stats, "test": stats}; stats = {count, width/height: {min, median, max}, modes: {RGB: n, ...}}
    duplicates  within_train {exact, near, exact_groups: [[{path, label}]], exact_conflicting_labels, near_pairs,
                              images_with_duplicate, images}  (exact: copies beyond the first of each group)
                train_val    {exact, near, exact_pairs, near_pairs, images_with_duplicate (validation images), images}
                train_test   {exact, near, exact_pairs, near_pairs, images_with_duplicate (test images), images}
                a pair = {a, b, distance, a_label, b_label}: a from training (train_test: any labelled image), b the
                other; near pairs leave out the exact ones. Lists stop at MAX_LISTED entries; the counts are complete.

Torch-free (it runs where the data is).
"""

from __future__ import annotations

import json
import logging
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from clf import system
from clf.atomic import atomic_write_text, check_outputs
from clf.config import CheckConfig
from clf.data.datasets import LabelledSet, load_labelled
from clf.data.duplicates import ImageFacts, Scan, near_pairs, scan_images, signatures
from clf.data.files import list_images
from clf.data.split import labelled_split

logger = logging.getLogger(__name__)

MAX_LISTED = 10_000  # pairs or groups per list in the report; the counts are always complete
ProgressHook = Callable[[int, int], None]  # (images read so far, of how many)


def check_data(cfg: CheckConfig, progress: ProgressHook | None = None) -> dict[str, Any]:
    """The report of `cfg.data` (and `cfg.test`); written to `cfg.json` too when given.

    Raises:
        ClfError: the data cannot be listed or labelled (a missing folder, a bad labels CSV, a missing group
            column), or --json cannot be written.
    """
    labelled = load_labelled(cfg.data, cfg.labels_csv, id_col=cfg.id_col, label_col=cfg.label_col,
                             group_col=cfg.group_col, task=cfg.task, classes=cfg.classes)
    test_paths = [str(p) for p in list_images(cfg.test, recursive=True)] if cfg.test else []
    check_outputs({"--json": cfg.json}, inputs={"--labels-csv": cfg.labels_csv},
                  input_files=[*labelled.paths, *test_paths])
    paths = [*labelled.paths, *test_paths]
    workers = cfg.threads or min(8, system.usable_cpus())
    scan = scan_images(paths, exact=True, workers=workers,
                       progress=None if progress is None else (lambda done: progress(done, len(paths))))
    report = build_report(cfg, labelled, test_paths, scan)
    if cfg.json:
        atomic_write_text(cfg.json, json.dumps(report, indent=1) + "\n")
    return report


def build_report(cfg: CheckConfig, labelled: LabelledSet, test_paths: Sequence[str], scan: Scan) -> dict[str, Any]:
    """The report from the scan of the labelled images followed by the test images."""
    count = len(labelled.paths)
    readable = [i for i in scan.readable() if i < count]
    data = replace(labelled.subset(readable), signatures=scan.signatures(readable))
    facts = [scan.facts[i] for i in readable]
    test_rows = [i for i in scan.readable() if i >= count]
    test_facts = [scan.facts[i] for i in test_rows]
    train_idx, val_idx = labelled_split(data, cfg.val_split, cfg.seed, dedup=cfg.dedup)
    items = _Items(data, facts)
    tests = _Items(None, test_facts, [test_paths[i - count] for i in test_rows])
    return {
        "data": cfg.data,
        "test": cfg.test,
        "max_distance": cfg.max_distance,
        "split": {"val_split": cfg.val_split, "seed": cfg.seed, "group_col": cfg.group_col, "dedup": cfg.dedup,
                  "train": len(train_idx), "val": len(val_idx), "val_paths": [data.paths[i] for i in val_idx]},
        **class_counts(data),
        "unreadable": [{"path": path, "reason": reason} for path, reason in scan.problems],
        "images": {"data": image_stats(facts), **({"test": image_stats(test_facts)} if cfg.test else {})},
        "duplicates": {
            "within_train": _within(items, train_idx, cfg.max_distance),
            "train_val": _across(items, train_idx, items, val_idx, cfg.max_distance),
            **({"train_test": _across(items, np.arange(len(facts)), tests, np.arange(len(test_facts)),
                                      cfg.max_distance)} if cfg.test else {}),
        },
    }


def class_counts(data: LabelledSet) -> dict[str, Any]:
    """{"task", "classes": [{name, images}], "imbalance_ratio": largest / smallest (None when a class has no image)};
    multi-label: the images holding each class, and "without_class" (images holding none)."""
    counts = data.class_counts()
    smallest, largest = min(counts.values()), max(counts.values())
    report = {"task": "multilabel" if data.multilabel else "single_label",
              "classes": [{"name": name, "images": n} for name, n in counts.items()],
              "imbalance_ratio": round(largest / smallest, 3) if smallest else None}
    if data.targets is not None:
        report["without_class"] = int((~data.targets.any(axis=1)).sum())
    return report


def image_stats(facts: Sequence[ImageFacts]) -> dict[str, Any]:
    """Width and height (min, median, max) and the stored colour layouts counted (grey, RGB, RGBA, ...)."""
    def spread(values: list[int]) -> dict[str, float] | None:
        return {"min": min(values), "median": statistics.median(values), "max": max(values)} if values else None

    modes = Counter(f.mode or "unknown" for f in facts)
    return {"count": len(facts), "width": spread([f.width for f in facts]),
            "height": spread([f.height for f in facts]), "modes": dict(sorted(modes.items()))}


class _Items:
    """One side's readable images: paths, labels (None for test images), signatures and pixel digests."""

    def __init__(self, data: LabelledSet | None, facts: Sequence[ImageFacts], paths: Sequence[str] | None = None):
        self.paths = list(data.paths if data is not None else paths or [])
        self.labels = _label_texts(data) if data is not None else [None] * len(facts)
        self.signatures = data.signatures if data is not None else _signatures(facts)
        self.digests = [f.digest for f in facts]

    def entry(self, index: int) -> dict[str, Any]:
        return {"path": self.paths[index], "label": self.labels[index]}


def _label_texts(data: LabelledSet) -> list[str]:
    """Each image's label; multi-label: its classes separated by spaces (as a tags CSV writes them)."""
    if data.targets is None:
        return [data.classes[label] for label in data.labels]
    return [" ".join(data.classes[c] for c in np.flatnonzero(row)) for row in data.targets]


def _signatures(facts: Sequence[ImageFacts]) -> np.ndarray:
    return signatures([f.signature for f in facts])


def _within(items: _Items, rows: np.ndarray, max_distance: int) -> dict[str, Any]:
    """Duplicates inside one side: exact groups (same pixels) and near pairs (not exact)."""
    by_digest: dict[str, list[int]] = defaultdict(list)
    for row in rows.tolist():
        by_digest[items.digests[row]].append(row)  # type: ignore[index]
    groups = [members for members in by_digest.values() if len(members) > 1]
    i, j, distance = near_pairs(items.signatures[rows], max_distance=max_distance)
    pairs = [(int(rows[a]), int(rows[b]), int(d)) for a, b, d in zip(i.tolist(), j.tolist(), distance.tolist())]
    near = [p for p in pairs if items.digests[p[0]] != items.digests[p[1]]]
    touched = {row for members in groups for row in members} | {row for a, b, _ in near for row in (a, b)}
    return {
        "exact_groups": _listed([[items.entry(row) for row in members] for members in groups]),
        "exact_conflicting_labels": sum(len({items.labels[row] for row in members}) > 1 for members in groups),
        "near_pairs": _listed([_pair(items, a, items, b, d) for a, b, d in near]),
        "images_with_duplicate": len(touched),
        "images": len(rows),
        **_counts(sum(len(m) - 1 for m in groups), len(near)),
    }


def _across(left: _Items, left_rows: np.ndarray, right: _Items, right_rows: np.ndarray,
            max_distance: int) -> dict[str, Any]:
    """Images of the right side (validation, test) with a copy on the left (training): exact and near pairs."""
    exact, near = [], []
    if len(left_rows) and len(right_rows):
        i, j, distance = near_pairs(left.signatures[left_rows], right.signatures[right_rows], max_distance)
        for a, b, d in zip(i.tolist(), j.tolist(), distance.tolist()):
            a, b = int(left_rows[a]), int(right_rows[b])
            # equal pixels have equal signatures: every exact copy is among the pairs (at distance 0)
            (exact if left.digests[a] == right.digests[b] else near).append((a, b, d))
    touched = {b for _, b, _ in exact + near}
    return {
        "exact_pairs": _listed([_pair(left, a, right, b, d) for a, b, d in exact]),
        "near_pairs": _listed([_pair(left, a, right, b, d) for a, b, d in near]),
        "images_with_duplicate": len(touched),
        "images": len(right_rows),
        **_counts(len(exact), len(near)),
    }


def _pair(left: _Items, a: int, right: _Items, b: int, distance: int) -> dict[str, Any]:
    return {"a": left.paths[a], "b": right.paths[b], "distance": distance, "a_label": left.labels[a],
            "b_label": right.labels[b]}


def _counts(exact: int, near: int) -> dict[str, int]:
    return {"exact": exact, "near": near}


def _listed(entries: list[Any]) -> list[Any]:
    if len(entries) > MAX_LISTED:
        logger.debug("report lists the first %d of %d entries", MAX_LISTED, len(entries))
    return entries[:MAX_LISTED]
