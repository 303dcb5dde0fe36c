"""`clf tune`: recipe search on Ray Tune (ASHA); every trial an ordinary run in runs/NAME/trial-k."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from clf.cli import render
from clf.cli.app import app, user_errors
from clf.cli.options import config_options, given_options
from clf.config import TrainConfig, TuneConfig


@app.command("tune")
@user_errors
@config_options(TuneConfig, into="tune_settings")
@config_options(TrainConfig)
def tune(
    ctx: typer.Context,
    data: Annotated[Optional[str], typer.Argument(help="Labelled images, as for `clf train`. Optional with "
                                                       "--resume.")] = None,
    resume: Annotated[Optional[str], typer.Option(help="Continue a search folder (runs/NAME): finished trials are "
                                                       "kept, unfinished ones continue from their last.pt.")] = None,
    *,
    settings: dict[str, Any],  # the TrainConfig options: the fixed part of every trial
    tune_settings: dict[str, Any],  # the TuneConfig options
) -> None:
    """Search ARCH's recipe on DATA with Ray Tune and ASHA (bad trials stop early): runs/NAME/trial-k are ordinary
    runs, runs/NAME/best.yaml the best trial's settings for `clf train --config`. The objective is the validation
    metric (the CV score with --folds), never a test set."""
    from clf.tune.search import tune_search

    given = given_options(ctx, {"data": data, **settings})
    if resume is not None and (set(given) - {"quiet"}):
        from clf.errors import ClfError

        raise ClfError(f"--resume {resume}: the search keeps the settings it started with; leave out "
                       f"{', '.join('--' + k.replace('_', '-') for k in sorted(set(given) - {'quiet'}))}")

    def on_start(search_dir: Path, space: list[Any]) -> None:
        what = "continuing" if resume else "searching"
        render.console.print(f"[bold]{escape(str(search_dir))}[/]: {what} "
                             + " ".join(escape(d.describe()) for d in space), highlight=False)

    result = tune_search(TuneConfig(**tune_settings), given, resume, on_start=on_start)
    render.console.print(trials_table(result.search_dir, result.trials))
    if result.best is not None:
        render.console.print(f"best: [bold]{escape(result.best.name)}[/]; train it again with `clf train --config "
                             f"{escape(str(result.best_config))}`, or:\n{escape(result.command or '')}",
                             highlight=False, soft_wrap=True)


def trials_table(search_dir: Path, trials: list[Any], about: str = "") -> Table:
    """The trials, best objective first, with their parameters and how far each trained."""
    table = Table(title=f"search {escape(str(search_dir))}" + (f" ({escape(about)})" if about else ""))
    keys = list(trials[0].params) if trials else []
    for column in ("trial", "objective", "epochs", *keys):
        table.add_column(column, justify="left" if column == "trial" else "right", no_wrap=column == "trial")
    for trial in trials:
        epochs = f"{trial.epochs} (stopped)" if trial.stopped_early else str(trial.epochs)
        objective = "" if trial.objective is None else f"{trial.objective:.4f}"
        table.add_row(escape(trial.name), objective, epochs, *(escape(_value(trial.params[k])) for k in keys))
    return table


def _value(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
