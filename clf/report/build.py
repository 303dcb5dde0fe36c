"""`clf report`'s job: read every PATH, build each section, render the one HTML file and write it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from clf.config import ReportConfig
from clf.errors import ClfError, DataError
from clf.run_files import read_config, train_settings

from clf.report.document import check_report_output, render, write_report
from clf.report.evaluation_multilabel import needs_tags
from clf.report.groups import group_section
from clf.report.images import png_uri
from clf.report.plots import curves_png
from clf.report.preview import augmentation_preview
from clf.report.runs import run_rows
from clf.report.sources import Sources, classify

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportResult:
    """What `build_report` wrote."""

    path: Path
    size: int  # bytes
    runs: int
    groups: int
    mistakes_shown: int | None  # None without an evaluation
    seconds: float


def build_report(cfg: ReportConfig) -> ReportResult:
    """Write the report of cfg.paths to cfg.output.

    Raises:
        ClfError: a PATH that is none of the kinds, --images with other than one model, an .onnx without --images,
            an output that is not clf's report; DataError / ModelError from the evaluation.
    """
    started = time.perf_counter()
    output = check_report_output(cfg.output)
    sources = classify(cfg.paths)
    model = evaluated_model(cfg, sources)
    runs = run_rows(sources.runs)
    context: dict[str, Any] = {
        "title": ", ".join(cfg.paths), "version": _version(), "notes": [],
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "runs": runs,
        "runs_curves": png_uri(curves_png([row.curve for row in runs])) if any(row.rows for row in runs) else None,
        "groups": [group_section(folder) for folder in sources.groups],
        "evaluation": None, "cards": [], "cam_note": None, "preview": None,
    }
    if model is not None:
        context.update(_evaluation_context(cfg, model))
    folders = [*sources.runs, *sources.groups]
    if folders:
        context["preview"] = augmentation_preview(folders[0])
        if len(folders) > 1:
            context["notes"].append(f"The augmentation preview shows the first PATH's pipeline ({folders[0]}).")
    write_report(output, render(context))
    mistakes = len(context["cards"]) if context["evaluation"] else None
    return ReportResult(output, output.stat().st_size, len(runs), len(sources.groups), mistakes,
                        time.perf_counter() - started)


def evaluated_model(cfg: ReportConfig, sources: Sources) -> Path | None:
    """The one model --images evaluates (a run folder or an .onnx), checked before any work; None without --images.

    Raises:
        ClfError: --images with several models or a fold group, an .onnx without --images, a missing --images, a
            multi-label run without --labels-csv.
    """
    models = sources.model_paths()
    if cfg.images is None:
        if sources.models:
            raise ClfError(f"{sources.models[0]}: an exported model is reported by evaluating it: add --images DIR "
                           "(labelled images in class folders, or with --labels-csv)")
        return None
    if len(models) != 1 or sources.groups:
        raise ClfError(f"--images evaluates one model: give one run folder or .onnx as PATH (got {len(models)} "
                       f"model(s){' and a fold group' if sources.groups else ''})")
    if not Path(cfg.images).is_dir():
        raise DataError(f"{cfg.images}: --images is not a folder; give labelled images in class folders (or tagged "
                        "by --labels-csv)")
    if cfg.labels_csv is None and models[0].is_dir() and run_task(models[0]) == "multilabel":
        raise needs_tags(str(models[0]))  # before the run's export: an .onnx says its task once opened
    return models[0]


def run_task(run_dir: Path) -> str | None:
    """The task a run folder trained (None when its config cannot say: the evaluation will find out)."""
    try:
        return train_settings(read_config(run_dir)).get("task")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _evaluation_context(cfg: ReportConfig, model: Path) -> dict[str, Any]:
    from clf.export.for_eval import onnx_for_evaluation
    from clf.report.evaluation import evaluate_model
    from clf.report.gallery import gallery_cards

    with onnx_for_evaluation(model, cfg.device) as onnx:
        evaluation = evaluate_model(onnx, cfg, str(model))
    cards, cam_note = gallery_cards(evaluation, model if model.is_dir() else None)
    return {"evaluation": evaluation, "cards": cards, "cam_note": cam_note}


def _version() -> str:
    from clf import __version__

    return __version__
