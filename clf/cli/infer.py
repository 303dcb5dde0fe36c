"""`clf infer`: a deployed model on a folder of images, written as a Kaggle-style submission."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from clf.cli import render
from clf.cli.app import app, logger, user_errors
from clf.cli.options import config_options
from clf.config import InferConfig

# --quiet of `clf infer` and `clf eval` (a display choice, not the model's configuration)
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


@app.command("infer")
@user_errors
@config_options(InferConfig)
def infer(
    images: Annotated[Path, typer.Argument(help="Folder of images to predict.")],
    quiet: QuietOption = False,
    *,
    settings: dict[str, Any],  # the InferConfig options, filled by config_options
) -> None:
    """Predict a folder of images with onnxruntime and write a Kaggle-style submission CSV."""
    from clf.serve.infer import run_inference

    cfg = InferConfig(images=str(images), **settings)
    with render.ImageProgress(enabled=render.console.is_terminal and not quiet) as bar:
        result = run_inference(cfg, progress=bar.update, on_start=bar.start,
                               verbose=logger.isEnabledFor(logging.DEBUG))
    skipped, extra = len(result.failures), len(result.not_in_sample)
    with_tta = f"with {result.tta} TTA " if result.tta != "none" else ""
    where = f"Ray Data, {result.provider}" if result.on_ray else result.provider
    render.console.print(
        f"[bold]{escape(str(result.csv))}[/]: {result.predicted} of {result.images} images predicted on "
        f"{where} {with_tta}({result.images_per_second:.0f} img/s)"
        + (f", [yellow]{skipped} skipped[/]" if skipped else "")
        + (f", [yellow]{extra} not in the sample submission[/]" if extra else ""),
        highlight=False,
    )
