"""`clf runs`: the table of training runs, and one of fold groups with their CV scores."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from clf.cli import render
from clf.cli.app import app, non_empty_path, user_errors
from clf.errors import ClfError


@app.command("runs")
@user_errors
def runs(
    root_text: Annotated[str, typer.Argument(metavar="ROOT", help="Folder holding run folders.")] = "runs",
    expand: Annotated[bool, typer.Option("--folds", "--expand", help="List each fold group's runs beneath "
                                                                     "it.")] = False,
) -> None:
    """The table of training runs: arch, epochs, batch size, image size, best val accuracy, params, time.

    Fold groups (`clf train --folds K`) get a table of their own, one line each with the CV score; so do searches
    (`clf tune`), their trials beneath, best objective first, with their parameters.
    """
    from clf.train.runs import collect_groups, collect_runs
    from clf.tune.record import collect_searches

    root = non_empty_path(root_text, "ROOT", "the folder holding run folders (default: runs)")
    summaries = collect_runs(root)
    groups = collect_groups(root)
    searches = collect_searches(root)
    if not summaries and not groups and not searches:
        raise ClfError(f"{root}: no training runs found (a run folder holds config.json); train one with `clf train`")
    if summaries:
        _print_runs_table(root, summaries)
    if groups:
        render.console.print(_groups_table(root, groups, expand))
    if searches:
        from clf.cli.tune import trials_table

        for search in searches:
            state = search.record.get("state", "")
            render.console.print(trials_table(search.path, search.trials, f"{search.record.get('arch', '')}, "
                                                                           f"{search.record.get('objective')}, "
                                                                           f"{state}"))


def _print_runs_table(root: Path, summaries: list[Any]) -> None:
    """One line per run; then, for each run whose best.pt another --metric than accuracy chose, that metric's value
    (the table's accuracy is that same epoch's)."""
    table = Table(title=f"training runs in {escape(str(root))}")
    for column, justify in (("run", "left"), ("arch", "left"), ("epochs", "right"), ("batch", "right"),
                            ("img size", "right"), ("best val acc", "right"), ("params", "right"), ("time", "right")):
        # full run names: they are what --resume takes
        table.add_column(column, justify=justify, no_wrap=column == "run", overflow="fold")
    for run in summaries:  # escape: run names are text, not rich markup
        table.add_row(
            escape(run.name), escape(run.arch), str(run.epochs), str(run.batch_size), str(run.img_size),
            "" if run.best_val_acc is None else f"{run.best_val_acc:.4f}",
            f"{run.params / 1e6:.2f}M", render.duration(run.seconds),
        )
    render.console.print(table)
    for run in summaries:
        if run.metric != "accuracy" and run.best_val_acc is not None:
            render.console.print(f"{escape(run.name)}: best.pt chosen by {_metric_value(run)}", highlight=False,
                                 soft_wrap=True)


def _metric_value(run: Any) -> str:
    """"f1_macro 0.8123", "log_loss 0.4100 (lower is better)", "roc_auc n/a" (undefined: not every class in the
    validation split)."""
    from clf.metrics import METRICS

    value = run.best_metric
    text = "n/a" if value is None or math.isnan(value) else f"{value:.4f}"
    spec = METRICS.get(run.metric)
    lower = spec is not None and not spec.higher_is_better
    return f"{escape(run.metric)} {text}{' (lower is better)' if lower else ''}"


def _groups_table(root: Path, groups: list[Any], expand: bool) -> Table:
    """One line per fold group (arch, K, CV mean ± std, OOF accuracy and log-loss, state); --folds adds its runs.

    No-wrap columns: "0.9100 ± 0.0200" is one number and must stay on one line at a terminal's 80 columns (the state
    wraps: "2/3 folds (fold-1 missing)")."""
    table = Table(title=f"fold groups in {escape(str(root))}")
    for column, justify in (("group", "left"), ("arch", "left"), ("K", "right"), ("CV val acc", "right"),
                            ("OOF acc", "right"), ("OOF loss", "right"), ("state", "left"), ("time", "right")):
        table.add_column(column, justify=justify, no_wrap=column not in ("arch", "state"), overflow="fold",
                         min_width={"arch": 4, "state": 9}.get(column))
    for summary in groups:
        group, cv = summary.group, summary.cv or {}  # no CV claimed over folds that are gone
        mean, std = _cv_number(cv, "mean_val_acc"), _cv_number(cv, "std_val_acc")
        table.add_row(
            escape(summary.name), escape(group.arch), str(group.folds), f"{mean} ± {std}" if mean else "",
            _cv_number(cv, "oof_acc"), _cv_number(cv, "oof_log_loss"), summary.state, render.duration(summary.seconds),
        )
        for run in summary.members if expand else ():
            done = "done" if run.name in group.done else f"{run.epochs} epochs"
            table.add_row("  " + escape(run.name), escape(run.arch), "",
                          "" if run.best_val_acc is None else f"{run.best_val_acc:.4f}", "", "", done,
                          render.duration(run.seconds))
    return table


def _cv_number(cv: dict[str, Any], key: str) -> str:
    """A CV score from group.json, or "" where the record lacks it (a hand-edited record is data, not a crash)."""
    value = cv.get(key)
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
