"""`clf export`: a run, checkpoint, fold group or several runs to ONNX (or a Triton entry), with its parity proof."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from clf.cli import render
from clf.cli.app import app, user_errors
from clf.cli.options import config_options
from clf.config import ExportConfig
from clf.errors import ParityError

if TYPE_CHECKING:  # the export results' types, for the tables below (their modules import torch/onnx)
    from clf.export.int8 import Int8Report
    from clf.export.onnx_export import ExportResult
    from clf.export.parity import ParityReport
    from clf.export.triton import TritonResult


@app.command("export")
@user_errors
@config_options(ExportConfig)
def export(
    runs: Annotated[list[str], typer.Argument(help="A run folder (uses its best.pt), a checkpoint file, or a fold "
                                                   "group (the ensemble of its folds); several runs make one "
                                                   "ensemble (-o required).", metavar="RUN")],
    onnx: Annotated[bool, typer.Option("--onnx", help="The ONNX target with clf metadata and a parity proof: the "
                                                      "default, and what --triton writes inside its entry too; "
                                                      "accepted so that `clf export RUN --onnx` reads as it "
                                                      "does.")] = True,
    *,
    settings: dict[str, Any],  # the ExportConfig options, filled by config_options
) -> None:
    """Export a checkpoint to ONNX with its classes and preprocessing inside, and prove parity with PyTorch.

    Several runs, or a fold group, become ONE graph averaging every member (with --tta views and a --calibrate
    temperature inside it too); its output stays `logits`, so every consumer runs it like a single model.
    """
    from clf.export.targets import run_export

    target = "triton" if settings["triton"] is not None else "onnx"
    cfg = ExportConfig(checkpoint=runs[0], more_runs=tuple(runs[1:]), target=target, **settings)
    tracked = _mlflow_record(cfg)
    try:
        with render.err_console.status("exporting and checking parity"):
            result = run_export(cfg)
    except ParityError as exc:
        if exc.result is not None:
            render.console.print(_export_table(exc.result))  # the numbers behind the failure; the error line follows
        raise
    if result.kind == "triton":  # the repository entry, then the export behind it
        render.console.print(_triton_table(result))
    render.console.print(_export_table(result.onnx_result()))
    if tracked is not None:
        _log_to_mlflow(tracked, result.onnx_result())


def _mlflow_record(cfg: ExportConfig) -> Path | None:
    """--mlflow: the folder whose MLflow run takes the model, checked before exporting (one line when it has none)."""
    if not cfg.mlflow:
        return None
    from clf.train.tracking_mlflow import exported_from

    return exported_from(cfg.checkpoint)


def _log_to_mlflow(folder: Path, result: ExportResult) -> None:
    from clf.train.tracking_mlflow import log_export

    run_id = log_export(folder, [result.path, result.proof])
    if run_id is not None:
        render.console.print(f"logged {escape(result.path.name)} to MLflow run {run_id}", highlight=False)


_WEIGHTS_SHOWN = {"ema": "EMA (averaged)", "raw": "raw",
                  "mixed": "EMA (averaged) for some members, raw for the others"}


def _export_table(result: ExportResult) -> Table:
    """file, proof, size, opset, exporter, precision, provider, what was compared, the differences and the verdict."""
    parity = result.parity
    table = Table(title="ONNX export", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in (
        ("file", escape(str(result.path))),
        ("proof", escape(str(result.proof))),
        ("size", f"{result.size_bytes / 1e6:.2f} MB"),
        ("opset", str(result.opset)),
        ("exporter", result.exporter + (" + onnxslim" if result.simplified else "")),
        ("precision", result.precision),
        ("weights", _WEIGHTS_SHOWN.get(result.weights, result.weights)),
        ("provider", parity.provider),
        *(_int8_rows(parity) if parity.kind == "int8" else _parity_rows(parity)),
        ("verdict", "[green]PASS[/]" if parity.passed else "[bold red]FAIL[/]"),
        *_ensemble_rows(result),
    ):
        table.add_row(key, value)
    return table


def _parity_rows(parity: ParityReport) -> list[tuple[str, str]]:
    return [
        ("checked on", escape(f"{parity.images} inputs ({parity.image_source}), "
                              f"batch sizes {','.join(map(str, parity.batch_sizes))}")),
        ("max abs diff", f"{parity.max_abs_diff:.3g} (atol {parity.atol:g})"),
        ("mean abs diff", f"{parity.mean_abs_diff:.3g}"),
        ("top-1 agreement", f"{parity.top1_agreement:.2%}"),
    ]


def _int8_rows(report: Int8Report) -> list[tuple[str, str]]:
    """The fp32 graph's parity in one row, then the calibration and the int8 accuracy gate."""
    calib = report.calibration

    def acc(value: Optional[float]) -> str:
        return "n/a" if value is None else f"{value:.2%}"

    common = [
        ("fp32 parity", escape(f"max abs diff {report.max_abs_diff:.3g} (atol {report.atol:g}) on "
                               f"{report.parity_images} inputs ({report.parity_source})")),
        ("calibration", escape(f"{calib['method']}, {calib['images']} images ({calib['source']}), "
                               f"{calib['activations']} activations, {calib['weights']} weights")),
        ("gate on", escape(f"{report.images} inputs ({report.image_source})")),
    ]
    if report.task != "single_label":  # per-label agreement and macro-F1 against fp32's decisions
        return [*common,
                ("per-label agreement", f"{report.top1_agreement:.2%} with fp32 (min {report.min_agreement:.2%})"),
                ("macro-F1 vs fp32", f"{acc(report.macro_f1_vs_fp32)}; drop {(report.macro_f1_drop or 0) * 100:.2f} "
                                     f"points (max {report.max_drop * 100:.2f})")]
    drop = "n/a (no class folders)" if report.accuracy_drop is None else f"{report.accuracy_drop * 100:.2f} points"
    other_metric = report.metric not in (None, "accuracy")  # then the gate bounds its drop, not the accuracy's
    gated = " (not gated)" if other_metric and report.metric_drop is not None else f" (max {report.max_drop * 100:.2f})"
    return [*common,
            ("top-1 agreement", f"{report.top1_agreement:.2%} with fp32 (min {report.min_agreement:.2%})"),
            ("accuracy", f"fp32 {acc(report.fp32_accuracy)}, int8 {acc(report.int8_accuracy)}; drop {drop}{gated}"),
            *([("metric", _metric_row(report))] if other_metric else [])]


