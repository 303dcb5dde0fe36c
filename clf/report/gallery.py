"""The mistakes gallery's pictures: each image as the model saw it (resized), shrunk to a thumbnail, and its Grad-CAM
overlay when the run's checkpoint has a conv stage to look at."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from clf.data.preprocess import load_resized
from clf.errors import DataError

from clf.report.evaluation import Evaluation, Mistake
from clf.report.evaluation_multilabel import TagEvaluation, TagMistake
from clf.report.images import jpeg_uri, overlay_heatmap, thumbnail

logger = logging.getLogger(__name__)

NO_RUN_FOLDER = ("no Grad-CAM: an .onnx holds no gradients to trace; give the run folder (with --images) to see "
                 "where the model looks")


@dataclass(frozen=True)
class Card:
    """One gallery entry: the mistake, its thumbnail and (when there is one) its Grad-CAM overlay."""

    mistake: Mistake | TagMistake
    name: str  # the file name shown (the path is in the title)
    thumb_uri: str
    cam_uri: str | None


def gallery_cards(evaluation: Evaluation | TagEvaluation, run_dir: Path | None) -> tuple[list[Card], str | None]:
    """The cards of the evaluation's mistakes, and the sentence saying why there is no Grad-CAM (None when there
    is). A single-label map traces the predicted class's logit; a multi-label one the worst wrong tag's (a missed
    tag's or a false tag's)."""
    images = []
    for mistake in evaluation.mistakes:
        try:
            images.append(load_resized(mistake.path, evaluation.preprocess))
        except DataError as exc:  # it decoded for the evaluation a moment ago: changed or removed since
            logger.warning("skipped in the gallery: %s", exc)
            images.append(None)
    cams, note = _cams(evaluation, run_dir, images)
    cards = []
    for mistake, image, cam in zip(evaluation.mistakes, images, cams):
        if image is None:
            continue
        overlay = jpeg_uri(thumbnail(overlay_heatmap(image, cam))) if cam is not None else None
        cards.append(Card(mistake, Path(mistake.path).name, jpeg_uri(thumbnail(image)), overlay))
    return cards, note


def _cams(evaluation: Evaluation | TagEvaluation, run_dir: Path | None, images: list) -> tuple[list, str | None]:
    if run_dir is None:
        return [None] * len(images), NO_RUN_FOLDER
    from clf.report.gradcam import grad_cams, load_cam_model  # torch: only for a run folder

    cam_model = load_cam_model(run_dir)
    if isinstance(cam_model, str):
        return [None] * len(images), cam_model
    kept = [(i, image) for i, image in enumerate(images) if image is not None]
    maps = grad_cams(cam_model, [image for _, image in kept],
                     [evaluation.mistakes[i].cam_class for i, _ in kept], evaluation.preprocess)
    cams: list = [None] * len(images)
    for (i, _), heat in zip(kept, maps):
        cams[i] = heat
    return cams, None
