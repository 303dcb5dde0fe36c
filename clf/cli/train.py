"""`clf train`: one run, a fold group (--folds) or a validated run and its refit (--refit)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from clf.cli import render
from clf.cli.app import app, logger, user_errors
from clf.cli.options import config_options, given_options
from clf.config import TrainConfig
from clf.system import launched_by_torchrun


@app.command("train")
@user_errors
@config_options(TrainConfig)
def train(
    ctx: typer.Context,
    data: Annotated[Optional[str], typer.Argument(help="Labelled images: DATA/<class>/*.jpg, or a folder with "
                                                       "--labels-csv. Optional with --resume, or when --config "
                                                       "gives it.")] = None,
    config: Annotated[Optional[str], typer.Option(help="Settings from a .yaml/.yml/.toml file (keys: the option "
                                                       "names), or a run's config.json to replay its recipe; flags "
                                                       "given here win over the file.")] = None,
    resume: Annotated[Optional[str], typer.Option(help="Continue a run folder (its last.pt) or a checkpoint.")] = None,
    no_val: Annotated[bool, typer.Option("--no-val", help="Train on all the data (best.pt = last epoch).")] = False,
    no_amp: Annotated[bool, typer.Option("--no-amp", hidden=True, help="The old spelling of --amp off.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a run folder of the same name (clf's own files only, once "
                                                 "the new run's first epoch is saved).")] = False,
    *,
    settings: dict[str, Any],  # the TrainConfig options, filled by config_options
) -> None:
    """Train ARCH on DATA: writes runs/NAME/ (config.json, split.json, history.csv, curves.png, best.pt, last.pt)."""
    from clf.train.fit import fit, resolve_config
    from clf.train.folds import wants_folds
    from clf.train.refit import wants_refit

    given = given_options(ctx, {"data": data, **settings})
    if no_val:
        given["val_split"] = 0.0
    if no_amp:  # scripts from before --amp auto|on|off
        given["amp"] = "off"
    if config is not None:
        from clf.train.config_file import read_config_file, settings_under_flags

        given = settings_under_flags(read_config_file(config), given)
    given.setdefault("quiet", settings["quiet"])  # per sitting: a resumed run does not inherit an earlier --quiet
    if launched_by_torchrun():
        from clf.train.runtime import meet_at_exit

        meet_at_exit()  # user_errors prints a shared error on every rank, then the ranks meet before exiting
    if wants_folds(given, resume):
        _train_folds(given, resume, overwrite)
        return
    if wants_refit(given, resume):
        _train_refit(given, resume, overwrite)
        return
    cfg, ckpt = resolve_config(given, resume)
    result = fit(cfg, resume_ckpt=ckpt, overwrite=overwrite, reporter=_progress(cfg.quiet))
    if result.is_main:  # under torchrun rank 0 prints the one summary line
        best = "n/a (no validation split)" if result.best_val_acc is None else f"{result.best_val_acc:.4f}"
        stop = " (early stop)" if result.stopped_early else ""
        render.console.print(f"[bold]{escape(str(result.run_dir))}[/]: {result.epochs_done} epochs{stop}, best val "
                             f"acc {best}", highlight=False)
        if result.thresholds is not None:
            render.console.print("thresholds " + " ".join(f"{t:.3g}" for t in result.thresholds), highlight=False)
    _end_distributed(result)


def _progress(quiet: bool) -> render.TrainProgress:
    """--quiet: epoch lines and warnings only; otherwise a progress bar on a terminal."""
    if quiet:
        logger.setLevel(max(logger.level, logging.WARNING))
    return render.TrainProgress(show_progress=render.console.is_terminal and not quiet)


def _end_distributed(result: Any) -> None:
    """A torchrun worker exits at once once its work is done (clf.train.runtime.end_worker says why)."""
    if result.distributed:
        from clf.train.runtime import end_worker

        end_worker(0)


def _train_folds(given: dict[str, Any], resume: Optional[str], overwrite: bool) -> None:
    """`clf train --folds K` (or --resume of a fold group): the folds one after the other, then the CV table."""
    from clf.train.folds import DONE, RESUME, fit_group

    def on_fold(fold: int, folds: int, run_dir: Path, action: str) -> None:
        how = {DONE: "finished earlier, kept", RESUME: "resuming from its last.pt"}.get(action, "training")
        render.console.print(f"[bold]fold {fold + 1}/{folds}[/] {escape(str(run_dir))}: {how}", highlight=False)

    result = fit_group(given, resume, overwrite=overwrite, reporter=_progress(given["quiet"]), on_fold=on_fold)
    if result.is_main:
        render.console.print(_cv_table(result))
    _end_distributed(result)


def _train_refit(given: dict[str, Any], resume: str | None, overwrite: bool) -> None:
    """`clf train --refit` (or --resume of such a run): the validated run, then the refit; one line for each."""
    from clf.train.refit import DONE, fit_with_refit

    result = fit_with_refit(given, resume, overwrite=overwrite, reporter=_progress(given["quiet"]))
    if result.is_main:
        validated, plan, refit = result.validated, result.plan, result.refit
        stop = " (early stop)" if validated.stopped_early else ""
        acc = "n/a" if plan.val_acc is None else f"{plan.val_acc:.4f}"
        render.console.print(f"[bold]{escape(str(validated.run_dir))}[/]: {validated.epochs_done} epochs{stop}, best "
                             f"val acc {acc} at epoch {plan.epochs} ({plan.weights} weights)", highlight=False)
        earlier = " (finished earlier)" if result.refit_action == DONE else ""
        render.console.print(f"[bold]{escape(str(refit.run_dir))}[/]: refit on all {result.images} images for "
                             f"{refit.epochs_done} epochs{earlier}", highlight=False)
    _end_distributed(result)


def _cv_table(result: Any) -> Table:
    """Each fold's best val accuracy, then mean ± std and the out-of-fold accuracy and log-loss."""
    cv = result.group.cv
    table = Table(title=f"{escape(str(result.group_dir))}: {len(result.folds)}-fold cross-validation")
    for column, justify in (("fold", "left"), ("val images", "right"), ("best val acc", "right"), ("", "left")):
        table.add_column(column, justify=justify)
    for fold in result.folds:
        acc = "n/a" if fold.val_acc is None else f"{fold.val_acc:.4f}"
        table.add_row(escape(fold.run_dir.name), str(fold.val_images), acc, "" if fold.trained_now else "earlier")
    table.add_section()
    table.add_row("mean ± std", "", f"{cv['mean_val_acc']:.4f} ± {cv['std_val_acc']:.4f}", "")
    table.add_row("out-of-fold", str(sum(f.val_images for f in result.folds)), f"{cv['oof_acc']:.4f}",
                  f"log-loss {cv['oof_log_loss']:.4f}")
    if "oof_metric" in cv:  # the run's --metric on the out-of-fold predictions
        table.add_row(f"out-of-fold {escape(cv['metric'])}", "", render.score(cv["oof_metric"]), "")
    return table
