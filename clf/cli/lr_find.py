"""`clf lr-find`: the LR range test on `clf train`'s data pipeline and model; a suggested LR and a plot."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from clf.cli import render
from clf.cli.app import app, user_errors
from clf.cli.options import config_options, given_options
from clf.config import TrainConfig


@app.command("lr-find")
@user_errors
@config_options(TrainConfig)
def lr_find(
    ctx: typer.Context,
    data: Annotated[str, typer.Argument(help="Labelled images, as for `clf train`.")],
    output: Annotated[str, typer.Option("--output", "-o", help="The plot (PNG) to write; clf replaces only its "
                                                               "own.")] = "lr_find.png",
    start_lr: Annotated[float, typer.Option(help="The sweep's first LR.")] = 1e-7,
    end_lr: Annotated[float, typer.Option(help="The sweep's last LR (the sweep stops earlier when the loss "
                                               "diverges).")] = 10.0,
    steps: Annotated[int, typer.Option(help="Optimizer steps of the sweep, one LR each.")] = 100,
    *,
    settings: dict[str, Any],  # the TrainConfig options: the data pipeline and model `clf train` would build
) -> None:
    """Sweep the learning rate exponentially over DATA with `clf train`'s model and data pipeline (the train flags
    apply), print the suggested LR (fastai's valley) and plot the loss. Writes no run folder."""
    from clf.train.fit import resolve_config
    from clf.train.lr_find import lr_find as find

    cfg, _ = resolve_config(given_options(ctx, {"data": data, **settings}))
    result = find(cfg, output, start_lr=start_lr, end_lr=end_lr, steps=steps)
    stop = ", stopped: the loss diverged" if result.diverged else ""
    render.console.print(f"suggested lr {result.suggestion:.2e} (valley; {len(result.lrs)} steps from "
                         f"{result.lrs[0]:.1e} to {result.lrs[-1]:.1e}{stop}); plot: "
                         f"[bold]{escape(str(result.plot))}[/]", highlight=False)
