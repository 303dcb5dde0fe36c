"""A multi-label model on tagged images: serve's report (exact match, F1 micro / macro / samples, mAP, and per class
precision, recall, F1, support, AP and AUC at the model's thresholds), and the worst images by binary cross-entropy,
each with its missed and wrong tags."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from clf.config import EvalConfig, Preprocess
from clf.errors import ClfError
from clf.serve.evaluate import load_eval_data
from clf.serve.evaluate_multilabel import predict_tags, tags_report
from clf.serve.metadata import deployment_from_props
from clf.serve.predictor import Predictor

logger = logging.getLogger(__name__)

TOP_TAGS = 5  # probabilities in a card's bar


@dataclass(frozen=True)
class TagMistake:
    """One image with a tag missed or a tag too many, as the gallery shows it (classes as indices)."""

    path: str
    true: list[int]
    predicted: list[int]
    loss: float  # binary cross-entropy averaged over the classes: what the gallery is sorted by
    top: list[tuple[int, float, float]]  # (class, probability, threshold) of the TOP_TAGS most probable, best first
    cam_class: int  # the worst wrong tag (highest cross-entropy): its logit is the Grad-CAM's target

    @property
    def missed(self) -> list[int]:
        """True tags the model did not predict."""
        return [c for c in self.true if c not in self.predicted]

    @property
    def wrong(self) -> list[int]:
        """Predicted tags the image does not hold."""
        return [c for c in self.predicted if c not in self.true]


@dataclass
class TagEvaluation:
    """What `evaluate_tagged` measured, ready for the template."""

    multilabel: ClassVar[bool] = True  # the template's switch (Evaluation's is False)

    model: str  # the PATH evaluated
    images: str  # the image folder
    labels_csv: str
    report: dict[str, Any]  # serve's tags_report: exact_match, f1_*, map, thresholds, per_class, tta, failures, ...
    mistakes: list[TagMistake]  # the gallery, worst first (at most --max-images)
    total_mistakes: int  # images with any tag wrong
    preprocess: Preprocess
    graph_tta: str = "none"  # the TTA views averaged inside the model's graph (`clf export --tta`)

    @property
    def classes(self) -> list[str]:
        return list(self.report["per_class"])


def needs_tags(model_label: str) -> ClfError:
    """The one line for a multi-label model given without its tags."""
    return ClfError(f"{model_label}: a multi-label model: its images' tags come from a CSV; add --labels-csv TAGS.csv "
                    "(an id column and a column of space-separated tags; --id-col and --label-col name them)")


def evaluate_tagged(predictor: Predictor, cfg: EvalConfig, model_label: str, max_images: int) -> TagEvaluation:
    """Run the multi-label `predictor` on cfg's tagged images as `clf eval --task multilabel` does, and keep the
    images with the highest cross-entropy among those with any tag wrong.

    Raises:
        DataError: an unreadable CSV, a tag the model does not know.
    """
    data = load_eval_data(cfg)
    result, truth = predict_tags(predictor, data.paths, data.tags)
    report = tags_report(predictor, result, truth)
    mistakes = worst_tagged([str(s) for s in result.ok_sources], result.logits, truth,
                            np.asarray(report["thresholds"], np.float64), predictor.task.decide(result.logits))
    deployment = deployment_from_props(predictor.session.get_modelmeta().custom_metadata_map, cfg.model)
    return TagEvaluation(model_label, cfg.labelled, str(cfg.labels_csv), report, mistakes[:max_images],
                         len(mistakes), predictor.preprocess, deployment.tta if deployment else "none")


def binary_cross_entropy(logits: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per image and class [N, C], from the logits (no log(0) at saturated probabilities)."""
    x = np.asarray(logits, np.float64)
    return np.maximum(x, 0) - x * truth + np.log1p(np.exp(-np.abs(x)))


def worst_tagged(paths: list[str], logits: np.ndarray, truth: np.ndarray, thresholds: np.ndarray,
                 decided: np.ndarray) -> list[TagMistake]:
    """Every image with a tag decided wrong, the highest mean cross-entropy first (ties: the earlier image first)."""
    truth, decided = np.asarray(truth, bool), np.asarray(decided, bool)
    element = binary_cross_entropy(logits, truth)
    losses = element.mean(axis=1)
    probs = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))
    k = min(TOP_TAGS, truth.shape[1])
    mistakes = []
    for i in sorted(np.flatnonzero((truth != decided).any(axis=1)), key=lambda i: (-losses[i], i)):
        errors = np.flatnonzero(truth[i] != decided[i])
        top = np.argsort(-probs[i], kind="stable")[:k]
        mistakes.append(TagMistake(
            paths[i], [int(c) for c in np.flatnonzero(truth[i])], [int(c) for c in np.flatnonzero(decided[i])],
            float(losses[i]), [(int(c), float(probs[i, c]), float(thresholds[c])) for c in top],
            int(errors[np.argmax(element[i, errors])])))
    return mistakes
