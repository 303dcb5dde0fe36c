"""The names users choose from: devices, export targets and exporters, opsets, TTA views, resize modes, formats.

Ground floor, like clf/config.py: imports nothing of clf but errors, and no third-party library, so that config's
validation, `clf --help` and every package can read them without pulling in export or serve. The code that gives a
name its meaning stays with its owner and is kept in step by tests: the onnxruntime providers of each device in
clf/serve/session.py, the function of each export target in clf/export/targets.py, the exporters in
clf/export/graph.py (tests/test_choices.py).
"""

from __future__ import annotations

from clf.errors import ClfError

# ---------------------------------------------------------------- preprocessing
RESIZE_MODES = ("stretch", "shorter_crop")
INTERPOLATIONS = ("nearest", "linear", "area", "cubic", "lanczos")

# ---------------------------------------------------------------- clf train
OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("cosine", "step", "none")
TRAIN_DEVICES = ("auto", "cpu", "cuda")  # torch devices
# Mixed precision: cuda = CUDA bf16/fp16 only; auto adds CPU bf16 where it pays (clf/train/precision.py)
AMP_MODES = ("cuda", "auto", "on", "off")
# Augmentation presets and policies (the values of each preset live in clf/data/augment_presets.py).
AUGMENT_PRESETS = ("none", "light", "default", "strong")
AUTO_AUGMENTS = ("none", "trivial", "rand")
# --class-weights: the rules computed from the training split's class counts (clf/train/class_weights.py); any
# other value is a CSV file of class,weight.
CLASS_WEIGHT_RULES = ("auto", "effective")
SAMPLERS = ("none", "balanced")  # how a training epoch draws its images (clf/train/sampler.py)

# What a model predicts (clf/tasks.py): one class per image, or any number of them (sigmoid per class).
TASK_NAMES = ("single_label", "multilabel")
# The --loss names each task trains with, its default first (clf/train/losses.py holds them; a test keeps them in
# step): softmax losses on one class per image, sigmoid losses on multi-hot targets.
TASK_LOSSES = {
    "single_label": ("cross_entropy", "focal"),
    "multilabel": ("bce", "asl"),
}

# The competition's metric (clf/metrics.py holds each one's function, in this order).
COMPETITION_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "f1_micro", "roc_auc", "log_loss", "qwk",
                       "f1_samples", "map")
# The metrics each task can be judged by, its default first (multi-label: F1 and AUC per class, mean average
# precision, binary log-loss; accuracy, balanced accuracy and qwk need one class per image).
TASK_METRICS = {
    "single_label": ("accuracy", "balanced_accuracy", "f1_macro", "f1_micro", "roc_auc", "log_loss", "qwk"),
    "multilabel": ("f1_macro", "f1_micro", "f1_samples", "map", "roc_auc", "log_loss"),
}

# ---------------------------------------------------------------- inference (onnxruntime)
DEVICES = ("auto", "cpu", "cuda", "tensorrt")  # onnxruntime devices: export's parity check, infer, eval, serve
# Test-time augmentation: the views averaged, as flips of the preprocessed [N, C, H, W] input ("h" flips the width
# axis, "v" the height axis, "hv" both). The same names serve `clf export --tta` (views inside the graph) and
# `clf infer --tta` (views at run time); the views are averaged like ensemble members (probabilities by default).
TTA_VIEWS: dict[str, tuple[str, ...]] = {
    "none": ("",),
    "hflip": ("", "h"),
    "vflip": ("", "v"),
    "hvflip": ("", "h", "v", "hv"),
}
# Submission ids from an image file: "stem" (img_01), "name" (img_01.jpg), "relpath" (sub/img_01.jpg).
ID_FORMATS = ("stem", "name", "relpath")
# Top-k labels: "columns" (label, label_2 .. label_K) or "space" ("a b c" in the label column, MAP@K style).
TOPK_FORMATS = ("columns", "space")

# ---------------------------------------------------------------- clf export
EXPORT_TARGETS = ("onnx", "triton")  # the keys of clf.export.targets.TARGETS, in the same order
# How an ensemble's members are combined: "prob" averages softmax probabilities (output: their log), "logit" averages
# the logits. The same weights and rule average TTA views.
AVERAGES = ("prob", "logit")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")  # int8: how activation ranges are chosen
EXPORTERS = ("auto", "dynamo", "torchscript")
# The opsets each exporter writes exactly as asked, from torch.onnx._constants (a test keeps them in step):
# TorchScript ONNX_MIN_OPSET..ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET, dynamo 18..ONNX_MAX_OPSET. Outside them the
# exporters fail with a traceback or quietly write another opset.
OPSETS = {"torchscript": (7, 20), "dynamo": (18, 23)}
DYNAMO_MIN_OPSET = OPSETS["dynamo"][0]
MIN_OPSET = min(low for low, _ in OPSETS.values())
MAX_OPSET = max(high for _, high in OPSETS.values())
MIN_INT8_OPSET = 13  # per-channel QDQ (QuantizeLinear with an axis) needs opset 13
MAX_BATCH = 4096  # the batch axis of the exported graph runs from 1 to this (dynamo needs a bound)


def check_exporter_opset(exporter: str, opset: int) -> None:
    """Refuse an exporter name or an opset no exporter (or not the chosen one) writes, in one line.

    Raises:
        ClfError: naming the flag, what is supported and what to do.
    """
    if exporter not in EXPORTERS:
        raise ClfError(f"--exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        ranges = ", ".join(f"{name} {low}-{high}" for name, (low, high) in OPSETS.items())
        raise ClfError(f"--opset {opset}: clf exports opsets {MIN_OPSET} to {MAX_OPSET} ({ranges}); pass one of those")
    if exporter == "auto":
        return
    low, high = OPSETS[exporter]
    if opset < low:
        raise ClfError(f"--opset {opset}: the {exporter} exporter writes opset {low} or newer; "
                       f"use --exporter torchscript or a newer --opset")
    if opset > high:
        raise ClfError(f"--opset {opset}: the {exporter} exporter writes opset {high} or older; "
                       f"use --exporter dynamo or an older --opset")
