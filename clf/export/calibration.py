"""Temperature scaling for `clf export --calibrate`: one T > 0 that minimises the NLL of softmax(logits / T).

The logits are the deployed module's (members, weights, average, views) on the first run's validation images, or,
for a fold group, the log of its out-of-fold probabilities (each image predicted by the fold that did not train on
it: the ensemble's own predictions on those images would be over-confident). Golden-section search on log T: the NLL
is convex in 1/T, so unimodal in log T.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from clf import probabilities
from clf.config import Preprocess
from clf.data.folds import OOF_FILE, read_oof
from clf.data.preprocess import preprocess
from clf.errors import DataError
from clf.probabilities import expected_calibration_error, log_loss

logger = logging.getLogger(__name__)

T_RANGE = (0.01, 100.0)  # searched on a log scale; a fit at either end says the logits carry no usable scale
MAX_CALIBRATION_IMAGES = 10_000  # spread over the validation list: plenty for one parameter
PROB_SUM_TOLERANCE = 1e-3  # an oof.csv row's sum may miss 1 by this much (6 significant digits a value)
_GOLDEN = (math.sqrt(5) - 1) / 2


@dataclass(frozen=True)
class CalibrationReport:
    """The temperature fitted, on what, and NLL / ECE (15 bins) of the probabilities before and after."""

    temperature: float
    images: int
    source: str
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float

    def to_dict(self) -> dict:
        return asdict(self)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, the precision the fit and its scores work in."""
    return probabilities.softmax(logits, np.float64)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(logits / T) at the true labels (exact, no clipping)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    top = z.max(axis=1, keepdims=True)
    log_norm = (top + np.log(np.exp(z - top).sum(axis=1, keepdims=True)))[:, 0]
    return float(np.mean(log_norm - z[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: Sequence[int], tol: float = 1e-6) -> float:
    """The T in T_RANGE minimising `nll(logits, labels, T)` (golden-section search on log T)."""
    y = np.asarray(labels, dtype=np.int64)
    lo, hi = math.log(T_RANGE[0]), math.log(T_RANGE[1])
    a, b = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
    fa, fb = nll(logits, y, math.exp(a)), nll(logits, y, math.exp(b))
    while hi - lo > tol:
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - _GOLDEN * (hi - lo)
            fa = nll(logits, y, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + _GOLDEN * (hi - lo)
            fb = nll(logits, y, math.exp(b))
    return math.exp((lo + hi) / 2)


def calibrate(logits: np.ndarray, labels: Sequence[int], source: str) -> CalibrationReport:
    """Fit T on (logits, labels) and score the probabilities before and after."""
    y = np.asarray(labels, dtype=np.int64)
    temperature = fit_temperature(logits, y)
    before, after = softmax(logits), softmax(np.asarray(logits, dtype=np.float64) / temperature)
    report = CalibrationReport(
        temperature=temperature, images=len(y), source=source,
        nll_before=log_loss(before, y), nll_after=log_loss(after, y),
        ece_before=expected_calibration_error(before, y), ece_after=expected_calibration_error(after, y),
    )
    if not T_RANGE[0] * 1.01 < temperature < T_RANGE[1] / 1.01:
        logger.warning("temperature %.4g is at the edge of the range searched (%g to %g) on %d images (%s): the "
                       "model's confidence carries little information there; check its accuracy", temperature,
                       *T_RANGE, len(y), source)
    logger.debug("temperature %.4g fitted on %d images (%s): NLL %.4f -> %.4f, ECE %.4f -> %.4f", temperature, len(y),
                source, report.nll_before, report.nll_after, report.ece_before, report.ece_after)
    return report


def oof_logits(group: Path, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray, str]:
    """A fold group's out-of-fold log-probabilities (used as logits), labels, and where they come from.

    Raises:
        DataError: oof.csv missing or unreadable, or listing other classes than the members'.
    """
    path = group / OOF_FILE
    if not path.is_file():
        raise DataError(f"{path}: not found; --calibrate on a fold group fits on its out-of-fold predictions "
                        "(finish the group with `clf train --resume`)")
    oof = read_oof(path)
    if list(oof.classes) != list(classes):
        raise DataError(f"{path}: its classes are {oof.classes}, the members have {list(classes)}; "
                        "retrain the group with --overwrite")
    if not oof.ids:
        raise DataError(f"{path}: no out-of-fold predictions to calibrate on")
    check_probabilities(path, oof.probs, list(classes))
    logits = np.log(np.clip(oof.probs, 1e-12, None))
    return logits, oof.label_indices(), f"out-of-fold predictions of {group.name}"


def check_probabilities(path: Path, probs: np.ndarray, classes: Sequence[str]) -> None:
    """Every row of oof.csv must be a probability distribution: each value from 0 to 1, the row summing to 1 within
    PROB_SUM_TOLERANCE (clf writes 6 significant digits). A temperature fitted on anything else means nothing.

    Raises:
        DataError: naming the file, the line (the header is line 1) and what is wrong; the first bad row only.
    """
    fix = "it must hold the probabilities clf wrote: retrain the group with --overwrite to rewrite it"
    for row, values in enumerate(np.asarray(probs, dtype=np.float64)):
        line = row + 2
        bad = [(name, value) for name, value in zip(classes, values) if not (math.isfinite(value) and 0 <= value <= 1)]
        if bad:
            name, value = bad[0]
            raise DataError(f"{path}: line {line} has {value:g} for class {name!r}, not a probability from 0 to 1; "
                            f"{fix}")
        total = float(values.sum())
        if abs(total - 1.0) > PROB_SUM_TOLERANCE:
            raise DataError(f"{path}: line {line}'s probabilities sum to {total:.6g}, not 1; {fix}")


def labelled_validation_images(run_folder: Path, classes: Sequence[str], pre: Preprocess,
                               limit: int = MAX_CALIBRATION_IMAGES) -> tuple[np.ndarray, np.ndarray]:
    """The run's validation images (split.json) as preprocessed [N, 3, H, W] and their labels [N].

    The label is the class folder an image sits in (`<class>/<file>`, as class-folder training lists them).

    Raises:
        DataError: no split.json, no validation images, or none under a class folder that reads.
    """
    from clf.export.parity import SPLIT_NAME, confined_images, read_split, spread

    split_path = run_folder / SPLIT_NAME
    split = read_split(split_path)
    what = "--calibrate fits the temperature on the run's validation images"
    if split is None:
        raise DataError(f"{split_path}: missing or unusable; {what} (export a run folder written by `clf train`)")
    if not split["val"]:
        raise DataError(f"{split_path}: no validation images (trained with --val-split 0?); {what}: "
                        "use a run with a validation split, or a fold group")
    index = {name: i for i, name in enumerate(classes)}
    paths = spread(confined_images(split["root"], split["val"], split_path), limit)
    arrays, labels = [], []
    for path in paths:
        label = Path(os.path.relpath(path, split["root"])).parts[0]
        if label not in index:
            continue
        try:
            arrays.append(preprocess(path, pre))
        except DataError as exc:
            logger.warning("%s; skipped for calibration", exc)
            continue
        labels.append(index[label])
    if not arrays:
        raise DataError(f"{split_path}: no readable validation image under a class folder; {what} "
                        "and reads its label from the folder (use a fold group's oof.csv for CSV-labelled data)")
    return np.stack(arrays), np.array(labels, dtype=np.int64)


def module_logits(module, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """The deployed module's averaged output (before any temperature) on `images`, in batches: [N, C] float64."""
    import torch

    outputs = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            outputs.append(module.combined(torch.from_numpy(images[start : start + batch])).double().numpy())
    return np.concatenate(outputs)
