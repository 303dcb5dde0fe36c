"""Ranking scores of one binary column: the AUC (Mann-Whitney U) and the average precision. numpy only.

Shared by the single-label metrics (one-vs-rest AUC, clf.metrics) and the multi-label ones (per-class AUC and
average precision, clf.metrics_multilabel).
"""

from __future__ import annotations

import numpy as np


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values)) + 1]
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values), dtype=np.float64)
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2
    return ranks


def binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """The Mann-Whitney U statistic: the chance that a positive outscores a negative, ties counting a half (NaN
    without positives or without negatives)."""
    ranks = average_ranks(score)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(positive: np.ndarray, score: np.ndarray) -> float:
    """sum_n (R_n - R_{n-1}) P_n over the distinct scores, highest first (scikit-learn's step rule, no
    interpolation); 0 without positives (scikit-learn's value, with its warning)."""
    positives = int(positive.sum())
    if positives == 0:
        return 0.0
    order = np.argsort(-score, kind="mergesort")
    hits = positive[order].astype(np.float64)
    # the last index of each run of equal scores: a threshold takes every image scored alike at once
    ends = np.r_[np.flatnonzero(np.diff(score[order])), len(score) - 1]
    tp = np.cumsum(hits)[ends]
    precision, recall = tp / (ends + 1), tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
