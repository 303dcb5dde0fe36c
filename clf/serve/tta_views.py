"""Test-time augmentation on numpy batches: the flipped views of an NCHW batch, the one held buffer they are copied
into, and the average of the views' outputs, exactly as the graph of `clf export --tta` computes it.

Separate from clf.serve.predictor (the decode -> run pipeline) because this is the TTA maths that the exported graph
must agree with (tests/test_tta_agreement.py), apart from how batches are scheduled. numpy only: no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clf.tasks import SINGLE_LABEL, Task


def flip_view(batch: np.ndarray, view: str) -> np.ndarray:
    """One TTA view of an NCHW batch, as a numpy view (no copy): "h" reverses the width axis, "v" the height axis,
    "hv" both, "" is the batch itself (the names of clf.choices.TTA_VIEWS)."""
    if "h" in view:
        batch = batch[..., ::-1]
    if "v" in view:
        batch = batch[..., ::-1, :]
    return batch


def average_views(view_logits: Sequence[np.ndarray], task: Task = SINGLE_LABEL) -> np.ndarray:
    """The TTA output, float32 [N, C]: single-label, the log of the mean of the views' softmax probabilities; a
    multi-label task, logit(mean of the views' sigmoid probabilities), so that its sigmoid is the mean probability
    and its thresholds decide on it.

    Computed as logsumexps of log-scores, as the graph of `clf export --tta` computes it, so `clf infer --tta` and
    the exported file agree even where a probability underflows (no log(0) = -inf, which the NaN/inf check would take
    for a broken model).
    """
    if task.multilabel:  # log(mean p) - log(mean (1 - p)); the 1/V cancels
        logits = np.stack([np.asarray(v, np.float32) for v in view_logits])  # [V, N, C]
        return (_log_sum_exp(task.log_scores(logits)) - _log_sum_exp(task.log_scores(-logits))).astype(np.float32)
    stacked = np.stack([task.log_scores(v) for v in view_logits])  # [V, N, C]
    return (_log_sum_exp(stacked) - np.float32(np.log(len(view_logits)))).astype(np.float32)


def _log_sum_exp(stacked: np.ndarray) -> np.ndarray:
    """log(sum over axis 0 of exp(stacked)) [N, C], stable (the largest term factored out)."""
    if stacked.size == 0:
        return stacked[0]
    top = stacked.max(axis=0)
    return top + np.log(np.exp(stacked - top).sum(axis=0))


def view_buffer(held: list[np.ndarray], batch: np.ndarray) -> np.ndarray:
    """A contiguous array shaped like `batch` for its flipped views: the one in `held` (allocated on first use,
    replaced only when the batch outgrows it), so a call copies its views into the same memory batch after batch."""
    if not held or held[0].shape[1:] != batch.shape[1:] or len(held[0]) < len(batch) or held[0].dtype != batch.dtype:
        held[:] = [np.empty_like(batch)]
    return held[0][: len(batch)]  # a smaller last batch uses the front rows (still contiguous)
