"""clf export: best checkpoint -> model.onnx (dynamic batch, clf metadata) + its parity proof, atomically.

Every output is checked before any work; the model is written to a clf temp file beside the output, proven
against PyTorch there, and only then renamed into place. A model that fails the proof is kept aside as
`<stem>.parity-failed.onnx` with its own proof; the model already at the output, and its proof, stay untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np
import onnx
from torch import nn

from clf.atomic import atomic_copy, atomic_output, check_outputs, clean_stale_temps
from clf.config import ExportConfig, Preprocess
from clf.errors import ClfError, DataError, ModelError, ParityError
from clf.export import calibration, ensemble, graph, int8, int8_metric
from clf.export.calibration import CalibrationReport
from clf.export.parity import ParityReport, compare, folder_images, load_batch, random_batch, run_images, spread
from clf.ownership import record_files
from clf.serve.metadata import Deployment, ModelInfo, deployment_to_props, info_to_props, model_task
from clf.serve.session import create_session
from clf.tasks import SINGLE_LABEL, Task

logger = logging.getLogger(__name__)

PROOF_SUFFIX = ".parity.json"  # model.onnx -> model.parity.json
KEPT_ASIDE_SUFFIX = ".parity-failed.onnx"  # model.onnx -> model.parity-failed.onnx
MAX_NAME_BYTES = 255  # the longest file name the common filesystems take
# Which of a run's weights the model holds, "raw" or "ema" (best.pt's "weights"): an added metadata key only.
KEY_WEIGHTS = "clf.weights"


@dataclass(frozen=True)
class ExportResult:
    """What `export_onnx` wrote: the model (kept aside when parity failed), its proof, how, and the parity report."""

    kind: ClassVar[str] = "onnx"  # the export target (clf.export.targets)

    path: Path
    proof: Path
    size_bytes: int
    opset: int
    exporter: str
    precision: str
    simplified: bool
    parity: ParityReport
    weights: str = "raw"  # "ema" when the checkpoint holds the averaged weights (by validation, or by rule without it)
    deployment: Deployment | None = None  # members, average, TTA, temperature (None: a plain single model)
    calibration: CalibrationReport | None = None  # the temperature fit, with NLL/ECE before and after
    throughput: dict[str, float] | None = None  # images/s at batch 8: "deployed" and "single member"

    def onnx_result(self) -> ExportResult:
        """The ONNX export (and its parity proof): this result itself."""
        return self

    def proof_extra(self) -> dict[str, Any]:
        """What the proof adds for an ensemble / TTA / calibrated graph (nothing for a plain model)."""
        extra: dict[str, Any] = {}
        if self.deployment is not None:
            extra.update(asdict(self.deployment))
        if self.calibration is not None:
            extra["temperature_calibration"] = self.calibration.to_dict()  # int8 has its own "calibration"
        return extra


def default_name(fp16: bool, int8: bool = False) -> str:
    return "model_int8.onnx" if int8 else "model_fp16.onnx" if fp16 else "model.onnx"


def resolve_output(cfg: ExportConfig, checkpoint_path: Path, group: Path | None = None) -> Path:
    """-o as given; an existing folder gets the default file name inside it; no -o: beside the checkpoint (in the
    fold group's folder for a group)."""
    if not cfg.output:
        return (group or checkpoint_path.parent) / default_name(cfg.fp16, cfg.int8)
    output = Path(cfg.output)
    # os.path.isdir: a name too long to stat is not a folder; check_outputs then says what is wrong with it
    return output / default_name(cfg.fp16, cfg.int8) if os.path.isdir(output) else output


def sibling(path: Path, suffix: str) -> Path:
    """`<stem><suffix>` beside `path`. A name that would pass 255 bytes keeps a cut stem tagged with a hash of the
    whole name, so a legal model name always gets a legal sibling and two models never share one."""
    name = path.stem + suffix
    if len(name.encode()) <= MAX_NAME_BYTES:
        return path.with_name(name)
    tag = "~" + hashlib.sha256(path.name.encode()).hexdigest()[:12]
    room = MAX_NAME_BYTES - len((tag + suffix).encode())
    stem = path.stem.encode()[:room].decode("utf-8", errors="ignore")  # never half a character
    return path.with_name(stem + tag + suffix)


def proof_path(model: Path) -> Path:
    """The parity proof of a model file: model.onnx -> model.parity.json, one per model, beside it."""
    return sibling(model, PROOF_SUFFIX)


def kept_aside_path(output: Path) -> Path:
    """Where a model that failed its parity check goes: model.onnx -> model.parity-failed.onnx."""
    return sibling(output, KEPT_ASIDE_SUFFIX)


def check_export_outputs(output: Path, sources: ensemble.Sources, image_files: list[str]) -> None:
    """Before any work: every file this export may write is a writable file path, none of them an input (any
    member's checkpoint or split.json, a group's record and oof.csv).

    Raises:
        ClfError: naming the output and what it collides with or why it cannot be written.
    """
    failed = kept_aside_path(output)
    check_outputs(
        {"-o": output, "the parity proof": proof_path(output), "the kept-aside model": failed,
         "its parity proof": proof_path(failed)},
        inputs=sources.inputs,
        input_files=image_files,
    )


def parity_images(cfg: ExportConfig, check_paths: list[str], run_folder: Path, run_name: str,
                  pre: Preprocess) -> tuple[np.ndarray, str]:
    """Distinct preprocessed inputs [N,3,H,W] and where they come from.

    `check_paths` (the --check-images chosen) when given (an error when none of them reads), else the validation
    images the run's split.json lists (the training images for a --no-val run), else random tensors (logged: the
    proof is weaker).
    """
    if cfg.check_images:
        images = load_batch(check_paths, pre)
        if len(images) == 0:
            raise DataError(f"{cfg.check_images}: none of the images could be read for the parity check")
        return images, cfg.check_images
    paths, source = run_images(run_folder, run_name, cfg.max_images)
    images = load_batch(paths, pre)
    if len(images):
        return images, source
    return random_fallback(cfg, pre)


def random_fallback(cfg: ExportConfig, pre: Preprocess) -> tuple[np.ndarray, str]:
    """Random inputs for the parity check when no real image can be had (logged: the proof is weaker), enough for
    two batches of the largest batch size."""
    logger.warning("no real images available for the parity check; comparing on random tensors")
    return random_batch(pre, max(cfg.batch_sizes) * 2), "random tensors"


def fill_rows(images: np.ndarray, rows: int) -> np.ndarray:
    """Repeat a short list of inputs until it has at least `rows` rows (the largest batch must really run)."""
    reps = -(-rows // len(images))
    return np.concatenate([images] * reps) if reps > 1 else images


def export_onnx(cfg: ExportConfig) -> ExportResult:
    """Export the checkpoint (or the ensemble of several, with TTA views and a temperature), check it, prove parity,
    and only then move the model and its proof into place.

    Stages: resolve and load the members; build the ONE torch module that is deployed (a plain single run: the bare
    model, the same graph as ever); write its graph to a temp file; gate it on parity; place it and its proof.

    With --int8 the proven fp32 graph is then quantised and gated on accuracy (clf/export/int8.py); a model failing
    that gate is kept aside exactly like one failing parity.

    Raises:
        ClfError: a missing/corrupt/foreign checkpoint, members that differ, an output that cannot be written or
            would replace an input, no usable --check-images, or every exporter failed. Nothing is left at the output.
        ParityError: outputs differ beyond tolerance; the model is kept as `<stem>.parity-failed.onnx` with
            `<stem>.parity-failed.parity.json` saying why; the model at the output and its proof are untouched.
    """
    sources = ensemble.resolve_sources(cfg)
    output = resolve_output(cfg, sources.checkpoints[0], sources.group)
    check_paths = folder_images(cfg.check_images, cfg.max_images) if cfg.check_images else []
    check_export_outputs(output, sources, check_paths)
    members = ensemble.load_members(sources)
    ensemble.member_weights(cfg, len(members))  # a wrong --weights count is refused before any work
    ensemble.check_tta_allowed(cfg, members)
    ensemble.check_calibrate_allowed(cfg, members)
    # 1. the ONE torch module that is deployed, its parity inputs, its temperature
    model, info, weights = _build_module(cfg, members, sources)
    images, source = _parity_inputs(cfg, sources, members, check_paths, info.preprocess)
    calibration = _calibrate(model, members, sources) if cfg.calibrate else None
    deployed = None
    if isinstance(model, ensemble.DeployedModel):
        model.temperature = calibration.temperature if calibration else None
        deployed = ensemble.deployment(cfg, members, model.temperature)
    int8_images = (int8.choose_images(cfg, sources.checkpoints[0].parent, info.run_name, info.classes, check_paths,
                                      int8_metric.gate_metric([member.ckpt for member in members], info.classes))
                   if cfg.int8 else None)
    proof = proof_path(output)
    remove_stale_temps(output.parent)
    record_files(output.parent, [output.name, proof.name])  # a clf run folder lists what clf wrote in it
    with atomic_output(output) as staged, _named_as(staged, output):
        # 2. its graph, in a temp file beside the output; 3. the parity gate; 4. the proof, then the model, in place
        exporter, opset = _write_model(cfg, model, info, staged, output, weights, deployed)
        tolerance = parity_tolerance(cfg.tolerance, calibration.temperature if calibration else None)
        report = _check_parity(cfg, model, images, source, staged, output, weights, tolerance, model_task(info))
        result = ExportResult(output, proof, staged.stat().st_size, opset, exporter, _precision(cfg), cfg.simplify,
                              report, weights, deployed, calibration)
        if not report.passed:
            raise _keep_aside(staged, result)
        if int8_images is not None:  # the proven fp32 graph becomes the int8 model, behind its accuracy gate
            report = int8.quantize_proven(cfg, staged, output, int8_images, info.preprocess, report, model_task(info))
            result = replace(result, parity=report, precision="int8", size_bytes=staged.stat().st_size)
            if not report.passed:
                raise _keep_aside(staged, result, gate="int8 accuracy gate")
        if deployed is not None:
            result = replace(result, throughput=_throughput(cfg, staged, members[0], images))
        # the proof before the model moves: a proof that cannot be written leaves both as they were
        report.write(proof, result.proof_extra())
    return result


def remove_stale_temps(folder: Path) -> None:
    """clf's temp files a killed export (kill -9) left in the output folder; only those clf.atomic.is_stale_temp
    proves stale (clf's temp name, writer gone, a regular file of this user's), never another export's live one."""
    for stale in clean_stale_temps(folder):
        logger.info("%s: removed a temp file left by an interrupted write", stale)


def _parity_inputs(cfg: ExportConfig, sources: ensemble.Sources, members: list[ensemble.Member],
                   check_paths: list[str], pre: Preprocess) -> tuple[np.ndarray, str]:
    """--check-images; else a fold group's out-of-fold images, or the first run's validation images."""
    if sources.group is not None and not cfg.check_images:
        return group_images(cfg, sources.group, [m.path.parent for m in members], pre)
    first = members[0]
    return parity_images(cfg, check_paths, first.path.parent, first.info.run_name, pre)


def _build_module(cfg: ExportConfig, members: list[ensemble.Member],
                  sources: ensemble.Sources) -> tuple[nn.Module, ModelInfo, str]:
    """The module to deploy, the metadata it carries and which weights it holds ("raw", "ema" or "mixed")."""
    for member in members:
        if member.weights == "ema":  # the raw weights are the usual case: said only with -v (stderr: the error line)
            # Not "they validated better": without validation best.pt holds the EMA weights by rule.
            logger.info("exporting the EMA (averaged) weights of %s, the weights its best.pt holds", member.path)
        else:
            logger.debug("exporting the raw weights of %s", member.path)
    info = ensemble.ensemble_info(members, sources)
    weights = ensemble.weights_kind(members)
    if not ensemble.needs_wrapper(cfg, members):
        return members[0].model, info, weights
    return ensemble.build_deployed(cfg, members), info, weights


def _calibrate(model: ensemble.DeployedModel, members: list[ensemble.Member],
               sources: ensemble.Sources) -> calibration.CalibrationReport:
    """Fit the temperature: on a fold group's out-of-fold predictions, else on the first run's validation images."""
    classes = members[0].info.classes
    if sources.group is not None:
        logits, labels, source = calibration.oof_logits(sources.group, classes)
    else:
        first = members[0]
        images, labels = calibration.labelled_validation_images(first.path.parent, classes, first.info.preprocess)
        logits = calibration.module_logits(model, images)
        source = f"validation images of {first.info.run_name or first.path.parent.name}"
    return calibration.calibrate(logits, labels, source)


def group_images(cfg: ExportConfig, group: Path, folders: list[Path], pre: Preprocess) -> tuple[np.ndarray, str]:
    """A fold group's parity inputs: its folds' validation images (together, every out-of-fold image), spread."""
    paths: list[str] = []
    for folder in folders:
        paths += run_images(folder, folder.name, cfg.max_images)[0]
    images = load_batch(spread(paths, cfg.max_images), pre)
    if len(images):
        return images, f"out-of-fold validation images of {group.name}"
    return random_fallback(cfg, pre)


THROUGHPUT_BATCH = 8


def _throughput(cfg: ExportConfig, deployed_path: Path, first: ensemble.Member,
                images: np.ndarray) -> dict[str, float]:
    """images/s of session.run at batch 8 on the parity inputs: the deployed file, and its first member alone (exported
    again, bare, at the same precision: fp16, or int8 calibrated on the same inputs)."""
    import tempfile

    batch = fill_rows(images, THROUGHPUT_BATCH)[:THROUGHPUT_BATCH]
    session, _ = create_session(deployed_path, device=cfg.device)
    measured = {"deployed": images_per_second(session, batch)}
    with tempfile.TemporaryDirectory(prefix="clf-member-") as folder:
        single = Path(folder) / "member.onnx"
        graph.export_graph(first.model, first.info.preprocess.size, single, cfg.opset, cfg.exporter)
        if cfg.fp16:  # compared at the same precision
            onnx.save(graph.convert_to_fp16(onnx.load(str(single))), str(single))
        elif cfg.int8:  # int8 against fp32 would credit the ensemble with the quantisation's speed-up
            quantized = Path(folder) / "member_int8.onnx"
            int8.quantize(single, quantized, images, cfg.calibration_method)
            single = quantized
        session, _ = create_session(single, device=cfg.device)
        measured["single member"] = images_per_second(session, batch)
    return measured


def images_per_second(session: Any, batch: np.ndarray, min_seconds: float = 0.3, min_runs: int = 3) -> float:
    """Throughput of `session.run` on `batch`, after one warm-up run, over at least min_runs runs and min_seconds."""
    import time

    name = session.get_inputs()[0].name
    session.run(None, {name: batch})
    runs, start = 0, time.perf_counter()
    while runs < min_runs or time.perf_counter() - start < min_seconds:
        session.run(None, {name: batch})
        runs += 1
    return runs * len(batch) / (time.perf_counter() - start)


def _precision(cfg: ExportConfig) -> str:
    return "fp16" if cfg.fp16 else "fp32"


@contextlib.contextmanager
def _named_as(staged: Path, output: Path) -> Iterator[None]:
    """Errors name the user's output path, never clf's temp file the work happens in."""
    try:
        yield
    except ClfError as exc:
        if str(staged) in str(exc):
            exc.args = (str(exc).replace(str(staged), str(output)), *exc.args[1:])
        raise


def _keep_aside(staged: Path, result: ExportResult, gate: str = "parity check") -> ParityError:
    """Copy the failed model beside the output as `<stem>.parity-failed.onnx`, with its own proof; the error."""
    failed = kept_aside_path(result.path)
    proof = proof_path(failed)
    report = replace(result.parity, model=failed.name)
    record_files(failed.parent, [failed.name, proof.name])
    report.write(proof, result.proof_extra())
    atomic_copy(staged, failed)
    kept = replace(result, path=failed, proof=proof, parity=report)
    return ParityError(f"{result.path}: {gate} failed ({report.reason()}); model kept as {failed} for inspection",
                       kept)


def _write_model(cfg: ExportConfig, model, info: ModelInfo, path: Path, output: Path,
                 weights: str = "raw", deployed: Deployment | None = None) -> tuple[str, int]:
    """Export, convert, simplify, add the metadata (and what an ensemble/TTA/calibrated graph computes), check;
    returns (exporter used, opset of the file)."""
    exporter = graph.export_graph(model, info.preprocess.size, path, cfg.opset, cfg.exporter)
    proto = onnx.load(str(path))
    if cfg.fp16:
        proto = graph.convert_to_fp16(proto)
    if cfg.simplify:
        proto = graph.simplify(proto)
    added = deployment_to_props(deployed) if deployed is not None else {}
    graph.set_metadata(proto, {**info_to_props(info), KEY_WEIGHTS: weights, **added})
    onnx.save(proto, str(path))
    graph.check(path, name=output)
    opset = graph.model_opset(proto)
    if opset != cfg.opset:  # fp16 conversion or onnxslim must not change what was asked for
        raise ModelError(f"{output}: the model has opset {opset}, not the --opset {cfg.opset} asked for")
    return exporter, opset


def parity_tolerance(atol: float, temperature: float | None) -> float:
    """The max abs difference allowed on the output: --atol, scaled by 1/T for a temperature T < 1.

    Dividing logits by T multiplies their float32 rounding differences by 1/T, and the sharpened log-probabilities
    of the unlikely classes grow to tens in magnitude, where 1e-4 is a few float32 steps: the gate holds the graph
    before the temperature to --atol, and the temperature's own scaling does not count against it.
    """
    return atol / temperature if temperature is not None and temperature < 1 else atol


def _check_parity(cfg: ExportConfig, model, images: np.ndarray, source: str, onnx_path: Path,
                  output: Path, weights: str = "raw", tolerance: float | None = None,
                  task: Task = SINGLE_LABEL) -> ParityReport:
    """Compare PyTorch and onnxruntime (on the provider inference will use) at every batch size; the agreement is
    of the task's decisions (multi-label: every class decided alike at the model's thresholds)."""
    tolerance = cfg.tolerance if tolerance is None else tolerance
    session, provider = create_session(onnx_path, device=cfg.device)
    max_diff, mean_diff, agreement = compare(model, session, fill_rows(images, max(cfg.batch_sizes)), cfg.batch_sizes,
                                             task)
    return ParityReport(
        passed=bool(max_diff <= tolerance and agreement == 1.0),
        max_abs_diff=max_diff,
        mean_abs_diff=mean_diff,
        top1_agreement=agreement,
        atol=tolerance,
        images=len(images),
        image_source=source,
        batch_sizes=list(cfg.batch_sizes),
        provider=provider,
        model=output.name,
        precision=_precision(cfg),
        weights=weights,
    )
