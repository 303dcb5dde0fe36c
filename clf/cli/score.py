"""`clf score`: a submission against the answers: accuracy, and log-loss and ECE from its probabilities."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from clf.cli import render
from clf.cli.app import app, user_errors


@app.command("score")
@user_errors
def score(
    submission: Annotated[Path, typer.Argument(help="A submission CSV written by `clf infer`.")],
    answers: Annotated[Path, typer.Argument(help="The answers CSV (same id and label columns).")],
    id_col: Annotated[str, typer.Option(help="Id column.")] = "id",
    label_col: Annotated[str, typer.Option(help="Label column.")] = "label",
    probs: Annotated[Optional[Path], typer.Option(help="The probabilities CSV `clf infer --probs` wrote: also report "
                                                       "log-loss and ECE.")] = None,
) -> None:
    """Accuracy of a submission against the answers (e.g. the sample competition's test_labels.csv), and with
    --probs the log-loss and expected calibration error of its probabilities.

    Every id of the answers needs a prediction (and probabilities); ids only in the submission are not scored (a
    warning counts them). Probability rows are rescaled to sum to 1, as Kaggle does.
    """
    from clf.serve.score import score_submission

    result = score_submission(submission, answers, id_col, label_col, probs=probs)
    scores = "" if result.log_loss is None else (
        f", log-loss {result.log_loss:.4f}, ECE {result.ece:.4f} ({result.ece_bins} bins) from {escape(str(probs))}")
    render.console.print(f"[bold]{escape(str(submission))}[/]: accuracy {result.accuracy:.4f} on {result.rows} rows "
                         f"of {escape(str(answers))}{scores}", highlight=False)
