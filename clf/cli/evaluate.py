"""`clf eval`: a model's accuracy, log-loss, ECE, per-class table and confusion matrix on labelled images."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from clf.cli import render
from clf.cli.app import app, logger, user_errors
from clf.cli.infer import QuietOption
from clf.cli.options import config_options
from clf.config import EvalConfig


@app.command("eval")
@user_errors
@config_options(EvalConfig)
def eval_(
    labelled: Annotated[Path, typer.Argument(help="Labelled images: class folders, or a folder with --labels-csv.")],
    quiet: QuietOption = False,
    *,
    settings: dict[str, Any],  # the EvalConfig options, filled by config_options
) -> None:
    """Accuracy, log-loss, ECE, per-class precision/recall/F1 and confusion matrix of a model on labelled images."""
    from clf.export.for_eval import onnx_for_evaluation
    from clf.serve.evaluate import evaluate, load_eval_data

    cfg = EvalConfig(labelled=str(labelled), **settings)
    data = load_eval_data(cfg)  # data and outputs checked before a checkpoint's export
    bar = render.ImageProgress(enabled=render.console.is_terminal and not quiet)
    with onnx_for_evaluation(cfg.model, cfg.device) as onnx_path, bar:
        result = evaluate(dataclasses.replace(cfg, model=onnx_path), data, on_start=bar.start, progress=bar.update,
                          verbose=logger.isEnabledFor(logging.DEBUG))
    if result.report.get("task") == "multilabel":
        _print_multilabel(result.report, Path(cfg.model))
        if "without" in result.report["tta"]:
            render.console.print(_multilabel_tta_line(result.report["tta"]), highlight=False)
    else:
        _print_report(result.report, Path(cfg.model))
        render.console.print(_probability_line(result.report), highlight=False)
    if result.failures:
        render.console.print(f"[yellow]{len(result.failures)} unreadable image(s) skipped[/] (not counted above)",
                             highlight=False)


def _print_multilabel(report: dict[str, Any], model: Path) -> None:
    """The F1s, exact match and mAP in the title, then one row per class."""
    views = report["tta"]["views"]
    table = Table(title=f"{escape(str(model))}: F1 micro {render.score(report['f1_micro'])}, macro "
                        f"{render.score(report['f1_macro'])}, samples {render.score(report['f1_samples'])}, exact "
                        f"match {render.score(report['exact_match'])}, mAP {render.score(report['map'])}"
                        f"{f' with {views} TTA' if views != 'none' else ''} on {report['num_samples']} images")
    for column in ("class", "threshold", "precision", "recall", "f1", "support", "AP", "AUC"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for (name, stats), threshold in zip(report["per_class"].items(), report["thresholds"]):
        table.add_row(escape(name), f"{threshold:.3g}", f"{stats['precision']:.4f}", f"{stats['recall']:.4f}",
                      f"{stats['f1']:.4f}", str(stats["support"]), f"{stats['average_precision']:.4f}",
                      render.score(stats["auc"]))
    render.console.print(table)


def _multilabel_tta_line(tta: dict[str, Any]) -> str:
    """The F1s, exact match and mAP without -> with the TTA views."""
    arrow = "→" if render.console.encoding.lower().startswith("utf") else "->"  # a latin-1 terminal lacks the arrow
    pairs = (("F1 micro", "f1_micro"), ("macro", "f1_macro"), ("samples", "f1_samples"),
             ("exact match", "exact_match"), ("mAP", "map"))
    return ", ".join(f"{name} {render.score(tta['without'][key])} {arrow} {render.score(tta['with'][key])}"
                     for name, key in pairs) + f" with {tta['views']} TTA"


def _print_report(result: dict[str, Any], model: Path) -> None:
    views = result["tta"]["views"]
    with_tta = f" with {views} TTA" if views != "none" else ""
    table = Table(title=f"{escape(str(model))}: accuracy {result['accuracy']:.4f}{with_tta} on {result['num_samples']} "
                        "images")
    for column in ("class", "precision", "recall", "f1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, stats in result["per_class"].items():
        table.add_row(escape(name), f"{stats['precision']:.4f}", f"{stats['recall']:.4f}", f"{stats['f1']:.4f}",
                      str(stats["support"]))
    render.console.print(table)
    matrix = Table(title="confusion matrix (rows: true, columns: predicted)")
    matrix.add_column("")
    for name in result["classes"]:  # class names are data: "[/red]" is a name, not rich markup
        matrix.add_column(escape(name), justify="right")
    for name, row in zip(result["classes"], result["confusion_matrix"]):
        matrix.add_row(escape(name), *(str(v) for v in row))
    render.console.print(matrix)


def _probability_line(report: dict[str, Any]) -> str:
    """Log-loss and ECE; with TTA, accuracy, log-loss and ECE without -> with the views, side by side."""
    tta = report["tta"]
    if "without" not in tta:
        return (f"log-loss {render.score(report['log_loss'])}, ECE {render.score(report['ece'])} "
                f"({report['ece_bins']} bins)")
    before, after = tta["without"], tta["with"]
    pairs = (("accuracy", "accuracy"), ("log-loss", "log_loss"), ("ECE", "ece"))
    # a latin-1 terminal cannot print the arrow
    arrow = "→" if render.console.encoding.lower().startswith("utf") else "->"
    return ", ".join(f"{name} {render.score(before[key])} {arrow} {render.score(after[key])}"
                     for name, key in pairs) + \
        f" with {tta['views']} TTA ({report['ece_bins']}-bin ECE)"
