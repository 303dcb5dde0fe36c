"""A model on labelled images: serve's evaluation (scores, confusion), the worst mistakes, and reliability before and
after the temperature baked into the graph."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from clf.config import EvalConfig, Preprocess, ReportConfig
from clf.probabilities import ECE_BINS, calibration_bins, expected_calibration_error, softmax
from clf.serve.evaluate import labelled_report, load_eval_data, predict_labelled
from clf.serve.loading import make_predictor
from clf.serve.metadata import deployment_from_props
from clf.serve.metrics import confusion_png
from clf.tasks import DEFAULT_TASK

from clf.report.images import png_uri
from clf.report.plots import Reliability, reliability_png

if TYPE_CHECKING:
    from clf.report.evaluation_multilabel import TagEvaluation

logger = logging.getLogger(__name__)

TOP_K = 3  # classes in a mistake's bar


@dataclass(frozen=True)
class Mistake:
    """One wrongly predicted image, as the gallery shows it."""

    path: str
    true: int
    predicted: int
    confidence: float  # the predicted class's probability
    loss: float  # -log p(true class): what the gallery is sorted by
    top: list[tuple[int, float]]  # the TOP_K best classes, best first, with their probabilities

    @property
    def cam_class(self) -> int:
        """The class whose logit the Grad-CAM traces: the wrongly predicted one."""
        return self.predicted


@dataclass
class Evaluation:
    """What `evaluate_model` measured, ready for the template (pictures as data URIs)."""

    multilabel: ClassVar[bool] = False  # the template's switch (TagEvaluation's is True)

    model: str  # the PATH evaluated
    images: str  # the labelled folder
    report: dict[str, Any]  # serve's report: accuracy, per_class, confusion_matrix, log_loss, ece, failures, ...
    mistakes: list[Mistake]  # the gallery, worst first (at most --max-images)
    total_mistakes: int
    preprocess: Preprocess
    temperature: float | None
    confusion_uri: str = ""
    reliability_uri: str = ""
    reliability: list[Reliability] = field(default_factory=list)


def evaluate_model(onnx: str, cfg: ReportConfig, model_label: str) -> Evaluation | TagEvaluation:
    """Run the ONNX model on cfg.images as `clf eval` does (a multi-label model: `clf eval --task multilabel` on the
    tags of cfg.labels_csv), and keep the worst mistakes.

    Raises:
        ClfError: a multi-label model without --labels-csv; DataError: unusable images or labels the model does not
            know; ModelError / DeviceError from the session.
    """
    eval_cfg = EvalConfig(labelled=str(cfg.images), model=onnx, device=cfg.device, labels_csv=cfg.labels_csv,
                          id_col=cfg.id_col, label_col=cfg.label_col)
    predictor = make_predictor(eval_cfg)
    if predictor.info.task != DEFAULT_TASK:
        from clf.report.evaluation_multilabel import evaluate_tagged, needs_tags

        if not cfg.labels_csv:
            raise needs_tags(model_label)
        return evaluate_tagged(predictor, replace(eval_cfg, task=predictor.info.task), model_label, cfg.max_images)
    data = load_eval_data(eval_cfg)
    result, y_true = predict_labelled(predictor, data.paths, [data.classes[i] for i in data.labels])
    report = labelled_report(predictor, result, y_true)
    probs = result.probs().astype(np.float64)
    mistakes = worst_mistakes([str(s) for s in result.ok_sources], probs, y_true)
    props = predictor.session.get_modelmeta().custom_metadata_map
    deployment = deployment_from_props(props, onnx)
    temperature = deployment.temperature if deployment else None
    evaluation = Evaluation(model_label, str(cfg.images), report, mistakes[:cfg.max_images], len(mistakes),
                            predictor.preprocess, temperature)
    evaluation.confusion_uri = png_uri(confusion_png(report["confusion_matrix"], report["classes"]))
    if len(y_true):
        evaluation.reliability = reliability_curves(result.logits, y_true, temperature)
        evaluation.reliability_uri = png_uri(reliability_png(evaluation.reliability))
    return evaluation


def worst_mistakes(paths: list[str], probs: np.ndarray, y_true: np.ndarray) -> list[Mistake]:
    """Every wrongly predicted image, the highest loss first (ties: the earlier image first)."""
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y_true)
    losses = -np.log(np.clip(probs[np.arange(len(y_true)), y_true], 1e-15, 1.0))
    order = sorted(wrong, key=lambda i: (-losses[i], i))
    k = min(TOP_K, probs.shape[1])
    return [Mistake(paths[i], int(y_true[i]), int(predicted[i]), float(probs[i, predicted[i]]), float(losses[i]),
                    [(int(c), float(probs[i, c])) for c in np.argsort(-probs[i], kind="stable")[:k]])
            for i in order]


def reliability_curves(logits: np.ndarray, y_true: np.ndarray, temperature: float | None) -> list[Reliability]:
    """The model's calibration as deployed; with a baked temperature T also before it (the graph divided the logits
    by T, so the model's own probabilities are the softmax of logits x T)."""
    curves = []
    if temperature:
        curves.append(_reliability(f"before temperature {temperature:.3g}", softmax(logits * temperature), y_true))
    label = f"after temperature {temperature:.3g}" if temperature else "model"
    curves.append(_reliability(label, softmax(logits), y_true))
    return curves


def _reliability(label: str, probs: np.ndarray, y_true: np.ndarray) -> Reliability:
    return Reliability(label, calibration_bins(probs, y_true, ECE_BINS), expected_calibration_error(probs, y_true))
