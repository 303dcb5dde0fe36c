"""clf export: best checkpoint -> model.onnx (dynamic batch, clf metadata) + parity.json, atomically."""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from clf import __version__
from clf.atomic import file_mode
from clf.config import ExportConfig, Preprocess
from clf.errors import ClfError, DataError, ModelError, ParityError
from clf.export import graph
from clf.export.parity import ParityReport, compare, folder_images, load_batch, random_batch, run_images
from clf.models.checkpoint import load_checkpoint, model_from_checkpoint, preprocess_from_checkpoint, resolve_checkpoint
from clf.serve.metadata import ModelInfo, info_to_props
from clf.serve.session import create_session

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportResult:
    """What `export_onnx` wrote: the model (kept aside when parity failed), how, and the parity report."""

    path: Path
    size_bytes: int
    opset: int
    exporter: str
    precision: str
    simplified: bool
    parity: ParityReport


def model_info(ckpt: dict) -> ModelInfo:
    """The metadata a deployed .onnx carries: classes, Preprocess, provenance.

    Raises:
        ModelError: the checkpoint has no class names, or not as many as the model has outputs.
    """
    source = ckpt.get("source", "checkpoint")
    classes = ckpt.get("classes")
    if not isinstance(classes, (list, tuple)) or not classes:
        raise ModelError(f"{source}: checkpoint has no class names; export a checkpoint written by `clf train`")
    outputs = (ckpt.get("model_kwargs") or {}).get("num_classes", len(classes))
    if outputs != len(classes):
        raise ModelError(f"{source}: checkpoint lists {len(classes)} class names for a model with {outputs} outputs")
    pre = preprocess_from_checkpoint(ckpt)
    return ModelInfo(
        classes=[str(name) for name in classes],
        preprocess=pre,
        arch=ckpt["arch"],
        img_size=int(ckpt.get("img_size") or pre.size[0]),
        clf_version=__version__,
        run_name=ckpt.get("run_name") or "",
        best_val_acc=ckpt.get("best_val_acc"),
    )


def default_output(checkpoint_path: Path, fp16: bool) -> Path:
    return checkpoint_path.parent / default_name(fp16)


def default_name(fp16: bool) -> str:
    return "model_fp16.onnx" if fp16 else "model.onnx"


def resolve_output(cfg: ExportConfig, checkpoint_path: Path) -> Path:
    """-o as given; an existing folder gets the default file name inside it; no -o: beside the checkpoint."""
    if not cfg.output:
        return default_output(checkpoint_path, cfg.fp16)
    output = Path(cfg.output)
    return output / default_name(cfg.fp16) if output.is_dir() else output


def report_path(output: Path, fp16: bool) -> Path:
    """parity.json (parity_fp16.json for --fp16, so both exports can live in one run folder) beside the model."""
    return output.with_name("parity_fp16.json" if fp16 else "parity.json")


def _writable_temp(output: Path) -> Path:
    """A temp file beside the output (same filesystem, so the final rename is atomic)."""
    if not output.parent.is_dir():
        problem = "is not a folder" if output.parent.exists() else "does not exist"
        raise ClfError(f"{output}: output folder {output.parent} {problem}; create it or pass another -o")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{output.stem}.", suffix=".onnx.tmp", dir=output.parent)
    except OSError as exc:
        raise ClfError(f"{output}: cannot write there ({exc.strerror}); pass another -o") from None
    os.close(fd)
    return Path(tmp)


def parity_images(cfg: ExportConfig, ckpt: dict, pre: Preprocess) -> tuple[np.ndarray, str]:
    """Distinct preprocessed inputs [N,3,H,W] and where they come from.

    --check-images when given (an error when none of them reads), else the run's validation images,
    else random tensors (logged: the proof is weaker).
    """
    if cfg.check_images:
        images = load_batch(folder_images(cfg.check_images, cfg.max_images), pre)
        if len(images) == 0:
            raise DataError(f"{cfg.check_images}: none of the images could be read for the parity check")
        return images, cfg.check_images
    paths, source = run_images(ckpt, cfg.max_images)
    images = load_batch(paths, pre)
    if len(images):
        return images, source
    logger.warning("no real images available for the parity check; comparing on random tensors")
    return random_batch(pre, max(cfg.batch_sizes) * 2), "random tensors"


