"""int8 export: static QDQ quantisation of the proven fp32 graph, behind an accuracy gate.

`clf export --int8` first exports and proves the fp32 model exactly as a plain export does; this module then
quantises that final graph (whatever the export built into it) with onnxruntime's own tools: the pre-processing pass
(shape inference, graph optimisation), QDQ format, per-channel int8 weights, uint8 activations calibrated on
training images drawn across every class through the one Preprocess. The gate is about accuracy, not numbers: on the
validation images, top-1 agreement with the fp32 model must reach --min-agreement and the run's metric (its
--metric, accuracy by default; clf/export/int8_metric.py) may drop by at most --max-drop; otherwise the int8 model
is kept aside exactly like a parity failure (exit 3). A multi-label model's gate is clf/export/int8_multilabel.py's;
which nodes stay float, clf/export/int8_graph.py's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx

from clf.config import ExportConfig, Preprocess
from clf.errors import DataError, ModelError, one_line
from clf.export import graph
from clf.export.int8_graph import name_float_tail, symbolic_shapes_supported
from clf.export.int8_metric import drop_problem, metric_gate
from clf.export.int8_multilabel import multilabel_gate, multilabel_problems
from clf.export.parity import ParityReport, confined_images, folder_images, load_batch, spread, top1_agrees
from clf.run_files import SPLIT_FILE, read_split
from clf.tasks import SINGLE_LABEL, Task

logger = logging.getLogger(__name__)

KEY_PRECISION = "clf.precision"
KEY_CALIBRATION = "clf.calibration"
# What runs fastest and keeps accuracy on x86 CPUs with onnxruntime (measured, see README "int8 for CPUs"):
# uint8 activations with int8 per-channel weights (onnxruntime's u8s8 kernels), in QDQ format; int8 activations ran
# several times slower here. Weights use 7 bits (reduce_range): on CPUs without VNNI (this AVX2 machine) the u8s8
# kernels add pairs of products in int16 (VPMADDUBSW), which saturates with full 8-bit per-channel weights. Measured
# on the own cnn trained on the sample competition: 8-bit weights agreed with fp32 on 73 % of the validation
# images (accuracy 85 % -> 60 %), 7-bit weights on 100 %. The host that runs the model may lack VNNI even when the
# one that exports it has it, so the exported model never relies on it.
ACTIVATION_TYPE = "QUInt8"
WEIGHT_TYPE = "QInt8"
REDUCE_RANGE = True
MAX_GATE_IMAGES = 2000  # validation images the gate runs both models on (spread over the classes)
CALIBRATION_BATCH = 8  # images per calibration step (the calibrator keeps each step's activations until it folds them)
STEPS_PER_FOLD = 4  # steps whose activations are folded into the ranges at once: bounds the calibrator's memory


@dataclass(frozen=True)
class GateImages:
    """The images of the int8 step, chosen before any work: calibration images and gate images with their labels,
    and the metric the gate judges by (clf/export/int8_metric.py gate_metric)."""

    calibration: list[str]
    calibration_source: str
    gate: list[str]
    gate_source: str
    gate_labels: list[int] | None  # class index of each gate image; None when the names do not give it
    metric: str = "accuracy"
    classes: list[str] = field(default_factory=list)  # the class names (a metric on ordered classes needs them)


@dataclass(frozen=True)
class Int8Report(ParityReport):
    """The proof of an int8 model: the fp32 graph's parity (the inherited fields, as for any export) plus the gate.

    `top1_agreement` here is the int8 model's agreement with the fp32 one on the gate images; `images` and
    `image_source` describe the gate images; the fp32 parity check's own agreement was 100 % (it passed).
    """

    kind: ClassVar[str] = "int8"

    fp32_accuracy: float | None = None
    int8_accuracy: float | None = None
    accuracy_drop: float | None = None
    min_agreement: float = 0.0
    max_drop: float = 0.0
    int8_max_abs_diff: float = 0.0  # largest logit difference int8 vs fp32 (informative: int8 is not bit-close)
    parity_images: int = 0
    parity_source: str = ""
    calibration: dict[str, Any] = field(default_factory=dict)
    # A multi-label model's gate (clf/export/int8_multilabel.py): `top1_agreement` holds the per-label agreement,
    # macro_f1_vs_fp32 the macro F1 of the int8 decisions with fp32's as truth, its drop is 1 - that.
    task: str = "single_label"
    macro_f1_vs_fp32: float | None = None
    macro_f1_drop: float | None = None
    # A single-label model's gate in the run's metric (clf/export/int8_metric.py) when the gate images' labels are
    # known: what --max-drop bounds (accuracy stays reported). metric_drop is how much worse int8 is (int8 - fp32
    # for log_loss); None when the metric is undefined on the gate images: then the accuracy drop is gated.
    metric: str | None = None
    fp32_metric: float | None = None
    int8_metric: float | None = None
    metric_drop: float | None = None

    def reason(self) -> str:
        """Why the gate failed, in one line ('' when it passed)."""
        if self.task != "single_label":
            return "; ".join(multilabel_problems(self.top1_agreement, self.min_agreement, self.macro_f1_drop,
                                                 self.max_drop))
        problems = []
        if not self.top1_agreement >= self.min_agreement:
            problems.append(f"top-1 agreement with fp32 {self.top1_agreement:.2%} < {self.min_agreement:.2%}")
        if self.metric is not None and self.metric_drop is not None:
            if not self.metric_drop <= self.max_drop:
                problems.append(drop_problem(self.metric, self.metric_drop, self.max_drop))
        elif self.accuracy_drop is not None and not self.accuracy_drop <= self.max_drop:
            problems.append(f"accuracy drop {self.accuracy_drop * 100:.2f} points > {self.max_drop * 100:.2f}")
        return "; ".join(problems)


def default_name() -> str:
    return "model_int8.onnx"


# ---- which images ----


def choose_images(cfg: ExportConfig, run_folder: Path, run_name: str, classes: Sequence[str],
                  check_paths: list[str], metric: str = "accuracy") -> GateImages:
    """Calibration images (the run's training images, spread over the classes) and gate images (its validation
    images, else --check-images), read from split.json only: a checkpoint is data, never a list of paths. `metric`
    (int8_metric.gate_metric) is what the gate judges by.

    Raises:
        DataError: no training images to calibrate on, or no real images to gate on; says what to pass.
    """
    split = read_split(run_folder / SPLIT_FILE)
    run = run_name or "the run"
    train = confined_images(split["root"], split["train"], run_folder / SPLIT_FILE) if split else []
    val = confined_images(split["root"], split["val"], run_folder / SPLIT_FILE) if split else []
    if train:
        calibration, calibration_source = train, f"training images of {run}"
    elif check_paths:
        calibration, calibration_source = check_paths, str(cfg.check_images)
    else:
        raise DataError(f"{run_folder}: no training images for the int8 calibration (no usable {SPLIT_FILE} beside "
                        "the checkpoint); pass --check-images FOLDER with images like the training data")
    if cfg.check_images:  # up to MAX_GATE_IMAGES of them (the parity check takes --max-images)
        gate, gate_source, root = folder_images(cfg.check_images, MAX_GATE_IMAGES), cfg.check_images, cfg.check_images
    elif val:
        gate, gate_source, root = spread(val, MAX_GATE_IMAGES), f"validation images of {run}", split["root"]
    else:
        raise DataError(f"{run_folder}: no validation images for the int8 accuracy gate (the run has no validation "
                        f"split in {SPLIT_FILE}); pass --check-images FOLDER (class folders give accuracies too)")
    if len(calibration) < cfg.calibration_images:
        logger.debug("calibrating on all %d %s (fewer than --calibration-images %d)", len(calibration),
                    calibration_source, cfg.calibration_images)
    return GateImages(spread(calibration, cfg.calibration_images), calibration_source, gate, gate_source,
                      labels_from_folders(gate, root, classes), metric, list(classes))


def labels_from_folders(paths: Sequence[str], root: str, classes: Sequence[str]) -> list[int] | None:
    """Each image's class index from its class folder (`root/<class>/...`); None unless every image has one."""
    index = {name: i for i, name in enumerate(classes)}
    labels = []
    for path in paths:
        first = Path(os.path.relpath(path, root)).parts[0]
        if first not in index:
            return None
        labels.append(index[first])
    return labels


