"""`clf sample-data` and `clf models`: the sample competition to try clf on, and the architectures it trains."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from clf.cli import render
from clf.cli.app import app, non_empty_path, user_errors


@app.command("sample-data")
@user_errors
def sample_data(
    out_dir: Annotated[str, typer.Argument(metavar="OUT_DIR", help="Folder to write the sample competition into.")],
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same files.")] = 0,
    per_class: Annotated[int, typer.Option(help="Training images per class.")] = 60,
    test: Annotated[int, typer.Option(help="Unlabelled test images.")] = 80,
    size: Annotated[int, typer.Option(help="Image side in pixels, 16..1024.")] = 64,
    overwrite: Annotated[bool, typer.Option(help="Replace clf's own earlier sample data there (nothing "
                                                 "else).")] = False,
) -> None:
    """Write a small, learnable, competition-shaped dataset: train/<class>/, test/, sample_submission.csv."""
    from clf.data.sample import generate_sample_competition

    folder = non_empty_path(out_dir, "OUT_DIR", "the folder to write the sample competition into")
    summary = generate_sample_competition(folder, seed=seed, n_train_per_class=per_class, n_test=test,
                                          image_size=size, overwrite=overwrite)
    render.console.print(
        f"wrote {summary['n_train']} training images in {len(summary['classes'])} classes "
        f"({', '.join(summary['classes'])}) and {summary['n_test']} test images to {escape(str(out_dir))}",
        highlight=False,
    )


@app.command("models")
@user_errors
def models(
    pattern: Annotated[Optional[str], typer.Argument(help="Filter, e.g. 'resnet*' or '*coatnet*'.")] = None,
    params: Annotated[bool, typer.Option("--params", help="Add parameter counts and FLOPs (builds each "
                                                          "model).")] = False,
    img_size: Annotated[int, typer.Option(help="Input size for --params FLOPs.")] = 224,
    num_classes: Annotated[int, typer.Option(help="Classes for --params.")] = 1000,
) -> None:
    """List trainable architectures: clf's own `cnn`, torchvision's `alexnet`, every timm model."""
    from clf.models.catalogue import architecture_sizes, check_size_settings, matching_architectures

    check_size_settings(img_size, num_classes)
    names = matching_architectures(pattern)
    table = Table(title=f"{len(names)} architectures", show_lines=False)
    table.add_column("arch")
    if not params:
        for name in names:
            table.add_row(name)
        render.console.print(table)
        return
    table.add_column("params", justify="right")
    table.add_column(f"GFLOPs @{img_size}", justify="right")
    for size in architecture_sizes(names, img_size, num_classes):
        table.add_row(size.name, f"{size.params / 1e6:.2f}M", f"{size.flops / 1e9:.3f}")
    render.console.print(table)
