"""The single-label int8 gate in the competition's metric (clf/export/int8.py runs both models and writes the proof).

When the gate images' labels are known, the run's metric (its `--metric`, recorded in the checkpoint's config;
accuracy by default) is computed for the fp32 and the int8 model on the softmax probabilities of their logits, as
`clf score` and the trainer compute it (clf.metrics.score), and --max-drop bounds how much worse int8 is in it:
fp32 - int8, or int8 - fp32 for a lower-is-better metric (log_loss). With accuracy as the metric this is the
accuracy gate as it always was.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from clf.choices import TASK_METRICS
from clf.export.checkpoint_info import checkpoint_metric
from clf.metrics import check_ordered_classes, metric, score
from clf.tasks import SINGLE_LABEL

logger = logging.getLogger(__name__)

ACCURACY = TASK_METRICS["single_label"][0]


def gate_metric(checkpoints: Sequence[dict[str, Any]], classes: Sequence[str]) -> str:
    """The metric the int8 gate judges by: the run's. An ensemble or fold group takes its first member's (folds share
    their group's config; members trained for different metrics are not refused: the first one's is used, said in
    the log).

    Raises:
        ClfError: a metric on ordered classes (qwk) whose classes are not named by grade (as `clf train` refuses it).
        ModelError: a checkpoint's metric that does not apply to its task.
    """
    metrics = [checkpoint_metric(ckpt) for ckpt in checkpoints]
    if len(set(metrics)) > 1:
        logger.info("the members were trained for different metrics (%s); the int8 gate uses the first one's, %s",
                    ", ".join(dict.fromkeys(metrics)), metrics[0])
    check_ordered_classes(metrics[0], list(classes))
    return metrics[0]


def model_metric(name: str, logits: np.ndarray, labels: Sequence[int], classes: Sequence[str] | None) -> float:
    """`name` of the softmax probabilities of `logits` [N, C] against `labels` [N]; NaN when a row holds NaN or inf
    (a broken graph never passes the gate)."""
    if not np.isfinite(logits).all():
        return float("nan")
    probs = SINGLE_LABEL.scores(logits, np.float64)
    return score(name, np.asarray(labels, dtype=np.int64), probs, list(classes) if classes is not None else None)


def metric_drop(name: str, fp32: float | None, int8: float | None) -> float | None:
    """How much worse the int8 model is in `name`: fp32 - int8, or int8 - fp32 when lower is better (log_loss).
    None when either is unknown, or fp32's is NaN (the metric is undefined on the gate images, e.g. roc_auc with a
    class that has none); an int8 NaN gives NaN, which never passes."""
    if fp32 is None or int8 is None or np.isnan(fp32):
        return None
    return fp32 - int8 if metric(name).higher_is_better else int8 - fp32


def metric_gate(name: str, reference: np.ndarray, quantized: np.ndarray, labels: Sequence[int] | None,
                classes: Sequence[str] | None, accuracies: tuple[float | None, float | None]) -> dict[str, Any]:
    """The gate's metric fields of an Int8Report: its name, fp32's and int8's value and the drop (values None without
    labels). Accuracy as the metric is the measured (fp32, int8) `accuracies` themselves."""
    if labels is None:
        return {"metric": name}
    if name == ACCURACY:
        fp32, int8 = accuracies
    else:
        fp32, int8 = model_metric(name, reference, labels, classes), model_metric(name, quantized, labels, classes)
    drop = metric_drop(name, fp32, int8)
    if drop is None and fp32 is not None:
        logger.warning("%s is undefined on the int8 gate images (a class without images?); the gate checks the "
                       "accuracy drop instead", name)
    return {"metric": name, "fp32_metric": fp32, "int8_metric": int8, "metric_drop": drop}


def drop_text(name: str, drop: float) -> str:
    """A drop in the metric's unit: points for a score from 0 to 1, the raw increase for log_loss."""
    return f"{drop * 100:.2f} points" if metric(name).higher_is_better else f"{drop:.4f}"


def max_drop_text(name: str, max_drop: float) -> str:
    return f"{max_drop * 100:.2f}" if metric(name).higher_is_better else f"{max_drop:.4f}"


def drop_problem(name: str, drop: float, max_drop: float) -> str:
    """The gate's phrase for a metric that dropped too much ("accuracy drop 2.00 points > 0.50", as ever)."""
    worse = "drop" if metric(name).higher_is_better else "rise"
    return f"{name} {worse} {drop_text(name, drop)} > {max_drop_text(name, max_drop)}"
