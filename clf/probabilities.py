"""Probabilities from logits (softmax, log-softmax; sigmoid for multi-label) and their scores: log-loss and
expected calibration error. numpy only.

Top-level because train (out-of-fold scores), export (temperature calibration) and serve (infer, eval, score) all
use them; a task (clf.tasks) names which activation its logits take.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

ECE_BINS = 15


def softmax(logits: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Row-wise softmax over the last axis, numerically stable, computed in `dtype` (float32 by default)."""
    x = np.asarray(logits, dtype=dtype)
    if x.size == 0:
        return x.copy()
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax over the last axis, numerically stable (no log(0)), float32."""
    x = np.asarray(logits, dtype=np.float32)
    if x.size == 0:
        return x.copy()
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def sigmoid(logits: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Element-wise logistic function, numerically stable for large |x| (no overflow in exp), in `dtype`."""
    x = np.asarray(logits, dtype=dtype)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(dtype, copy=False)


def log_sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise log(sigmoid(x)) = -softplus(-x), without log(0), float32."""
    x = np.asarray(logits, dtype=np.float32)
    return (np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x)))).astype(np.float32, copy=False)


def logit(probs: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """The inverse of sigmoid, with probabilities clipped to [eps, 1 - eps] (a threshold of 0 or 1 stays finite)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    return np.log(p) - np.log1p(-p)


def log_loss(probs: np.ndarray, y_true: Sequence[int], eps: float = 1e-15) -> float:
    """Mean negative log-likelihood of the true classes (Kaggle's multi-class log-loss).

    Each row is renormalised to sum to 1 and clipped to [eps, 1 - eps] first, as Kaggle and scikit-learn do, so a
    single confident mistake costs -log(eps) (about 34.5), not infinity.
    """
    p = np.asarray(probs, dtype=np.float64)
    true = np.asarray(y_true, dtype=np.int64)
    if p.ndim != 2 or len(p) != len(true) or len(true) == 0:
        raise ValueError(f"log_loss needs [N, C] probabilities for N > 0 labels, got {p.shape} and {len(true)}")
    p = p / p.sum(axis=1, keepdims=True)
    picked = np.clip(p[np.arange(len(true)), true], eps, 1 - eps)
    return float(-np.mean(np.log(picked)))


def calibration_bins(probs: np.ndarray, y_true: Sequence[int], bins: int = ECE_BINS) -> list[tuple[float, float, int]]:
    """The top-1 prediction's confidence against its accuracy in `bins` equal-width confidence bins, (lo, hi] with 0
    in the first: (mean confidence, accuracy, count) per bin that holds a prediction (a reliability diagram's
    points; `expected_calibration_error` weighs their gaps)."""
    p = np.asarray(probs, dtype=np.float64)
    true = np.asarray(y_true, dtype=np.int64)
    if p.ndim != 2 or len(p) != len(true) or len(true) == 0:
        raise ValueError(f"ECE needs [N, C] probabilities for N > 0 labels, got {p.shape} and {len(true)}")
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    return [(float(confidence[which == b].mean()), float(correct[which == b].mean()), int((which == b).sum()))
            for b in range(bins) if (which == b).any()]


def expected_calibration_error(probs: np.ndarray, y_true: Sequence[int], bins: int = ECE_BINS) -> float:
    """ECE: the confidence-vs-accuracy gap of the top-1 prediction, averaged over `bins` equal-width confidence bins
    weighted by how many predictions fall in each (Guo et al. 2017)."""
    points = calibration_bins(probs, y_true, bins)
    total = sum(count * abs(accuracy - confidence) for confidence, accuracy, count in points)
    return float(total / sum(count for _, _, count in points))
