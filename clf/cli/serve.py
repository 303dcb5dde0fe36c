"""`clf serve`: a model over HTTP on Ray Serve, batched as `clf infer` is, stopped by Ctrl-C or SIGTERM."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from clf.cli import render
from clf.cli.app import app, non_empty_path, user_errors
from clf.cli.options import config_options
from clf.config import ServeConfig


@app.command("serve")
@user_errors
@config_options(ServeConfig)
def serve(
    model: Annotated[str, typer.Argument(help="An .onnx exported by `clf export`.", metavar="MODEL")],
    *,
    settings: dict[str, Any],  # the ServeConfig options, filled by config_options
) -> None:
    """Serve a model over HTTP on Ray Serve: POST an image to /predict, several to /predict/batch.

    Answers are JSON (label, top-k, every class probability), computed exactly as `clf infer` computes them.
    Ctrl-C or SIGTERM stops Serve and the local Ray instance.
    """
    from clf.serve.ray_app import serve as run_server

    cfg = ServeConfig(model=str(non_empty_path(model, "MODEL", "an .onnx file")), **settings)

    def ready(url: str, classes: list[str], replica_threads: int) -> None:
        render.console.print(
            f"[bold]{escape(str(model))}[/] ({len(classes)} classes) served at [bold]{escape(url)}[/]: "
            f"{cfg.replicas} replica(s) x {replica_threads} thread(s), batches of up to {cfg.max_batch_size} "
            f"within {cfg.batch_wait_ms:g} ms. POST an image to {escape(url)}/predict; Ctrl-C stops.",
            highlight=False,
        )

    run_server(cfg, on_ready=ready)