def _metric_row(report: Int8Report) -> str:
    """The run's metric for both models and how much worse int8 is in it (log_loss: its rise)."""
    from clf.export.int8_metric import drop_text, max_drop_text

    name = report.metric or ""
    if report.fp32_metric is None:
        return escape(f"{name}: n/a (no class folders)")
    values = f"{name}: fp32 {report.fp32_metric:.4f}, int8 {report.int8_metric:.4f}"
    if report.metric_drop is None:
        return escape(f"{values}; undefined on these images, the accuracy drop is gated")
    limit = max_drop_text(name, report.max_drop)
    return escape(f"{values}; worse by {drop_text(name, report.metric_drop)} (max {limit})")


def _triton_table(result: TritonResult) -> Table:
    """The Triton model folder: where, which files, the batching Triton will do."""
    table = Table(title="Triton model repository", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in (
        ("model folder", escape(str(result.folder))),
        ("model name", escape(result.model_name)),
        ("files", escape(", ".join(result.files))),
        ("max batch size", str(result.max_batch_size)),
        ("preferred batches", ",".join(map(str, result.preferred_batch_sizes))),
    ):
        table.add_row(key, value)
    return table


def _ensemble_rows(result: ExportResult) -> list[tuple[str, str]]:
    """Members, average, TTA, temperature (with NLL/ECE before -> after) and throughput of a deployed ensemble."""
    deployed, calibration = result.deployment, result.calibration
    if deployed is None:
        return []
    rows = []
    for index, member in enumerate(deployed.members, start=1):
        acc = member.get("best_val_acc")
        rows.append((f"member {index}", escape(f"{member['run']} ({member['arch']}), weight {member['weight']:.3g}"
                                               + (f", best val acc {acc:.2%}" if acc is not None else ""))))
    rows += [("average", deployed.average), ("tta", deployed.tta)]
    if calibration is not None:
        rows.append(("temperature", escape(f"{calibration.temperature:.4g} (fitted on {calibration.images} "
                                           f"{calibration.source})")))
        rows.append(("NLL", f"{calibration.nll_before:.4f} -> {calibration.nll_after:.4f}"))
        rows.append(("ECE", f"{calibration.ece_before:.4f} -> {calibration.ece_after:.4f}"))
    speed = result.throughput
    if speed:
        ratio = speed["deployed"] / speed["single member"] if speed["single member"] else float("nan")
        rows.append(("throughput", f"{speed['deployed']:.0f} images/s at batch 8 ({ratio:.2f}x a single member's "
                                   f"{speed['single member']:.0f})"))
    return rows
