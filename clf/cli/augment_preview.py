"""`clf augment-preview`: a PNG grid of what the model sees, from a data folder with train's flags, or a run's own."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from clf.cli import render
from clf.cli.app import app, non_empty_path, user_errors
from clf.cli.options import config_options, given_options
from clf.config import AUGMENT_KNOBS, TrainConfig
from clf.errors import ClfError

# The `clf train` options that decide what a training image looks like (declared once, in TrainConfig).
PREVIEW_FIELDS = ("arch", "img_size", "resize", "interpolation", "augment", *AUGMENT_KNOBS, "labels_csv", "id_col",
                  "label_col")


@app.command("augment-preview")
@user_errors
@config_options(TrainConfig, only=PREVIEW_FIELDS)
def augment_preview(
    ctx: typer.Context,
    data: Annotated[str, typer.Argument(help="Labelled images (DATA/<class>/*.jpg, or a folder with --labels-csv), "
                                             "or a run folder or fold group: its own recorded augmentation.")],
    output: Annotated[str, typer.Option("--output", "-o", help="The PNG to write.")] = "augment-preview.png",
    rows: Annotated[int, typer.Option(help="Images shown, one per row, spread over the classes (1..64).")] = 8,
    columns: Annotated[int, typer.Option(help="Augmented draws per image, 1..64 (the first column is the image "
                                              "itself); the grid holds at most 100 megapixels.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the images chosen and of the draws.")] = 0,
    *,
    settings: dict[str, Any],  # the TrainConfig options above, filled by config_options
) -> None:
    """See what the model sees: a PNG grid, a row per image, its preprocessed self then augmented draws."""
    from clf.data.folds import is_fold_group
    from clf.data.preview import (check_grid_counts, is_run_folder, plan_for_data, plan_for_group, plan_for_run,
                                  write_plan_preview)

    check_grid_counts(rows, columns)  # the pixel count is checked once the image size is known, before any image
    given = given_options(ctx, settings)
    source = non_empty_path(data, "DATA", "a data folder or a run folder")
    group = is_fold_group(source)
    if group or is_run_folder(source):
        if given:
            what = "a fold group's" if group else "a run folder's"
            raise ClfError(f"{source}: {what} augmentation is the one it trained with; drop "
                           f"{', '.join(TrainConfig.flag(name) for name in given)} or preview its data folder")
        plan = plan_for_group(source) if group else plan_for_run(source)
    else:
        plan = plan_for_data(TrainConfig(data=str(source), seed=seed, **given))
    shown = write_plan_preview(plan, output, rows=rows, columns=columns, seed=seed)
    ops = ", ".join(op.name for op in plan.pipeline.ops) or "none"
    render.console.print(f"[bold]{escape(output)}[/]: {len(shown)} images x {columns} draws of "
                         f"{escape(plan.source)} ({len(plan.pipeline)} ops: {ops})", highlight=False)
