"""`clf score`: a submission against the answers: accuracy, the competition's metric, and log-loss and ECE from its
probabilities."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from clf.cli import render
from clf.cli.app import app, user_errors
from clf.cli.options import config_options
from clf.config import ScoreConfig


def _score_multilabel(cfg: ScoreConfig) -> None:
    """The multi-label scores in one line, then the per-class table."""
    from rich.table import Table

    from clf.serve.score_multilabel import score_multilabel

    result = score_multilabel(cfg.submission, cfg.answers, cfg.id_col, cfg.label_col)
    render.console.print(
        f"[bold]{escape(cfg.submission)}[/]: F1 micro {result.f1_micro:.4f}, macro {result.f1_macro:.4f}, "
        f"samples {result.f1_samples:.4f}, exact match {result.exact_match:.4f} on {result.rows} rows of "
        f"{escape(cfg.answers)}", highlight=False)
    table = Table(title="per class")
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for row in result.classes:
        table.add_row(escape(row.name), f"{row.precision:.4f}", f"{row.recall:.4f}", f"{row.f1:.4f}",
                      str(row.support))
    render.console.print(table)


@app.command("score")
@user_errors
@config_options(ScoreConfig)
def score(
    submission: Annotated[Path, typer.Argument(help="A submission CSV written by `clf infer`.")],
    answers: Annotated[Path, typer.Argument(help="The answers CSV (same id and label columns).")],
    *,
    settings: dict[str, Any],  # the ScoreConfig options, filled by config_options
) -> None:
    """Accuracy of a submission against the answers (e.g. the sample competition's test_labels.csv), the
    competition's --metric beside it, and with --probs the log-loss and expected calibration error of its
    probabilities.

    Every id of the answers needs a prediction (and probabilities); ids only in the submission are not scored (a
    warning counts them). Probability rows are rescaled to sum to 1, as Kaggle does.
    """
    from clf.serve.score import score_submission

    cfg = ScoreConfig(submission=str(submission), answers=str(answers), **settings)
    if cfg.task == "multilabel":
        _score_multilabel(cfg)
        return
    result = score_submission(cfg.submission, cfg.answers, cfg.id_col, cfg.label_col, probs=cfg.probs,
                              metric=cfg.metric)
    metric = "" if cfg.metric == "accuracy" else f", {cfg.metric} {render.score(result.metric_value)}"
    scores = "" if result.log_loss is None else (
        f", log-loss {result.log_loss:.4f}, ECE {result.ece:.4f} ({result.ece_bins} bins) from "
        f"{escape(str(cfg.probs))}")
    render.console.print(f"[bold]{escape(str(submission))}[/]: accuracy {result.accuracy:.4f}{metric} on "
                         f"{result.rows} rows of {escape(str(answers))}{scores}", highlight=False)
