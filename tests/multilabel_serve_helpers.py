"""Shared bits of the multi-label serving tests: a hand-built ONNX model whose tags are known by hand (one class per
colour channel), colour images, and multi-label checkpoints as `clf train --task multilabel` writes them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import onnx

from checkpoint_factory import checkpoint_state
from clf.models.checkpoint import save_checkpoint
from clf.serve.metadata import ModelInfo, info_to_props
from serve_helpers import PLAIN

CHANNEL_CLASSES = ["red", "green", "blue"]
SLOPE = 20.0  # logit of class c = SLOPE * (mean of channel c / 255 - 0.5): a channel above half lights its tag


def channel_info(thresholds: Sequence[float] | None = None, classes: Sequence[str] = CHANNEL_CLASSES) -> ModelInfo:
    """clf metadata of a multi-label model with PLAIN preprocessing (pixel / 255, RGB)."""
    return ModelInfo(classes=list(classes), preprocess=PLAIN, arch="channels", img_size=16, clf_version="0.1.0",
                     task="multilabel", thresholds=None if thresholds is None else list(thresholds))


def channel_logits(rgb: Sequence[int]) -> np.ndarray:
    """What the channel model outputs for a uniform image of this colour (0..255 per channel)."""
    return (SLOPE * (np.asarray(rgb, np.float32) / 255.0 - 0.5)).astype(np.float32)


def channel_model(path: Path, info: ModelInfo | None = None) -> Path:
    """A hand-built ONNX multi-label model (instant, no torch): logits[c] = SLOPE * (mean of channel c - 0.5)."""
    from onnx import TensorProto, helper, numpy_helper

    info = info or channel_info()
    height, width = info.preprocess.size
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, height, width])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])
    nodes = [helper.make_node("ReduceMean", ["input"], ["means"], axes=[2, 3], keepdims=0),
             helper.make_node("Sub", ["means", "half"], ["shifted"]),
             helper.make_node("Mul", ["shifted", "slope"], ["logits"])]
    constants = [numpy_helper.from_array(np.array(0.5, np.float32), "half"),
                 numpy_helper.from_array(np.array(SLOPE, np.float32), "slope")]
    graph = helper.make_graph(nodes, "channels", [x], [y], initializer=constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    helper.set_model_props(model, info_to_props(info))
    onnx.save(model, str(path))
    return path


def colour_image(path: Path, rgb: Sequence[int], size: tuple[int, int] = (20, 24)) -> Path:
    """A uniform PNG of one RGB colour (exact after decoding and resizing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = np.zeros((*size, 3), np.uint8)
    bgr[...] = tuple(reversed(list(rgb)))
    assert cv2.imwrite(str(path), bgr)
    return path


def multilabel_checkpoint(path: Path, classes: Sequence[str] = ("cat", "dog", "sky", "tree"), img_size: int = 32,
                          thresholds: Sequence[float] | None = None, seed: int = 0, **keys: Any) -> Path:
    """A checkpoint of a multi-label run: an ordinary one whose config has task "multilabel", plus its tuned
    "thresholds" (left out when None: a run that recorded none, 0.5 each)."""
    import torch

    torch.manual_seed(seed)
    extra = dict(keys)
    if thresholds is not None:
        extra["thresholds"] = [float(t) for t in thresholds]
    state, _ = checkpoint_state("cnn", classes, img_size, config={"task": "multilabel", "labels_csv": "labels.csv",
                                                                    "name": path.parent.name},
                                **extra)
    return save_checkpoint(state, path)


def plain_client_tags(model: Path, image_paths: list[Path]) -> dict[str, str]:
    """What a deployment without clf does: onnxruntime, OpenCV and numpy only, everything read from the metadata."""
    import cv2
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    classes = json.loads(meta["clf.classes"])
    pre = json.loads(meta["clf.preprocess"])
    thresholds = np.array(json.loads(meta.get("clf.thresholds", "null")) or [0.5] * len(classes))
    assert meta.get("clf.task") == "multilabel"
    assert pre["resize"] == "stretch" and pre["color"] == "RGB", pre  # what this client implements
    height, width = pre["size"]
    interpolation = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "cubic": cv2.INTER_CUBIC}[pre["interpolation"]]
    batch = []
    for path in image_paths:
        rgb = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        resized = cv2.resize(rgb, (width, height), interpolation=interpolation).astype(np.float32) * pre["scale"]
        normalised = (resized - np.array(pre["mean"], np.float32)) / np.array(pre["std"], np.float32)
        batch.append(normalised.transpose(2, 0, 1))
    logits = session.run(None, {session.get_inputs()[0].name: np.stack(batch).astype(np.float32)})[0]
    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    return {path.stem: " ".join(c for c, chosen in zip(classes, row) if chosen)
            for path, row in zip(image_paths, probs >= thresholds)}
