"""`clf check`: the data report — duplicates and leakage, classes, unreadable files, image sizes (exit 0: a report
is not a failure)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from clf.cli import render
from clf.cli.app import app, user_errors
from clf.cli.infer import QuietOption
from clf.cli.options import config_options
from clf.config import CheckConfig

PAIRS_SHOWN = 10  # rows of each pair table; --json holds them all
UNREADABLE_SHOWN = 20
SECTIONS = (("within_train", "within train"), ("train_val", "train -> validation"), ("train_test", "data -> test"))


@app.command("check")
@user_errors
@config_options(CheckConfig)
def check(
    data: Annotated[Path, typer.Argument(help="Labelled images: DATA/<class>/*.jpg, or a folder with --labels-csv.")],
    quiet: QuietOption = False,
    *,
    settings: dict[str, Any],  # the CheckConfig options, filled by config_options
) -> None:
    """Exact and near-duplicate images within the training side, across the split `clf train` would make and
    against --test; class counts and imbalance; unreadable files; image sizes and channels."""
    from clf.data.check import check_data

    cfg = CheckConfig(data=str(data), **settings)
    with render.CountProgress("reading", enabled=render.err_console.is_terminal and not quiet) as bar:
        report = check_data(cfg, progress=bar.update)
    print_report(report)
    if cfg.json:
        render.console.print(f"report written to {escape(cfg.json)}", highlight=False)


def print_report(report: dict[str, Any]) -> None:
    console = render.console
    split = report["split"]
    groups = f", groups from '{escape(split['group_col'])}'" if split["group_col"] else ""
    groups += ", near-duplicates kept together (--dedup)" if split["dedup"] else ""
    ratio = report["imbalance_ratio"]
    kinds = f"tags, {report['without_class']} images with none" if "without_class" in report else "classes"
    console.print(f"[bold]{escape(report['data'])}[/]: {split['train'] + split['val']} readable images, "
                  f"{len(report['classes'])} {kinds}, imbalance {'n/a' if ratio is None else f'{ratio:g}'} "
                  f"(largest / smallest); the split of --val-split {split['val_split']:g} --seed {split['seed']}"
                  f"{groups}: {split['train']} train / {split['val']} validation", highlight=False)
    console.print(_classes_table(report))
    console.print(_images_table(report))
    console.print(_leakage_table(report))
    for key, title in SECTIONS:
        section = report["duplicates"].get(key)
        if section is not None and (section["exact"] or section["near"]):
            console.print(_pairs_table(section, title, report["data"], report["test"]))
    if report["unreadable"]:
        console.print(_unreadable_table(report["unreadable"], report["data"], report["test"]))


def _classes_table(report: dict[str, Any]) -> Table:
    multilabel = report.get("task") == "multilabel"
    table = Table(title="tags (readable images holding each)" if multilabel else "classes (readable images)")
    table.add_column("tag" if multilabel else "class")
    table.add_column("images", justify="right")
    for entry in report["classes"]:
        table.add_row(escape(entry["name"]), str(entry["images"]))
    return table


def _images_table(report: dict[str, Any]) -> Table:
    table = Table(title="image sizes (pixels) and stored channels")
    for column in ("set", "images", "width min/median/max", "height min/median/max", "channels"):
        table.add_column(column, justify="left" if column in ("set", "channels") else "right")
    for name, stats in report["images"].items():
        modes = ", ".join(f"{mode} {n}" for mode, n in stats["modes"].items()) or "-"
        table.add_row(name, str(stats["count"]), _spread(stats["width"]), _spread(stats["height"]), modes)
    return table


def _spread(values: dict[str, float] | None) -> str:
    return "-" if values is None else f"{values['min']:g} / {values['median']:g} / {values['max']:g}"


def _leakage_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"duplicates (near: perceptual hash within {report['max_distance']} bits)")
    for column in ("where", "exact", "near", "images with a copy"):
        table.add_column(column, justify="left" if column == "where" else "right")
    for key, title in SECTIONS:
        section = report["duplicates"].get(key)
        if section is None:
            continue
        whose = "" if key == "within_train" else (" (validation)" if key == "train_val" else " (test)")
        table.add_row(title, str(section["exact"]), str(section["near"]),
                      f"{section['images_with_duplicate']} of {section['images']}{whose}")
    return table


def _pairs_table(section: dict[str, Any], title: str, data: str, test: str | None) -> Table:
    rows = [("exact", [entries[0], entry]) for entries in section.get("exact_groups", []) for entry in entries[1:]]
    pairs = [("exact", pair) for pair in section.get("exact_pairs", [])] + \
        [("near", pair) for pair in section["near_pairs"]]
    table = Table(title=f"{title}: the first pairs")
    for column in ("kind", "image", "label", "copy", "label ", "bits"):
        table.add_column(column, justify="right" if column == "bits" else "left")
    for kind, (first, second) in rows[:PAIRS_SHOWN]:
        table.add_row(kind, _short(first["path"], data, test), escape(first["label"]),
                      _short(second["path"], data, test), escape(second["label"]), "0")
    for kind, pair in pairs[: max(0, PAIRS_SHOWN - len(rows))]:
        table.add_row(kind, _short(pair["a"], data, test), escape(str(pair["a_label"] or "")),
                      _short(pair["b"], data, test), escape(str(pair["b_label"] or "")), str(pair["distance"]))
    return table


def _unreadable_table(unreadable: list[dict[str, str]], data: str, test: str | None) -> Table:
    table = Table(title=f"unreadable files: {len(unreadable)} (left out of training)")
    table.add_column("file")
    table.add_column("reason")
    for entry in unreadable[:UNREADABLE_SHOWN]:
        reason = entry["reason"].removeprefix(f"{entry['path']}: ")  # the one-line error names the file first
        table.add_row(_short(entry["path"], data, test), escape(reason))
    return table


def _short(path: str, data: str, test: str | None) -> str:
    """A path relative to DATA (or TEST) when it is inside it: the tables stay narrow."""
    for root in (data, test):
        if root and os.path.commonpath([os.path.abspath(path), os.path.abspath(root)]) == os.path.abspath(root):
            return escape(os.path.relpath(path, root))
    return escape(path)