# ---- quantisation ----


class _CalibrationReader:
    """onnxruntime's CalibrationDataReader over preprocessed images, in steps; `set_range` lets the calibrator
    fold the activations of a few steps at a time into its ranges instead of keeping them all."""

    def __init__(self, images: np.ndarray, input_name: str) -> None:
        self.steps = [images[i : i + CALIBRATION_BATCH] for i in range(0, len(images), CALIBRATION_BATCH)]
        self.input_name = input_name
        self.set_range(0, len(self.steps))

    def __len__(self) -> int:
        return len(self.steps)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._pending: Iterator[np.ndarray] = iter(self.steps[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._pending, None)
        return None if batch is None else {self.input_name: batch}


def _fold_stride(steps: int) -> int:
    """The largest number of steps <= STEPS_PER_FOLD that divides `steps` (onnxruntime requires a divisor)."""
    return max(n for n in range(1, min(STEPS_PER_FOLD, steps) + 1) if steps % n == 0)


def quantize(fp32: Path, out: Path, images: np.ndarray, method: str) -> None:
    """Pre-process, calibrate and quantise `fp32` into `out` (QDQ, per-channel 7-bit int8 weights, uint8 activations).

    Raises:
        ModelError: onnxruntime's quantiser failed (its reason in the message).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    reader = _CalibrationReader(images, graph.INPUT_NAME)
    with tempfile.TemporaryDirectory(prefix="clf-int8-") as work:
        prepared = Path(work) / "prepared.onnx"
        try:
            with _quiet_onnxruntime_logging():
                quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=not symbolic_shapes_supported(fp32))
                kept_float = name_float_tail(prepared)
                quantize_static(
                    str(prepared), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=REDUCE_RANGE, nodes_to_exclude=kept_float,
                    activation_type=getattr(QuantType, ACTIVATION_TYPE), weight_type=getattr(QuantType, WEIGHT_TYPE),
                    calibrate_method=methods[method],
                    extra_options={"CalibStridedMinMax": _fold_stride(len(reader))},
                )
        except Exception as exc:  # noqa: BLE001 - the quantiser raises many types; one line for the user
            raise ModelError(f"onnxruntime could not quantise the model to int8: {one_line(exc)}") from None


@contextlib.contextmanager
def _quiet_onnxruntime_logging() -> Iterator[None]:
    """The quantiser warns through the root logger (pre-processing, opsets): not the user's business, not stderr."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def calibration_settings(cfg: ExportConfig, images: GateImages, count: int) -> dict[str, Any]:
    """What the metadata and the proof record about the calibration."""
    return {"method": cfg.calibration_method, "images": count, "source": images.calibration_source,
            "format": "QDQ", "activations": ACTIVATION_TYPE,
            "weights": f"{WEIGHT_TYPE} per-channel" + (", 7-bit (reduce_range)" if REDUCE_RANGE else "")}


def finish_model(path: Path, fp32: onnx.ModelProto, settings: dict[str, Any], output: Path) -> None:
    """The fp32 model's metadata (classes, Preprocess, provenance) plus precision and calibration; checked."""
    proto = onnx.load(str(path))
    props = {entry.key: entry.value for entry in fp32.metadata_props}
    graph.set_metadata(proto, {**props, KEY_PRECISION: "int8", KEY_CALIBRATION: json.dumps(settings)})
    onnx.save(proto, str(path))
    graph.check(path, name=output)


# ---- the gate ----


def predict_logits(path: Path, images: np.ndarray, device: str, batch: int = 32) -> tuple[np.ndarray, str]:
    """Logits of the model at `path` on `images`, in batches, on the provider inference will use."""
    from clf.serve.session import create_session

    session, provider = create_session(path, device=device)
    name = session.get_inputs()[0].name
    outputs = [session.run(None, {name: images[i : i + batch]})[0] for i in range(0, len(images), batch)]
    return np.concatenate(outputs).astype(np.float32), provider


def accuracy(logits: np.ndarray, labels: Sequence[int] | None, task: Task = SINGLE_LABEL) -> float | None:
    """Accuracy by the task's decision rule (top-1); a row holding NaN or inf is wrong (argmax would pick its
    first NaN as a class)."""
    if labels is None:
        return None
    finite = np.isfinite(logits).all(axis=1)
    return float((finite & task.correct(logits, np.asarray(labels))).mean())


def gate(cfg: ExportConfig, fp32: Path, int8: Path, images: np.ndarray, labels: list[int] | None,
         source: str, settings: dict[str, Any], parity: ParityReport, task: Task = SINGLE_LABEL,
         metric: str = "accuracy", classes: Sequence[str] | None = None) -> Int8Report:
    """Run both models on the gate images; agreement, accuracies, the run's metric and the verdict, as the int8
    model's proof."""
    reference, _ = predict_logits(fp32, images, cfg.device)
    quantized, provider = predict_logits(int8, images, cfg.device)
    measured = (multilabel_gate(reference, quantized, task) if task.multilabel
                else single_label_gate(reference, quantized, labels, source, metric, classes))
    report = Int8Report(
        **{**asdict(parity), "passed": False, "images": len(images), "image_source": source, "provider": provider,
           "precision": "int8", **measured},
        min_agreement=cfg.min_agreement, max_drop=cfg.max_drop,
        int8_max_abs_diff=float(np.abs(quantized - reference).max()), parity_images=parity.images,
        parity_source=parity.image_source, calibration=settings,
    )
    return replace(report, passed=report.reason() == "")


def single_label_gate(reference: np.ndarray, quantized: np.ndarray, labels: list[int] | None, source: str,
                      metric: str = "accuracy", classes: Sequence[str] | None = None) -> dict[str, Any]:
    """A single-label model's gate measurements, as Int8Report fields: top-1 agreement with fp32, and the accuracies,
    the run's metric and their drops when the gate images' labels are known."""
    fp32_acc, int8_acc = accuracy(reference, labels), accuracy(quantized, labels)
    if labels is None:
        logger.warning("%s: no class folders, so no accuracies; the int8 gate checks the top-1 agreement only", source)
    return {"top1_agreement": float(top1_agrees(quantized, reference).mean()), "fp32_accuracy": fp32_acc,
            "int8_accuracy": int8_acc,
            "accuracy_drop": None if fp32_acc is None or int8_acc is None else fp32_acc - int8_acc,
            **metric_gate(metric, reference, quantized, labels, classes, (fp32_acc, int8_acc))}


def quantize_proven(cfg: ExportConfig, staged: Path, output: Path, images: GateImages, pre: Preprocess,
                    parity: ParityReport, task: Task = SINGLE_LABEL) -> Int8Report:
    """Replace the proven fp32 model at `staged` by its int8 quantisation and gate it; returns the int8 proof.

    The caller keeps the model aside when the report did not pass (as for a parity failure).

    Raises:
        DataError: none of the calibration or gate images could be read.
        ModelError: the quantiser failed.
    """
    calibration = _load(images.calibration, pre, f"{images.calibration_source}: none of the calibration images")
    gate_images = _load(images.gate, pre, f"{images.gate_source}: none of the gate images")
    labels = images.gate_labels if len(gate_images) == len(images.gate) else None  # a skipped image shifts them
    settings = calibration_settings(cfg, images, len(calibration))
    logger.debug("quantising to int8 (%s calibration on %d %s)", cfg.calibration_method, len(calibration),
                images.calibration_source)
    fp32_proto = onnx.load(str(staged))
    with tempfile.TemporaryDirectory(prefix="clf-int8-") as work:
        fp32 = Path(work) / "fp32.onnx"
        int8 = Path(work) / "int8.onnx"
        os.replace(staged, fp32)  # the staged file is clf's temp file: it receives the int8 model below
        try:
            quantize(fp32, int8, calibration, cfg.calibration_method)
            finish_model(int8, fp32_proto, settings, output)
            report = gate(cfg, fp32, int8, gate_images, labels, images.gate_source, settings, parity, task,
                          images.metric, images.classes)
        finally:
            os.replace(int8 if int8.exists() else fp32, staged)
    return report


def _load(paths: list[str], pre: Preprocess, what: str) -> np.ndarray:
    images = load_batch(paths, pre)
    if len(images) == 0:
        raise DataError(f"{what} could be read; check the files")
    return images
