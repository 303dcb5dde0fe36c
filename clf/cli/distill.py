"""`clf distill`: a student run trained on a teacher's soft predictions (an ensemble into one fast model)."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from clf.cli import render
from clf.cli.app import app, user_errors
from clf.cli.options import config_options, given_options
from clf.cli.train import _end_distributed, _progress
from clf.config import DISTILL, TrainConfig
from clf.system import launched_by_torchrun


@app.command("distill")
@user_errors
@config_options(TrainConfig, command=DISTILL)
def distill(
    ctx: typer.Context,
    teacher: Annotated[str, typer.Argument(help="The teacher: an .onnx clf exported (single, ensemble, TTA, "
                                                "calibrated), a run folder or a fold group (exported first).")],
    data: Annotated[Optional[str], typer.Argument(help="Labelled images, as for `clf train`. Optional with "
                                                       "--resume.")] = None,
    resume: Annotated[Optional[str], typer.Option(help="Continue a distilled run folder (its last.pt) with the "
                                                       "same teacher.")] = None,
    no_val: Annotated[bool, typer.Option("--no-val", help="Train on all the data (best.pt = last epoch).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a run folder of the same name (clf's own files only).")
                         ] = False,
    *,
    settings: dict[str, Any],  # the TrainConfig options, the distillation ones included
) -> None:
    """Train ARCH on DATA (and --unlabelled images) towards TEACHER's soft predictions: an ordinary run folder
    (resume, curves, checkpoints, `clf export` with parity, --int8) whose config.json records the teacher."""
    from clf.distill.run import distill as run_distill

    given = given_options(ctx, {"data": data, **settings})
    if no_val:
        given["val_split"] = 0.0
    given.setdefault("quiet", settings["quiet"])
    if launched_by_torchrun():
        from clf.train.runtime import meet_at_exit

        meet_at_exit()
    result = run_distill(given, teacher, resume, overwrite=overwrite, reporter=_progress(given["quiet"]))
    if result.is_main:
        best = "n/a (no validation split)" if result.best_val_acc is None else f"{result.best_val_acc:.4f}"
        stop = " (early stop)" if result.stopped_early else ""
        render.console.print(f"[bold]{escape(str(result.run_dir))}[/]: distilled from {escape(teacher)}, "
                             f"{result.epochs_done} epochs{stop}, best val acc {best}", highlight=False)
    _end_distributed(result)
