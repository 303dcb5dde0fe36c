"""What an ONNX model must be for the Predictor to feed it: one float [N, 3, H, W] input at the preprocess size, an
[N, C] output, class names that match C, no TTA already inside the graph; and the ModelInfo (classes, preprocessing)
read from its clf metadata, with the caller's overrides.

Separate from clf.serve.predictor (the decode -> run pipeline) because these checks run once, on the model's
declared inputs, outputs and metadata, before any image is read; each raises one DataError naming the model file.
No torch here: a deployed host has onnxruntime, numpy and OpenCV only.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clf.config import Preprocess
from clf.errors import DataError, one_line
from clf.serve.metadata import KEY_TTA, ModelInfo, check_class_names, has_clf_metadata, info_from_props

# The Predictor's logger: the override warning is the Predictor's, and its users filter on that name.
logger = logging.getLogger("clf.serve.predictor")

INPUT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def check_single_input(model_path: Path, inputs: Sequence[Any]) -> None:
    """clf feeds one tensor: a model with more inputs would fail in session.run on the missing feeds."""
    if len(inputs) != 1:
        raise DataError(f"{model_path}: the model has {len(inputs)} inputs "
                        f"({', '.join(i.name for i in inputs)}); clf feeds one image tensor [N, 3, H, W]")


def model_info(model_path: Path, props: Mapping[str, str], preprocess: Preprocess | Mapping[str, Any] | None,
               classes: Sequence[str] | None, output_shape: list) -> ModelInfo:
    """clf metadata from the model (its custom metadata ``props``), with explicit overrides; non-clf models need
    ``preprocess``."""
    check_output_rank(model_path, output_shape)
    num_outputs = output_shape[-1] if output_shape and isinstance(output_shape[-1], int) else None
    overrides = dict(preprocess) if isinstance(preprocess, Mapping) else None
    if has_clf_metadata(props):
        info = info_from_props(props, str(model_path))
        if preprocess is not None:
            changed = make_preprocess(model_path, preprocess, info.preprocess)
            if changed != info.preprocess:
                logger.warning("%s: preprocessing overridden (%s instead of the model's %s)", model_path,
                               changed, info.preprocess)
            info = dataclasses.replace(info, preprocess=changed)
    elif preprocess is None or (overrides is not None and "size" not in overrides):
        info = info_from_props(props, str(model_path))  # raises: no clf metadata, pass --img-size ...
    else:
        if classes is None and num_outputs is None:
            raise DataError(f"{model_path}: the number of classes is not fixed in the model; pass --labels")
        info = ModelInfo(classes=[str(i) for i in range(num_outputs or 0)],
                         preprocess=make_preprocess(model_path, preprocess, None))
    if classes is not None:
        info = dataclasses.replace(info, classes=[str(c) for c in classes])
        check_class_names(info.classes, str(model_path), "--labels")
    if num_outputs is not None and num_outputs != len(info.classes):
        raise DataError(
            f"{model_path}: the model outputs {num_outputs} classes but {len(info.classes)} class names "
            "were given"
        )
    return info


def check_output_rank(model_path: Path, output_shape: list | None) -> None:
    """The output must be [N, C]: a segmentation map [N, C, H, W] or a flat [N] is not a classifier's."""
    if output_shape and len(output_shape) != 2:
        shown = ", ".join("?" if d is None else str(d) for d in output_shape)
        raise DataError(f"{model_path}: output has shape [{shown}], not [N, C] (one row of class scores "
                        "per image); clf needs a classifier")


def make_preprocess(model_path: Path, preprocess: Preprocess | Mapping[str, Any],
                    base: Preprocess | None) -> Preprocess:
    """A full Preprocess, or the base (the model's own, else the defaults) with the given fields changed."""
    if isinstance(preprocess, Preprocess):
        return preprocess
    try:
        return dataclasses.replace(base, **preprocess) if base is not None else Preprocess(**preprocess)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{model_path}: bad preprocessing override ({one_line(exc)})") from None


def input_dtype(model_path: Path, model_input: Any, size: tuple[int, int]) -> type:
    """The model must take float [N, 3, H, W] at the preprocess ``size``; returns the numpy input dtype."""
    shape, (height, width) = model_input.shape, size
    if model_input.type not in INPUT_DTYPES:
        raise DataError(
            f"{model_path}: input '{model_input.name}' is {model_input.type}; clf feeds float images"
        )
    if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
        raise DataError(f"{model_path}: input shape {shape} is not [N, 3, H, W]")
    if isinstance(shape[2], int) and isinstance(shape[3], int) and (shape[2], shape[3]) != (height, width):
        raise DataError(
            f"{model_path}: the model takes {shape[2]}x{shape[3]} images but the preprocessing makes "
            f"{height}x{width}; pass a matching --img-size"
        )
    return INPUT_DTYPES[model_input.type]


def check_tta_in_graph(model_path: Path, props: Mapping[str, str], tta: str) -> None:
    """Refuse run-time TTA on a model that already averages TTA views in its graph: the views would double."""
    baked = props.get(KEY_TTA, "none") or "none"
    if tta != "none" and baked != "none":
        raise DataError(f"{model_path}: the model already runs {baked} TTA inside its graph (exported with "
                        f"--tta {baked}); leave out --tta {tta}, it would flip the views twice")
