"""--class-weights: one loss weight per class, resolved once per run from its training split (or read from a file).

    auto       w_c = N / (C * n_c)                       (scikit-learn's "balanced")
    effective  w_c proportional to (1 - beta) / (1 - beta^n_c), beta 0.999 (Cui et al., 2019: the effective number
               of samples), scaled so that the weights' mean over the training samples is 1: sum_c n_c w_c = N
    FILE       a CSV with the header class,weight: every class of the data exactly once, each weight a positive
               finite number, taken as written

Multi-label runs (--task multilabel): the weights are each class's positive weight (BCE's pos_weight, the weight of
asl's positive term), resolved from the multi-hot targets of the training split:

    auto       w_c = negatives_c / positives_c, clipped to [1/100, 100] (a class on 1 image in 10,000 gets 100, not
               9,999: beyond that one image's loss swamps the batch)
    FILE       the same class,weight CSV, each class's positive weight as written
    effective  refused (TrainConfig: a single-label rule)

n_c counts the images of class c in the run's training split (never its validation images), N = sum_c n_c and C is
the class count. `auto` meets the same rule as `effective` (its mean over the training samples is 1); the losses
divide by the batch's sum of weights (clf.train.losses), so only the ratios between classes change training.

A new run resolves its weights here and records them (TrainConfig.resolved_class_weights, in config.json and every
checkpoint); a resumed run trains with the recorded weights, bit for bit, and never reads FILE again.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clf.choices import CLASS_WEIGHT_RULES
from clf.errors import ClfError, one_line
from clf.reading import read_small_regular_file

logger = logging.getLogger(__name__)

EFFECTIVE_BETA = 0.999
MAX_POSITIVE_WEIGHT = 100.0  # multi-label auto: the cap of negatives / positives (and 1 / it, its floor)
MAX_WEIGHTS_FILE_BYTES = 2**20  # a line per class
WEIGHTS_HEADER = ["class", "weight"]


def auto_weights(counts: Sequence[int]) -> tuple[float, ...]:
    """N / (C * n_c) for each class count n_c (all > 0)."""
    total, classes = sum(counts), len(counts)
    return tuple(total / (classes * count) for count in counts)


def effective_weights(counts: Sequence[int], beta: float = EFFECTIVE_BETA) -> tuple[float, ...]:
    """(1 - beta) / (1 - beta^n_c), scaled so that sum_c n_c w_c = N (mean 1 over the training samples)."""
    raw = [(1.0 - beta) / (1.0 - beta**count) for count in counts]
    scale = sum(counts) / sum(count * weight for count, weight in zip(counts, raw))
    return tuple(weight * scale for weight in raw)


RULES = {"auto": auto_weights, "effective": effective_weights}
assert tuple(RULES) == CLASS_WEIGHT_RULES  # the names users read in --help, kept in step with their rules


def positive_weights(targets: np.ndarray) -> tuple[float, ...]:
    """negatives_c / positives_c per class of multi-hot targets [N, C] (every class with positives), clipped to
    [1 / MAX_POSITIVE_WEIGHT, MAX_POSITIVE_WEIGHT]."""
    positives = targets.sum(axis=0).astype(np.float64)
    ratios = (len(targets) - positives) / positives
    return tuple(float(w) for w in np.clip(ratios, 1 / MAX_POSITIVE_WEIGHT, MAX_POSITIVE_WEIGHT))


def resolve_positive_weights(spec: str | None, classes: Sequence[str], train_targets: np.ndarray
                             ) -> tuple[float, ...] | None:
    """A multi-label run's --class-weights `spec`: each class's positive weight (None: unweighted).

    Raises:
        ClfError: auto with a class that no training image holds, or a bad weights file (read_weights_file).
    """
    if spec is None:
        return None
    if spec not in RULES:
        return read_weights_file(Path(spec), classes)
    if spec != "auto":
        raise ClfError(f"--class-weights {spec} is a single-label rule; with --task multilabel use auto or a CSV file "
                       "of class,weight")
    counts = train_targets.sum(axis=0)
    empty = [name for name, count in zip(classes, counts) if count == 0]
    if empty:
        raise ClfError(f"--class-weights auto: no training image holds class '{empty[0]}' in this split, so it has "
                       "no positive weight; give its weight in a CSV file (class,weight) or leave --class-weights out")
    weights = positive_weights(train_targets)
    logger.info("positive weights (auto): %s", ", ".join(f"{name} {w:.3g}" for name, w in zip(classes, weights)))
    return weights


def resolve_class_weights(spec: str | None, classes: Sequence[str], train_labels: Sequence[int]
                          ) -> tuple[float, ...] | None:
    """The weights of --class-weights `spec` (None: unweighted) for `classes`, in class order.

    Args:
        train_labels: the class index of each training image (the counts of the rules).

    Raises:
        ClfError: a rule with a class that has no training image, or a bad weights file (read_weights_file).
    """
    if spec is None:
        return None
    if spec not in RULES:
        return read_weights_file(Path(spec), classes)
    counts = [0] * len(classes)
    for label in train_labels:
        counts[label] += 1
    empty = [name for name, count in zip(classes, counts) if count == 0]
    if empty:
        raise ClfError(f"--class-weights {spec}: class '{empty[0]}' has no training images in this split, so it has "
                       "no weight; give its weights in a CSV file (class,weight) or leave --class-weights out")
    weights = RULES[spec](counts)
    logger.info("class weights (%s): %s", spec, ", ".join(f"{name} {w:.3g}" for name, w in zip(classes, weights)))
    return weights


def read_weights_file(path: Path, classes: Sequence[str]) -> tuple[float, ...]:
    """The weights a class,weight CSV gives, in class order.

    Raises:
        ClfError: one line naming the file and the problem: unreadable, another header, a class missing, unknown or
            given twice, a weight that is not a positive finite number.
    """
    rows = _weights_rows(path)
    given: dict[str, float] = {}
    for name, text in rows:
        if name not in classes:
            raise ClfError(f"{path}: class '{name}' is not a class of the data ({', '.join(classes)}); "
                           "fix its name or remove the line")
        if name in given:
            raise ClfError(f"{path}: class '{name}' is given twice; give every class once")
        given[name] = _positive_weight(path, name, text)
    missing = [name for name in classes if name not in given]
    if missing:
        raise ClfError(f"{path}: class '{missing[0]}' has no weight; give every class of the data once "
                       f"({', '.join(classes)})")
    return tuple(given[name] for name in classes)


def _weights_rows(path: Path) -> list[tuple[str, str]]:
    """The (class, weight text) rows under the class,weight header."""
    try:
        text = read_small_regular_file(path, MAX_WEIGHTS_FILE_BYTES, "a class weights file")
    except FileNotFoundError:
        raise ClfError(f"{path}: class weights file not found; give auto, effective or a CSV file of class,weight"
                       ) from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or one_line(exc)  # not "[Errno 21] ...: 12" (a descriptor number)
        raise ClfError(f"{path}: cannot read the class weights file ({reason}); give a CSV file of class,weight"
                       ) from None
    lines = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    header = [cell.strip() for cell in lines[0]] if lines else []
    if header != WEIGHTS_HEADER:
        raise ClfError(f"{path}: the first line must be the header class,weight, got {','.join(header) or 'nothing'}")
    rows = []
    for row in lines[1:]:
        if len(row) != 2:
            raise ClfError(f"{path}: the row '{','.join(row)}' has {len(row)} cells; give class,weight")
        rows.append((row[0].strip(), row[1].strip()))
    return rows


def _positive_weight(path: Path, name: str, text: str) -> float:
    try:
        weight = float(text)
    except ValueError:
        raise ClfError(f"{path}: the weight of class '{name}' is '{text}', not a number; give a positive number"
                       ) from None
    if not (math.isfinite(weight) and weight > 0):
        raise ClfError(f"{path}: the weight of class '{name}' must be a positive finite number, got {text}")
    return weight