def fill_rows(images: np.ndarray, rows: int) -> np.ndarray:
    """Repeat a short list of inputs until it has at least `rows` rows (the largest batch must really run)."""
    reps = -(-rows // len(images))
    return np.concatenate([images] * reps) if reps > 1 else images


def export_onnx(cfg: ExportConfig) -> ExportResult:
    """Export the checkpoint, check it, prove parity, and only then move the model into place.

    Raises:
        ClfError: a missing/corrupt/foreign checkpoint, an output folder that cannot be written, no usable
            --check-images, or every exporter failed. Nothing is left at the output path.
        ParityError: outputs differ beyond tolerance; the model is kept as `<name>.parity-failed.onnx`
            and parity.json says why.
    """
    ckpt_path = resolve_checkpoint(cfg.checkpoint, prefer="best")
    ckpt = load_checkpoint(ckpt_path)
    info = model_info(ckpt)
    model = model_from_checkpoint(ckpt).float().eval()
    output = resolve_output(cfg, ckpt_path)
    tmp = _writable_temp(output)
    try:
        exporter, opset = _write_model(cfg, model, info, tmp)
        report = _check_parity(cfg, ckpt, model, info.preprocess, tmp, output)
        final, report = _publish(report, tmp, output, report_path(output, cfg.fp16))
    finally:
        tmp.unlink(missing_ok=True)
    precision = "fp16" if cfg.fp16 else "fp32"
    result = ExportResult(final, final.stat().st_size, opset, exporter, precision, cfg.simplify, report)
    if not report.passed:
        raise ParityError(f"{output}: parity check failed ({report.reason()}); model kept as {final} for inspection",
                          result)
    return result


def _write_model(cfg: ExportConfig, model, info: ModelInfo, path: Path) -> tuple[str, int]:
    """Export, convert, simplify, add the metadata, check; returns (exporter used, opset of the file)."""
    exporter = graph.export_graph(model, info.preprocess.size, path, cfg.opset, cfg.exporter)
    proto = onnx.load(str(path))
    if cfg.fp16:
        proto = graph.convert_to_fp16(proto)
    if cfg.simplify:
        proto = graph.simplify(proto)
    graph.set_metadata(proto, info_to_props(info))
    onnx.save(proto, str(path))
    graph.check(path)
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=cfg.opset)
    return exporter, opset


def _publish(report: ParityReport, tmp: Path, output: Path, json_path: Path) -> tuple[Path, ParityReport]:
    """Write parity.json and move the model into place: `output` when parity passed, else kept aside.

    Returns:
        Where the model went (`output`, or `<name>.parity-failed.onnx` beside it) and the report naming it.
    """
    final = output if report.passed else output.with_name(f"{output.stem}.parity-failed.onnx")
    report = replace(report, model=final.name)
    report.write(json_path)
    os.chmod(tmp, file_mode(final))  # the temp file is 0600; a deployable model must be readable by others
    tmp.replace(final)
    return final, report


def _check_parity(cfg: ExportConfig, ckpt: dict, model, pre: Preprocess, onnx_path: Path, output: Path) -> ParityReport:
    """Compare PyTorch and onnxruntime (on the provider inference will use) at every batch size."""
    images, source = parity_images(cfg, ckpt, pre)
    session, provider = create_session(onnx_path, device=cfg.device)
    max_diff, mean_diff, agreement = compare(model, session, fill_rows(images, max(cfg.batch_sizes)), cfg.batch_sizes)
    return ParityReport(
        passed=bool(max_diff <= cfg.tolerance and agreement == 1.0),
        max_abs_diff=max_diff,
        mean_abs_diff=mean_diff,
        top1_agreement=agreement,
        atol=cfg.tolerance,
        images=len(images),
        image_source=source,
        batch_sizes=list(cfg.batch_sizes),
        provider=provider,
        model=output.name,
        precision="fp16" if cfg.fp16 else "fp32",
    )
