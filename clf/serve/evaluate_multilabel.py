"""`clf eval --task multilabel`: a multi-label model on images labelled by a CSV of space-separated tags: exact match,
F1 micro / macro / samples at the model's thresholds, mAP, and per class precision, recall, F1, support, average
precision and ROC AUC; with the predictor's TTA (sigmoid probabilities of the flipped views averaged, as the graph of
`clf export --tta` does) the summary scores without and with the views side by side. No torch.

The tags CSV is read by the data side's multi-label reader (clf.data.multilabel.read_tagged_images: ids matched as
for training, tags split on whitespace, an empty cell = no tag).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from clf.errors import DataError
from clf.serve import multilabel_metrics as mm
from clf.serve.predictions import PredictionResult
from clf.serve.predictor import Predictor
from clf.tasks import Task

logger = logging.getLogger(__name__)


def evaluate_tags(predictor: Predictor, paths: list[str], tags: list[list[str]],
                  progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """The multi-label report of `predictor` on tagged images (JSON-ready).

    Raises:
        DataError: the model is single-label, or a tag is no class of the model.
    """
    result, truth = predict_tags(predictor, paths, tags, progress)
    return tags_report(predictor, result, truth)


def predict_tags(predictor: Predictor, paths: list[str], tags: list[list[str]],
                 progress: Callable[[int], None] | None = None) -> tuple[PredictionResult, np.ndarray]:
    """The predictions of `predictor` on tagged images, and the multi-hot truth (bool [N_ok, C]) of each predicted
    row.

    Raises:
        DataError: the model is single-label, or a tag is no class of the model.
    """
    classes = predictor.classes
    if not predictor.task.multilabel:
        raise DataError(f"{predictor.model_path}: a single-label model; --task multilabel evaluates a model "
                        "exported from a `clf train --task multilabel` run")
    unknown = sorted({t for row in tags for t in row} - set(classes))
    if unknown:
        raise DataError(f"tags {unknown[:5]} are not classes of the model ({', '.join(classes)}); "
                        "wrong model or data?")
    result = predictor.predict(paths, strict=False, progress=progress)
    index = {name: c for c, name in enumerate(classes)}
    truth = np.zeros((len(result.ok_indices), len(classes)), bool)
    for row, i in enumerate(result.ok_indices):
        truth[row, [index[t] for t in tags[i]]] = True
    return result, truth


def tags_report(predictor: Predictor, result: PredictionResult, truth: np.ndarray) -> dict[str, Any]:
    """The JSON-ready multi-label report of `predict_tags`'s predictions against their truth."""
    classes = predictor.classes
    decided, probs = predictor.task.decide(result.logits), result.probs()
    table = mm.per_class(truth, decided)
    aucs = mm.per_class_auc(truth, probs)
    summary = summary_scores(truth, result.logits, predictor.task)
    tta: dict[str, Any] = {"views": predictor.tta}
    if result.plain_logits is not None:  # the unflipped view alone: the model without TTA, from the same runs
        tta.update({"without": summary_scores(truth, result.plain_logits, predictor.task), "with": summary})
    return {
        "task": "multilabel",
        "num_samples": int(len(truth)),
        **summary,
        "tta": tta,
        "thresholds": list(predictor.task.thresholds or [0.5] * len(classes)),
        "per_class": {name: {"precision": float(table.precision[c]), "recall": float(table.recall[c]),
                             "f1": float(table.f1[c]), "support": int(table.support[c]),
                             "average_precision": mm.average_precision(truth[:, c], probs[:, c]),
                             "auc": None if np.isnan(aucs[c]) else float(aucs[c])}
                      for c, name in enumerate(classes)},
        "failures": [{"source": str(s), "reason": r} for s, r in result.failures],
        "provider": predictor.provider,
    }


def summary_scores(truth: np.ndarray, logits: np.ndarray, task: Task) -> dict[str, float | None]:
    """Exact match, F1 micro / macro / samples at the task's thresholds and mAP of `logits` against the multi-hot
    `truth`."""
    decided = task.decide(logits)
    return {"exact_match": float((truth == decided).all(axis=1).mean()) if len(truth) else None,
            **mm.f1s(truth, decided), "map": mm.mean_average_precision(truth, task.scores(logits))}
