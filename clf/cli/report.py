"""`clf report`: one self-contained HTML file of runs, fold groups and a model's mistakes."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from clf.cli import render
from clf.cli.app import app, user_errors
from clf.cli.options import config_options
from clf.config import ReportConfig


@app.command("report")
@user_errors
@config_options(ReportConfig)
def report(
    paths: Annotated[list[str], typer.Argument(metavar="PATH...", help="Run folders, fold groups, folders of runs, "
                                                                       "or an exported .onnx (with --images).")],
    *,
    settings: dict[str, Any],  # the ReportConfig options, filled by config_options
) -> None:
    """One HTML file (images inline, no network): runs table and curves, fold groups, and with --images a model's
    confusion, per-class scores, worst mistakes with Grad-CAM, and reliability (a multi-label model, with
    --labels-csv: per-class thresholds, F1, AP and AUC, and its worst tagged images)."""
    from clf.report.build import build_report

    result = build_report(ReportConfig(paths=tuple(paths), **settings))
    shown = "" if result.mistakes_shown is None else f", {result.mistakes_shown} mistakes shown"
    render.console.print(f"[bold]{escape(str(result.path))}[/]: {result.size / 1e6:.2f} MB, {result.runs} run(s), "
                         f"{result.groups} fold group(s){shown} ({result.seconds:.1f} s)", highlight=False)
