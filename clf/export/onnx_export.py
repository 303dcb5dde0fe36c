"""clf export: best checkpoint -> model.onnx (dynamic batch, clf metadata) + parity.json, atomically."""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from clf import __version__
from clf.config import ExportConfig, Preprocess
from clf.errors import ClfError, ParityError
from clf.export import graph
from clf.export.parity import ParityReport, compare, folder_images, load_batch, random_batch, validation_images
from clf.models.checkpoint import load_checkpoint, model_from_checkpoint, preprocess_from_checkpoint, resolve_checkpoint
from clf.serve.metadata import ModelInfo, info_to_props
from clf.serve.session import create_session

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    size_bytes: int
    opset: int
    exporter: str
    precision: str
    simplified: bool
    parity: ParityReport


def model_info(ckpt: dict) -> ModelInfo:
    """The metadata a deployed .onnx carries: classes, Preprocess, provenance."""
    return ModelInfo(
        classes=list(ckpt["classes"]),
        preprocess=preprocess_from_checkpoint(ckpt),
        arch=ckpt["arch"],
        img_size=int(ckpt["img_size"]),
        clf_version=__version__,
        run_name=ckpt.get("run_name", ""),
        best_val_acc=ckpt.get("best_val_acc"),
    )


def default_output(checkpoint_path: Path, fp16: bool) -> Path:
    return checkpoint_path.parent / ("model_fp16.onnx" if fp16 else "model.onnx")


def _writable_temp(output: Path) -> Path:
    """A temp file beside the output (same filesystem, so the final rename is atomic)."""
    if not output.parent.is_dir():
        raise ClfError(f"{output}: output folder does not exist; create it or pass another -o")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{output.stem}.", suffix=".onnx.tmp", dir=output.parent)
    except OSError as exc:
        raise ClfError(f"{output}: cannot write there ({exc.strerror}); pass another -o") from None
    os.close(fd)
    return Path(tmp)


def parity_batch(cfg: ExportConfig, ckpt: dict, pre: Preprocess) -> tuple[np.ndarray, str]:
    """Real images when there are any: --check-images, else the run's validation images; noise as a last resort."""
    if cfg.check_images:
        paths, source = folder_images(cfg.check_images, cfg.max_images), cfg.check_images
    else:
        paths, source = validation_images(ckpt, cfg.max_images), f"validation images of {ckpt.get('run_name', 'the run')}"
    batch = load_batch(paths, pre)
    if len(batch) == 0:
        log.warning("no real images available for the parity check; comparing on random tensors")
        batch, source = random_batch(pre, max(cfg.batch_sizes) * 2), "random tensors"
    # Make sure the largest batch size really runs with that many rows (proves the dynamic axis).
    reps = -(-max(cfg.batch_sizes) // len(batch))
    return (np.concatenate([batch] * reps) if reps > 1 else batch), source


def export_onnx(cfg: ExportConfig) -> ExportResult:
    """Export the checkpoint, check it, prove parity, and only then move the model into place.

    Raises:
        ParityError: outputs differ beyond tolerance; the model is kept as `<name>.parity-failed.onnx`.
    """
    ckpt_path = resolve_checkpoint(cfg.checkpoint, prefer="best")
    ckpt = load_checkpoint(ckpt_path)
    model = model_from_checkpoint(ckpt).float().eval()
    info = model_info(ckpt)
    output = Path(cfg.output) if cfg.output else default_output(ckpt_path, cfg.fp16)
    tmp = _writable_temp(output)
    try:
        exporter = graph.export_graph(model, info.img_size, tmp, cfg.opset, cfg.exporter)
        proto = onnx.load(str(tmp))
        if cfg.fp16:
            proto = graph.convert_to_fp16(proto)
        if cfg.simplify:
            proto = graph.simplify(proto)
        graph.set_metadata(proto, info_to_props(info))
        onnx.save(proto, str(tmp))
        graph.check(tmp)
        report = _check_parity(cfg, ckpt, model, info.preprocess, tmp, output)
        if not report.passed:
            failed = output.with_name(f"{output.stem}.parity-failed.onnx")
            tmp.replace(failed)
            raise ParityError(f"{output}: parity check failed ({report.reason()}); model kept as {failed} for inspection")
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=cfg.opset)
    return ExportResult(output, output.stat().st_size, opset, exporter, "fp16" if cfg.fp16 else "fp32", cfg.simplify, report)


def _check_parity(cfg: ExportConfig, ckpt: dict, model, pre: Preprocess, onnx_path: Path, output: Path) -> ParityReport:
    batch, source = parity_batch(cfg, ckpt, pre)
    session, provider = create_session(onnx_path, device=cfg.device)
    max_diff, mean_diff, agreement = compare(model, session, batch, cfg.batch_sizes)
    report = ParityReport(
        passed=bool(max_diff <= cfg.tolerance and agreement == 1.0),
        max_abs_diff=max_diff,
        mean_abs_diff=mean_diff,
        top1_agreement=agreement,
        atol=cfg.tolerance,
        images=len(batch),
        image_source=source,
        batch_sizes=list(cfg.batch_sizes),
        provider=provider,
        model=output.name,
        precision="fp16" if cfg.fp16 else "fp32",
    )
    report.write(output.with_name("parity.json") if not cfg.fp16 else output.with_name("parity_fp16.json"))
    return report
